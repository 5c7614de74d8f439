"""The batched engine on the real default model: a float32 batch of mixed prompts against Hugging
Face ``generate()`` alone, and how many of 16 concurrent greedy requests equal their solo runs."""

import pytest
import torch

from nb_completion.engine.records import Delta
from nb_completion.service import build_request, open_events
from hf_oracle import hf_greedy

pytestmark = pytest.mark.real_model

WORDS = "Apple Banana Cherry Delta Eagle Falcon Garden Harbor Island Jungle Kettle Lemon Mountain Needle Ocean Piano".split()
PROMPTS = [f"{w} is a word." + " Write a sentence about it, please, with care." * (i * 2) for i, w in enumerate(WORDS)]


def tokens(stream):
    return [t for e in stream if isinstance(e, Delta) for t in e.tokens]


def test_sixteen_concurrent_float32_requests_each_equal_hf_generate_alone(real_backend_f32):
    streams = [
        open_events(build_request(p, model_id="smollm2-float32", sampling_params={"max_tokens": 24}, logprobs=5)) for p in PROMPTS
    ]
    results = [tokens(s) for s in streams]
    assert real_backend_f32.engine.stats.max_rows > 8
    for prompt, records in zip(PROMPTS, results):
        expected, logits = hf_greedy(real_backend_f32, prompt, 24)
        assert [r.token_id for r in records] == expected, prompt
        for record, step in zip(records, logits):
            reference = torch.log_softmax(step.float(), -1)
            assert record.logprob == pytest.approx(float(reference[record.token_id]), abs=1e-4)
            assert [lp for _, lp in record.top[:5]] == pytest.approx(torch.topk(reference, 5).values.tolist(), abs=1e-4)


def test_the_default_dtype_is_batch_invariant(real_backend, real_model_id):
    """The GGUF block op computes each row alone, in one order, and attention reads aligned
    lengths, so a request's output does not depend on what else is in the batch (prompts of 6
    to 330 tokens)."""
    request = lambda p: build_request(p, model_id=real_model_id, sampling_params={"max_tokens": 32})  # noqa: E731
    solo = [[r.token_id for r in tokens(open_events(request(p)))] for p in PROMPTS]
    streams = [open_events(request(p)) for p in PROMPTS]
    together = [[r.token_id for r in tokens(s)] for s in streams]
    equal = sum(a == b for a, b in zip(solo, together))
    assert equal == 16, f"{equal} of 16 concurrent greedy requests equal their solo runs"
    assert real_backend.engine.stats.max_rows > 8
