"""The per-sequence engine: every sequence runs the model's OWN forward with the model's OWN cache
(whatever ``model(..., use_cache=True)`` returns: a ``DynamicCache`` with sliding-window layers, a
Mamba state, ...), exactly as HF ``generate()`` steps it. It is the path for every architecture the
batched slot cache (``kv.py``) cannot hold right (``architectures.batched_path_holds``).

It has the batched ``Engine``'s interface (``submit``/``wake``/``close``/``active``/``stats``/
``decode_pass``), takes the same ``Work`` and chooses tokens with the same ``choose_batch`` (a
one-row table slot per sequence), so the ``LocalBackend`` shapes the same records: streaming,
logprobs and alternatives, stop strings and tokens, grammar and the teaching views' ``observe``
work unchanged. Sequences take turns, one token each per round; nothing is forked or batched, so a
prompt's prefix is recomputed for each request (slower, HF-identical).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Optional

import torch

from .batch_sampling import RowTable, choose_batch
from .kv import cache_kwarg
from .model_lock import model_lock
from .engine_thread import EngineThread
from .sequence import Sequence, Stats

log = logging.getLogger("nb_completion.engine")

# (output attribute, forward keyword: None = the model's cache keyword) where models hand back
# the state the next step continues from
STATE_OUTPUTS = (("cache", None), ("past_key_values", None), ("cache_params", "cache_params"), ("state", "state"))

RERUN = ("rerun", None)  # the state of a model that hands back none: run the whole sequence again

PASS_NAME = "per-sequence (the model's own forward and cache)"


class _Running:
    def __init__(self, seq: Sequence, slot: int):
        self.seq, self.slot = seq, slot
        self.cache: Any = None
        self.logits: Optional[torch.Tensor] = None  # [1, vocab]: the next token's, once prefilled


class SequentialEngine(EngineThread):
    """Steps each open sequence in turn with the model's own forward and cache."""

    def __init__(self, model: Any, *, max_batch: Optional[int] = None, **_ignored: Any):
        self.model = model
        self.device = next(model.parameters()).device
        self.max_batch = max_batch or 8
        self.table = RowTable(self.max_batch, int(model.config.vocab_size), self.device)
        self.cache_name = cache_kwarg(model)
        self.lock = model_lock(model)  # the inside views switch the model's attention and hook its layers
        self.stats = Stats()
        self.compiled = threading.Event()  # never compiled
        self.running: list[_Running] = []
        self.waiting: collections.deque[Sequence] = collections.deque()
        self._start_thread_state()

    decode_pass = PASS_NAME

    thread_name = "nb_completion-sequential"

    # ---- the engine thread's hooks (engine_thread.py) -------------------------------------------

    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def take(self, seqs: list[Sequence]) -> None:
        self.waiting.extend(seqs)

    @property
    def active(self) -> int:
        return len(self.running) + len(self.waiting) + len(self._inbox)

    # ---- one step ------------------------------------------------------------------------------

    def step(self) -> None:
        self.stats.steps += 1
        for seq in [s for s in self.waiting if s.work.cancel.is_set()]:
            self.waiting.remove(seq)
            self._end(seq, "cancelled")
        free = [slot for slot in range(self.max_batch) if slot not in {r.slot for r in self.running}]
        while self.waiting and free:
            seq = self.waiting.popleft()
            slot = free.pop(0)
            seq.slot = slot
            self.table.set(slot, seq.work.params, seq.ids)
            self.running.append(_Running(seq, slot))
        for run in list(self.running):
            self._advance(run)

    def _forward(self, ids: list[int], cache: Any, history: list[int]) -> tuple[torch.Tensor, Any]:
        """The next token's logits after ``ids`` and the state to continue from. A model that hands
        back no state (RecurrentGemma keeps it inside its modules, shared by every sequence) runs
        the whole ``history`` again without a cache each step: slow, but never a wrong token."""
        if cache is RERUN:
            with self.lock:
                out = self.model(input_ids=torch.tensor([history], device=self.device), use_cache=False)
            return out.logits[:, -1], RERUN
        kwargs: dict[str, Any] = {"input_ids": torch.tensor([ids], device=self.device), "use_cache": True}
        if cache is not None:
            name, value = cache
            kwargs[name] = value
        with self.lock:
            out = self.model(**kwargs)
        for attribute, kwarg in STATE_OUTPUTS:
            value = getattr(out, attribute, None)
            if value is not None:
                return out.logits[:, -1], (kwarg or self.cache_name, value)
        # no state handed back: continuing from None would restart from nothing at every token
        return out.logits[:, -1], RERUN

    def _advance(self, run: _Running) -> None:
        seq, work = run.seq, run.seq.work
        if work.cancel.is_set():
            return self._finish(run, "cancelled")
        try:
            if run.logits is None:  # prefill the whole prompt in one pass, as generate() does
                run.logits, run.cache = self._forward(seq.ids, None, seq.ids)
                seq.cached = len(seq.ids)
                self.stats.prefill_passes += 1
                self.stats.prefill_tokens += len(seq.ids)
            chosen = choose_batch(run.logits, self.table, run.slot, [work.constraint], max(work.params.top_logprobs, 1))[0]
        except Exception as exc:
            log.exception("per-sequence pass failed")
            return self._finish(run, "error", error=exc)
        self.stats.decode_passes += 1
        self.stats.decode_rows += 1
        self.stats.max_rows = max(self.stats.max_rows, len(self.running))
        if chosen.error is not None:
            return self._finish(run, "error", error=chosen.error)
        token = chosen.token_id
        seq.ids.append(token)
        seq.steps += 1
        try:
            if work.constraint is not None:
                work.constraint.advance(token)
            stop = work.sink.on_token(chosen, time.perf_counter())
        except Exception as exc:
            return self._finish(run, "error", error=exc)
        if stop:
            return self._finish(run, "stop_string")
        if token in work.stop_ids:
            return self._finish(run, "stop_token", token)
        if work.constraint is not None and work.constraint.is_finished():
            return self._finish(run, "grammar_complete")
        if seq.steps >= work.max_new:
            return self._finish(run, "out_of_tokens")
        try:
            run.logits, run.cache = self._forward([token], run.cache, seq.ids)
            seq.cached += 1
        except Exception as exc:
            log.exception("per-sequence pass failed")
            self._finish(run, "error", error=exc)

    def _finish(
        self, run: _Running, reason: str, stop_token_id: Optional[int] = None, error: Optional[BaseException] = None
    ) -> None:
        if run in self.running:
            self.running.remove(run)
        self.table.clear(run.slot)
        run.cache = run.logits = None
        self._end(run.seq, reason, stop_token_id, error)

    def _end(
        self, seq: Sequence, reason: str, stop_token_id: Optional[int] = None, error: Optional[BaseException] = None
    ) -> None:
        if seq.done:
            return
        seq.done = True
        self.tell_end(seq, reason, stop_token_id, error)

    def fail_all(self, exc: BaseException) -> None:
        self.waiting.extend(self._drain_inbox())
        for seq in [*self.waiting, *(r.seq for r in self.running)]:
            self._end(seq, "error", error=exc)
        self.waiting.clear()
        self.running.clear()
