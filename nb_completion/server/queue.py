"""One engine, requests served in order: a bounded queue drained by a single worker thread.

Generation is blocking CPU work, so it never runs on the event loop. Each admitted request is a
``Job``: the worker opens its event stream (eager validation happens there, in order, so a 4xx
arrives before the first event) and hands every item to the job's asyncio queue with
``call_soon_threadsafe``. The HTTP side awaits ``job.next()``. Setting ``job.cancel`` (a client
that went away) ends the generation within one token, or skips the job if it has not started.

Items a job yields, in order: ``OPENED`` or a ``CompletionError``; then ``Delta``/``Finished``
events; an optional ``CompletionError`` for a failure during generation; always ``END`` last.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue as _queue
import threading
import time
from typing import Any, Callable, Iterator

from ..api.errors import CompletionError, EngineFailure
from ..api.types import CompletionRequest

log = logging.getLogger("nb_completion.server")

OPENED = object()
END = object()

Opener = Callable[..., Iterator[Any]]


class QueueFull(CompletionError):
    """429: the bounded queue is full. ``retry_after`` (seconds) goes into ``Retry-After``."""

    def __init__(self, waiting: int, retry_after: int):
        self.retry_after = retry_after
        super().__init__(
            429,
            f"the request queue is full ({waiting} waiting behind the running request); "
            f"retry in about {retry_after} s",
        )


class Job:
    def __init__(self, request: Any, seed: int | None, loop: asyncio.AbstractEventLoop, opener: Opener | None):
        self.request = request
        self.seed = seed
        self.opener = opener
        self.cancel = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self._loop = loop
        self._items: asyncio.Queue = asyncio.Queue()

    def push(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the server's loop is closed: nobody is listening any more
            self.cancel.set()

    async def next(self) -> Any:
        return await self._items.get()


class EngineQueue:
    """``queue_size`` requests may wait behind the one being generated; one more is a 429."""

    def __init__(self, queue_size: int = 8, opener: Opener | None = None):
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.queue_size = queue_size
        self._opener = opener
        self._jobs: _queue.Queue = _queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._current: Job | None = None
        self._mean_seconds = 1.0  # moving average of a request's time on the engine
        self._served = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="nb-completion-engine", daemon=True)
        self._thread.start()

    # ---- the HTTP side ---------------------------------------------------------------------

    def submit(self, request: CompletionRequest, *, seed: int | None = None, opener: Opener | None = None) -> Job:
        """Admit a request or raise ``QueueFull`` (429). Call from the event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._stopped:
                raise CompletionError(503, "the server is shutting down", title="Service Unavailable")
            busy = self._current is not None or self._waiting > 0
            if busy and self._waiting >= self.queue_size:
                raise QueueFull(self._waiting, self.retry_after())
            self._waiting += 1
        job = Job(request, seed, loop, opener or self._opener)
        self._jobs.put(job)
        return job

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean time per request times the queue ahead."""
        return max(1, min(60, math.ceil(self._mean_seconds * max(1, self._waiting))))

    def status(self) -> dict:
        with self._lock:
            return {
                "busy": self._current is not None,
                "waiting": self._waiting,
                "queue_size": self.queue_size,
                "served": self._served,
            }

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the running and waiting requests and end the worker thread."""
        with self._lock:
            self._stopped = True
            if self._current is not None:
                self._current.cancel.set()
        while True:
            try:
                job = self._jobs.get_nowait()
            except _queue.Empty:
                break
            if job is not None:
                job.cancel.set()
                job.push(END)
        self._jobs.put(None)
        self._thread.join(timeout)

    # ---- the worker thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
                self._current = job
            start = time.perf_counter()
            try:
                self._serve(job)
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self._current = None
                    self._served += 1
                    if not job.cancel.is_set():
                        self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * elapsed
                job.finished.set()
                job.push(END)

    def _serve(self, job: Job) -> None:
        job.started.set()
        if job.cancel.is_set():  # the client left while waiting
            return
        opener = job.opener
        if opener is None:
            from ..service import open_events as opener
        try:
            events = opener(job.request, seed=job.seed, cancel=job.cancel)
        except CompletionError as exc:
            job.push(exc)
            return
        except Exception:
            log.exception("engine failed to open a request")
            job.push(EngineFailure("The engine failed before generating."))
            return
        job.push(OPENED)
        try:
            for event in events:
                job.push(event)
        except CompletionError as exc:
            job.push(exc)
        except Exception:
            log.exception("engine failed while generating")
            job.push(EngineFailure())
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # pragma: no cover - closing must not mask the result
                    log.exception("closing an event stream failed")
