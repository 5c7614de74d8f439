"""Batch per-token records into browser updates: at most one every ``interval`` seconds."""

from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

MAX_UPDATES_PER_SECOND = 30


class DeltaBatcher(Generic[T]):
    """Collects items; ``add`` returns a batch when the last one went out ``interval`` ago.

    The first item of a run goes out at once (time to first token is what users watch); later
    ones wait at most one interval, and ``flush`` sends whatever is left when the run ends.
    """

    def __init__(self, interval: float = 1 / MAX_UPDATES_PER_SECOND, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._pending: list[T] = []
        self._last: float | None = None

    def add(self, items: list[T] | tuple[T, ...]) -> list[T] | None:
        self._pending.extend(items)
        if not self._pending:
            return None
        now = self._clock()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            return self._take()
        return None

    def flush(self) -> list[T] | None:
        if not self._pending:
            return None
        self._last = self._clock()
        return self._take()

    def _take(self) -> list[T]:
        batch, self._pending = self._pending, []
        return batch
