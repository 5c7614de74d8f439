"""The KV slot manager: where each sequence's cache lives.

Slots ``[0, max_batch)`` hold the running sequences, packed: decoding row ``i`` is slot ``i`` and
the prefilling sequence sits just above them. Slots ``[max_batch, max_batch + parked)`` keep
finished sequences' caches for later forks (a widget branch, a re-run) until evicted. A sequence
that starts with a prefix some live or parked slot already holds takes it by copy (a fork), never
by recomputing. The manager moves the per-row sampling state (``RowTable``) with the cache, and
gives memory back through the store's policy (``kv.py``) when a slot's contents die.

It decides nothing about *who* runs (``scheduler.py``) and runs no model (``model_runner.py``), so
it is tested with a fake store and table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

from .kv import parked_over_budget
from .sequence import Sequence


@dataclass
class _Parked:
    ids: list[int]  # the ids whose KV the slot holds
    tick: int


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b):
        if n >= limit or x != y:
            break
        n += 1
    return n


class SlotManager:
    def __init__(self, store: Any, table: Any, max_batch: int, parked_slots: int):
        self.store, self.table = store, table  # kv.SlotStore, batch_sampling.RowTable (or fakes)
        self.max_batch, self.parked_slots = max_batch, parked_slots
        self.parked: dict[int, _Parked] = {}
        self._tick = 0

    def donor(self, ids: list[int], live: Iterable[Sequence]) -> tuple[Any, int]:
        """(live sequence or parked slot number, length): the longest cached prefix of ``ids``,
        at most ``len(ids) - 1`` (the last token is always fed, to yield the first logits)."""
        limit = len(ids) - 1
        best: Any = None
        best_len = 0
        candidates: list[tuple[Any, list[int]]] = [(s, s.ids[: s.cached]) for s in live]
        candidates += [(slot, p.ids) for slot, p in self.parked.items()]
        for owner, cached in candidates:
            n = common_prefix(cached, ids, limit)
            if n > best_len:
                best, best_len = owner, n
        return best, best_len

    def place(self, seq: Sequence, target: int, donor: Any, reuse: int) -> None:
        """Put ``seq`` in slot ``target``, its first ``reuse`` positions copied from ``donor``."""
        if donor is not None:
            source = donor if isinstance(donor, int) else donor.slot
            self.store.copy(source, target, reuse)
            if isinstance(donor, int):
                self.parked[donor].tick = self._next_tick()
        seq.cached = seq.reused = reuse
        seq.slot = target
        self.table.set(target, seq.work.params, seq.ids)

    def move(self, seq: Sequence, target: int) -> None:
        self.store.copy(seq.slot, target, seq.cached)
        self.table.move(seq.slot, target)
        seq.slot = target

    def park(self, seq: Sequence) -> Optional[int]:
        """Keep a finished sequence's cache in a parked slot for later forks (evicting the oldest);
        return the slot, or None when nothing is kept."""
        if self.parked_slots == 0 or seq.cached == 0:
            return None
        free = [s for s in range(self.max_batch, self.max_batch + self.parked_slots) if s not in self.parked]
        slot = free[0] if free else min(self.parked, key=lambda s: self.parked[s].tick)
        self.store.copy(seq.slot, slot, seq.cached)
        self.parked[slot] = _Parked(seq.ids[: seq.cached], self._next_tick())
        lengths = {s: len(p.ids) for s, p in self.parked.items()}
        for evicted in parked_over_budget(lengths, {s: p.tick for s, p in self.parked.items()}):  # kv.py's policy
            del self.parked[evicted]
            self.store.release(evicted, keep=0)
        return slot

    def release_unheld(self, held: int) -> None:
        """The batch slots ``[held, max_batch)`` hold no sequence: give their memory back."""
        self.store.release_range(held, self.max_batch)  # kv.py's policy

    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick
