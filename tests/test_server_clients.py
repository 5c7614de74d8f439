"""Real clients against the server: ``llama-stack-client`` 0.2.12 (on the real default model) and
the ``openai`` client's ``completions.create``."""

from __future__ import annotations

import json

import pytest

from nb_completion import serve

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---- llama-stack-client on the real default model --------------------------------------------------


@pytest.fixture(scope="module")
def real_server(real_model_id):
    handle = serve(port=0, models=[real_model_id])
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def stack(real_server):
    from llama_stack_client import LlamaStackClient

    return LlamaStackClient(base_url=real_server.url, timeout=120)


PROMPT = "The capital of France is"


@pytest.mark.real_model
def test_llama_stack_client_lists_models(stack, real_model_id):
    models = stack.models.list()
    assert [m.identifier for m in models] == [real_model_id]
    assert models[0].api_model_type == "llm" and models[0].type == "model"


@pytest.mark.real_model
def test_llama_stack_client_completion_plain_and_streamed(stack, real_model_id):
    response = stack.inference.completion(model_id=real_model_id, content=PROMPT, sampling_params={"max_tokens": 12})
    assert response.stop_reason in ("end_of_turn", "out_of_tokens")
    assert "Paris" in response.content
    metrics = {m.metric: m.value for m in response.metrics}
    assert 0 < metrics["completion_tokens"] <= 12

    chunks = list(
        stack.inference.completion(model_id=real_model_id, content=PROMPT, sampling_params={"max_tokens": 12}, stream=True)
    )
    assert "".join(c.delta for c in chunks) == response.content  # greedy either way
    assert chunks[-1].stop_reason == response.stop_reason and chunks[-1].delta == ""
    assert all(c.stop_reason is None for c in chunks[:-1])


@pytest.mark.real_model
def test_llama_stack_client_logprobs(stack, real_model_id):
    response = stack.inference.completion(
        model_id=real_model_id, content=PROMPT, sampling_params={"max_tokens": 6}, logprobs={"top_k": 3}
    )
    n = {m.metric: m.value for m in response.metrics}["completion_tokens"]
    assert len(response.logprobs) == n
    first = response.logprobs[0].logprobs_by_token
    assert 1 <= len(first) <= 3 and all(v <= 0 for v in first.values())
    assert max(first, key=first.get) == " Paris"  # greedy picks the most likely token
    streamed = list(
        stack.inference.completion(
            model_id=real_model_id, content=PROMPT, sampling_params={"max_tokens": 6}, logprobs={"top_k": 3}, stream=True
        )
    )
    entries = [lp.logprobs_by_token for c in streamed for lp in (c.logprobs or [])]
    assert [sorted(e) for e in entries] == [sorted(lp.logprobs_by_token) for lp in response.logprobs]


@pytest.mark.real_model
def test_llama_stack_client_json_schema(stack, real_model_id):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    response = stack.inference.completion(
        model_id=real_model_id,
        content="Give the capital of France as JSON with keys city and country: ",
        sampling_params={"max_tokens": 60},
        response_format={"type": "json_schema", "json_schema": schema},
    )
    value = json.loads(response.content)
    assert set(value) == {"city", "country"} and all(isinstance(v, str) for v in value.values())


@pytest.mark.real_model
def test_llama_stack_client_unknown_model_and_bad_request(stack, real_model_id):
    from llama_stack_client import APIStatusError, BadRequestError, NotFoundError

    with pytest.raises(APIStatusError) as unknown:
        stack.inference.completion(model_id="no-such-model", content=PROMPT)
    assert isinstance(unknown.value, NotFoundError) and unknown.value.status_code == 404
    assert real_model_id in unknown.value.body["detail"]
    with pytest.raises(BadRequestError) as bad:
        stack.inference.completion(model_id=real_model_id, content=PROMPT, sampling_params={"max_tokens": -3}, stream=True)
    assert bad.value.body["status"] == 400 and "sampling_params.max_tokens" in bad.value.body["detail"]


# ---- the openai client (tiny model, fast) ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_server(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id], api_key="sk-test")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def oai(tiny_server):
    from openai import OpenAI

    return OpenAI(base_url=tiny_server.url + "/v1", api_key="sk-test", max_retries=0)


def test_openai_client_completions(oai, tiny_model_id):
    result = oai.completions.create(model=tiny_model_id, prompt="Once upon a time", max_tokens=10, temperature=0, logprobs=2)
    choice = result.choices[0]
    assert choice.finish_reason == "length" and result.usage.completion_tokens == 10
    assert len(choice.logprobs.tokens) == 10 and len(choice.logprobs.top_logprobs) == 10
    # each token is spelled as its alternatives spell it (part of a character as ‹EF BC›), so
    # greedy's token is the top key of its own entry; offsets count the text it adds
    offsets = choice.logprobs.text_offset
    assert offsets == sorted(offsets) and offsets[0] == 0 and offsets[-1] <= len(choice.text)
    for i, token in enumerate(choice.logprobs.tokens):
        top = choice.logprobs.top_logprobs[i]
        assert token == max(top, key=top.get), (i, token, top)
    again = oai.completions.create(model=tiny_model_id, prompt="Once upon a time", max_tokens=10, temperature=0)
    assert again.choices[0].text == choice.text


def test_openai_client_streamed(oai, tiny_model_id):
    whole = oai.completions.create(model=tiny_model_id, prompt="Once upon a time", max_tokens=8, temperature=0)
    stream = oai.completions.create(model=tiny_model_id, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_openai_client_seeded_sampling_repeats(oai, tiny_model_id):
    kw = dict(model=tiny_model_id, prompt="Hello", max_tokens=12, temperature=1.2, top_p=0.9, seed=11)
    assert oai.completions.create(**kw).choices[0].text == oai.completions.create(**kw).choices[0].text


def test_openai_client_errors(oai, tiny_server, tiny_model_id):
    import openai

    with pytest.raises(openai.NotFoundError) as unknown:
        oai.completions.create(model="nope", prompt="x")
    assert tiny_model_id in unknown.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        oai.completions.create(model=tiny_model_id, prompt="x", temperature=-2)
    assert "temperature" in bad.value.message
    wrong = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model=tiny_model_id, prompt="x")
