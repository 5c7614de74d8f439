"""Drain a stream of ``Delta``/``Finished`` events from the kernel's main thread, interruptibly.

The events are pulled on a worker thread and handed over through a queue, so a kernel interrupt
(``KeyboardInterrupt`` in the main thread) never lands inside the engine's generator: it sets
the cancel event, the engine ends within one token with ``Finished(cancelled=True)``, and the
partial output is kept. ``on_progress`` is called at most every ``interval`` seconds while text
arrives (batched display updates), and once more at the end.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ..api.errors import CompletionError
from ..engine.fold import Folded
from ..engine.records import Delta, Event

__all__ = ["Drained", "drain"]

_END = object()
GRACE_S = 30.0  # after an interrupt, how long to wait for the engine to honour the cancel


@dataclass
class Drained(Folded):
    """The folded run (``engine.fold``), plus the error that ended it and whether the user
    interrupted it."""

    error: CompletionError | None = None
    interrupted: bool = False


def _pull_into_queue(events: Iterator[Event], out: "queue.SimpleQueue[object]") -> None:
    try:
        for event in events:
            out.put(event)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread (open_events names it)
        out.put(exc)
    finally:
        out.put(_END)


def drain(
    events: Iterator[Event],
    cancel: threading.Event,
    on_progress: Callable[[Drained], None] | None = None,
    interval: float = 0.08,
    clock: Callable[[], float] = time.monotonic,
) -> Drained:
    """Collect every event; survive ``KeyboardInterrupt`` by cancelling and draining to the end.
    ``clock`` paces the progress calls and the grace period (injected by tests)."""
    result = Drained()
    inbox: "queue.SimpleQueue[object]" = queue.SimpleQueue()
    worker = threading.Thread(target=_pull_into_queue, args=(events, inbox), name="nb_completion-drain", daemon=True)
    worker.start()
    cancelled_at: float | None = None

    def interrupt() -> None:
        nonlocal cancelled_at
        result.interrupted = True
        cancel.set()
        if cancelled_at is None:
            cancelled_at = clock()

    with _interrupts_cancel(interrupt):
        _loop(inbox, result, on_progress, interval, interrupt, lambda: cancelled_at, clock)
    if on_progress is not None:
        try:
            on_progress(result)
        except KeyboardInterrupt:
            result.interrupted = True
    return result


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


def _loop(inbox, result: Drained, on_progress, interval: float, interrupt, cancelled_at, clock) -> None:
    last_shown = clock()
    dirty = False
    while True:
        try:
            item = inbox.get(timeout=interval)
        except queue.Empty:
            item = None
        except KeyboardInterrupt:
            interrupt()
            continue
        if item is _END:
            break
        if isinstance(item, CompletionError):
            result.error = item
        elif isinstance(item, BaseException):
            raise item  # not from open_events (which raises only CompletionError): a bug, shown as one
        elif item is not None:
            result.add(item)  # type: ignore[arg-type]
            dirty = dirty or isinstance(item, Delta)
        since = cancelled_at()
        if since is not None and clock() - since > GRACE_S:
            break  # the engine ignored the cancel; keep what we have
        if on_progress is not None and dirty and clock() - last_shown >= interval:
            try:
                on_progress(result)
            except KeyboardInterrupt:
                interrupt()
            dirty = False
            last_shown = clock()
