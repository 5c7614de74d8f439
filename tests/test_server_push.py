"""Streams whose events the engine pushes (``LocalBackend.open(deliver=...)``): no thread per
running stream, one event-loop wake-up for many items (the ``Courier``), the order and the end
of a stream kept, errors named, cancel on disconnect."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from nb_completion import serve
from nb_completion.api.errors import CompletionError
from nb_completion.engine import registry
from nb_completion.engine.records import Delta, Finished, ModelInfo, TokenRecord
from nb_completion.server.queue import Courier
from nb_completion.service import build_request, open_pushed
from server_support import sse_events
from nb_completion.engine.backend import BackendKind
from nb_completion.engine.plan import text_plan

COMPLETION = "/v1/inference/completion"
DEADLINE = 30.0


def record(i: int, text: str) -> TokenRecord:
    return TokenRecord(index=i, token_id=i, text=text, logprob=-0.5, rank=1, top=((text, -0.5),), entropy=1.0, piece=text)


class PushingBackend:
    """An engine double that pushes: the test calls ``deliver`` when it likes, from its own thread.
    ``early`` items are delivered inside ``open`` itself, before it returns (as a fast engine may)."""

    kind = BackendKind.LOCAL  # pushes its events, as the local engine does
    concurrency = 4  # requests it runs at once (the queue asks a local backend)

    def __init__(self, model_id: str):
        self.info = ModelInfo(identifier=model_id, loaded=True)
        self.opened = threading.Event()
        self.closed = threading.Event()
        self.deliver = None
        self.cancel: threading.Event | None = None
        self.early: list = []

    def prepare(self, request, *, ids=None, max_tokens_cap=None):
        return text_plan(self, request, max_tokens_cap)

    def open(self, request, *, plan=None, seed=None, cancel=None, deliver=None):
        assert deliver is not None, "the server's queue asks a pushing backend to push"
        self.deliver, self.cancel = deliver, cancel
        for item in self.early:
            deliver(item)
        self.opened.set()
        backend = self

        class Handle:
            def close(self) -> None:
                backend.closed.set()

        return Handle()


@pytest.fixture()
def pushing():
    backend = registry.register(PushingBackend("pushing-double"))
    handle = serve(port=0, models=[backend.info.identifier])
    try:
        yield backend, handle
    finally:
        handle.stop()
        registry.unregister(backend.info.identifier)


def job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nb-completion-job"]


def stream_body(model_id: str) -> dict:
    return {"model_id": model_id, "content": "hi", "stream": True, "logprobs": {"top_k": 1}}


def test_the_courier_wakes_the_loop_once_for_everything_sent_meanwhile():
    async def main() -> tuple[Courier, list]:
        loop = asyncio.get_running_loop()
        courier = Courier(loop)

        class Sink:  # what a Job gives the courier: a queue and a cancel event
            _items: asyncio.Queue = asyncio.Queue()
            cancel = threading.Event()

        sender = threading.Thread(target=lambda: [courier.send(Sink, i) for i in range(100)])
        sender.start()
        sender.join(DEADLINE)  # the loop has not run since: every item waits for one drain
        got = [await asyncio.wait_for(Sink._items.get(), DEADLINE) for _ in range(100)]
        return courier, got

    courier, got = asyncio.run(main())
    assert got == list(range(100))
    assert courier.sent == 100 and courier.wakeups == 1


def test_a_courier_whose_loop_is_closed_cancels_the_jobs_it_cannot_reach():
    loop = asyncio.new_event_loop()
    loop.close()
    courier = Courier(loop)

    class Sink:
        _items = None
        cancel = threading.Event()

    courier.send(Sink, "anything")
    assert Sink.cancel.is_set()


def test_items_sent_after_the_loop_closed_under_a_pending_drain_cancel_their_jobs():
    loop = asyncio.new_event_loop()
    courier = Courier(loop)

    class First:
        _items = None
        cancel = threading.Event()

    class Second:
        _items = None
        cancel = threading.Event()

    courier.send(First, 1)  # a drain is asked for, and never runs: the loop closes first
    loop.close()
    courier.send(Second, 2)
    assert Second.cancel.is_set()


def test_a_pushed_stream_holds_no_thread_and_keeps_its_order(pushing):
    backend, handle = pushing
    backend.early = [Delta("A", (record(0, "A"),))]  # made before open() returned: still after OPENED
    with httpx.Client(base_url=handle.url, timeout=DEADLINE) as client:
        with client.stream("POST", COMPLETION, json=stream_body(backend.info.identifier)) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["delta"] == "A"
            for thread in job_threads():
                thread.join(DEADLINE)
            assert not job_threads()  # the stream is open, and no thread waits on it
            assert handle.app.state.server.engine.status()["running"] == 1
            for i, text in enumerate("BC", 1):
                backend.deliver(Delta(text, (record(i, text),)))
            backend.deliver(Finished(stop_reason="end_of_turn", prompt_tokens=1, completion_tokens=3))
            rest = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [c["delta"] for c in rest] == ["B", "C", ""]
    assert rest[-1]["stop_reason"] == "end_of_turn"
    assert handle.app.state.server.engine.status()["running"] == 0  # its place is free again


def test_an_engine_failure_mid_stream_is_a_last_error_event_and_frees_the_place(pushing):
    backend, handle = pushing
    with httpx.Client(base_url=handle.url, timeout=DEADLINE) as client:
        with client.stream("POST", COMPLETION, json=stream_body(backend.info.identifier)) as response:
            assert response.status_code == 200
            assert backend.opened.wait(DEADLINE)
            backend.deliver(Delta("A", (record(0, "A"),)))
            backend.deliver(RuntimeError("boom at /home/user/engine.py"))
            raw = "".join(response.iter_text())
    events = [json.loads(e) for e in sse_events(raw)]
    assert events[0]["delta"] == "A"
    error = events[-1]["error"]
    assert error["status"] == 500 and "RuntimeError" in error["detail"] and "/home/user" not in error["detail"]
    assert handle.app.state.server.engine.status()["running"] == 0


def test_a_client_that_leaves_cancels_the_pushed_stream(pushing):
    backend, handle = pushing
    with httpx.Client(base_url=handle.url, timeout=DEADLINE) as client:
        with client.stream("POST", COMPLETION, json=stream_body(backend.info.identifier)) as response:
            assert response.status_code == 200
            assert backend.opened.wait(DEADLINE)
            backend.deliver(Delta("A", (record(0, "A"),)))
            next(line for line in response.iter_lines() if line.startswith("data: "))
    assert backend.cancel.wait(DEADLINE)  # the engine sees the cancel ...
    backend.deliver(Finished(stop_reason="out_of_tokens", prompt_tokens=1, completion_tokens=1, cancelled=True))
    with httpx.Client(base_url=handle.url, timeout=DEADLINE) as client:  # ... and its place is free at its end
        assert client.get("/v1/health").json()["queue"]["running"] == 0


def test_open_pushed_names_the_engine_errors_and_keeps_the_cause(tiny_backend):
    got: list = []
    done = threading.Event()

    def deliver(item) -> None:
        got.append(item)
        if isinstance(item, (Finished, CompletionError)):
            done.set()

    request = build_request("The capital of France is", model_id=tiny_backend.info.identifier, sampling_params={"max_tokens": 4})
    handle = open_pushed(request, deliver)
    assert handle is not None and done.wait(DEADLINE)
    assert isinstance(got[-1], Finished) and all(isinstance(e, Delta) for e in got[:-1])
    assert sum(len(e.tokens) for e in got[:-1]) == got[-1].completion_tokens
    with pytest.raises(TypeError):  # a pushed stream is a handle, not an iterator
        next(iter(handle))
    plain = list(tiny_backend.open(request))  # the same request, read: the same tokens
    assert [t.token_id for e in plain[:-1] for t in e.tokens] == [t.token_id for e in got[:-1] for t in e.tokens]


def test_open_pushed_is_none_for_a_backend_that_cannot_push(ids):
    request = build_request("hi", model_id=ids["slow"], sampling_params={"max_tokens": 2})
    assert open_pushed(request, lambda item: None) is None
