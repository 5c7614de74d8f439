"""Remote engines as they really answer: llama.cpp's recorded exchanges and vLLM-shaped ones
(``fixtures/README.md``), replayed over a socket by ``remote_stub.ReplayServer``."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from nb_completion import complete, register_remote
from nb_completion.api.errors import CompletionError
from nb_completion.engine import registry
from nb_completion.engine.records import Delta, Finished
from nb_completion.remote.dialects import Dialect, openai_body
from nb_completion.remote.errors import error_from
from nb_completion.remote.openai_answer import OpenAIAnswer, Tally
from nb_completion.remote.records import sse_data
from nb_completion.service import build_request, open_events
from remote_stub import FIXTURES, ReplayServer, load_exchanges

LLAMA_MODEL = "SmolLM2-135M-Instruct-Q4_1"
VLLM_MODEL = "Qwen/Qwen2.5-0.5B"
GREEDY = {"strategy": {"type": "greedy"}}


def _fixture(folder: str, name: str) -> dict:
    return json.loads((FIXTURES / folder / name).read_text(encoding="utf-8"))


def _answer_events(folder: str, name: str, top_k: int) -> list:
    """A recorded answer parsed straight from its bytes (no server): the parser's own view."""
    response = _fixture(folder, name)["response"]
    body = response["body"]
    datas = sse_data(iter(body.split("\n"))) if response["content_type"].startswith("text/event-stream") else iter([body])
    return list(OpenAIAnswer(top_k, Tally()).events(datas))


def _tokens(events: list) -> list:
    return [t for e in events if isinstance(e, Delta) for t in e.tokens]


@pytest.fixture()
def llama_cpp():
    with ReplayServer(load_exchanges("llama_cpp_server")) as stub:
        backend = register_remote(stub.url, api="openai", name="llama-cpp-replay")
        yield stub, backend.info.identifier
        registry.unregister(backend.info.identifier)


@pytest.fixture()
def vllm():
    with ReplayServer(load_exchanges("vllm_server")) as stub:
        backend = register_remote(stub.url, api="openai", name="vllm-replay")
        yield stub, backend.info.identifier
        registry.unregister(backend.info.identifier)


# ---- detection ----------------------------------------------------------------------------------


def test_llama_cpp_is_detected_from_its_models_listing(llama_cpp):
    stub, name = llama_cpp
    backend = registry.get(name)
    assert backend.dialect == Dialect("llama.cpp")
    assert backend.remote_id == LLAMA_MODEL and backend.info.context_length == 2048
    assert backend.info.metadata["dialect"] == "llama.cpp"


def test_vllm_is_detected_with_its_version(vllm):
    stub, name = vllm
    backend = registry.get(name)
    assert backend.dialect == Dialect("vllm", (0, 11, 0))
    assert backend.remote_id == VLLM_MODEL and backend.info.context_length == 2048
    assert [r["path"] for r in stub.requests] == ["/v1/models", "/version"]


def test_an_unrevealing_listing_is_settled_by_the_first_answer():
    """A server whose /v1/models names no engine (and no /props, no /version) is a plain OpenAI
    one until its first answer carries llama.cpp's ``logprobs.content``."""
    listing = {
        "request": {"method": "GET", "path": "/v1/models", "body": None},
        "response": {
            "status": 200,
            "content_type": "application/json",
            "body": json.dumps({"object": "list", "data": [{"id": LLAMA_MODEL, "object": "model", "owned_by": "me"}]}),
        },
    }
    exchanges = [listing] + [e for e in load_exchanges("llama_cpp_server") if e["request"]["method"] == "POST"]
    with ReplayServer(exchanges) as stub:
        backend = register_remote(stub.url, api="openai", name="unrevealing")
        try:
            assert backend.dialect.name == "openai"
            response = complete(
                "The capital of France is", model_id="unrevealing", sampling_params={**GREEDY, "max_tokens": 6}, logprobs=3
            )
            assert response.content == " Paris.\n\nThe United"
            assert list(response.logprobs[0].logprobs_by_token) == [" Paris", " the", " London"]
            assert backend.dialect.name == "llama.cpp"
        finally:
            registry.unregister("unrevealing")


def test_explicit_llama_cpp_api_probes_nothing():
    with ReplayServer(load_exchanges("llama_cpp_server")) as stub:
        backend = register_remote(stub.url, LLAMA_MODEL, api="llama.cpp", name="explicit-llama", check=False)
        try:
            content = complete(
                "Count: one, two, three,",
                model_id="explicit-llama",
                sampling_params={**GREEDY, "max_tokens": 12, "stop": [" five"]},
            ).content
            assert content == " four,"
            assert [(r["method"], r["path"]) for r in stub.requests] == [("POST", "/v1/completions")]
            assert backend.dialect == Dialect("llama.cpp")
        finally:
            registry.unregister("explicit-llama")


# ---- llama.cpp: records, stop, structured output, errors ----------------------------------------


def test_llama_cpp_logprobs_become_token_records(llama_cpp):
    stub, name = llama_cpp
    request = build_request("The capital of France is", model_id=name, sampling_params={**GREEDY, "max_tokens": 6}, logprobs=3)
    events = list(open_events(request))
    recorded = json.loads(_fixture("llama_cpp_server", "completion-logprobs.json")["response"]["body"])["choices"][0]
    expected = recorded["logprobs"]["content"]
    tokens = _tokens(events)
    assert [t.token_id for t in tokens] == [e["id"] for e in expected] == [7042, 30, 198, 198, 504, 1797]
    assert [t.text for t in tokens] == [e["token"] for e in expected]
    assert "".join(t.text for t in tokens) == "".join(e.text for e in events if isinstance(e, Delta)) == recorded["text"]
    assert [t.logprob for t in tokens] == [e["logprob"] for e in expected]
    assert [t.rank for t in tokens] == [1] * 6  # greedy: the chosen token heads its alternatives
    for token, entry in zip(tokens, expected):
        assert token.top == tuple((a["token"], a["logprob"]) for a in entry["top_logprobs"])
        assert 0 < token.entropy
    assert [t.index for t in tokens] == list(range(6))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.stop_reason == "out_of_tokens"
    assert (finished.prompt_tokens, finished.completion_tokens) == (5, 6)
    sent = stub.posted()[-1]
    assert sent["logprobs"] == 3 and sent["stream"] is True and sent["temperature"] == 0

    response = complete(request)
    assert response.content == recorded["text"]
    assert [lp.logprobs_by_token for lp in response.logprobs] == [
        {a["token"]: a["logprob"] for a in e["top_logprobs"]} for e in expected
    ]


def test_llama_cpp_whole_and_streamed_answers_give_the_same_records():
    whole = _answer_events("llama_cpp_server", "completion-logprobs.json", 3)
    streamed = _answer_events("llama_cpp_server", "completion-logprobs-stream.json", 3)
    strip = lambda ts: [(t.token_id, t.text, t.logprob, t.rank, t.top) for t in ts]  # noqa: E731
    assert strip(_tokens(whole)) == strip(_tokens(streamed))
    assert whole[-1].stop_reason == streamed[-1].stop_reason == "out_of_tokens"


def test_llama_cpp_sampled_token_outside_the_top_k_keeps_its_exact_logprob():
    events = _answer_events("llama_cpp_server", "completion-sampled-stream.json", 2)
    tokens = _tokens(events)
    you = tokens[1]
    assert (you.token_id, you.text) == (346, " you")
    assert you.logprob == -3.5655179023742676  # llama.cpp's own value for the chosen token
    assert you.rank == 3  # not among the 2 reported: known to be below them
    assert [t for t, _ in you.top] == [" the", " I"]
    p = [math.exp(lp) for lp in (-1.7872118949890137, -2.165123462677002, you.logprob)]
    rest = 1 - sum(p)
    assert you.entropy == pytest.approx(-sum(x * math.log(x) for x in p + [rest]))  # the chosen one counts too
    assert len(tokens) == 8 and events[-1].completion_tokens == 8


def test_llama_cpp_split_characters_go_to_the_token_that_completes_them():
    """Each Japanese character here is two tokens; llama.cpp reports only the completing one, its
    bytes holding the whole character (8 tokens generated, 4 reported)."""
    for name in ("completion-split-characters-stream.json", "completion-split-characters.json"):
        events = _answer_events("llama_cpp_server", name, 2)
        tokens = _tokens(events)
        text = "".join(e.text for e in events if isinstance(e, Delta))
        assert "".join(t.text for t in tokens) == text
        assert [t.text for t in tokens][:3] == ["こ", "ん", "は"]
        # the 8th token is half a character: the stream holds it back, the whole answer shows "\ufffd"
        assert tokens[3].text == ("、" if "stream" in name else "、\ufffd") and tokens[3].piece == "、"
        assert [t.token_id for t in tokens] == [237, 237, 124, 29917]
        assert [t.rank for t in tokens] == [1, 1, 1, 1]
        assert events[-1].completion_tokens == 8


def test_llama_cpp_stop_string_tokens_get_no_record_and_the_end_token_keeps_one():
    stop = _tokens(_answer_events("llama_cpp_server", "completion-stop-logprobs-stream.json", 2))
    assert [t.text for t in stop] == [" four", ","]  # " five" was generated, withheld, and is not a record
    end = _answer_events("llama_cpp_server", "completion-grammar-end-token-stream.json", 2)
    tokens = _tokens(end)
    assert [(t.text, t.token_id) for t in tokens] == [("yes", 10407), (".", 30), ("", 2)]  # 2: the end token
    assert tokens[0].rank == 3 and tokens[0].logprob < -10  # the raw distribution: the grammar forced "yes"
    assert end[-1].stop_reason == "end_of_turn"


def test_llama_cpp_is_detected_from_props_when_its_listing_does_not_tell():
    listing = {
        "request": {"method": "GET", "path": "/v1/models", "body": None},
        "response": {
            "status": 200,
            "content_type": "application/json",
            "body": json.dumps({"object": "list", "data": [{"id": LLAMA_MODEL, "object": "model", "owned_by": "me"}]}),
        },
    }
    props = _fixture("llama_cpp_server", "props.json")
    with ReplayServer([listing, props]) as stub:
        backend = register_remote(stub.url, api="openai", name="props-detected")
        try:
            assert backend.dialect == Dialect("llama.cpp")
            assert [r["path"] for r in stub.requests] == ["/v1/models", "/props"]
        finally:
            registry.unregister("props-detected")


def test_llama_cpp_stop_string_is_not_in_the_output(llama_cpp):
    stub, name = llama_cpp
    response = complete("Count: one, two, three,", model_id=name, sampling_params={**GREEDY, "max_tokens": 12, "stop": [" five"]})
    assert response.content == " four,"
    assert response.stop_reason == "end_of_turn"
    assert stub.posted()[-1]["stop"] == [" five"]


def test_a_stop_string_the_remote_did_not_apply_is_cut_here(llama_cpp):
    """The logprobs recording was made without ``stop``; replayed for a request with one, it plays
    a remote that ignores ``stop``: the text and its records end before the stop string."""
    stub, name = llama_cpp
    request = build_request(
        "The capital of France is", model_id=name, sampling_params={**GREEDY, "max_tokens": 6, "stop": ["\n\n"]}, logprobs=3
    )
    events = list(open_events(request))
    assert "".join(e.text for e in events if isinstance(e, Delta)) == " Paris."
    assert [t.text for t in _tokens(events)] == [" Paris", "."]
    assert events[-1].stop_reason == "end_of_turn"
    assert stub.posted()[-1]["stop"] == ["\n\n"]


def test_llama_cpp_json_schema_goes_in_its_json_schema_field(llama_cpp):
    stub, name = llama_cpp
    schema = _fixture("llama_cpp_server", "completion-json-schema-field.json")["request"]["body"]["json_schema"]
    response = complete(
        "The capital of France, as JSON:",
        model_id=name,
        sampling_params={**GREEDY, "max_tokens": 40},
        response_format={"type": "json_schema", "json_schema": schema},
    )
    value = json.loads(response.content)
    jsonschema.validate(value, schema)
    assert value == {"city": "Paris", "country": "FRANCE"}
    sent = stub.posted()[-1]
    assert sent["json_schema"] == schema
    assert not {"response_format", "guided_json", "structured_outputs", "grammar"} & set(sent)


def test_llama_cpp_gbnf_goes_in_its_grammar_field(llama_cpp):
    stub, name = llama_cpp
    grammar = _fixture("llama_cpp_server", "completion-grammar.json")["request"]["body"]["grammar"]
    response = complete(
        "Is the sun a star? Answer:",
        model_id=name,
        sampling_params={**GREEDY, "max_tokens": 20},
        response_format={"type": "grammar", "bnf": {"gbnf": grammar}},
    )
    assert response.content == "yes because it is a celestial body orbiting the sun."
    assert stub.posted()[-1]["grammar"] == grammar


@pytest.mark.parametrize("kind, text", [("lark", 'start: "yes" | "no"'), ("regex", "(yes|no)")])
def test_what_llama_cpp_cannot_enforce_is_a_400_and_never_sent(llama_cpp, kind, text):
    stub, name = llama_cpp
    with pytest.raises(CompletionError) as refused:
        complete("Is the sun a star? Answer:", model_id=name, response_format={"type": "grammar", "bnf": {kind: text}})
    assert refused.value.status == 400
    assert refused.value.detail.startswith("response_format.bnf:")
    assert "llama.cpp" in refused.value.detail and "GBNF" in refused.value.detail and kind in refused.value.detail
    assert stub.posted() == []


@pytest.mark.parametrize(
    "fixture, prompt",
    [
        ("error-bad-grammar.json", "x"),
        ("error-prompt-too-long.json", None),
    ],
)
def test_llama_cpp_errors_keep_its_status_and_message(llama_cpp, fixture, prompt):
    stub, name = llama_cpp
    recorded = _fixture("llama_cpp_server", fixture)
    body = recorded["request"]["body"]
    fmt = {"type": "grammar", "bnf": {"gbnf": body["grammar"]}} if "grammar" in body else None
    with pytest.raises(CompletionError) as failed:
        complete(prompt or body["prompt"], model_id=name, sampling_params={"max_tokens": body["max_tokens"]}, response_format=fmt)
    error = json.loads(recorded["response"]["body"])["error"]
    assert failed.value.status == recorded["response"]["status"] == error["code"] == 400
    assert failed.value.detail == error["message"]
    assert failed.value.title == "Bad Request"


def test_llama_cpp_error_shapes_not_replayable_are_read_too():
    missing = _fixture("llama_cpp_server", "error-missing-prompt.json")["response"]
    error = error_from(json.loads(missing["body"]), missing["status"])
    assert (error.status, error.detail) == (400, "[json.exception.out_of_range.403] key 'prompt' not found")
    loading = error_from({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, 503)
    assert (loading.status, loading.title, loading.detail) == (503, "Service Unavailable", "Loading model")


# ---- vLLM -------------------------------------------------------------------------------------------


def test_vllm_logprobs_become_token_records(vllm):
    stub, name = vllm
    request = build_request("The capital of France is", model_id=name, sampling_params={**GREEDY, "max_tokens": 4}, logprobs=3)
    events = list(open_events(request))
    tokens = _tokens(events)
    assert [t.text for t in tokens] == [" Paris", ".", " It", " is"]
    assert [t.logprob for t in tokens] == [-0.3125, -0.5234, -1.1875, -0.4023]
    assert [t.rank for t in tokens] == [1, 1, 1, 1]
    assert tokens[2].top == ((" It", -1.1875), (" The", -1.3125), ("\n", -1.75))
    assert all(t.token_id == -1 for t in tokens)  # vLLM's completions logprobs carry texts only
    finished = events[-1]
    assert (finished.stop_reason, finished.prompt_tokens, finished.completion_tokens) == ("out_of_tokens", 5, 4)
    assert stub.posted()[-1]["stream_options"] == {"include_usage": True}


def test_vllm_sampled_request_pins_every_sampler_and_reads_a_rank_below_the_top_k(vllm):
    stub, name = vllm
    params = {"strategy": {"type": "top_p", "temperature": 0.8, "top_p": 0.9}, "max_tokens": 3}
    events = list(open_events(build_request("Once upon a time", model_id=name, sampling_params=params, logprobs=2), seed=7))
    there = _tokens(events)[1]
    assert (there.text, there.logprob, there.rank) == (" there", -2.9375, 3)
    sent = stub.posted()[-1]
    assert (sent["top_k"], sent["min_p"], sent["seed"], sent["temperature"], sent["top_p"]) == (-1, 0.0, 7, 0.8, 0.9)


def test_vllm_json_schema_goes_in_structured_outputs(vllm):
    stub, name = vllm
    schema = _fixture("vllm_server", "completion-json-stream.json")["request"]["body"]["structured_outputs"]["json"]
    response = complete(
        "The capital of France, as JSON:",
        model_id=name,
        sampling_params={**GREEDY, "max_tokens": 40},
        response_format={"type": "json_schema", "json_schema": schema},
    )
    jsonschema.validate(json.loads(response.content), schema)
    sent = stub.posted()[-1]
    assert sent["structured_outputs"] == {"json": schema} and "guided_json" not in sent


def test_vllm_regex_goes_in_structured_outputs(vllm):
    stub, name = vllm
    response = complete(
        "Is the sun a star? Answer:",
        model_id=name,
        sampling_params={**GREEDY, "max_tokens": 10},
        response_format={"type": "grammar", "bnf": {"regex": "(yes|no)\\."}},
    )
    assert response.content == "yes." and response.stop_reason == "end_of_turn"
    assert stub.posted()[-1]["structured_outputs"] == {"regex": "(yes|no)\\."}


def test_vllm_stop_string_is_not_in_the_output(vllm):
    stub, name = vllm
    response = complete("Count: one, two, three,", model_id=name, sampling_params={**GREEDY, "max_tokens": 12, "stop": [" five"]})
    assert (response.content, response.stop_reason) == (" four,", "end_of_turn")


@pytest.mark.parametrize("fixture", ["error-logprobs-limit.json", "error-prompt-too-long.json"])
def test_vllm_errors_keep_its_status_and_message(vllm, fixture):
    stub, name = vllm
    recorded = _fixture("vllm_server", fixture)
    body = recorded["request"]["body"]
    with pytest.raises(CompletionError) as failed:
        complete(
            body["prompt"],
            model_id=name,
            sampling_params={"max_tokens": body.get("max_tokens", 16)},
            logprobs=body.get("logprobs"),
        )
    answer = json.loads(recorded["response"]["body"])
    message = (answer.get("error") or answer)["message"]
    assert (failed.value.status, failed.value.detail) == (400, message)
    if fixture == "error-logprobs-limit.json":
        assert "max allowed: 5" in failed.value.detail  # the remote's own limit, named


def test_vllm_error_mid_stream_is_raised_after_the_text_so_far(vllm):
    stub, name = vllm
    events = open_events(build_request("Tell me a story", model_id=name, sampling_params={"max_tokens": 0}))
    assert next(events).text == " Once"
    with pytest.raises(CompletionError) as failed:
        list(events)
    assert (failed.value.status, failed.value.detail) == (500, "The engine died unexpectedly.")


@pytest.mark.parametrize(
    "version, field", [((0, 9, 2), "guided_json"), ((0, 10, 2), "structured_outputs"), (None, "structured_outputs")]
)
def test_vllm_structured_output_field_follows_its_version(version, field):
    request = build_request("x", model_id="m", response_format={"type": "json_schema", "json_schema": {"type": "object"}})
    body = openai_body(request, "m", 0, None, Dialect("vllm", version))
    assert field in body and not ({"guided_json", "structured_outputs"} - {field}) & set(body)


# ---- an unrecognised OpenAI-compatible server ----------------------------------------------------


def test_unrecognised_server_gets_no_constraint_it_may_ignore():
    request = build_request("x", model_id="m", response_format={"type": "json_schema", "json_schema": {"type": "object"}})
    with pytest.raises(CompletionError) as refused:
        openai_body(request, "m", 0, None, Dialect("openai"))
    assert refused.value.status == 400 and "not recognised" in refused.value.detail
    with pytest.raises(CompletionError) as too_many:
        openai_body(build_request("x", model_id="m", logprobs=8), "m", 8, None, Dialect("openai"))
    assert too_many.value.status == 400 and "limit is 5" in too_many.value.detail
