"""``compare()``: several settings of one prompt, through the real engine (tiny random Llama)."""

from __future__ import annotations

import pytest

from nb_completion import compare
from nb_completion.api.errors import BadRequest
from nb_completion.engine import registry
from nb_completion.engine.backend import BackendKind
from nb_completion.engine.plan import TakesText

SETTINGS = [
    {"temperature": 0},
    {"temperature": 1.0, "top_p": 0.9, "label": "warm"},
    {"top_k": 3, "max_tokens": 5},
]


class CountingBackend(TakesText):
    kind = BackendKind.REMOTE
    """Wraps a backend and counts generations, to show validation happens before any run."""

    def __init__(self, inner):
        self.inner, self.opened = inner, 0
        self.info = inner.info

    def open(self, request, **kw):
        self.opened += 1
        return self.inner.open(request, **kw)


@pytest.fixture(scope="module")
def counting(tiny_backend):
    backend = CountingBackend(tiny_backend)
    registry.register(backend, "counting-tiny")
    return backend


def test_runs_each_setting_and_renders_columns(tiny_model_id):
    result = compare("Once upon a time", SETTINGS, seed=0, model_id=tiny_model_id, max_tokens=8)
    assert len(result) == 3 and result.texts == [run.text for run in result]
    assert [run.label for run in result] == ["greedy", "warm", "top-k 3 · max 5 tokens"]
    assert [len(run.tokens) for run in result] == [8, 8, 5]  # shared max_tokens, overridden by the third
    assert result[0].off_top == 0  # greedy always takes the top choice
    assert all(t.rank == 1 for t in result[0].tokens)
    assert result[1].request.sampling_params.strategy.top_p == 0.9
    assert result[2].response.content == result[2].text and len(result[2].response.logprobs) == 5
    html = result._repr_html_()
    assert html.count('class="nbc-compare-run"') == 3 and html.count("data-token-index=") == 21
    assert "warm" in html and "top-p 0.9 · T 1" in html  # custom label, settings underneath
    assert "Once upon a time" in html and "seed 0" in html
    assert "greedy" in repr(result)


def test_same_seed_same_runs_and_greedy_ignores_the_seed(tiny_model_id):
    settings = [{"temperature": 0}, {"temperature": 1.2}]
    first = compare("The capital", settings, seed=5, model_id=tiny_model_id, max_tokens=10)
    again = compare("The capital", settings, seed=5, model_id=tiny_model_id, max_tokens=10)
    other = compare("The capital", settings, seed=6, model_id=tiny_model_id, max_tokens=10)
    assert first.texts == again.texts
    assert other[0].text == first[0].text
    assert [t.token_id for t in other[1].tokens] != [t.token_id for t in first[1].tokens]


def test_hotter_sampling_is_more_surprising(tiny_model_id):
    result = compare("Once", [{"temperature": 0}, {"temperature": 2.0}], seed=1, model_id=tiny_model_id, max_tokens=30)
    assert result[1].perplexity > result[0].perplexity
    assert result[1].mean_probability < result[0].mean_probability


def test_full_sampling_params_are_accepted(tiny_model_id):
    result = compare(
        "Hi",
        [{"sampling_params": {"strategy": {"type": "top_k", "top_k": 2}, "max_tokens": 4, "repetition_penalty": 1.5}}],
        model_id=tiny_model_id,
    )
    assert len(result[0].tokens) == 4 and result[0].label == "top-k 2 · rep. penalty 1.5 · max 4 tokens"


@pytest.mark.parametrize(
    "settings, field",
    [
        ([{"temperature": 0}, {"temprature": 1.0}], "settings[1].temprature"),
        ([{"temperature": 0}, {"temperature": -1.0}], "sampling_params.strategy.temperature"),
        ([{"strategy": "top_k", "temperature": 0.5, "top_k": 3}], "sampling_params.strategy.temperature"),
        ([], "settings"),
        (["greedy"], "settings[0]"),
    ],
)
def test_bad_settings_fail_before_anything_runs(counting, settings, field):
    before = counting.opened
    with pytest.raises(BadRequest) as info:
        compare("Hi", settings, model_id="counting-tiny", max_tokens=3)
    assert info.value.detail.startswith(field), info.value.detail
    assert counting.opened == before


def test_entropy_colouring(tiny_model_id):
    result = compare("Hi", [{"temperature": 0}], model_id=tiny_model_id, max_tokens=3, color_by="entropy")
    assert "entropy (how unsure" in result._repr_html_()
    with pytest.raises(ValueError):
        compare("Hi", [{"temperature": 0}], model_id=tiny_model_id, color_by="nope")


def test_in_a_notebook_the_columns_fill_in_live_and_are_not_shown_twice(tiny_model_id):
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    previous, shell.display_pub = shell.display_pub, CapturingDisplayPublisher()
    try:
        shell.user_ns["model"] = tiny_model_id
        cell = "from nb_completion import compare\nr = compare('Once', [{'temperature': 0}, {'top_k': 3}], model_id=model, max_tokens=150)\nr"
        assert shell.run_cell(cell, store_history=True).error_in_exec is None
        outputs = shell.display_pub.outputs
        assert [o["update"] for o in outputs].count(False) == 1  # one display, no second copy
        assert len({o["transient"]["display_id"] for o in outputs}) == 1
        first_html = outputs[0]["data"]["text/html"]
        assert first_html.count('class="nbc-compare-run"') == 2 and "generating" not in first_html and "waiting" in first_html
        assert any("generating…" in o["data"]["text/html"] for o in outputs[1:-1])
        final = outputs[-1]["data"]["text/html"]
        runs = shell.user_ns["r"]
        assert final == runs._repr_html_() and final.count("data-token-index=") == sum(len(run.tokens) for run in runs) >= 150
        shell.display_pub.outputs.clear()
        shell.run_cell("r", store_history=True)  # shown again in a later cell, it renders
        assert len(shell.display_pub.outputs) == 1 and "nbc-compare" in shell.display_pub.outputs[0]["data"]["text/html"]
    finally:
        shell.display_pub = previous


def test_outside_a_notebook_nothing_is_displayed(tiny_model_id, capsys):
    result = compare("Once", [{"temperature": 0}], model_id=tiny_model_id, max_tokens=3)
    assert len(result[0].tokens) == 3 and capsys.readouterr().out == ""


def test_a_setting_may_bring_its_own_seed(tiny_model_id, counting):
    settings = [{"temperature": 1.2, "seed": 1}, {"temperature": 1.2, "seed": 2, "label": "other draw"}, {"temperature": 1.2}]
    result = compare("The capital", settings, seed=1, model_id=tiny_model_id, max_tokens=10)
    assert [run.seed for run in result] == [1, 2, 1]
    assert result[0].text == result[2].text  # the same seed: the same draw
    assert [t.token_id for t in result[1].tokens] != [t.token_id for t in result[0].tokens]
    html = result._repr_html_()
    assert "seeds 1, 2" in html and "T 1.2 · seed 2" in html and "other draw" in html
    before = counting.opened
    with pytest.raises(BadRequest) as bad:
        compare("x", [{"temperature": 1.0}, {"temperature": 1.0, "seed": -3}], model_id="counting-tiny")
    assert bad.value.field == "settings[1].seed" and counting.opened == before  # nothing ran
