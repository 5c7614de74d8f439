"""Echo scoring and ``score()`` with bounded memory, through the server's queue (issue 21,
finding 2: full logits and their log-softmax were kept at once, about 1 MiB per prompt token,
and OpenAI ``echo`` scored beside the queue: no 429, no cancel when the client left)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import torch

import nb_completion as nb
from nb_completion import scoring
from nb_completion.server import queue as server_queue

TEXT = "The capital of France is Paris. The capital of Italy is Rome, and the capital of Spain is Madrid."


def test_logits_are_made_a_chunk_at_a_time_and_match_a_full_forward(tiny_backend, tiny_model_id, monkeypatch):
    monkeypatch.setattr(scoring, "CHUNK", 8)
    head = tiny_backend.model.get_output_embeddings()
    rows: list[int] = []
    hook = head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    try:
        scored = nb.score(TEXT, model_id=tiny_model_id)
    finally:
        hook.remove()
    ids = tiny_backend.encode(TEXT)
    assert len(ids) > 3 * 8 and rows and max(rows) <= 8
    with torch.inference_mode():
        full = torch.log_softmax(tiny_backend.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float(), -1)
    for i, token in enumerate(scored.tokens[1:], start=1):
        row = full[i - 1]
        assert token.logprob == pytest.approx(float(row[ids[i]]), abs=1e-4)
        assert token.rank == int((row > row[ids[i]]).sum()) + 1
        assert [lp for _, lp in token.top] == pytest.approx(torch.topk(row, 5).values.tolist(), abs=1e-4)


def test_score_stops_when_cancelled(tiny_model_id):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(scoring.ScoringCancelled):
        nb.score(TEXT, model_id=tiny_model_id, cancel=cancel)


@pytest.fixture()
def gated(monkeypatch):
    """Scoring waits for ``gate`` once it has started; ``seen`` collects each run's cancel event."""
    gate, started, seen = threading.Event(), threading.Event(), []
    original = scoring._position_stats

    def waiting(backend, ids, top, cancel):
        seen.append(cancel)
        started.set()
        gate.wait(60)
        return original(backend, ids, top, cancel)

    monkeypatch.setattr(scoring, "_position_stats", waiting)
    yield gate, started, seen
    gate.set()


def _echo(model_id: str) -> dict:
    return {"model": model_id, "prompt": TEXT, "echo": True, "logprobs": 1, "max_tokens": 0}


def test_echo_takes_a_queue_place_and_gets_a_429_when_none_is_left(tiny_model_id, gated, monkeypatch):
    gate, started, _ = gated
    monkeypatch.setattr(server_queue, "SCORING_CONCURRENCY", 1)
    handle = nb.serve(port=0, models=[tiny_model_id], queue_size=0)
    try:
        with httpx.Client(base_url=handle.url, timeout=60) as client:
            first: dict = {}
            worker = threading.Thread(target=lambda: first.update(r=client.post("/v1/completions", json=_echo(tiny_model_id))))
            worker.start()
            assert started.wait(30)
            second = client.post("/v1/completions", json=_echo(tiny_model_id))
            assert second.status_code == 429 and "retry-after" in second.headers
            gate.set()
            worker.join(60)
            assert first["r"].status_code == 200
            tokens = first["r"].json()["choices"][0]["logprobs"]["tokens"]
            assert len(tokens) >= len(nb.score(TEXT, model_id=tiny_model_id).tokens)
    finally:
        handle.stop()


def test_an_abandoned_echo_is_cancelled(tiny_model_id, gated):
    gate, started, seen = gated
    handle = nb.serve(port=0, models=[tiny_model_id])
    try:
        host, port = handle.url.removeprefix("http://").split(":")
        import json

        body = json.dumps(_echo(tiny_model_id)).encode()
        head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head.encode() + body)
            assert started.wait(30)
        deadline = time.monotonic() + 20
        while not seen[0].is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[0] is not None and seen[0].is_set()
    finally:
        gate.set()
        handle.stop()
