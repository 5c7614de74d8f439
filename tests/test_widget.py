"""CompletionWidget: state, validation, batched messages, cancel, branch, static HTML.

Most tests drive a scripted fake backend (exact tokens and timing); the ``tiny`` tests run the
real engine on the tiny random Llama, the ``real_model`` ones on the default model.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from pydantic import BaseModel

from nb_completion import CompletionWidget
from nb_completion.api.types import CompletionResponse
from nb_completion.engine import registry
from nb_completion.engine.records import Delta, Finished, ModelInfo, TokenRecord
from nb_completion.engine.backend import BackendKind
from nb_completion.engine.plan import TakesText

WORDS = [" the", " cat", " sat", " on", " a", " mat", ".", "\n"]


class ScriptedBackend(TakesText):
    kind = BackendKind.REMOTE
    """Yields ``n`` tokens, ``delay`` seconds apart, each with three alternatives; honours cancel."""

    def __init__(self, model_id: str, n: int = 20, delay: float = 0.0):
        self.info = ModelInfo(identifier=model_id, loaded=True)
        self.n = n
        self.delay = delay
        self.requests: list = []

    def open(self, request, *, seed=None, cancel=None):
        self.requests.append(request)
        return self._events(cancel or threading.Event())

    def _events(self, cancel):
        started = time.perf_counter()
        cancelled = False
        count = 0
        for i in range(self.n):
            if cancel.is_set():
                cancelled = True
                break
            if self.delay:
                time.sleep(self.delay)
            text = WORDS[i % len(WORDS)]
            top = ((text, math.log(0.6)), (" dog", math.log(0.3)), (" bird", math.log(0.1)))
            record = TokenRecord(i, 100 + i, text, math.log(0.6), 1, top, 0.9, elapsed=time.perf_counter() - started)
            count += 1
            yield Delta(text, (record,))
        yield Finished(
            "out_of_tokens", prompt_tokens=3, completion_tokens=count, time_to_first_token=0.01,
            tokens_per_second=25.0, cancelled=cancelled,
        )  # fmt: skip


@pytest.fixture
def backend():
    b = ScriptedBackend("scripted-test-model")
    registry.register(b)
    yield b
    registry.unregister(b.info.identifier)


class Recorder:
    """Stands in for ``widget.send``: keeps every custom message with its arrival time."""

    def __init__(self):
        self.messages: list[tuple[float, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, content, buffers=None):
        with self.lock:
            self.messages.append((time.monotonic(), content))

    def of(self, kind):
        with self.lock:
            return [m for _, m in self.messages if m.get("type") == kind]


def make(backend, **kw) -> tuple[CompletionWidget, Recorder]:
    w = CompletionWidget("A prompt:", model_id=backend.info.identifier, **kw)
    rec = Recorder()
    w.send = rec
    return w, rec


def click(w, **msg):
    """What the browser sends on a click (handled like a kernel comm message)."""
    w._handle_custom_msg(msg, [])


# ---- construction and validation ------------------------------------------------------------


def test_keywords_become_observable_traits():
    class Answer(BaseModel):
        yes: bool

    w = CompletionWidget("Hi", temperature=0.5, stop=["\n"], logprobs=3, seed=7, response_format=Answer)
    assert (w.strategy, w.temperature, w.stop_strings, w.logprobs_top_k, w.seed) == ("top_p", 0.5, ["\n"], 3, 7)
    assert w.response_format == "json_schema" and '"yes"' in w.json_schema
    assert w.model_name == registry.DEFAULT_MODEL_ID and registry.DEFAULT_MODEL_ID in w.model_ids
    seen = []
    w.observe(lambda c: seen.append(c["new"]), names=["top_p"])
    w.top_p = 0.5
    assert seen == [0.5]
    spec = CompletionWidget(sampling_params={"strategy": {"type": "top_k", "top_k": 3}, "max_tokens": 9, "stop": ["x"]})
    assert (spec.strategy, spec.top_k, spec.max_tokens, spec.stop_strings) == ("top_k", 3, 9, ["x"])
    grammar = CompletionWidget(response_format={"type": "grammar", "bnf": {"regex": "[0-9]+"}})
    assert (grammar.response_format, grammar.grammar_syntax, grammar.grammar) == ("grammar", "regex", "[0-9]+")
    with pytest.raises(TypeError, match="tempreature"):
        CompletionWidget(tempreature=0.3)
    for state in ("status", "tokens", "stop_strings"):  # traits, but not constructor keywords
        with pytest.raises(TypeError, match=state):
            CompletionWidget(**{state: None})


def test_presentation_mode_is_a_synced_constructor_keyword():
    w = CompletionWidget("Hi", present=True)
    assert w.present is True and w.trait_metadata("present", "sync") is True
    assert CompletionWidget("Hi").present is False
    assert "present" in w.get_state()  # the browser's toggle and the Python trait are one value


def test_invalid_controls_are_flagged_and_nothing_is_sent(backend):
    w, _ = make(backend, strategy="top_p", temperature=0.0, top_p=1.5)
    assert w.invalid == {"temperature": "must be > 0", "top_p": "must be in (0, 1]"}
    w.strategy = "greedy"  # hidden controls do not block
    assert w.invalid == {}
    w.max_tokens = -1
    w.stop_strings = ["a", "b", "c", "d", "e"]
    w.response_format = "json_schema"
    w.json_schema = "{not json"
    assert set(w.invalid) == {"max_tokens", "stop_strings", "json_schema"}
    assert w.generate() is None
    assert backend.requests == []
    assert w.status == "error" and w.error["status"] == 400 and w.error["detail"].startswith("max_tokens")
    # fixing the values makes the panel work again
    w.max_tokens, w.stop_strings, w.response_format = 4, [], "none"
    assert w.invalid == {}
    result = w.generate(wait=True, timeout=10)
    assert w.status == "done" and w.error == {} and result.content == w.text


def test_an_engines_400_is_flagged_at_the_control_its_field_names(backend):
    """The control and its message come from ``BadRequest.field`` / ``.message``, whatever the text says."""
    from nb_completion.api.errors import BadRequest

    def refuse(request, *, seed=None, cancel=None):
        raise BadRequest("sampling_params.stop[1]", "not usable here: it ends every token")

    backend.open = refuse
    w, _ = make(backend, stop=["a", "b"])
    w.generate(wait=True, timeout=10)
    assert w.status == "error" and w.error["status"] == 400
    assert w.invalid == {"stop_strings": "not usable here: it ends every token"}


# ---- streaming --------------------------------------------------------------------------------


def test_tokens_arrive_as_batched_deltas_and_land_in_traits(backend):
    backend.n, backend.delay = 60, 0.004  # ~250 tokens/s: several tokens per 1/30 s window
    w, rec = make(backend, max_tokens=60, logprobs_top_k=3)
    t0 = time.monotonic()
    result = w.generate(wait=True, timeout=20)
    elapsed = time.monotonic() - t0
    deltas = rec.of("delta")
    assert isinstance(result, CompletionResponse) and w.result is result
    assert w.status == "done" and w.metrics["stop_reason"] == "out_of_tokens"
    # small batches, not the whole list each time, and at most ~30 a second
    assert 1 < len(deltas) < 60
    assert len(deltas) <= elapsed * 30 + 2
    starts = [d["start"] for d in deltas]
    assert starts == sorted(starts) and starts[0] == 0
    streamed = [t for d in deltas for t in d["tokens"]]
    assert [t["index"] for t in streamed] == list(range(60))
    assert streamed == w.tokens  # the final traits hold exactly what was streamed
    assert all(d["run"] == w.run for d in deltas)
    assert "".join(t["text"] for t in w.tokens) == w.text == result.content
    assert deltas[-1]["metrics"]["tokens"] == 60 and w.metrics["tokens"] == 60
    first = w.tokens[0]
    assert first["rank"] == 1 and [a[0] for a in first["top"]] == [" the", " dog", " bird"]
    assert len(result.logprobs) == 60 and set(result.logprobs[0].logprobs_by_token) == {" the", " dog", " bird"}


def test_stop_click_ends_within_half_a_second_and_keeps_partial_output(backend):
    backend.n, backend.delay = 10_000, 0.02
    w, rec = make(backend, max_tokens=0)
    w.generate()
    deadline = time.monotonic() + 10
    while len(w.records) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.status == "running" and w.running
    t0 = time.monotonic()
    click(w, type="stop")
    w.wait(timeout=5)
    assert time.monotonic() - t0 < 0.5
    assert w.status == "stopped" and w.metrics["cancelled"] is True
    n = len(w.tokens)
    assert 5 <= n < 10_000 and w.text == "".join(t["text"] for t in w.tokens) == w.result.content
    sent = len(rec.messages)
    time.sleep(0.2)
    assert len(rec.messages) == sent  # nothing more arrives
    assert sum(len(d["tokens"]) for d in rec.of("delta")) == n


def test_a_view_opened_mid_run_gets_a_snapshot(backend):
    backend.n, backend.delay = 200, 0.01
    w, rec = make(backend, max_tokens=0)
    w.generate()
    while len(w.records) < 3:
        time.sleep(0.01)
    click(w, type="snapshot")
    snap = rec.of("snapshot")[-1]
    assert snap["run"] == w.run and len(snap["tokens"]) >= 3
    assert [t["index"] for t in snap["tokens"]] == list(range(len(snap["tokens"])))
    w.stop(wait=True)


def test_opening_the_model_list_refreshes_it(backend):
    w = CompletionWidget()
    assert backend.info.identifier in w.model_ids
    late = ScriptedBackend("registered-later")
    registry.register(late)
    try:
        click(w, type="models")
        assert "registered-later" in w.model_ids
    finally:
        registry.unregister("registered-later")


def test_generate_click_uses_the_controls(backend):
    w, _ = make(backend, strategy="top_k", top_k=7, max_tokens=5, stop=["\n\n"], seed=3, logprobs_top_k=2)
    click(w, type="generate")
    w.wait(timeout=10)
    request = backend.requests[-1]
    assert request.content == "A prompt:" and request.model_id == backend.info.identifier
    assert request.sampling_params.strategy.top_k == 7 and request.sampling_params.max_tokens == 5
    assert request.sampling_params.stop == ["\n\n"] and request.logprobs.top_k == 2


# ---- branching --------------------------------------------------------------------------------


def test_clicking_an_alternative_continues_from_it(backend):
    backend.n = 6
    w, rec = make(backend, max_tokens=6)
    w.generate(wait=True, timeout=10)
    before = list(w.tokens)
    click(w, type="branch", index=2, text=" dog")
    w.wait(timeout=10)
    # the new request continues from prompt + the kept tokens + the alternative
    assert backend.requests[-1].content == "A prompt: the cat dog"
    assert w.content == "A prompt:" and w.prompt_echo == "A prompt:"  # the user's prompt is intact
    assert w.tokens[:2] == before[:2]
    picked = w.tokens[2]
    assert picked["text"] == " dog" and picked["branch"] is True and picked["rank"] == 2
    assert math.isclose(picked["logprob"], math.log(0.3), abs_tol=1e-4)
    assert [t["index"] for t in w.tokens] == list(range(3 + 6))
    assert w.text == " the cat dog" + w.result.content
    assert w.branch == {"index": 2, "chosen": " dog", "original": " sat", "rank": 2}
    # the deltas of the branch start after the kept prefix
    assert rec.of("delta")[-1]["run"] == w.run and min(d["start"] for d in rec.of("delta") if d["run"] == w.run) == 3
    # a branch of a branch keeps the earlier branch point marked; it continues the *shown*
    # completion even after the prompt control was edited
    w.content = "An edited prompt:"
    click(w, type="branch", index=4, text=" bird")
    w.wait(timeout=10)
    assert [t.get("branch", False) for t in w.tokens[:5]] == [False, False, True, False, True]
    assert backend.requests[-1].content == "A prompt: the cat dog the bird"
    assert w.prompt_echo == "A prompt:" and w.content == "An edited prompt:"


def test_a_bad_branch_is_an_error_in_the_panel_and_the_panel_keeps_working(backend):
    w, _ = make(backend, max_tokens=3)
    w.generate(wait=True, timeout=10)
    click(w, type="branch", index=99, text=" dog")
    assert w.status == "error" and w.error["status"] == 400 and "index" in w.error["detail"]
    click(w, type="branch", index=0, text=" zebra")
    assert w.status == "error" and "zebra" in w.error["detail"]
    click(w, type="generate")
    w.wait(timeout=10)
    assert w.status == "done" and w.error == {}


def test_engine_errors_show_title_and_detail(backend):
    w, _ = make(backend, max_tokens=3)
    w.model_name = "no-such-model"
    click(w, type="generate")
    w.wait(timeout=10)
    assert w.status == "error"
    assert w.error["status"] == 404 and w.error["title"] == "Not Found" and "no-such-model" in w.error["detail"]
    w.model_name = backend.info.identifier
    click(w, type="generate")
    w.wait(timeout=10)
    assert w.status == "done" and w.error == {}


# ---- static rendering -------------------------------------------------------------------------


def test_static_html_shows_the_last_result_with_hover_titles(backend):
    backend.n = 4
    w, _ = make(backend, max_tokens=4)
    data, _meta = w._repr_mimebundle_()
    assert "no completion yet" in data["text/html"]
    w.generate(wait=True, timeout=10)
    data, _meta = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    page = data["text/html"]
    assert page.count("data-token-index=") == 4 and "title=" in page and "dog" in page
    assert "<script" not in page and "http" not in page
    assert "A prompt:" in page


def test_a_model_that_fails_to_load_is_an_error_in_the_panel(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    w = CompletionWidget("Hi", model_id=str(tmp_path))  # a config but no tokenizer, no weights
    seen = []
    w.observe(lambda c: seen.append(c["new"]), names=["status"])
    w.generate(wait=True, timeout=60)
    assert seen == ["running", "loading", "error"]
    assert w.error["status"] == 400 and "could not load the tokenizer" in w.error["detail"] and str(tmp_path) in w.error["detail"]
    assert w.invalid.get("model_name")  # flagged at the model control
