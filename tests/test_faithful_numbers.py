"""The default model shows its own numbers: the GGUF's weights computed in float32 precision, and
one token's logprob the same on every path (generate, stream, score, the next-token
distribution, Step, a batch of 16). The oracle is the same weights in float32 (``transformers``
dequantizes the GGUF) and HF ``generate()`` on them."""

from __future__ import annotations

import concurrent.futures

import pytest
import torch

from nb_completion import score
from nb_completion.engine.block_linear import BlockEmbedding, BlockLinear
from nb_completion.engine.records import Delta
from nb_completion.service import build_request, load_backend, open_events
from nb_completion.stepping import distribution_at, step
from hf_oracle import hf_greedy

pytestmark = pytest.mark.real_model

PARAGRAPH = (
    "The lighthouse stood at the edge of the cliff, its lamp turning slowly through the fog. Every night the keeper "
    "climbed the ninety steps, trimmed the wick and wrote the weather in a book that nobody read. In the spring a "
    "letter arrived, the first in eleven years, and he left it on the table until the tide had turned twice."
)
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]


def records_of(stream) -> list:
    return [t for event in stream if isinstance(event, Delta) for t in event.tokens]


def test_the_default_computes_with_the_ggufs_own_blocks(real_backend):
    assert real_backend.info.metadata["dtype"] == "gguf"
    assert real_backend.info.metadata["weights"] == "Q4_1 weights (Q8_0 output), float32 activations"
    assert not [name for name, m in real_backend.model.named_modules() if type(m) is torch.nn.Linear]
    head, table = real_backend.model.lm_head, real_backend.model.get_input_embeddings()
    assert isinstance(head, BlockLinear) and head.format == "Q8_0"
    assert isinstance(table, BlockEmbedding) and table.qs.data_ptr() == head.qs.data_ptr()  # tied: held once


def test_the_default_distribution_is_float32s_on_the_same_weights(real_backend, real_backend_f32):
    ids = torch.tensor([real_backend.encode(PARAGRAPH)])
    with torch.inference_mode():
        ours = torch.log_softmax(real_backend.model(input_ids=ids).logits[0].float(), -1)
        reference = torch.log_softmax(real_backend_f32.model(input_ids=ids).logits[0].float(), -1)
    kld = (reference.exp() * (reference - ours)).sum(-1)
    assert kld.mean().item() < 1e-6  # int8 gave 0.05, llama.cpp's own Q4_1 run 0.004
    assert kld.max().item() < 1e-5
    assert torch.equal(ours.argmax(-1), reference.argmax(-1))
    assert (ours.exp() - reference.exp()).abs().max().item() < 1e-3


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_text_is_hf_generate_on_the_float32_weights(real_backend, real_backend_f32, real_model_id, prompt):
    records = records_of(open_events(build_request(prompt, model_id=real_model_id, sampling_params={"max_tokens": 32})))
    expected, logits = hf_greedy(real_backend_f32, prompt, 32)
    assert [r.token_id for r in records] == expected
    for record, step_logits in zip(records, logits):
        reference = torch.log_softmax(step_logits.float(), -1)
        assert record.logprob == pytest.approx(float(reference[record.token_id]), abs=2e-3)


def test_one_token_has_one_logprob_on_every_path(real_backend, real_model_id):
    prompt = "The capital of France is"
    request = build_request(prompt, model_id=real_model_id, sampling_params={"max_tokens": 6}, logprobs=5)
    generated = records_of(open_events(request))
    streamed = records_of(
        open_events(build_request(prompt, model_id=real_model_id, sampling_params={"max_tokens": 6}, stream=True))
    )
    assert [r.token_id for r in streamed] == [r.token_id for r in generated]
    prompt_ids = real_backend.encode(prompt)
    ids = prompt_ids + [r.token_id for r in generated]
    text = prompt + "".join(r.text for r in generated)
    assert real_backend.encode(text) == ids  # the scored text is the generated tokens
    scored = score(text, model_id=real_model_id).tokens[len(prompt_ids) :]
    backend = load_backend(real_model_id)
    for i, record in enumerate(generated):
        numbers = {
            "generate": record.logprob,
            "stream": streamed[i].logprob,
            "score": scored[i].logprob,
            "distribution": distribution_at(backend, request, ids[: len(prompt_ids) + i]).logprob(record.token_id),
            "step": step(backend, request, ids[: len(prompt_ids) + i]).distribution.logprob(record.token_id),
        }
        spread = max(numbers.values()) - min(numbers.values())
        assert spread <= 1e-4, (i, record.text, numbers)


def test_sixteen_requests_arriving_at_random_times_equal_their_solo_runs(real_model_id):
    prompts = [f"Item {i}: " + "the quick brown fox jumps over the lazy dog. " * (i % 5 + 1) for i in range(16)]
    request = lambda p: build_request(p, model_id=real_model_id, sampling_params={"max_tokens": 16}, logprobs=1)  # noqa: E731
    solo = [records_of(open_events(request(p))) for p in prompts]
    order = torch.randperm(16, generator=torch.Generator().manual_seed(7)).tolist()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # each thread opens and drains its own stream
        futures = {i: pool.submit(lambda p: records_of(open_events(request(p))), prompts[i]) for i in order}
        together = [futures[i].result(timeout=600) for i in range(16)]
    for alone, batched in zip(solo, together):
        assert [r.token_id for r in batched] == [r.token_id for r in alone]
        assert [r.logprob for r in batched] == pytest.approx([r.logprob for r in alone], abs=1e-4)


def test_the_server_says_what_runs(real_model_id):
    import httpx

    from nb_completion import serve

    handle = serve(port=0, models=[real_model_id])
    try:
        listed = httpx.get(handle.url + "/v1/models", timeout=30).json()["data"]
    finally:
        handle.stop()
    (model,) = [m for m in listed if m["identifier"] == real_model_id]
    assert model["metadata"]["weights"] == "Q4_1 weights (Q8_0 output), float32 activations"
    assert model["metadata"]["dtype"] == "gguf"
