"""One table of bounds (nb_completion/api/bounds.py): the request validation, the sampling
factories, the OpenAI route and the widget's browser-side checks (js/src/validate.js, run
under node) accept and refuse the same values."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from nb_completion.api.bounds import BOUNDS, MAX_STOP_STRINGS, MIN_TEMPERATURE, REPETITION_PENALTY_RANGE, TOP_P, Bound
from nb_completion.api.errors import BadRequest
from nb_completion.api.types import TopPSamplingStrategy
from nb_completion.api.validation import parse_request
from nb_completion.engine import sampling
from nb_completion.server.openai_compat import parse_openai

VALIDATE_JS = Path(__file__).resolve().parent.parent / "js" / "src" / "validate.js"

# Values on and around every edge of the table, plus ordinary ones.
PROBES = [-1, -0.5, 0, 1e-9, 0.5, 1, 1.5, 2, 19, 20, 21, 100, 2.5]


def js_verdicts(names: list[str], probes: list[float]) -> dict[str, list[bool]]:
    """``{field: [accepted?, ...]}`` from validate.js's ``parseField`` for each probe."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run the widget's checks (the widget is built with it)")
    script = (
        f"import {{ parseField }} from {json.dumps(VALIDATE_JS.as_uri())};\n"
        f"const names = {json.dumps(names)}, probes = {json.dumps(probes)};\n"
        "const out = {};\n"
        "for (const n of names) out[n] = probes.map((p) => !parseField(n, String(p)).error);\n"
        "console.log(JSON.stringify(out));\n"
    )
    run = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_widget_checks_agree_with_the_table():
    verdicts = js_verdicts(list(BOUNDS), PROBES)
    for name, bound in BOUNDS.items():
        # the browser reads text: "2" is an integer there, so compare on the value's meaning
        expected = [bound.holds(int(p) if float(p).is_integer() else p) for p in PROBES]
        assert verdicts[name] == expected, name


def test_the_widget_keeps_at_most_the_tables_stop_strings():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run the widget's checks")
    script = (
        f"import {{ parseStops }} from {json.dumps(VALIDATE_JS.as_uri())};\n"
        "const at = (n) => !parseStops(Array.from({length: n}, (_, i) => 's' + i)).error;\n"
        f"console.log(JSON.stringify([at({MAX_STOP_STRINGS}), at({MAX_STOP_STRINGS + 1})]));\n"
    )
    run = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [True, False]


@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k", "repetition_penalty"])
def test_the_engines_sampling_checks_enforce_the_table(name):
    for probe in PROBES:
        value = int(probe) if name == "top_k" else float(probe)
        if not BOUNDS[name].holds(value):
            with pytest.raises(ValueError, match=name):
                sampling.check(name, value)
        else:
            sampling.check(name, value)


REQUEST_FIELD = {
    "temperature": lambda v: {"sampling_params": {"strategy": {"type": "top_p", "temperature": v}}},
    "top_p": lambda v: {"sampling_params": {"strategy": {"type": "top_p", "top_p": v}}},
    "top_k": lambda v: {"sampling_params": {"strategy": {"type": "top_k", "top_k": v}}},
    "max_tokens": lambda v: {"sampling_params": {"max_tokens": v}},
    "repetition_penalty": lambda v: {"sampling_params": {"repetition_penalty": v}},
    "logprobs_top_k": lambda v: {"logprobs": {"top_k": v}},
}


def _overflows(name: str, value: float) -> bool:
    """The request also refuses values inside the bound that overflow float32 logits."""
    low, high = REPETITION_PENALTY_RANGE
    return (name == "temperature" and value < MIN_TEMPERATURE) or (name == "repetition_penalty" and not low <= value <= high)


@pytest.mark.parametrize("name", list(BOUNDS))
def test_request_validation_enforces_the_table(name):
    for probe in PROBES:
        value = int(probe) if BOUNDS[name].integer else float(probe)
        if BOUNDS[name].integer and not float(probe).is_integer():
            continue  # a type error, not a bound
        body = {"model_id": "m", "content": "x", **REQUEST_FIELD[name](value)}
        if BOUNDS[name].holds(value) and not _overflows(name, value):
            parse_request(body)
        else:
            with pytest.raises(BadRequest):
                parse_request(body)


def test_the_openai_route_enforces_the_tables_top_p_and_logprobs():
    for probe in PROBES:
        body = {"model": "m", "prompt": "x", "top_p": float(probe)}
        if BOUNDS["top_p"].holds(float(probe)):
            parse_openai(body)
        else:
            with pytest.raises(BadRequest, match="top_p"):
                parse_openai(body)
        if float(probe).is_integer():
            body = {"model": "m", "prompt": "x", "logprobs": int(probe)}
            if BOUNDS["logprobs_top_k"].holds(int(probe)):
                parse_openai(body)
            else:
                with pytest.raises(BadRequest, match="logprobs"):
                    parse_openai(body)


def test_the_contracts_top_p_default_is_the_tables():
    assert TopPSamplingStrategy().top_p == TOP_P


def test_bound_texts_name_the_interval():
    assert Bound(0, low_open=True).text == "must be > 0"
    assert Bound(0, 1, low_open=True).text == "must be in (0, 1]"
    assert Bound(1, integer=True).text == "must be >= 1"
    assert Bound(0, 20, integer=True).text == "must be in [0, 20]"


def _widget_values(**changes):
    values = {
        "strategy": "top_p", "temperature": 0.8, "top_p": 0.95, "top_k": 40, "max_tokens": 64,
        "repetition_penalty": 1.0, "logprobs_top_k": 5, "seed": None, "stop_strings": [],
        "response_format": "none", "json_schema": "", "grammar": "",
    }  # fmt: skip
    return {**values, **changes}


def test_the_widgets_python_checks_enforce_the_table():
    from nb_completion.widget._controls import check_controls

    for name, bound in BOUNDS.items():
        for probe in PROBES:
            value = int(probe) if float(probe).is_integer() else probe
            strategy = "top_k" if name == "top_k" else "top_p"
            flagged = name in check_controls(_widget_values(strategy=strategy, **{name: value}))
            assert flagged == (not bound.holds(value)), (name, value)


def test_the_widgets_python_messages_are_the_browsers():
    """What a control shows is the same whether Python or validate.js flagged it."""
    from nb_completion.widget._controls import check_controls

    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run the widget's checks")
    bad = {"temperature": -1, "top_p": 2, "top_k": 0, "max_tokens": -1, "repetition_penalty": -1, "logprobs_top_k": 21}
    script = (
        f"import {{ parseField }} from {json.dumps(VALIDATE_JS.as_uri())};\n"
        f"const bad = {json.dumps(bad)}, out = {{}};\n"
        "for (const [n, v] of Object.entries(bad)) out[n] = parseField(n, String(v)).error;\n"
        "console.log(JSON.stringify(out));\n"
    )
    run = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    browser = json.loads(run.stdout)
    for name, value in bad.items():
        strategy = "top_k" if name == "top_k" else "top_p"
        assert check_controls(_widget_values(strategy=strategy, **{name: value}))[name] == browser[name], name


def test_the_widgets_defaults_are_the_tables():
    from nb_completion import CompletionWidget
    from nb_completion.api.bounds import ALTERNATIVES

    w = CompletionWidget("x")
    assert (w.top_p, w.logprobs_top_k) == (TOP_P, ALTERNATIVES)
    assert CompletionWidget("x", logprobs=True).logprobs_top_k == ALTERNATIVES
