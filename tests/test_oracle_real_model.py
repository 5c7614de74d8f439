"""The real default model (SmolLM2-135M-Instruct, float32) against Hugging Face ``generate()``."""

import pytest
import torch

from nb_completion import complete
from nb_completion.engine.records import Delta
from nb_completion.service import build_request, open_events
from hf_oracle import hf_greedy

pytestmark = pytest.mark.real_model

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Here is a list of fruits:\n1."]


def ours(model_id, prompt, n, top_k=None, **params):
    request = build_request(prompt, model_id=model_id, sampling_params={"max_tokens": n, **params}, logprobs=top_k)
    return [t for e in open_events(request) if isinstance(e, Delta) for t in e.tokens]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_is_token_identical_to_hf_generate(real_backend_f32, prompt):
    expected, _ = hf_greedy(real_backend_f32, prompt, 32)
    assert [r.token_id for r in ours("smollm2-float32", prompt, 32)] == expected


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_repetition_penalty_is_token_identical_to_hf_generate(real_backend_f32, prompt):
    expected, _ = hf_greedy(real_backend_f32, prompt, 32, repetition_penalty=1.3)
    assert [r.token_id for r in ours("smollm2-float32", prompt, 32, repetition_penalty=1.3)] == expected


def test_logprobs_equal_log_softmax_of_hf_raw_logits(real_backend_f32):
    expected, logits = hf_greedy(real_backend_f32, PROMPTS[0], 16)
    records = ours("smollm2-float32", PROMPTS[0], 16, top_k=5)
    assert len(records) == len(expected)
    for record, step in zip(records, logits):
        reference = torch.log_softmax(step.float(), -1)
        assert record.logprob == pytest.approx(float(reference[record.token_id]), abs=1e-4)
        assert [lp for _, lp in record.top[:5]] == pytest.approx(torch.topk(reference, 5).values.tolist(), abs=1e-4)


def test_reported_logprobs_by_token_match_the_records(real_backend_f32):
    response = complete(PROMPTS[0], model_id="smollm2-float32", sampling_params={"max_tokens": 6}, logprobs={"top_k": 0})
    _, logits = hf_greedy(real_backend_f32, PROMPTS[0], 6)
    for entry, step in zip(response.logprobs, logits):
        (value,) = entry.logprobs_by_token.values()
        assert value == pytest.approx(float(torch.log_softmax(step.float(), -1).max()), abs=1e-4)


def test_top_k_one_equals_greedy(real_backend_f32):
    greedy = [r.token_id for r in ours("smollm2-float32", PROMPTS[1], 24)]
    top1 = [r.token_id for r in ours("smollm2-float32", PROMPTS[1], 24, strategy={"type": "top_k", "top_k": 1})]
    assert top1 == greedy


def test_streamed_deltas_join_to_the_non_streamed_content(real_model_id):
    kw = dict(
        model_id=real_model_id, sampling_params={"max_tokens": 24, "strategy": {"type": "top_p", "temperature": 0.8}}, seed=11
    )
    whole = complete("Write a haiku about the sea:", **kw)
    streamed = "".join(c.delta for c in complete("Write a haiku about the sea:", stream=True, **kw))
    assert streamed == whole.content and whole.content


def test_capital_of_france_is_paris(real_model_id):
    response = complete("The capital of France is", model_id=real_model_id, sampling_params={"max_tokens": 8})
    assert response.content.lstrip().startswith("Paris")
