"""Every architecture in tests/arch_configs.py, built tiny and random: the engine's greedy tokens
equal HF ``generate()``'s from a prompt longer than any sliding window, each token's logprob is
the log-softmax of HF's logits, and ``score`` equals a plain forward's log-softmax. The path each
takes (batched or per-sequence) is docs/models.md's table."""

from __future__ import annotations

import pytest
import torch
from arch_configs import ARCHS, WINDOW, build
from hf_oracle import hf_generate

from nb_completion.api.types import CompletionRequest, LogProbConfig, SamplingParams
from nb_completion.engine.architectures import path_name
from nb_completion.engine.local import LocalBackend
from nb_completion.engine.tiny import build_tokenizer
from nb_completion.scoring import score_ids

PROMPT = (
    "The capital of France is Paris. Once upon a time there was a small model that liked to "
    "generate text. def add(a, b): return a + b"
)
NEW_TOKENS = 12

# the path each is expected to take (docs/models.md)
PER_SEQUENCE = {
    name
    for name in ARCHS
    if "-window" in name
    or name
    in {
        "gemma2", "gemma3_text", "cohere2", "olmo3", "exaone4", "gpt2", "gpt_neox", "opt", "falcon", "bloom",
        "gpt_neo", "gptj", "codegen", "gpt_bigcode", "biogpt", "xglm", "mpt", "persimmon", "nemotron", "olmoe",
        "granitemoe", "arcee", "seed_oss", "ernie4_5", "mamba", "mamba2", "rwkv", "recurrent_gemma", "jamba",
        "falcon_h1",
    }
}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _run(backend: LocalBackend, ids: list[int]) -> list:
    request = CompletionRequest(
        model_id=backend.info.identifier,
        content="unused: the ids are given",
        sampling_params=SamplingParams(max_tokens=NEW_TOKENS),
        logprobs=LogProbConfig(top_k=3),
    )
    records = []
    try:
        for event in backend.open(request, plan=backend.prepare(request, ids=ids)):
            records.extend(getattr(event, "tokens", ()) or ())
    finally:
        backend.close()
    return records


def test_the_matrix_has_at_least_forty_architectures():
    assert len(ARCHS) >= 40


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_greedy_equals_hf_generate_and_score_equals_a_forward(name, tokenizer):
    model = build(name, len(tokenizer))
    backend = LocalBackend(model, tokenizer, f"tiny-{name}")
    backend.stop_token_ids = frozenset()  # all NEW_TOKENS compared, as generate(eos_token_id=None) makes them
    assert path_name(model) == ("per-sequence" if name in PER_SEQUENCE else "batched")
    ids = tokenizer(PROMPT)["input_ids"]
    assert len(ids) > 2 * WINDOW  # past every sliding window in the matrix

    want, logits = hf_generate(backend, ids, NEW_TOKENS, eos_token_id=None)
    records = _run(backend, ids)
    assert [r.token_id for r in records] == want
    for record, step in zip(records, logits):
        expected = torch.log_softmax(step.float(), -1)[record.token_id].item()
        assert record.logprob == pytest.approx(expected, abs=1e-4)
        assert list(record.top_ids) == torch.topk(step.float(), len(record.top_ids)).indices.tolist()

    scored = score_ids(backend, ids)
    with torch.inference_mode():
        forward = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    expected = [forward[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert [t.logprob for t in scored[1:]] == pytest.approx(expected, abs=1e-5)
