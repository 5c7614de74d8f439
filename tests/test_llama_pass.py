"""The lean pass (engine/llama_pass.py) against the model's own forward and HF generate()."""

from __future__ import annotations

import copy

import pytest
import torch

from nb_completion.engine import llama_pass
from nb_completion.engine.kv import SlotStore, aligned, decode_mask, prefill_mask
from nb_completion.engine.llama_pass import LlamaPass
from nb_completion.engine.local import LocalBackend
from nb_completion.engine.rowwise_int8 import quantize
from nb_completion.engine.batch_engine import Engine
from nb_completion.engine.tiny import build_model
from nb_completion.service import build_request

from hf_oracle import hf_greedy


def _both_ways(model, prompts: list[list[int]], steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Prefill each prompt, then decode all of them together for ``steps`` passes, once through the
    model's own forward and once through the lean pass (each in its own slots); the logits of each."""
    engine = Engine(model, max_batch=len(prompts), lean=False)
    lean = LlamaPass(model, engine.store.max_len)
    store = SlotStore(model, 2 * len(prompts), engine.store.max_len, torch.device("cpu"), engine.dtype)
    out = {False: [], True: []}
    with torch.inference_mode():
        for use_lean, first in ((False, 0), (True, len(prompts))):
            call = lean if use_lean else engine.runner._model_pass
            last = []
            for b, ids in enumerate(prompts):
                n = len(ids)
                positions = torch.arange(n)
                kv_len = aligned(n, store.max_len)
                view = store.view(first + b, 1, positions[:1], n, kv_len, 0)
                logits = call(torch.tensor([ids]), positions[None], prefill_mask(0, n, kv_len, engine.dtype, engine.device), view)
                out[use_lean].append(logits[0])
                last.append(int(logits[0].argmax()))
            lengths = [len(ids) for ids in prompts]
            for _ in range(steps):
                positions = torch.tensor(lengths)
                kv_len = aligned(max(lengths) + 1, store.max_len)
                view = store.view(first, len(prompts), positions, 1, kv_len)
                ids = torch.tensor(last)[:, None]
                logits = call(ids, positions[:, None], decode_mask(positions, kv_len, engine.dtype), view)
                out[use_lean].extend(logits)
                last = logits.argmax(-1).tolist()
                lengths = [n + 1 for n in lengths]
    engine.close()
    return out[False], out[True]


PROMPTS = [[5, 17, 99, 3, 42, 7, 8], [11, 12], list(range(20, 90))]


def test_the_lean_pass_gives_the_model_forwards_logits_in_float32(tiny_backend):
    reference, lean = _both_ways(tiny_backend.model, PROMPTS, steps=6)
    assert len(reference) == len(lean) == 3 + 6 * 3
    for a, b in zip(reference, lean):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_the_lean_pass_gives_the_int8_models_logits(tiny_backend):
    # Same int8 matmuls; the float ops around them round alike up to a last bit (rms_norm is fused)
    model = quantize(copy.deepcopy(tiny_backend.model).float())
    reference, lean = _both_ways(model, PROMPTS, steps=6)
    for a, b in zip(reference, lean):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
        assert int(a.argmax()) == int(b.argmax())


def test_the_engine_with_the_lean_pass_is_token_identical_to_hf_generate(tiny_backend):
    backend = LocalBackend(tiny_backend.model, tiny_backend.tokenizer, "tiny-lean")
    try:
        assert backend.engine.lean is not None
        for prompt in ("Once upon a time", "def add(a, b):"):
            expected, logits = hf_greedy(tiny_backend, prompt, 24)
            request = build_request(prompt, model_id="tiny-lean", sampling_params={"max_tokens": 24}, logprobs=1)
            tokens = [t for event in backend.open(request) for t in getattr(event, "tokens", ())]
            assert [t.token_id for t in tokens][: len(expected)] == expected
            for record, step in zip(tokens, logits):
                expected_lp = float(torch.log_softmax(step.float(), -1)[record.token_id])
                assert record.logprob == pytest.approx(expected_lp, abs=1e-4)
    finally:
        backend.close()


def test_models_the_lean_pass_does_not_cover_run_the_models_own_forward(tiny_backend):
    model = build_model(len(tiny_backend.tokenizer), seed=3)
    model.config.rope_parameters = {**model.config.rope_parameters, "rope_type": "dynamic", "factor": 2.0}
    assert not llama_pass.supports(model)
    assert llama_pass.supports(build_model(len(tiny_backend.tokenizer), seed=3))
    engine = Engine(model)
    try:
        assert engine.lean is None
    finally:
        engine.close()
