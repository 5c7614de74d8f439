"""The lens and the attention view run beside generation on the same model without moving a
number: the attention pass switches the model's attention to eager and the lens hooks every
layer, each for one pass under the model's lock (``engine/model_lock.py``), which every engine
step holds. Here the engine runs the model's own forward (the path that reads the attention
setting) while another thread reads the lens and attention in a loop."""

from __future__ import annotations

import threading

import torch

from nb_completion.engine.local import LocalBackend
from nb_completion.engine.records import Delta
from nb_completion.engine.tiny import build_model, build_tokenizer
from nb_completion.inside.attention import attention_of_ids
from nb_completion.inside.lens import lens_of_ids
from nb_completion.service import build_request

PROMPT = "The capital of France is"


def _run(backend: LocalBackend, n: int = 48) -> list[tuple[int, float]]:
    request = build_request(
        PROMPT, backend.info.identifier, {"max_tokens": n, "strategy": {"type": "greedy"}}, logprobs={"top_k": 1}
    )
    events = backend.open(request, plan=backend.prepare(request), seed=None, cancel=None)
    return [(r.token_id, r.logprob) for e in events if isinstance(e, Delta) for r in e.tokens]


def test_lens_and_attention_beside_generation_move_no_number():
    tokenizer = build_tokenizer()
    backend = LocalBackend(build_model(len(tokenizer), seed=3), tokenizer, "tiny-model-forward", dtype="float32", device="cpu")
    backend.engine_options["lean"] = False  # the model's own forward, which reads the attention setting
    assert backend.model.config._attn_implementation != "eager"
    reference = _run(backend)
    ids = backend.encode(PROMPT)
    first_lens = lens_of_ids(backend, ids).layers[-1].logprobs
    first_attention = attention_of_ids(backend, ids).weights(1)

    stop, rounds, failures = threading.Event(), [0], []

    def look_inside() -> None:
        try:
            while not stop.is_set():
                assert torch.equal(lens_of_ids(backend, ids).layers[-1].logprobs, first_lens)
                assert torch.equal(attention_of_ids(backend, ids).weights(1), first_attention)
                rounds[0] += 1
        except BaseException as exc:  # reported below, with the generation's verdict
            failures.append(exc)

    reader = threading.Thread(target=look_inside, daemon=True)
    reader.start()
    try:
        runs = [_run(backend) for _ in range(3)]
    finally:
        stop.set()
        reader.join(timeout=60)
    assert not reader.is_alive()
    assert failures == []
    assert rounds[0] >= 1
    assert all(run == reference for run in runs)
    assert backend.model.config._attn_implementation != "eager"
