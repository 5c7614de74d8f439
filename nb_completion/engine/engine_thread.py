"""The thread both engines run on (the batched ``batch_engine.Engine`` and the per-sequence
``sequential.SequentialEngine``): ``submit`` from any thread puts a sequence in the inbox; the
engine thread takes the inbox at step boundaries and steps while anything is live; a step that
raises ends every sequence with that error and the thread keeps serving; ``close`` ends it.

A subclass says when it is busy, takes new sequences, steps, and fails everyone; it may check that
a sequence fits (``check_fits``) and wake for work of its own (``has_pending``)."""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any, Optional

import torch

from .sequence import Sequence, Work

log = logging.getLogger("nb_completion.engine")

_live_engines: "weakref.WeakSet[Any]" = weakref.WeakSet()


@atexit.register
def _close_live_engines() -> None:
    """End every engine thread before the interpreter freezes daemon threads: one frozen inside
    torch while its thread pools are torn down aborts the process ("terminate called without an
    active exception")."""
    for engine in list(_live_engines):
        engine.close(timeout=2.0)


class EngineThread:
    thread_name = "nb_completion-engine"

    def _start_thread_state(self) -> None:
        self._cond = threading.Condition()
        self._inbox: list[Sequence] = []
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        _live_engines.add(self)

    # ---- what a subclass provides --------------------------------------------------------------

    def check_fits(self, work: Work) -> None:
        """Raise ``ValueError`` when ``work`` cannot run on this engine."""

    def busy(self) -> bool:
        raise NotImplementedError

    def has_pending(self) -> bool:
        """Work of the engine's own to wake for (a compiled pass waiting to be switched in)."""
        return False

    def take(self, seqs: list[Sequence]) -> None:
        raise NotImplementedError

    def before_step(self) -> None:
        """Called on the engine thread after new sequences are taken, before a step."""

    def step(self) -> None:
        raise NotImplementedError

    def fail_all(self, exc: BaseException) -> None:
        raise NotImplementedError

    @staticmethod
    def tell_end(seq: Sequence, reason: str, stop_token_id: Optional[int], error: Optional[BaseException]) -> None:
        """Tell ``seq``'s sink how it ended (``on_error`` or ``on_end``); a failing sink is logged,
        never allowed to take the engine down."""
        try:
            if error is not None:
                seq.work.sink.on_error(error)
            else:
                seq.work.sink.on_end(reason, stop_token_id, seq.steps)
        except Exception:  # pragma: no cover - a sink must not take the engine down
            log.exception("a sequence's sink failed")

    # ---- any thread ----------------------------------------------------------------------------

    def submit(self, work: Work) -> Sequence:
        self.check_fits(work)
        seq = Sequence(work)
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._inbox.append(seq)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return seq

    def wake(self) -> None:
        """Make the engine look at cancel events now (it also does at every step)."""
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _drain_inbox(self) -> list[Sequence]:
        with self._cond:
            seqs, self._inbox = self._inbox, []
        return seqs

    # ---- the engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._inbox and not self.busy() and not self.has_pending():
                        self._cond.wait()
                    if self._closed:
                        break
                    self.take(self._inbox)
                    self._inbox = []
                self.before_step()
                if not self.busy():
                    continue
                try:
                    self.step()
                except Exception as exc:  # a bug or a failed pass: end everyone, keep serving
                    log.exception("engine step failed")
                    self.fail_all(exc)
        self.fail_all(RuntimeError("the engine was closed"))
