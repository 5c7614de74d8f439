"""The per-sequence path (engine/sequential.py) serves everything the batched engine does: the same
tiny Llama run through both gives the same sampled tokens, logprobs, grammar and stop strings;
streams opened together interleave without touching each other's state; a closed stream ends."""

from __future__ import annotations

import json
import threading

import pytest
from arch_configs import build

from nb_completion.engine import local
from nb_completion.engine.local import LocalBackend
from nb_completion.engine.records import Delta, Finished
from nb_completion.engine.sequential import SequentialEngine
from nb_completion.engine.tiny import build_tokenizer
from nb_completion.service import build_request

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "n": {"type": "integer"}},
    "required": ["name", "n"],
    "additionalProperties": False,
}
TOP_P = {"strategy": {"type": "top_p", "temperature": 1.0, "top_p": 0.95}, "max_tokens": 40}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def run(backend, content="Once upon a time", seed=7, **kw):
    request = build_request(content, model_id=backend.info.identifier, **kw)
    out = list(backend.open(request, seed=seed))
    records = [t for e in out if isinstance(e, Delta) for t in e.tokens]
    return "".join(e.text for e in out if isinstance(e, Delta)), records, out[-1]


def both_paths(tokenizer, monkeypatch, **kw):
    batched = LocalBackend(build("llama", len(tokenizer)), tokenizer, "llama-batched")
    per_seq = LocalBackend(build("llama", len(tokenizer)), tokenizer, "llama-per-sequence")
    monkeypatch.setattr(local, "batched_path_holds", lambda model: model is not per_seq.model)
    try:
        a, b = run(batched, **kw), run(per_seq, **kw)
        assert isinstance(per_seq.engine, SequentialEngine) and not isinstance(batched.engine, SequentialEngine)
    finally:
        batched.close()
        per_seq.close()
    return a, b


@pytest.mark.parametrize(
    "kw",
    [
        {"sampling_params": TOP_P},
        {"sampling_params": {**TOP_P, "stop": ["e"]}},
        {"sampling_params": {**TOP_P, "max_tokens": 80}, "response_format": {"type": "json_schema", "json_schema": SCHEMA}},
        {"sampling_params": {"max_tokens": 20, "repetition_penalty": 1.3}, "logprobs": {"top_k": 3}},
    ],
    ids=["top_p", "stop", "grammar", "penalty"],
)
def test_the_per_sequence_path_gives_what_the_batched_path_gives(tokenizer, monkeypatch, kw):
    (text_a, records_a, end_a), (text_b, records_b, end_b) = both_paths(tokenizer, monkeypatch, **kw)
    assert records_b, "no tokens"
    assert text_b == text_a
    assert [r.token_id for r in records_b] == [r.token_id for r in records_a]
    assert [r.logprob for r in records_b] == pytest.approx([r.logprob for r in records_a], abs=1e-4)
    assert [r.top_ids for r in records_b] == [r.top_ids for r in records_a]
    assert isinstance(end_b, Finished) and end_b.stop_reason == end_a.stop_reason
    if "response_format" in kw:
        assert set(json.loads(text_b)) == {"name", "n"}
    if "stop" in kw["sampling_params"]:
        assert end_b.stop_string == "e"


def test_streams_opened_together_equal_their_solo_runs(tokenizer):
    backend = LocalBackend(build("gpt2", len(tokenizer)), tokenizer, "gpt2-concurrent")
    prompts = ["Once upon a time", "The capital of France", "def add(a, b):"]
    try:
        solo = [run(backend, p, sampling_params=TOP_P)[1] for p in prompts]
        streams = [backend.open(build_request(p, model_id="gpt2-concurrent", sampling_params=TOP_P), seed=7) for p in prompts]
        together = [[t for e in s if isinstance(e, Delta) for t in e.tokens] for s in streams]
    finally:
        backend.close()
    assert [[r.token_id for r in rs] for rs in together] == [[r.token_id for r in rs] for rs in solo]


def test_a_cancelled_stream_ends_cancelled_and_the_engine_goes_on(tokenizer):
    backend = LocalBackend(build("mamba", len(tokenizer)), tokenizer, "mamba-cancel")
    cancel = threading.Event()
    try:
        stream = backend.open(build_request("Once", model_id="mamba-cancel", sampling_params={"max_tokens": 200}), cancel=cancel)
        assert isinstance(next(stream), Delta)
        cancel.set()
        end = [e for e in stream][-1]
        assert isinstance(end, Finished) and end.cancelled and end.completion_tokens < 200
        assert run(backend, "Once", sampling_params={"max_tokens": 5})[2].completion_tokens == 5
    finally:
        backend.close()


def test_steps_on_the_per_sequence_path_draw_what_one_run_draws_and_see_the_raw_logits(tokenizer):
    import torch

    from nb_completion import stepping
    from nb_completion.engine import sampling

    backend = LocalBackend(build("gemma2", len(tokenizer)), tokenizer, "gemma2-steps")
    backend.stop_token_ids = frozenset()
    request = build_request("x", model_id="gemma2-steps", sampling_params={**TOP_P, "max_tokens": 6})
    ids = tokenizer("Once upon a time there was a small model that liked to generate text.")["input_ids"]
    try:
        whole = [
            t.token_id
            for e in backend.open(request, plan=backend.prepare(request, ids=ids), seed=3)
            if isinstance(e, Delta)
            for t in e.tokens
        ]
        generator = sampling.make_generator(3, backend.device)
        stepped, history = [], list(ids)
        for _ in range(6):
            result = stepping.step(backend, request, history, generator)
            with torch.inference_mode():
                raw = backend.model(input_ids=torch.tensor([history])).logits[0, -1]
            top = result.distribution.ids[0]
            assert top == int(raw.argmax())
            assert result.distribution.logits[0] == pytest.approx(float(raw.max()), abs=1e-4)
            stepped.append(result.token_id)
            history.append(result.token_id)
    finally:
        backend.close()
    assert stepped == whole
