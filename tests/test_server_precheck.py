"""The server prepares each request before queueing and hands its work to the engine: per HTTP
request the prompt is tokenized once and its grammar compiled once (``backend.prepare``'s
``Plan``, carried through the queue), and the output is what the engine gives when it does both
itself."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from nb_completion import serve
from nb_completion.engine import constraints, registry
from nb_completion.engine.tiny import register_tiny_model
from nb_completion.service import build_request, complete, open_events, to_response

COMPLETION = "/v1/inference/completion"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
JSON_FORMAT = {"type": "json_schema", "json_schema": SCHEMA}
REGEX_FORMAT = {"type": "grammar", "bnf": {"regex": "(ab|ba){3,8}"}}
PROMPT = "The capital of France is"


class Counts:
    """How often this backend's tokenizer encoded text and a constraint was compiled with it."""

    def __init__(self, backend):
        self.backend = backend
        self.encoded: list[str] = []
        self.compiled = 0
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.encoded, self.compiled = [], 0


@pytest.fixture(scope="module")
def counted():
    """A tiny model of its own (its tokenizer is watched), served over HTTP."""
    backend = register_tiny_model("tiny-precheck")
    counts = Counts(backend)
    patch = pytest.MonkeyPatch()
    tokenizer_class = type(backend.tokenizer)
    encode_plus = tokenizer_class._encode_plus  # what __call__, encode and encode_plus all run

    def counting_encode_plus(self, text, *args, **kwargs):
        if self is backend.tokenizer:
            with counts.lock:
                counts.encoded.append(text)
        return encode_plus(self, text, *args, **kwargs)

    compile_constraint = constraints.compile_constraint

    def counting_compile(response_format, tokenizer, vocab_size):
        if tokenizer is backend.tokenizer:
            with counts.lock:
                counts.compiled += 1
        return compile_constraint(response_format, tokenizer, vocab_size)

    patch.setattr(tokenizer_class, "_encode_plus", counting_encode_plus)
    patch.setattr(constraints, "compile_constraint", counting_compile)
    handle = serve(port=0, models=[backend.info.identifier])
    try:
        with httpx.Client(base_url=handle.url, timeout=60) as client:
            yield client, counts
    finally:
        handle.stop()
        patch.undo()
        registry.unregister(backend.info.identifier)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("response_format", [JSON_FORMAT, REGEX_FORMAT], ids=["json_schema", "regex"])
def test_a_request_is_tokenized_once_and_its_grammar_compiled_once(counted, stream, response_format):
    client, counts = counted
    model_id = counts.backend.info.identifier
    expected = complete(PROMPT, model_id=model_id, sampling_params={"max_tokens": 24}, response_format=response_format)
    counts.reset()
    response = client.post(
        COMPLETION,
        json={
            "model_id": model_id,
            "content": PROMPT,
            "sampling_params": {"max_tokens": 24},
            "response_format": response_format,
            "stream": stream,
        },
    )
    assert response.status_code == 200, response.text
    assert counts.encoded == [PROMPT] and counts.compiled == 1
    # The handed-over constraint was at its start (the precheck's trial step ran on a copy):
    # the output is the one the engine gives when it tokenizes and compiles by itself.
    if stream:
        text = "".join(json.loads(line[6:])["delta"] for line in response.text.split("\n\n") if line)
    else:
        text = response.json()["content"]
    assert text == expected.content and text


def test_the_openai_route_tokenizes_once_too(counted):
    client, counts = counted
    model_id = counts.backend.info.identifier
    expected = complete(PROMPT, model_id=model_id, sampling_params={"max_tokens": 12})
    counts.reset()
    response = client.post("/v1/completions", json={"model": model_id, "prompt": PROMPT, "max_tokens": 12, "temperature": 0})
    assert response.status_code == 200, response.text
    assert counts.encoded == [PROMPT] and counts.compiled == 0
    assert response.json()["choices"][0]["text"] == expected.content


def test_a_grammar_that_fails_at_its_first_token_is_still_a_400_before_the_queue(counted):
    client, counts = counted
    counts.reset()
    body = {
        "model_id": counts.backend.info.identifier,
        "content": "x",
        "response_format": {"type": "grammar", "bnf": {"regex": "a{1000000}"}},
    }
    response = client.post(COMPLETION, json=body)
    assert response.status_code == 400 and response.json()["detail"].startswith("response_format.bnf.regex:")
    assert counts.compiled == 1  # the engine never saw it


def test_a_plan_runs_only_on_the_backend_it_was_prepared_with(tiny_backend, counted):
    """A plan handed to another backend (say, one registered under the same id after the server
    prepared the request) is ignored: that backend prepares the request itself."""
    _, counts = counted
    other = counts.backend
    request = build_request(PROMPT, model_id=other.info.identifier, sampling_params={"max_tokens": 6})
    foreign = tiny_backend.prepare(request, ids=[1, 2, 3])
    assert foreign.backend is tiny_backend and foreign.ids == [1, 2, 3]
    ran = to_response(open_events(request, plan=foreign), None)
    own = to_response(open_events(request, plan=other.prepare(request)), None)
    assert ran.content == own.content and ran.content
    prompt_ids = other.encode(PROMPT)
    prompt_tokens = {m.metric: m.value for m in ran.metrics}["prompt_tokens"]
    assert len(prompt_ids) != 3 and prompt_tokens == len(prompt_ids)  # its own tokens, not [1, 2, 3]


def test_the_default_model_loads_on_its_first_request(monkeypatch):
    """``nb-completion serve`` without ``--model``: the default model is listed but not loaded;
    its first request loads it (the precheck needs its tokenizer) instead of answering 404."""
    from nb_completion.engine import loading

    monkeypatch.delitem(registry._backends, registry.DEFAULT_MODEL_ID, raising=False)
    loads = []

    def load_model(model_id=None, **kwargs):
        loads.append(model_id)
        return register_tiny_model(registry.DEFAULT_MODEL_ID)

    monkeypatch.setattr(loading, "load_model", load_model)
    handle = serve(port=0)
    try:
        with httpx.Client(base_url=handle.url, timeout=60) as client:
            body = {"model_id": registry.DEFAULT_MODEL_ID, "content": PROMPT, "sampling_params": {"max_tokens": 3}}
            response = client.post(COMPLETION, json=body)
    finally:
        handle.stop()
        registry.unregister(registry.DEFAULT_MODEL_ID)
    assert response.status_code == 200, response.text
    assert loads == [registry.DEFAULT_MODEL_ID]
