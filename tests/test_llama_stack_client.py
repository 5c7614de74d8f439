"""``llama-stack-client`` 0.2.12, the real package, over the calls llama-stack's own completion
integration tests make (tests/integration/inference/ at v0.2.12): ``completions.create`` on the
``/v1/openai/v1`` alias (plain and streamed), ``inference.completion`` (plain, streamed, stop
strings, logprobs, a JSON schema), ``inference.batch_completion``, ``models.list`` /
``models.retrieve`` and ``providers.list``; on the tiny random Llama, greedy, so the routes can be
compared answer for answer."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from nb_completion import serve
from server_support import sse_events

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PROMPT = "Once upon a time"  # the tiny model's greedy answer holds tokens that are part of a character
PARTIAL = re.compile(r"^(‹[0-9A-F]{2}( [0-9A-F]{2})*›)+$")


@pytest.fixture(scope="module")
def server(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id])
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def stack(server):
    from llama_stack_client import LlamaStackClient

    return LlamaStackClient(base_url=server.url, timeout=60, max_retries=0)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def greedy(stack, model: str, content: str, max_tokens: int, **kw):
    return stack.inference.completion(model_id=model, content=content, sampling_params={"max_tokens": max_tokens}, **kw)


# ---- models and providers ---------------------------------------------------------------------------


def test_models_and_providers(stack, tiny_model_id):
    models = stack.models.list()
    assert [m.identifier for m in models] == [tiny_model_id]
    assert models[0].model_type == "llm" and models[0].provider_id == "nb_completion"
    one = stack.models.retrieve(tiny_model_id)
    assert one.identifier == tiny_model_id and one.provider_resource_id == models[0].provider_resource_id
    providers = stack.providers.list()
    assert [(p.api, p.provider_id) for p in providers] == [("inference", models[0].provider_id)]
    assert providers[0].provider_type.startswith("inline::")

    from llama_stack_client import NotFoundError

    with pytest.raises(NotFoundError):
        stack.models.retrieve("no-such-model")


# ---- completions.create on the /v1/openai/v1 alias ------------------------------------------------------


def test_alias_stream_has_no_done_line(http, tiny_model_id):
    """llama-stack's server ends a stream after its last chunk; its client parses every event as
    JSON, so the alias sends no ``[DONE]`` (the OpenAI route still does), one choice or several."""
    for body in (
        {"max_tokens": 4},
        {"max_tokens": 4, "n": 2, "stream_options": {"include_usage": True}},
        {"max_tokens": 0, "echo": True},
    ):
        body = {"model": tiny_model_id, "prompt": PROMPT, "temperature": 0, "stream": True, **body}
        alias = sse_events(http.post("/v1/openai/v1/completions", json=body).text)
        assert [json.loads(e)["object"] for e in alias] == ["text_completion"] * len(alias), body
        openai = sse_events(http.post("/v1/completions", json=body).text)
        assert openai[-1] == "[DONE]" and openai[:-1] == [e for e in openai[:-1] if e != "[DONE]"]
        assert len(openai) == len(alias) + 1, body


def test_completions_create_plain_and_streamed(stack, tiny_model_id):
    plain = stack.completions.create(model=tiny_model_id, prompt=PROMPT, max_tokens=10, temperature=0)
    choice = plain.choices[0]
    assert plain.object == "text_completion" and plain.model == tiny_model_id
    assert choice.finish_reason == "length" and choice.text
    chunks = list(stack.completions.create(model=tiny_model_id, prompt=PROMPT, max_tokens=10, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == choice.text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.id == chunks[0].id for c in chunks)


def test_completions_create_fields(stack, http, tiny_model_id):
    """The fields its ``create`` takes, as it sends them: ``logprobs`` a boolean (one entry per
    token), ``n`` / ``best_of``, ``echo``, ``stop``, ``seed``, penalties and ``logit_bias``."""
    kw = dict(model=tiny_model_id, prompt=PROMPT, max_tokens=6, temperature=0)
    base = stack.completions.create(**kw).choices[0].text
    scored = stack.completions.create(**kw, logprobs=True).choices[0].logprobs
    assert len(scored.tokens) == 6 and [len(top) for top in scored.top_logprobs] == [1] * 6
    assert [next(iter(top)) for top in scored.top_logprobs] == scored.tokens  # greedy: the chosen one is the top one

    several = stack.completions.create(**{**kw, "temperature": 1.0}, n=2, best_of=3, seed=5)
    assert [c.index for c in several.choices] == [0, 1]
    again = stack.completions.create(**{**kw, "temperature": 1.0}, n=2, best_of=3, seed=5)
    assert [c.text for c in again.choices] == [c.text for c in several.choices]

    echoed = stack.completions.create(**kw, echo=True)
    assert echoed.choices[0].text == PROMPT + base

    cut = stack.completions.create(**kw, stop=[base[2:4]])
    assert cut.choices[0].text == base[: base.index(base[2:4])] and cut.choices[0].finish_reason == "stop"

    piece = http.post("/detokenize", json={"model": tiny_model_id, "tokens": [300]}).json()["prompt"]
    assert stack.completions.create(**kw, logit_bias={"300": 100}).choices[0].text == piece * 6

    long = {**kw, "max_tokens": 12, "logprobs": True}
    repeats = stack.completions.create(**long).choices[0].logprobs.tokens
    assert len(set(repeats)) < len(repeats)  # greedy repeats itself here
    penalised = stack.completions.create(**long, frequency_penalty=2.0, presence_penalty=2.0).choices[0].logprobs.tokens
    assert penalised[0] == repeats[0] and penalised != repeats  # penalties weigh the generated tokens only


def test_completions_create_errors(stack, tiny_model_id):
    from llama_stack_client import BadRequestError, NotFoundError

    with pytest.raises(NotFoundError):
        stack.completions.create(model="no-such-model", prompt=PROMPT)
    with pytest.raises(BadRequestError) as bad:
        stack.completions.create(model=tiny_model_id, prompt=PROMPT, max_tokens=-1)
    assert "max_tokens" in json.dumps(bad.value.body)


# ---- inference.completion and batch_completion -------------------------------------------------------


def test_inference_completion_plain_and_streamed(stack, tiny_model_id):
    plain = greedy(stack, tiny_model_id, PROMPT, 10)
    assert plain.stop_reason == "out_of_tokens" and plain.content
    metrics = {m.metric: m.value for m in plain.metrics}
    assert metrics["completion_tokens"] == 10 and metrics["prompt_tokens"] > 0
    chunks = list(greedy(stack, tiny_model_id, PROMPT, 10, stream=True))
    assert "".join(c.delta for c in chunks) == plain.content
    assert chunks[-1].stop_reason == "out_of_tokens" and all(c.stop_reason is None for c in chunks[:-1])


def test_inference_completion_stop(stack, tiny_model_id):
    whole = greedy(stack, tiny_model_id, PROMPT, 10).content
    stop = whole[3:5]
    plain = stack.inference.completion(model_id=tiny_model_id, content=PROMPT, sampling_params={"max_tokens": 10, "stop": [stop]})
    assert plain.content == whole[: whole.index(stop)]
    assert plain.stop_reason == "end_of_turn"  # as llama-stack servers answer a stop string
    streamed = stack.inference.completion(
        model_id=tiny_model_id, content=PROMPT, sampling_params={"max_tokens": 10, "stop": [stop]}, stream=True
    )
    assert "".join(c.delta for c in streamed) == plain.content


def test_inference_completion_logprobs(stack, tiny_model_id):
    plain = greedy(stack, tiny_model_id, PROMPT, 5, logprobs={"top_k": 1})
    assert len(plain.logprobs) == 5 and all(len(lp.logprobs_by_token) == 1 for lp in plain.logprobs)
    wide = greedy(stack, tiny_model_id, PROMPT, 5, logprobs={"top_k": 3})
    assert [len(lp.logprobs_by_token) for lp in wide.logprobs] == [3] * 5
    assert [max(lp.logprobs_by_token, key=lp.logprobs_by_token.get) for lp in wide.logprobs] == [
        next(iter(lp.logprobs_by_token)) for lp in plain.logprobs
    ]
    chunks = list(greedy(stack, tiny_model_id, PROMPT, 5, logprobs={"top_k": 1}, stream=True))
    streamed = [lp.logprobs_by_token for c in chunks for lp in (c.logprobs or [])]
    assert streamed == [lp.logprobs_by_token for lp in plain.logprobs]
    assert not chunks[-1].logprobs  # the closing chunk carries the stop reason only


def test_inference_completion_json_schema(stack, tiny_model_id):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "year": {"type": "string", "pattern": "^[0-9]{4}$"}},
        "required": ["name", "year"],
        "additionalProperties": False,
    }
    response = stack.inference.completion(
        model_id=tiny_model_id,
        content=PROMPT,
        sampling_params={"max_tokens": 60},
        response_format={"type": "json_schema", "json_schema": schema},
    )
    import jsonschema

    jsonschema.validate(json.loads(response.content), schema)


def test_batch_completion_matches_one_by_one(stack, tiny_model_id):
    contents = [PROMPT, "The capital of France is", "All you need is"]
    batch = stack.inference.batch_completion(
        model_id=tiny_model_id, content_batch=contents, sampling_params={"max_tokens": 6}, logprobs={"top_k": 2}
    )
    assert len(batch.batch) == len(contents)
    for content, answer in zip(contents, batch.batch):
        alone = greedy(stack, tiny_model_id, content, 6, logprobs={"top_k": 2})
        assert answer.content == alone.content and answer.stop_reason == alone.stop_reason
        for together, one in zip(answer.logprobs, alone.logprobs, strict=True):  # batched: the same up to rounding
            assert list(together.logprobs_by_token) == list(one.logprobs_by_token)
            assert list(together.logprobs_by_token.values()) == pytest.approx(list(one.logprobs_by_token.values()), abs=1e-4)


# ---- one spelling of a token that is part of a character ----------------------------------------------


def test_partial_character_tokens_spelled_alike_on_every_route(stack, tiny_model_id):
    """A token holding part of a character is ``‹XX›`` (its bytes) in OpenAI's ``tokens``, in its
    ``top_logprobs`` keys and in llama-stack's ``logprobs_by_token``, plain or streamed; streamed,
    its entry comes with the chunk that delivers the character."""
    openai = stack.completions.create(model=tiny_model_id, prompt=PROMPT, max_tokens=12, temperature=0, logprobs=3)
    block = openai.choices[0].logprobs
    assert any(PARTIAL.match(t) for t in block.tokens), block.tokens  # the case under test occurs
    for token, top in zip(block.tokens, block.top_logprobs):
        assert token in top, (token, top)
    plain = greedy(stack, tiny_model_id, PROMPT, 12, logprobs={"top_k": 3})
    assert [list(lp.logprobs_by_token) for lp in plain.logprobs] == [list(top) for top in block.top_logprobs]
    chunks = list(greedy(stack, tiny_model_id, PROMPT, 12, logprobs={"top_k": 1}, stream=True))
    assert [next(iter(lp.logprobs_by_token)) for c in chunks for lp in (c.logprobs or [])] == block.tokens
    # a token that adds no text yet goes out with the chunk that delivers its text: no chunk but
    # the last has an empty delta (llama-stack's tests: "no token, no logprobs")
    assert all(c.delta and c.logprobs for c in chunks[:-1]) and not chunks[-1].delta
    assert max(len(c.logprobs) for c in chunks[:-1]) > 1
