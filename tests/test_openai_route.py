"""OpenAI's /v1/completions as its harnesses send it: token-id prompts, batches of prompts, n and
best_of, max_tokens 0, echo with the end token's logprob kept, up to 16 stop strings, every
error's param named as this route names it. Over a real in-process server on the tiny model."""

from __future__ import annotations

import json

import httpx
import pytest

from nb_completion import serve
from nb_completion.engine import registry
from nb_completion.scoring import score_ids
from server_support import sse_events

ROUTE = "/v1/completions"


@pytest.fixture(scope="module")
def server(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id])
    yield handle
    handle.stop()


@pytest.fixture()
def post(server, tiny_model_id):
    def send(**body):
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return client.post(ROUTE, json={"model": tiny_model_id, **body})

    return send


def test_a_token_id_prompt_is_used_as_it_is(post, tiny_backend):
    ids = tiny_backend.encode("Once upon a time")
    by_ids = post(prompt=ids, max_tokens=6, temperature=0).json()
    by_text = post(prompt="Once upon a time", max_tokens=6, temperature=0).json()
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    assert by_ids["usage"]["prompt_tokens"] == len(ids)


def test_a_batch_of_prompts_gives_one_choice_each_in_order(post, tiny_backend):
    prompts = ["Once upon a time", "The capital of France is", "def add(a, b):"]
    batch = post(prompt=prompts, max_tokens=5, temperature=0).json()
    assert [c["index"] for c in batch["choices"]] == [0, 1, 2]
    for prompt, choice in zip(prompts, batch["choices"]):
        alone = post(prompt=prompt, max_tokens=5, temperature=0).json()["choices"][0]
        assert choice["text"] == alone["text"]
    ids_batch = post(prompt=[tiny_backend.encode(p) for p in prompts], max_tokens=5, temperature=0).json()
    assert [c["text"] for c in ids_batch["choices"]] == [c["text"] for c in batch["choices"]]


def test_n_choices_per_prompt_are_indexed_prompt_times_n_plus_j(post):
    answer = post(prompt=["Once upon a time", "The sky"], n=3, max_tokens=4, temperature=1.0, seed=5).json()
    assert [c["index"] for c in answer["choices"]] == list(range(6))
    again = post(prompt=["Once upon a time", "The sky"], n=3, max_tokens=4, temperature=1.0, seed=5).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in answer["choices"]]  # seeded
    assert answer["usage"]["completion_tokens"] == sum(4 for _ in range(6))


def test_best_of_keeps_the_answers_with_the_best_mean_logprob(post):
    answer = post(prompt="Once upon a time", n=1, best_of=4, max_tokens=6, temperature=1.0, seed=1, logprobs=0).json()
    (kept,) = answer["choices"]
    mean = sum(kept["logprobs"]["token_logprobs"]) / len(kept["logprobs"]["token_logprobs"])
    for j in range(4):  # the four it chose from: seeds 1..4, each alone
        other = post(prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=1 + j, logprobs=0).json()["choices"][0]
        values = other["logprobs"]["token_logprobs"]
        assert mean >= sum(values) / len(values) - 1e-5  # the same run alone or beside three: float rounding


def test_max_tokens_0_generates_nothing(post, server):
    answer = post(prompt="Once upon a time", max_tokens=0)
    assert answer.status_code == 200
    body = answer.json()
    assert body["choices"][0]["text"] == "" and body["usage"]["completion_tokens"] == 0
    streamed = httpx.post(
        server.url + ROUTE, json={**json.loads(answer.request.content), "stream": True, "echo": True, "logprobs": 1}
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]" and json.loads(events[0])["choices"][0]["text"] == "Once upon a time"


def test_echo_keeps_every_prompt_token_and_the_generated_end_token(post, tiny_backend, tiny_model_id):
    """lm-eval's loglikelihood: echo, max_tokens 1, and it drops the LAST entry as the generated
    token. So the generated token must have its entry even when it is the end token."""
    ids = tiny_backend.encode("The capital of France is Paris")
    body = post(prompt=ids, echo=True, max_tokens=1, logprobs=1, temperature=0).json()
    lps = body["choices"][0]["logprobs"]["token_logprobs"]
    assert len(lps) == len(ids) + 1 and lps[0] is None
    scored = score_ids(registry.registered(tiny_model_id), ids)
    assert lps[1 : len(ids)] == pytest.approx([t.logprob for t in scored[1:]], abs=1e-4)


@pytest.mark.real_model
def test_a_run_ending_on_its_end_token_lists_that_tokens_logprob(real_backend, real_model_id):
    """The default model answers this raw prompt with its end token at once."""
    from nb_completion import complete

    prompt = "Write a long story about a dragon."
    response = complete(prompt, model_id=real_model_id, sampling_params={"max_tokens": 40}, logprobs={"top_k": 1})
    assert response.stop_reason.value == "end_of_turn" and response.content == ""
    assert {m.metric: m.value for m in response.metrics}["completion_tokens"] == len(response.logprobs) == 1
    assert list(response.logprobs[0].logprobs_by_token) == ["<|im_end|>"]
    handle = serve(port=0, models=[real_model_id])
    try:
        body = {"model": real_model_id, "prompt": prompt, "max_tokens": 40, "temperature": 0, "logprobs": 1}
        answer = httpx.post(handle.url + ROUTE, json=body, timeout=120).json()["choices"][0]
    finally:
        handle.stop()
    assert answer["logprobs"]["tokens"] == ["<|im_end|>"] and answer["finish_reason"] == "stop"
    assert answer["logprobs"]["token_logprobs"][0] == pytest.approx(
        response.logprobs[0].logprobs_by_token["<|im_end|>"], abs=1e-5
    )


def test_sixteen_stop_strings_are_taken_and_seventeen_refused_naming_stop(post):
    stops = [f"zz{i}" for i in range(15)] + [" "]
    answer = post(prompt="Once upon a time", max_tokens=20, temperature=0, stop=stops).json()
    assert " " not in answer["choices"][0]["text"]
    refused = post(prompt="Once upon a time", stop=[f"s{i}" for i in range(17)])
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stop"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "no-such-model"}, "model"),
        ({"prompt": [[1, 2], [10**9]]}, "prompt[1]"),
        ({"prompt": []}, "prompt"),
        ({"n": 0}, "n"),
        ({"n": 2, "best_of": 1}, "best_of"),
        ({"best_of": 2, "stream": True}, "best_of"),
    ],
)
def test_errors_name_this_routes_fields(post, body, param):
    answer = post(**{"prompt": "Once", "max_tokens": 2, **body})
    assert 400 <= answer.status_code < 500
    assert answer.json()["error"]["param"] == param


def test_the_openai_sdk_reads_batches_and_n(server, tiny_model_id):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    result = client.completions.create(model=tiny_model_id, prompt=["Once", "The sky"], n=2, max_tokens=3, temperature=0)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert result.choices[0].text == result.choices[1].text  # greedy: the same twice
    stream = client.completions.create(model=tiny_model_id, prompt=["Once", "The sky"], max_tokens=3, temperature=0, stream=True)
    texts = {0: "", 1: ""}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == {0: result.choices[0].text, 1: result.choices[2].text}


# ---- the routes clients probe besides completion --------------------------------------------------


def test_one_model_by_id_tokenize_and_detokenize(server, tiny_model_id, tiny_backend):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        listed = client.get("/v1/models").json()["data"]
        one = client.get(f"/v1/models/{tiny_model_id}")
        assert one.status_code == 200 and one.json() == next(m for m in listed if m["id"] == tiny_model_id)
        missing = client.get("/v1/models/no-such/model")
        assert missing.status_code == 404
        tokens = client.post("/tokenize", json={"model": tiny_model_id, "prompt": "Once upon a time"}).json()
        assert tokens["tokens"] == tiny_backend.encode("Once upon a time") and tokens["count"] == len(tokens["tokens"])
        text = client.post("/detokenize", json={"model": tiny_model_id, "tokens": tokens["tokens"]}).json()
        assert text["prompt"] == tiny_backend.tokenizer.decode(tokens["tokens"])
        bad = client.post("/detokenize", json={"model": tiny_model_id, "tokens": [-1]})
        assert bad.status_code == 400 and "tokens" in bad.json()["detail"]


def test_llama_stack_02_routes(server, tiny_model_id):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        providers = client.get("/v1/providers").json()["data"]
        assert [p["api"] for p in providers] == ["inference"]
        assert client.get("/v1/openai/v1/models").json()["data"][0]["id"] == tiny_model_id
        body = {"model": tiny_model_id, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}
        alias = client.post("/v1/openai/v1/completions", json=body).json()
        assert alias["choices"][0]["text"] == client.post(ROUTE, json=body).json()["choices"][0]["text"]
        batch = client.post(
            "/v1/inference/batch-completion",
            json={"model_id": tiny_model_id, "content_batch": ["Once", "The sky"], "sampling_params": {"max_tokens": 3}},
        ).json()["batch"]
        single = client.post(
            "/v1/inference/completion",
            json={"model_id": tiny_model_id, "content": "The sky", "sampling_params": {"max_tokens": 3}},
        ).json()
        assert len(batch) == 2 and batch[1]["content"] == single["content"]


# ---- logit_bias and OpenAI's additive penalties --------------------------------------------------


class _OpenAIPenalties:
    """HF ``generate()``'s logits processor for OpenAI's definitions: the oracle."""

    def __init__(self, prompt_len: int, presence: float, frequency: float, bias: dict[int, float]):
        self.prompt_len, self.presence, self.frequency, self.bias = prompt_len, presence, frequency, bias

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids[:, self.prompt_len :]
        counts = torch.zeros_like(scores)
        if generated.shape[1]:
            counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        scores = scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence
        for token, value in self.bias.items():
            scores[:, token] += value
        return scores


@pytest.mark.parametrize(
    "presence,frequency,bias",
    [(0.0, 1.5, {}), (1.2, 0.0, {}), (0.5, 0.5, {"42": 3.0, "7": -100}), (0.0, 0.0, {"100": 6.0})],
)
def test_penalties_and_bias_are_openais_definitions_token_for_token(post, tiny_backend, presence, frequency, bias):
    from transformers import LogitsProcessorList

    from hf_oracle import hf_generate

    ids = tiny_backend.encode("Once upon a time, once upon a time")
    body = dict(prompt=ids, max_tokens=16, temperature=0, presence_penalty=presence, frequency_penalty=frequency)
    answer = post(**body, logit_bias=bias, logprobs=0).json()["choices"][0]
    processor = _OpenAIPenalties(len(ids), presence, frequency, {int(k): v for k, v in bias.items()})
    expected, _ = hf_generate(tiny_backend, ids, 16, logits_processor=LogitsProcessorList([processor]), eos_token_id=None)
    plain = post(prompt=ids, max_tokens=16, temperature=0).json()["choices"][0]["text"]
    assert answer["logprobs"]["tokens"] == [tiny_backend.piece(t) for t in expected]
    assert answer["text"] != plain  # the adjustment changed something


def test_adjustments_are_checked_and_named(post, tiny_backend):
    for body, param in [
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": "x"}, "frequency_penalty"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {str(10**7): 1}}, "logit_bias"),
    ]:
        answer = post(prompt="Once", max_tokens=2, **body)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, body


def test_llama_stack_client_0_2_12_over_these_routes(server, tiny_model_id):
    from llama_stack_client import LlamaStackClient

    client = LlamaStackClient(base_url=server.url, max_retries=0)
    assert client.models.retrieve(tiny_model_id).identifier == tiny_model_id
    assert [p.api for p in client.providers.list()] == ["inference"]
    batch = client.inference.batch_completion(
        model_id=tiny_model_id, content_batch=["Once", "The sky"], sampling_params={"max_tokens": 3}
    )
    assert len(batch.batch) == 2 and all(r.stop_reason for r in batch.batch)
    made = client.completions.create(
        model=tiny_model_id, prompt=["Once", "The sky"], n=2, max_tokens=3, temperature=0, logprobs=True, seed=1
    )
    assert [c.index for c in made.choices] == [0, 1, 2, 3]
    assert all(len(c.logprobs.tokens) == 3 for c in made.choices)
    echoed = client.completions.create(model=tiny_model_id, prompt="Once upon a time", max_tokens=0, echo=True, logprobs=True)
    assert echoed.choices[0].text == "Once upon a time" and echoed.choices[0].logprobs.token_logprobs[0] is None


def test_streamed_usage_of_several_choices_counts_each_prompt_once(post, server, tiny_model_id):
    body = {"model": tiny_model_id, "prompt": ["Once", "The sky"], "n": 2, "max_tokens": 3, "temperature": 0}
    plain = post(**{k: v for k, v in body.items() if k != "model"}).json()["usage"]
    streamed = httpx.post(
        server.url + ROUTE, json={**body, "stream": True, "stream_options": {"include_usage": True}}, timeout=120
    )
    usage = [json.loads(e) for e in sse_events(streamed.text) if e != "[DONE]" and not json.loads(e)["choices"]]
    assert usage and usage[-1]["usage"] == plain
    assert plain["completion_tokens"] == 12
