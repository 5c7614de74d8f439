"""The streaming core on a tiny random Llama (no weights), with HF ``generate()`` as the oracle."""

import threading

import pytest
import torch

from nb_completion import complete
from nb_completion.engine.records import Delta, Finished
from nb_completion.service import build_request, open_events

from hf_oracle import hf_generate


def hf_uncut(backend, prompt, n, **kwargs):
    """HF generate() on the prompt's ids, every generated token kept (``hf_oracle.hf_generate``)."""
    return hf_generate(backend, backend.encode(prompt), n, **kwargs)


def token_ids(model_id, prompt, seed=None, **kw):
    request = build_request(prompt, model_id=model_id, **kw)
    events = list(open_events(request, seed=seed))
    return [t.token_id for e in events if isinstance(e, Delta) for t in e.tokens], events


@pytest.mark.parametrize("prompt", ["The capital of", "Once upon a time", "def add(a, b):"])
def test_greedy_is_token_identical_to_hf_generate(tiny_backend, tiny_model_id, prompt):
    expected, _ = hf_uncut(tiny_backend, prompt, 24, eos_token_id=None)
    ours, events = token_ids(tiny_model_id, prompt, sampling_params={"max_tokens": 24})
    stop = tiny_backend.stop_token_ids
    expected = expected[: next((i for i, t in enumerate(expected) if t in stop), len(expected))]
    assert ours == expected


def test_repetition_penalty_matches_hf_generate(tiny_backend, tiny_model_id):
    expected, _ = hf_uncut(tiny_backend, "Café Café Café", 24, repetition_penalty=1.3, eos_token_id=None)
    ours, _ = token_ids(tiny_model_id, "Café Café Café", sampling_params={"max_tokens": 24, "repetition_penalty": 1.3})
    stop = tiny_backend.stop_token_ids
    expected = expected[: next((i for i, t in enumerate(expected) if t in stop), len(expected))]
    assert ours == expected


def test_logprobs_are_log_softmax_of_raw_logits(tiny_backend, tiny_model_id):
    expected, logits = hf_uncut(tiny_backend, "The capital of", 12, repetition_penalty=1.5)
    request = build_request(
        "The capital of", model_id=tiny_model_id, sampling_params={"max_tokens": 12, "repetition_penalty": 1.5}, logprobs=3
    )
    records = [t for e in open_events(request) if isinstance(e, Delta) for t in e.tokens]
    assert records
    for record, step_logits in zip(records, logits):
        reference = torch.log_softmax(step_logits.float(), -1)
        assert record.logprob == pytest.approx(float(reference[record.token_id]), abs=1e-4)
        top = torch.topk(reference, 3)
        assert [lp for _, lp in record.top[:3]] == pytest.approx(top.values.tolist(), abs=1e-4)
        assert record.rank == int((reference > reference[record.token_id]).sum()) + 1


def test_top_k_one_equals_greedy(tiny_model_id):
    greedy, _ = token_ids(tiny_model_id, "Once upon", sampling_params={"max_tokens": 16})
    top1, _ = token_ids(
        tiny_model_id, "Once upon", sampling_params={"max_tokens": 16, "strategy": {"type": "top_k", "top_k": 1}}, seed=3
    )
    assert top1 == greedy


def test_seed_reproducibility(tiny_model_id):
    params = {"max_tokens": 20, "strategy": {"type": "top_p", "temperature": 1.5, "top_p": 1.0}}
    a, _ = token_ids(tiny_model_id, "Once", sampling_params=params, seed=7)
    b, _ = token_ids(tiny_model_id, "Once", sampling_params=params, seed=7)
    c, _ = token_ids(tiny_model_id, "Once", sampling_params=params, seed=8)
    assert a == b
    assert a != c


def test_max_tokens_respected(tiny_model_id):
    # the tiny model's greedy run from "Once" meets no end token in its first 20 tokens, so the
    # limit is what ends each of these runs (asserted, not assumed)
    for limit in (1, 5, 20):
        response = complete("Once", model_id=tiny_model_id, sampling_params={"max_tokens": limit}, logprobs={"top_k": 0})
        metrics = {m.metric: m.value for m in response.metrics}
        assert response.stop_reason.value == "out_of_tokens"
        assert metrics["completion_tokens"] == limit == len(response.logprobs)


def test_streamed_deltas_join_to_the_non_streamed_content(tiny_model_id):
    kw = dict(model_id=tiny_model_id, sampling_params={"max_tokens": 30}, logprobs={"top_k": 2})
    whole = complete("Café 東京", **kw)
    chunks = list(complete("Café 東京", stream=True, **kw))
    assert "".join(c.delta for c in chunks) == whole.content
    assert chunks[-1].delta == "" and chunks[-1].stop_reason == whole.stop_reason
    assert {m.metric for m in chunks[-1].metrics} >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    # every generated token has its entry, the end token's in the last chunk when the run ends on it
    assert sum(len(c.logprobs or []) for c in chunks) == len(whole.logprobs)


def test_stop_string_is_excluded_and_ends_with_end_of_turn(tiny_model_id):
    full = complete("The capital of", model_id=tiny_model_id, sampling_params={"max_tokens": 30}).content
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop) == 3
    response = complete("The capital of", model_id=tiny_model_id, sampling_params={"max_tokens": 30, "stop": [stop]})
    assert response.content == full[: full.index(stop)]
    assert response.stop_reason.value == "end_of_turn"
    streamed = "".join(
        c.delta
        for c in complete(
            "The capital of", model_id=tiny_model_id, stream=True, sampling_params={"max_tokens": 30, "stop": [stop]}
        )
    )
    assert streamed == response.content


def test_cancellation_ends_within_one_token(tiny_model_id):
    cancel = threading.Event()
    request = build_request("Once", model_id=tiny_model_id, sampling_params={"max_tokens": 200})
    seen = 0
    finished = None
    for event in open_events(request, cancel=cancel):
        if isinstance(event, Delta):
            seen += len(event.tokens)
            if seen >= 3:
                cancel.set()
        else:
            finished = event
    assert isinstance(finished, Finished) and finished.cancelled
    assert finished.completion_tokens <= 4
    assert finished.stop_reason == "out_of_tokens"


def test_engine_serves_requests_after_a_cancelled_one(tiny_model_id):
    cancel = threading.Event()
    events = open_events(
        build_request("Once upon a time", model_id=tiny_model_id, sampling_params={"max_tokens": 200}), cancel=cancel
    )
    first = next(events)  # the sequence is in the engine and decoding
    assert isinstance(first, Delta) and first.tokens
    cancel.set()
    finished = [e for e in events if isinstance(e, Finished)][0]
    assert finished.cancelled and 1 <= finished.completion_tokens < 200
    after = complete("Once", model_id=tiny_model_id, sampling_params={"max_tokens": 3})
    assert after.stop_reason.value == "out_of_tokens" and len(after.content) > 0
