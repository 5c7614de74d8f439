"""The engine: it owns the sequences and steps all of them with one forward pass per step.

``submit(work)`` from any thread; one engine thread runs ``step()`` in a loop, which reads as
schedule, run, sample, emit::

    cancelled → end them                      scheduler.py  (who runs, in what role)
    admit waiting sequences                   slots.py      (where their cache lives; forks by copy)
    prefill up to ``chunk`` prompt tokens     model_runner.py (one pass; lean or model, compiled)
    decode every decoding row in one pass     model_runner.py
    choose and measure every row at once      batch_sampling.choose_batch (one read-back)
    emit each token to its sink; end the finished (park their caches for forks)

A ``Sequence`` holds its token ids, how many are in its KV slot (``cached``) and its decode state
(``Work``: sampling parameters and seed generator, penalties, grammar, ``max_new``, stop tokens,
and the ``sink`` that turns tokens into events; ``sequence.py``). See docs/engine.md.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

import torch

from .batch_sampling import RowTable, choose_batch
from .kv import SlotStore
from .model_runner import ModelRunner
from .scheduler import Scheduler
from .sequence import Sequence, Stats, Work
from .slots import SlotManager
from .engine_thread import EngineThread

log = logging.getLogger("nb_completion.engine")

DEFAULT_MAX_BATCH = 16  # sequences stepped together on the CPU
DEFAULT_MAX_BATCH_CUDA = 64


def default_max_batch(device: torch.device) -> int:
    return DEFAULT_MAX_BATCH_CUDA if device.type == "cuda" else DEFAULT_MAX_BATCH


class Engine(EngineThread):
    """Continuous batching over one model. ``submit`` from any thread; the engine thread does the rest."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch: Optional[int] = None,
        parked: int = 4,
        chunk: int = 128,
        max_len: Optional[int] = None,
        compile: bool = False,
        lean: bool = True,
    ):
        device = next(model.parameters()).device
        max_batch = max_batch or default_max_batch(device)
        table = model.get_input_embeddings()
        dtype = getattr(table, "dtype", None) or table.weight.dtype  # a GGUF block table says its own
        context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        store = SlotStore(model, max_batch + parked, max_len or context, device, dtype)
        runner = ModelRunner(model, store, lean=lean, compile=compile)
        self._assemble(runner, store, int(model.config.vocab_size), max_batch=max_batch, parked=parked, chunk=chunk)
        self.model = model

    @classmethod
    def from_parts(cls, runner: Any, store: Any, vocab: int, *, max_batch: int, parked: int, chunk: int) -> "Engine":
        """An engine over any runner and store with ``ModelRunner``'s and ``SlotStore``'s methods
        (the scheduler's tests use fakes: no model)."""
        engine = cls.__new__(cls)
        engine._assemble(runner, store, vocab, max_batch=max_batch, parked=parked, chunk=chunk)
        engine.model = None
        return engine

    def _assemble(self, runner: Any, store: Any, vocab: int, *, max_batch: int, parked: int, chunk: int) -> None:
        self.runner, self.store = runner, store
        self.device, self.dtype = store.device, store.dtype
        self.max_batch, self.chunk = max_batch, chunk
        self.table = RowTable(max_batch + parked, vocab, self.device)
        self.stats = Stats()
        self.slots = SlotManager(store, self.table, max_batch, parked)
        self.scheduler = Scheduler(self.slots, max_batch, self.stats)
        self._start_thread_state()
        runner.on_compiled = self._compiled

    # ---- what tests and the status line read ----------------------------------------------------

    @property
    def lean(self) -> Any:
        return self.runner.lean

    @property
    def compiled(self) -> threading.Event:
        return self.runner.compiled

    @property
    def decode_pass(self) -> str:
        return self.runner.decode_pass

    @property
    def parked(self) -> dict:
        return self.slots.parked

    # ---- the engine thread's hooks (engine_thread.py) -------------------------------------------

    def check_fits(self, work: Work) -> None:
        if len(work.ids) > self.store.max_len - 1 or len(work.ids) + work.max_new > self.store.max_len:
            raise ValueError("the sequence does not fit in the engine's cache")

    def busy(self) -> bool:
        return self.scheduler.busy

    def has_pending(self) -> bool:
        return self.runner.switch_pending

    def take(self, seqs: list[Sequence]) -> None:
        self.scheduler.add(seqs)

    def before_step(self) -> None:
        self.runner.switch_when_idle(idle=self.scheduler.held == 0)

    @property
    def active(self) -> int:
        s = self.scheduler
        return len(s.decoding) + (s.prefilling is not None) + len(s.waiting) + len(self._inbox)

    def _compiled(self) -> None:
        """The compile thread built the decode pass: switch now if nothing has run yet."""
        with self._cond:
            if self._thread is None:
                self.runner.switch_when_idle(idle=True)
            self._cond.notify()

    # ---- one step ------------------------------------------------------------------------------

    def step(self) -> None:
        """Schedule, run, sample, emit."""
        scheduler = self.scheduler
        self.runner.switch_when_idle(idle=scheduler.held == 0)
        self.stats.steps += 1
        for seq in scheduler.cancelled():
            self._end(seq, "cancelled")
        scheduler.admit()
        budget = self.chunk  # prompt tokens per step, over as many short prompts as fit
        while (job := scheduler.next_prefill(budget)) is not None:
            seq, n = job
            budget -= n
            self._prefill(seq, n)
            if scheduler.prefilling is None:
                scheduler.admit()
        if scheduler.decoding:
            self._decode(scheduler.decoding)

    def _prefill(self, seq: Sequence, n: int) -> None:
        try:
            self.runner.prefill(seq.slot, seq.ids[seq.cached : seq.cached + n], seq.cached)
        except Exception as exc:
            log.exception("prefill failed")
            self._end(seq, "error", error=exc)
            return
        self.stats.prefill_passes += 1
        self.stats.prefill_tokens += n
        self.scheduler.prefilled(seq, n)

    def _decode(self, rows: list[Sequence]) -> None:
        logits = self.runner.decode([s.ids[s.cached] for s in rows], [s.cached for s in rows])
        if self.runner.compiled.is_set():
            self.stats.compiled_passes += 1
        top_n = max(max(s.work.params.top_logprobs for s in rows), 1)
        chosen = choose_batch(logits, self.table, 0, [s.work.constraint for s in rows], top_n)
        now = time.perf_counter()
        self.stats.decode_passes += 1
        self.stats.decode_rows += len(rows)
        self.stats.max_rows = max(self.stats.max_rows, len(rows))
        ending: list[tuple[Sequence, str, Optional[int], Optional[BaseException]]] = []
        for seq, pick in zip(list(rows), chosen):
            seq.cached += 1
            if pick.error is not None:
                ending.append((seq, "error", None, pick.error))
                continue
            ending += [(seq, *end) for end in self._emit(seq, pick, now)]
        for seq, reason, stop_token_id, error in ending:
            self._end(seq, reason, stop_token_id, error)

    @staticmethod
    def _emit(seq: Sequence, pick: Any, now: float) -> list[tuple[str, Optional[int], Optional[BaseException]]]:
        """Hand the chosen token to the sequence's sink; return why it ends here, if it does."""
        token = pick.token_id
        seq.ids.append(token)
        seq.steps += 1
        work = seq.work
        try:
            if work.constraint is not None:
                work.constraint.advance(token)
            stop = work.sink.on_token(pick, now)
        except Exception as exc:
            return [("error", None, exc)]
        if stop:
            return [("stop_string", None, None)]
        if token in work.stop_ids:
            return [("stop_token", token, None)]
        if work.constraint is not None and work.constraint.is_finished():
            return [("grammar_complete", None, None)]
        if seq.steps >= work.max_new:
            return [("out_of_tokens", None, None)]
        return []

    def _end(self, seq: Sequence, reason: str, stop_token_id: Optional[int] = None, error: BaseException | None = None) -> None:
        if seq.done:
            return
        seq.done = True
        self.scheduler.remove(seq, park=error is None)
        self.tell_end(seq, reason, stop_token_id, error)

    def fail_all(self, exc: BaseException) -> None:
        self.scheduler.add(self._drain_inbox())
        for seq in self.scheduler.drain():
            seq.done = True
            self.tell_end(seq, "error", None, exc)
