"""One generation drained off the kernel's main thread: the runner of the ``%%complete`` magic,
``compare()`` and the widget (Generate and its branches).

A ``Runner`` pulls one ``Delta``/``Finished`` stream on a worker thread and folds it
(``engine/fold.py``) into ``result``, a ``Drained``. The engine's generator only ever runs on
that thread, so a kernel interrupt never lands inside it. ``cancel()`` sets the event the engine
watches: the stream ends within one token with ``Finished(cancelled=True)`` and the partial
output is kept. Two ways to use it:

* **Blocking, interruptible** (the magic, ``compare()``): ``drain(events, cancel, on_progress)``
  waits on the calling thread. ``on_progress(run_so_far)`` is called there at most every
  ``interval`` while text arrives, and once more at the end. A kernel interrupt (SIGINT on the
  main thread, or ``KeyboardInterrupt`` raised by ``on_progress``) cancels instead of raising,
  the drain goes on to the engine's ``Finished`` (at most ``GRACE_S``), and ``interrupted`` says so.
* **In the background** (the widget, whose Stop click must reach the kernel's main thread while
  it generates): ``Runner(open_stream, cancel, on_batch=..., on_done=...).start()``.
  ``open_stream()`` runs on the worker (loading a model takes a while), ``on_batch(records)``
  gets the new token records from the worker, the first at once and then at most one batch every
  ``interval``, and ``on_done(result)`` comes once at the end, also after an error or a cancel.

    >>> from nb_completion.engine.records import Delta, Finished
    >>> run = drain(iter([Delta("Hi", ()), Finished("end_of_turn", 1, 1)]), threading.Event())
    >>> run.text, run.finished.stop_reason, run.interrupted
    ('Hi', 'end_of_turn', False)
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .api.errors import CompletionError, as_completion_error
from .engine.fold import Folded
from .engine.records import Delta, Event, TokenRecord

__all__ = ["Drained", "Runner", "drain", "GRACE_S", "BATCH_INTERVAL", "PROGRESS_INTERVAL"]

GRACE_S = 30.0  # after an interrupt, how long to wait for the engine to honour the cancel
BATCH_INTERVAL = 1 / 30  # the widget: at most ~30 browser updates a second
PROGRESS_INTERVAL = 0.08  # the magic and compare(): each update re-renders the whole display


@dataclass
class Drained(Folded):
    """The folded run (``engine.fold``), plus the error that ended it and whether a kernel
    interrupt stopped it."""

    error: CompletionError | None = None
    interrupted: bool = False

    @property
    def cancelled(self) -> bool:
        return self.finished is not None and self.finished.cancelled

    def snapshot(self) -> "Drained":
        """A copy whose lists no thread appends to any more."""
        return Drained(list(self.chunks), list(self.tokens), list(self.events), self.finished, self.error, self.interrupted)


class Runner:
    """One event stream, pulled and folded on a daemon thread (see the module's docstring).

    ``open_stream()`` returns the stream (called on the worker; a ``CompletionError`` it raises becomes
    ``result.error``, like one that ends the stream); ``cancel`` is the event the engine watches.
    ``clock`` paces the batches, the progress calls and the grace period (injected by tests).
    """

    def __init__(
        self,
        open_stream: Callable[[], Iterable[Event]],
        cancel: threading.Event,
        *,
        on_batch: Callable[[list[TokenRecord]], None] | None = None,
        on_done: Callable[[Drained], None] | None = None,
        interval: float = BATCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        name: str = "nb_completion-runner",
    ):
        self._open = open_stream
        self.cancel_event = cancel
        self.interval = interval
        self.result = Drained()
        self.done = threading.Event()
        self._on_batch = on_batch
        self._on_done = on_done
        self._clock = clock
        self._changed = threading.Condition()  # guards `result` and `_version`
        self._version = 0  # how many events were folded
        self._bug: Exception | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> "Runner":
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the engine to stop; it ends within one token, keeping the partial output."""
        self.cancel_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the run ended and ``on_done`` returned; False if ``timeout`` passed first."""
        return self.done.wait(timeout)

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    # ---- the worker ------------------------------------------------------------------------

    def _main(self) -> None:
        events: Iterable[Event] = ()
        pending: list[TokenRecord] = []
        sent_at: float | None = None
        try:
            events = self._open()
            for event in events:
                with self._changed:
                    self.result.add(event)
                    self._version += 1
                    self._changed.notify_all()
                if self._on_batch is not None and isinstance(event, Delta) and event.tokens:
                    pending.extend(event.tokens)
                    now = self._clock()
                    if sent_at is None or now - sent_at >= self.interval:  # the first token at once
                        batch, pending, sent_at = pending, [], now
                        self._on_batch(batch)
            if pending:
                batch, pending = pending, []
                self._on_batch(batch)  # type: ignore[misc]  # pending is only filled with on_batch set
        except Exception as exc:  # never let a bug kill the thread silently or leak a trace
            self._fail(exc)
            if pending:
                try:
                    self._on_batch(pending)  # type: ignore[misc]
                except Exception:  # the first failure is the one reported
                    pass
        finally:
            close = getattr(events, "close", None)
            if close is not None:  # an abandoned stream frees its place in the engine's batch
                try:
                    close()
                except Exception:  # pragma: no cover - closing must not mask the result
                    pass
            self._end()

    def _fail(self, exc: Exception) -> None:
        with self._changed:
            if self.result.error is None:
                self.result.error = as_completion_error(exc)
                if not isinstance(exc, CompletionError):
                    self._bug = exc  # not from open_events (which names the engine's errors): ours
            self._changed.notify_all()

    def _end(self) -> None:
        try:
            if self._on_done is not None:
                self._on_done(self.result)
        finally:
            with self._changed:
                self.done.set()
                self._changed.notify_all()

    # ---- blocking, interruptibly -----------------------------------------------------------

    def wait(self, on_progress: Callable[[Drained], None] | None = None) -> Drained:
        """Block until the run ends and return ``result``; ``on_progress`` sees the run so far
        (a snapshot) at most every ``interval`` while it changes, then ``result`` once at the end.
        An interrupt cancels the run (see the module's docstring) instead of raising."""
        cancelled_at: list[float] = []

        def interrupt() -> None:
            self.result.interrupted = True
            self.cancel()
            if not cancelled_at:
                cancelled_at.append(self._clock())

        with _interrupts_cancel(interrupt):
            shown, shown_at = 0, self._clock()
            while True:
                try:
                    with self._changed:
                        if not self.done.is_set():
                            self._changed.wait(self.interval)
                        if self.done.is_set():
                            break
                        due = on_progress is not None and self._version != shown and self._clock() - shown_at >= self.interval
                        run, version = (self.result.snapshot(), self._version) if due else (None, shown)
                    if cancelled_at and self._clock() - cancelled_at[0] > GRACE_S:
                        break  # the engine ignored the cancel; keep what we have
                    if run is not None:
                        shown, shown_at = version, self._clock()
                        on_progress(run)  # type: ignore[misc]
                except KeyboardInterrupt:
                    interrupt()
        if self._bug is not None:
            raise self._bug  # a bug of ours, shown as one (the widget gets it as an EngineFailure)
        if on_progress is not None:
            try:
                on_progress(self.result if self.done.is_set() else self.result.snapshot())
            except KeyboardInterrupt:
                self.result.interrupted = True
        return self.result


def drain(
    events: Iterable[Event],
    cancel: threading.Event,
    on_progress: Callable[[Drained], None] | None = None,
    interval: float = PROGRESS_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> Drained:
    """Collect every event of an opened stream, blocking but interruptibly (``Runner.wait``)."""
    runner = Runner(lambda: events, cancel, interval=interval, clock=clock, name="nb_completion-drain")
    return runner.start().wait(on_progress)


@contextlib.contextmanager
def _interrupts_cancel(interrupt: Callable[[], None]):
    """On the main thread, SIGINT (the kernel's interrupt) cancels instead of raising, so it can
    never land half-way through bookkeeping; elsewhere ``KeyboardInterrupt`` is caught instead."""
    installed, previous = False, None
    if threading.current_thread() is threading.main_thread():
        try:
            previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, lambda signum, frame: interrupt())
            installed = True
        except (ValueError, OSError):  # not allowed here (e.g. an embedded interpreter)
            pass
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)
