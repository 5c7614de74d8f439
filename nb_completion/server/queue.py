"""Admission control in front of the engine: a bounded number of running plus waiting requests.

Generation is blocking work, so it never runs on the event loop. Each admitted request is a
``Job``; a job that may run gets a thread that opens its event stream (loading the model if
needed; eager validation happens there, so a 4xx arrives before the first event). A backend that
pushes its events (a local model: ``service.open_pushed``) then hands each one to the job from the
engine thread and the opening thread ends, so a running stream holds no thread of its own; any
other backend's stream is read by that thread to its end. Either way items reach the event loop
through the loop's ``Courier``, which wakes the loop once for every item sent since its last
wake-up (one engine step's tokens for all its streams) instead of once per token per stream. The
HTTP side awaits ``job.next()`` (or takes what is already there with ``job.ready()``).

How many jobs of one model run at once is the backend's ``concurrency`` (a local model: the
engine's batch, 16 by default, all stepped in one forward pass per step; a backend without the
attribute: 1, served in order). Beyond that, ``queue_size`` jobs may wait; one more is a 429
with ``Retry-After``. Setting ``job.cancel`` (a client that went away) ends the generation
within one token, or skips the job if it has not started.

A job may instead carry plain blocking ``work`` (``submit_work``: the OpenAI route's echo
scoring, one forward pass over the prompt): it takes a place like any request (429 beyond the
queue), runs in its own lane of ``SCORING_CONCURRENCY`` per model (a forward pass over thousands
of tokens is heavy), gets ``job.cancel`` to read between its chunks, and yields ``OPENED``, its
result (or a ``CompletionError``) and ``END``.

Items a job yields, in order: ``OPENED`` or a ``CompletionError``; then ``Delta``/``Finished``
events; an optional ``CompletionError`` for a failure during generation; always ``END`` last.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from typing import Any

from ..api.errors import CompletionError, as_completion_error
from ..api.types import CompletionRequest
from ..engine.backend import is_local
from ..engine.records import Finished

log = logging.getLogger("nb_completion.server")

OPENED = object()
END = object()
SCORING_CONCURRENCY = 2  # echo scorings of one model running at once; more wait in the queue


class QueueFull(CompletionError):
    """429: the bounded queue is full. ``retry_after`` (seconds) goes into ``Retry-After``."""

    def __init__(self, waiting: int, retry_after: int):
        self.retry_after = retry_after
        super().__init__(
            429,
            f"the request queue is full ({waiting} waiting behind the running requests); retry in about {retry_after} s",
        )


class Courier:
    """Hands items from other threads to one event loop, many per wake-up: ``send`` queues the
    item and asks the loop for a drain only when none is on its way, so the items an engine step
    makes for all its streams ride one ``call_soon_threadsafe``. ``wakeups`` and ``sent`` count."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[Job, Any]] = []
        self.wakeups = 0
        self.sent = 0

    def send(self, job: "Job", item: Any) -> None:
        if self._loop.is_closed():  # the server is gone: nobody will read this
            job.cancel.set()
            return
        with self._lock:
            self._pending.append((job, item))
            self.sent += 1
            if len(self._pending) > 1:
                return  # the drain already asked for will take this one too
            self.wakeups += 1
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the server's loop is closed: nobody is listening any more
            with self._lock:
                dropped, self._pending = self._pending, []
            for stranded, _ in dropped:
                stranded.cancel.set()

    def _drain(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
        for job, item in items:
            job._items.put_nowait(item)


_couriers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Courier]" = weakref.WeakKeyDictionary()
_couriers_lock = threading.Lock()


def courier_for(loop: asyncio.AbstractEventLoop) -> Courier:
    """The one courier of ``loop`` (every job on a loop shares its wake-ups)."""
    with _couriers_lock:
        courier = _couriers.get(loop)
        if courier is None:
            courier = _couriers[loop] = Courier(loop)
        return courier


class Job:
    def __init__(self, request: Any, seed: int | None, loop: asyncio.AbstractEventLoop, plan: Any = None):
        self.request = request
        self.seed = seed
        self.plan = plan  # the request prepared by its backend before queueing (engine/plan.py)
        self.cancel = threading.Event()
        self.stream: Any = None  # a pushed stream's handle, kept until it ends (dropping it cancels)
        self.work: Any = None  # submit_work: a blocking callable taking the cancel event
        self._courier = courier_for(loop)
        self._items: asyncio.Queue = asyncio.Queue()

    def push(self, item: Any) -> None:
        """Hand ``item`` to the HTTP side (from any thread)."""
        self._courier.send(self, item)

    async def next(self) -> Any:
        return await self._items.get()

    def ready(self) -> list[Any]:
        """The items already here, without waiting (on the loop): what one write can carry."""
        items = []
        while not self._items.empty():
            items.append(self._items.get_nowait())
        return items


def _concurrency(model_id: str) -> int:
    from ..engine import registry

    backend = registry.registered(model_id)
    if backend is None and model_id == registry.DEFAULT_MODEL_ID:
        from ..engine.batch_engine import DEFAULT_MAX_BATCH

        return DEFAULT_MAX_BATCH  # loaded by its first request, as a batching local backend
    return max(1, int(backend.concurrency)) if backend is not None and is_local(backend) else 1


class EngineQueue:
    """Up to ``concurrency`` jobs per model run at once; ``queue_size`` more may wait; one more is a 429.

    ``max_running`` overrides every backend's ``concurrency`` (1: one request at a time)."""

    def __init__(self, queue_size: int = 8, max_running: int | None = None):
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        if max_running is not None and max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        self.queue_size = queue_size
        self.max_running = max_running
        self._lock = threading.Lock()
        self._waiting: list[Job] = []
        self._running: dict[str, list[Job]] = {}
        self._threads: set[threading.Thread] = set()
        self._mean_seconds = 1.0  # moving average of a request's time on the engine
        self._served = 0
        self._stopped = False

    # ---- the HTTP side ---------------------------------------------------------------------

    def submit(self, request: CompletionRequest, *, seed: int | None = None, plan: Any = None) -> Job:
        """Admit a request or raise ``QueueFull`` (429). Call from the event loop. ``plan`` is the
        request as its backend prepared it (``backend.prepare``), for the engine to start from."""
        return self._admit(Job(request, seed, asyncio.get_running_loop(), plan))

    def submit_work(self, request: CompletionRequest, work: Any) -> Job:
        """Admit ``work(cancel)`` (blocking; its return value is the job's one item) for
        ``request``'s model, in that model's scoring lane, or raise ``QueueFull`` (429)."""
        job = Job(request, None, asyncio.get_running_loop())
        job.work = work
        return self._admit(job)

    def _admit(self, job: Job) -> Job:
        with self._lock:
            if self._stopped:
                raise CompletionError(503, "the server is shutting down", title="Service Unavailable")
            if not self._can_start(job) and len(self._waiting) >= self.queue_size:
                raise QueueFull(len(self._waiting), self.retry_after())
            self._waiting.append(job)
            self._dispatch()
        return job

    def _model(self, job: Job) -> str:
        """The job's lane: its model's id, with `` scoring`` after it for ``submit_work`` jobs."""
        model = str(getattr(job.request, "model_id", "") or "")
        return model + " scoring" if job.work is not None else model

    def _limit(self, lane: str) -> int:
        if lane.endswith(" scoring"):
            return min(SCORING_CONCURRENCY, self.max_running or SCORING_CONCURRENCY)
        return self.max_running if self.max_running is not None else _concurrency(lane)

    def _can_start(self, job: Job) -> bool:
        model = self._model(job)
        ahead = any(self._model(w) == model for w in self._waiting)
        return not ahead and len(self._running.get(model, ())) < self._limit(model)

    def _dispatch(self) -> None:
        """Start every waiting job whose model has room, in order (call with the lock held)."""
        for job in list(self._waiting):
            model = self._model(job)
            running = self._running.setdefault(model, [])
            if len(running) >= self._limit(model):
                continue
            self._waiting.remove(job)
            running.append(job)
            thread = threading.Thread(target=self._run, args=(job,), name="nb-completion-job", daemon=True)
            self._threads.add(thread)
            thread.start()

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean time per request times the queue ahead."""
        return max(1, min(60, math.ceil(self._mean_seconds * max(1, len(self._waiting)))))

    def status(self) -> dict:
        with self._lock:
            running = sum(len(jobs) for jobs in self._running.values())
            return {
                "busy": running > 0,
                "running": running,
                "waiting": len(self._waiting),
                "queue_size": self.queue_size,
                "served": self._served,
            }

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the running and waiting requests and end the job threads."""
        with self._lock:
            self._stopped = True
            waiting, self._waiting = self._waiting, []
            for jobs in self._running.values():
                for job in jobs:
                    job.cancel.set()
            threads = list(self._threads)
        for job in waiting:
            job.cancel.set()
            job.push(END)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---- running a job -------------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        """The job's thread: open it; read it to its end unless the backend pushes its events."""
        start = time.perf_counter()
        pushed = False
        try:
            pushed = self._serve(job, start)
        finally:
            if not pushed:
                self._finish(job, start)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _finish(self, job: Job, start: float) -> None:
        """The job ended (on its thread, or on the engine thread for a pushed stream): free its
        place, start the next waiting job, and send ``END``."""
        elapsed = time.perf_counter() - start
        with self._lock:
            running = self._running.get(self._model(job), [])
            if job in running:
                running.remove(job)
            self._served += 1
            if not job.cancel.is_set():
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * elapsed
            if not self._stopped:
                self._dispatch()
        job.stream = None
        job.push(END)

    def _serve(self, job: Job, start: float) -> bool:
        """Open the job; True when its events are pushed (``_finish`` then runs at their end)."""
        if job.cancel.is_set():  # the client left while waiting
            return False
        if job.work is not None:
            try:
                result = job.work(job.cancel)
            except Exception as exc:
                if not isinstance(exc, CompletionError):
                    log.exception("engine failed while scoring")
                job.push(as_completion_error(exc, "before generating"))
                return False
            job.push(OPENED)
            job.push(result)
            return False
        from ..service import open_events, open_pushed

        gate = threading.Lock()
        early: list[Any] | None = []  # what the engine delivers before OPENED is sent

        def take(item: Any) -> None:
            job.push(item)
            if isinstance(item, (Finished, CompletionError)):
                if isinstance(item, CompletionError) and item.__cause__ is not None:
                    log.error("engine failed while generating", exc_info=item.__cause__)
                self._finish(job, start)

        def deliver(item: Any) -> None:  # on the engine thread
            with gate:
                if early is not None:
                    early.append(item)
                    return
            take(item)

        try:
            job.stream = open_pushed(job.request, deliver, seed=job.seed, cancel=job.cancel, plan=job.plan)
            if job.stream is not None:
                with gate:  # OPENED first, then anything the engine made meanwhile, in order
                    job.push(OPENED)
                    for item in early:
                        take(item)
                    early = None
                return True
            events = open_events(job.request, seed=job.seed, cancel=job.cancel, plan=job.plan)
        except Exception as exc:
            if not isinstance(exc, CompletionError):
                log.exception("engine failed to open a request")
            job.push(as_completion_error(exc, "before generating"))
            return False
        job.push(OPENED)
        try:
            for event in events:
                job.push(event)
        except Exception as exc:
            if not isinstance(exc, CompletionError):
                log.exception("engine failed while generating")
            job.push(as_completion_error(exc))
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # pragma: no cover - closing must not mask the result
                    log.exception("closing an event stream failed")
        return False
