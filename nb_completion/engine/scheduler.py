"""The scheduler: which sequences run in this step, and in what role.

Each step (``batch_engine.Engine.step``) asks it, in order:

1. **cancelled()**: sequences whose cancel event is set; the engine ends them now (waiting ones
   never start).
2. **admit()**: waiting sequences join, in arrival order, while the batch has room. Each takes the
   longest prefix of its ids already cached by a live or parked sequence (the slot manager forks
   it by copy). A sequence with one uncached token left joins the decode batch at once; one with
   more is *prefilled*, one at a time, in order (a later prompt waits behind an earlier one).
3. **next_prefill(budget)**: up to ``budget`` prompt tokens per step (``chunk``): a chunk of a
   long prompt, or several short prompts one after another. The last prompt token is left for
   the decode pass, which yields the first token. A long prompt thus costs the decoding rows one
   chunk of latency per step, and its cancel is honoured between chunks.
4. **decoding**: every decoding sequence feeds its newest token in one pass, row ``i`` in slot
   ``i``. When one leaves, the last decoding row moves into its hole, so the batch stays the
   contiguous slots ``[0, rows)``; a finished sequence's cache is parked for later forks.

No tensors, no model: it is tested with fake slots and fake runner outputs
(``tests/test_scheduler.py``).
"""

from __future__ import annotations

import collections
from typing import Optional

from .sequence import Sequence, Stats
from .slots import SlotManager


class Scheduler:
    def __init__(self, slots: SlotManager, max_batch: int, stats: Stats):
        self.slots, self.max_batch, self.stats = slots, max_batch, stats
        self.decoding: list[Sequence] = []  # decoding[i].slot == i
        self.prefilling: Optional[Sequence] = None  # at slot len(decoding)
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.admitting: Optional[Sequence] = None  # ended by the engine if admission itself raises

    @property
    def held(self) -> int:
        """Batch slots holding a sequence: ``[0, held)``."""
        return len(self.decoding) + (self.prefilling is not None)

    @property
    def busy(self) -> bool:
        return bool(self.decoding or self.prefilling or self.waiting)

    def add(self, seqs: list[Sequence]) -> None:
        self.waiting.extend(seqs)

    def cancelled(self) -> list[Sequence]:
        live = (*self.waiting, *self.decoding, self.prefilling)
        return [s for s in live if s is not None and s.work.cancel.is_set()]

    def admit(self) -> None:
        while self.waiting and self.held < self.max_batch:
            seq = self.waiting[0]
            live = [*self.decoding, *([self.prefilling] if self.prefilling is not None else [])]
            donor, reuse = self.slots.donor(seq.ids, live)
            direct = len(seq.ids) - reuse == 1
            if not direct and self.prefilling is not None:
                break  # one prompt prefills at a time, in order
            self.waiting.popleft()
            self.admitting = seq
            target = len(self.decoding)
            if direct and self.prefilling is not None:
                self.slots.move(self.prefilling, target + 1)
            self.slots.place(seq, target, donor, reuse)
            self.stats.reused_tokens += reuse
            if direct:
                self.decoding.append(seq)
            else:
                self.prefilling = seq
            self.admitting = None

    def next_prefill(self, budget: int) -> Optional[tuple[Sequence, int]]:
        """(the prefilling sequence, how many prompt tokens to run now), or None."""
        seq = self.prefilling
        if seq is None or budget <= 0:
            return None
        return seq, min(budget, seq.uncached - 1)

    def prefilled(self, seq: Sequence, n: int) -> None:
        """``n`` more prompt tokens of ``seq`` are cached; once one is left it decodes."""
        seq.cached += n
        if seq.uncached == 1:
            self.prefilling = None
            self.decoding.append(seq)

    def remove(self, seq: Sequence, park: bool) -> None:
        """``seq`` leaves (finished, failed or cancelled); with ``park`` its cache is kept for forks."""
        if seq is self.prefilling:
            self.prefilling = None
        elif seq in self.decoding:
            if park:
                self.slots.park(seq)
            hole = seq.slot
            last = self.decoding.pop()
            if last is not seq:
                self.slots.move(last, hole)
                self.decoding[hole] = last
            if self.prefilling is not None:
                self.slots.move(self.prefilling, len(self.decoding))
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.slots.release_unheld(self.held)

    def drain(self) -> list[Sequence]:
        """Every sequence it holds, removed (the engine fails them all)."""
        seqs = [
            *self.waiting,
            *self.decoding,
            *([self.prefilling] if self.prefilling else []),
            *([self.admitting] if self.admitting else []),
        ]
        self.waiting.clear()
        self.decoding.clear()
        self.prefilling, self.admitting = None, None
        return seqs
