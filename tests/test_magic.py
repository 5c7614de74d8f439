"""``%%complete`` in a real IPython shell: streaming display, `_`, `-o`, errors, interrupt.

A small fake backend (frontend-only behaviour: timing, interrupt, mid-stream failure) and the
tiny random Llama through the real engine (the request the options build, seeds, cancel).
"""

from __future__ import annotations

import _thread
import json
import time

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher

from nb_completion.api.errors import BadRequest
from nb_completion.api.types import CompletionResponse
from nb_completion.engine import registry
from nb_completion.engine.records import Delta, Finished, ModelInfo, TokenRecord
from nb_completion.notebook.magic import CompletionText, GenerationInterrupted, MagicError
from nb_completion.engine.backend import BackendKind
from nb_completion.engine.plan import TakesText


class FakeBackend(TakesText):
    kind = BackendKind.REMOTE
    """Yields ``words`` one token each; may interrupt the main thread or fail part-way."""

    def __init__(self, model_id, words, delay=0.0, interrupt_after=None, fail_after=None, ignore_cancel=False):
        self.info = ModelInfo(identifier=model_id, loaded=True)
        self.words, self.delay = words, delay
        self.interrupt_after, self.fail_after = interrupt_after, fail_after
        self.requests = []
        self.cancelled_seen = False

    def open(self, request, *, seed=None, cancel=None):
        self.requests.append((request, seed))
        if request.response_format is not None:
            raise BadRequest("response_format", "the fake backend has no grammar support")
        return self._events(cancel)

    def _events(self, cancel):
        for i, word in enumerate(self.words):
            if cancel is not None and cancel.is_set():
                self.cancelled_seen = True
                yield Finished("out_of_tokens", 3, i, cancelled=True)
                return
            if i == self.interrupt_after:
                _thread.interrupt_main()  # what the notebook's stop button does (SIGINT)
            if i == self.fail_after:
                raise RuntimeError("boom")
            time.sleep(self.delay)
            record = TokenRecord(i, 100 + i, word, -0.2 * i, 1 + i % 2, ((word, -0.2 * i), ("<alt>", -3.0)), 0.3 * i)
            yield Delta(word, (record,))
        yield Finished("end_of_turn", 3, len(self.words), time_to_first_token=0.01, tokens_per_second=50.0)


WORDS = [" Paris", " is", " the", " capital", " of", " France", "."]


def _backend(model_id, **kw):
    backend = FakeBackend(model_id, kw.pop("words", WORDS), **kw)
    registry.register(backend)
    return backend


def run(ip, cell):
    ip.display_pub.outputs.clear()
    return ip.run_cell(cell, store_history=True)


def test_cell_streams_batched_updates_and_result_is_the_text(shell):
    _backend("fake-slow", delay=0.03)
    result = run(shell, "%%complete --model fake-slow\nThe capital of France is\n")
    assert result.error_in_exec is None
    assert result.result == "".join(WORDS) and isinstance(result.result, CompletionText)
    assert shell.user_ns["_"] == "".join(WORDS)
    outputs = shell.display_pub.outputs
    ids = {o["transient"]["display_id"] for o in outputs}
    assert len(ids) == 1, "one display, updated in place"
    assert outputs[0]["update"] is False and all(o["update"] for o in outputs[1:])
    # batched: fewer updates than tokens (7 tokens over ~210 ms at one update per 80 ms), but live
    assert 2 <= len(outputs) < len(WORDS) + 1
    final = outputs[-1]["data"]
    assert final["text/plain"] == "".join(WORDS)
    assert "Paris is the capital of France." in final["text/html"] and "stop: end_of_turn" in final["text/html"]


def test_result_is_not_shown_twice_but_displays_later(shell):
    _backend("fake-echo")
    run(shell, "%%complete --model fake-echo\nHello\n")
    outputs = shell.display_pub.outputs
    assert [o["update"] for o in outputs].count(False) == 1  # one display, no second copy of the result
    assert {o["transient"]["display_id"] for o in outputs} == {outputs[0]["transient"]["display_id"]}
    run(shell, "_")
    shown = shell.display_pub.outputs
    assert len(shown) == 1 and shown[0]["data"]["text/plain"] == "".join(WORDS)


def test_out_option_stores_the_completion_response(shell):
    _backend("fake-echo")
    run(shell, "%%complete --model fake-echo -o reply --logprobs 2\nHello\n")
    reply = shell.user_ns["reply"]
    assert isinstance(reply, CompletionResponse)
    assert reply.content == "".join(WORDS) and reply.stop_reason.value == "end_of_turn"
    assert len(reply.logprobs) == len(WORDS) and reply.logprobs[0].logprobs_by_token == {" Paris": 0.0, "<alt>": -3.0}
    assert {m.metric for m in reply.metrics} >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert shell.user_ns["_"].response == reply


def test_interpolation_fills_names_and_keeps_doubled_braces(shell):
    backend = _backend("fake-echo")
    shell.user_ns.update(city="Paris", n=3, data={"k": "v"})
    run(shell, "%%complete --model fake-echo\n{city} has {n:02d} {data[k]} {{literal}}\n")
    request, _ = backend.requests[-1]
    assert request.content == "Paris has 03 v {literal}"


def test_unknown_name_is_a_short_error_naming_it(shell, capsys):
    backend = _backend("fake-echo")
    before = len(backend.requests)
    result = run(shell, "%%complete --model fake-echo\nHello {nobody}\n")
    assert isinstance(result.error_in_exec, MagicError)
    assert result.error_in_exec.status == 400 and "'nobody'" in result.error_in_exec.detail
    assert "{{" in result.error_in_exec.detail  # tells how to write literal braces
    assert len(backend.requests) == before  # nothing was generated
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "400 Bad Request" in out.out + out.err


@pytest.mark.parametrize(
    "line, field",
    [
        ("-t -1", "sampling_params.strategy.temperature"),
        ("--top-p 1.5", "sampling_params.strategy.top_p"),
        ("--strategy top_k -t 0.5 --top-k 3", "sampling_params.strategy.temperature"),
        ("-n many", "--max-tokens"),
        ("--stop a --stop b --stop c --stop d --stop e", "sampling_params.stop"),
        ("--logprobs 50", "logprobs.top_k"),
        ("--json-schema '{not json'", "response_format.json_schema"),
        ("--bogus 1", "options"),
        ("--model nope/none", "model_id"),
        ("-o 1bad", "--out"),
    ],
)
def test_bad_options_are_spec_errors_naming_the_field(shell, line, field):
    _backend("fake-echo")
    model = "" if "--model" in line else "--model fake-echo "
    result = run(shell, f"%%complete {model}{line}\nHello\n")
    err = result.error_in_exec
    assert isinstance(err, MagicError), err
    assert err.detail.startswith(field) or field in err.detail
    assert err._render_traceback_()[0].count("\n") == 0  # one line, no traceback wall
    ok = run(shell, "%%complete --model fake-echo\nHello again\n")  # the magic keeps working
    assert ok.error_in_exec is None and ok.result == "".join(WORDS)


def test_backend_refusal_before_streaming_shows_title_and_detail(shell):
    _backend("fake-echo")
    result = run(shell, "%%complete --model fake-echo --grammar 'root ::= \"a\"'\nHello\n")
    assert isinstance(result.error_in_exec, MagicError)
    assert result.error_in_exec.detail.startswith("response_format:")
    assert shell.display_pub.outputs == []  # no half-made output


def test_failure_mid_stream_keeps_partial_text_and_reports_500(shell):
    _backend("fake-fail", fail_after=3)
    shell.user_ns["partial"] = "before"
    result = run(shell, "%%complete --model fake-fail -o partial\nHello\n")
    assert shell.user_ns["partial"] == "before"  # no response to store
    err = result.error_in_exec
    assert isinstance(err, MagicError) and err.status == 500 and "RuntimeError" in err.detail
    final = shell.display_pub.outputs[-1]["data"]
    assert final["text/plain"] == "".join(WORDS[:3]) and "500" in final["text/html"]


def test_interrupt_cancels_keeps_partial_text_and_kernel_ready(shell):
    backend = _backend("fake-interrupt", words=[f" w{i}" for i in range(200)], delay=0.01, interrupt_after=5)
    result = run(shell, "%%complete --model fake-interrupt -o part\nCount\n")
    assert isinstance(result.error_in_exec, GenerationInterrupted)
    assert backend.cancelled_seen, "the engine was told to stop"
    partial = shell.user_ns["_"]
    assert isinstance(partial, CompletionText) and partial.startswith(" w0 w1 w2 w3 w4") and len(partial.tokens) < 30
    assert shell.user_ns["part"].content == partial and shell.user_ns["part"].stop_reason.value == "out_of_tokens"
    assert "interrupted" in shell.display_pub.outputs[-1]["data"]["text/html"]
    assert "partial text" in result.error_in_exec._render_traceback_()[0]
    again = run(shell, "%%complete --model fake-echo\nHello\n")  # kernel ready
    assert again.error_in_exec is None and again.result == "".join(WORDS)
    assert run(shell, "1 + 1").result == 2


def test_no_stream_shows_only_the_final_text(shell):
    _backend("fake-slow", delay=0.03)
    run(shell, "%%complete --model fake-slow --no-stream\nHello\n")
    outputs = shell.display_pub.outputs
    assert len(outputs) == 1 and outputs[0]["data"]["text/plain"] == "".join(WORDS)


def test_heatmap_option_shows_the_text_once_as_the_heatmap(shell):
    _backend("fake-echo")
    run(shell, "%%complete --model fake-echo --heatmap entropy\nHello\n")
    final = shell.display_pub.outputs[-1]["data"]
    html = final["text/html"]
    assert html.count("data-token-index=") == len(WORDS)
    assert "Paris is the capital" not in html  # not a second, plain copy of the text above the map
    assert "stop: end_of_turn" in html and "nats" in html  # the status line and the entropy legend
    assert final["text/plain"] == "".join(WORDS)


def test_help_and_models_work_alone_in_a_cell(shell, capsys):
    _backend("fake-echo")
    assert run(shell, "%%complete --help").error_in_exec is None
    assert "--temperature" in capsys.readouterr().out
    assert run(shell, "%%complete --models").error_in_exec is None
    listing = shell.display_pub.outputs[-1]["data"]["text/plain"]
    assert "fake-echo" in listing and registry.DEFAULT_MODEL_ID in listing


def test_line_magic_completes_its_words(shell):
    backend = _backend("fake-echo")
    shell.user_ns["who"] = "Ada"
    result = run(shell, "%complete --model fake-echo -n 5 Hello {who}")
    assert result.result == "".join(WORDS)
    assert backend.requests[-1][0].content == "Hello Ada"
    assert backend.requests[-1][0].sampling_params.max_tokens == 5


def test_schema_from_a_variable_holding_a_pydantic_model(shell):
    backend = _backend("fake-echo")
    run(shell, "from pydantic import BaseModel\nclass City(BaseModel):\n    name: str\n    population: int\n")
    run(shell, "%%complete --model fake-echo --json-schema {City}\nA city:\n")
    # the fake refuses response_format, but only after the request was built and validated
    request, _ = backend.requests[-1]
    assert request.response_format.json_schema["properties"].keys() == {"name", "population"}


# ---- the real engine (tiny random Llama) -----------------------------------------------------


def metric(response, name: str):
    """A response metric by its name (the list's order is not part of the contract)."""
    return {m.metric: m.value for m in response.metrics}[name]


def test_options_reach_the_engine_and_seeded_sampling_repeats(shell, tiny_model_id):
    cell = f"%%complete --model {tiny_model_id} -n 12 -t 0.9 --top-p 0.8 --seed 7 -o first\nOnce upon a time\n"
    run(shell, cell)
    first = shell.user_ns["first"]
    run(shell, cell.replace("-o first", "-o second"))
    second = shell.user_ns["second"]
    assert first.content == second.content and metric(first, "completion_tokens") == 12
    assert first.stop_reason.value == "out_of_tokens"


def test_stop_string_with_escape_is_honoured(shell, tiny_model_id):
    run(shell, f"%%complete --model {tiny_model_id} -n 40 -o full\nThe capital\n")
    full = shell.user_ns["full"].content
    assert len(full) > 4
    stop = full[3:5]
    shell.user_ns["stop_text"] = stop
    run(shell, f"%%complete --model {tiny_model_id} -n 40 --stop {{stop_text}} -o cut\nThe capital\n")
    cut = shell.user_ns["cut"]
    assert stop not in cut.content and full.startswith(cut.content) and cut.stop_reason.value == "end_of_turn"


class InterruptOnFirstText(CapturingDisplayPublisher):
    """Presses the stop button (SIGINT) as soon as the first generated text is on screen."""

    def publish(self, data, *args, **kwargs):
        super().publish(data, *args, **kwargs)
        if data.get("text/plain") and not getattr(self, "pressed", False):
            self.pressed = True
            _thread.interrupt_main()


def test_interrupt_with_the_real_engine(shell, tiny_model_id):
    shell.display_pub = InterruptOnFirstText()
    result = run(shell, f"%%complete --model {tiny_model_id} -n 0 -t 1.0 --seed 1 -o part\nOnce\n")
    assert isinstance(result.error_in_exec, GenerationInterrupted), result.error_in_exec
    part = shell.user_ns["part"]
    assert part.content == shell.user_ns["_"] and part.stop_reason.value == "out_of_tokens"
    context = registry.get(tiny_model_id).info.context_length
    assert 0 < metric(part, "completion_tokens") < context - 10
    ok = run(shell, f"%%complete --model {tiny_model_id} -n 3\nOnce\n")
    assert ok.error_in_exec is None and len(ok.result.tokens) == 3


def test_json_output_stays_valid_through_the_magic(shell, tiny_model_id):
    schema = json.dumps(
        {"type": "object", "properties": {"a": {"enum": ["yes", "no"]}}, "required": ["a"], "additionalProperties": False}
    )
    result = run(shell, f"%%complete --model {tiny_model_id} -n 30 --json-schema '{schema}'\nJSON:\n")
    assert result.error_in_exec is None
    assert json.loads(result.result)["a"] in ("yes", "no")
