"""What the engine steps: a request's decode state (``Work``), its progress (``Sequence``), the sink
its tokens go to, and the engine's counters. Plain data, shared by the scheduler, the slot manager,
the model runner and the engine loop (``batch_engine.py``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from .batch_sampling import Chosen, RowParams


class Sink(Protocol):
    def on_token(self, chosen: Chosen, now: float) -> bool:
        """A new token; return True to stop the sequence here (a stop string)."""

    def on_end(self, reason: str, stop_token_id: Optional[int], steps: int) -> None:
        """The sequence ended: stop_token | grammar_complete | out_of_tokens | stop_string | cancelled."""

    def on_error(self, exc: BaseException) -> None: ...


@dataclass
class Work:
    ids: list[int]
    params: RowParams
    max_new: int
    sink: Sink
    stop_ids: frozenset[int] = frozenset()
    constraint: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)


class Sequence:
    def __init__(self, work: Work):
        self.work = work
        self.ids = list(work.ids)
        self.prompt_len = len(self.ids)
        self.cached = 0  # ids[:cached] have their keys and values in the slot
        self.reused = 0  # of which taken from another sequence's slot
        self.slot: Optional[int] = None
        self.steps = 0
        self.done = False

    @property
    def uncached(self) -> int:
        return len(self.ids) - self.cached


@dataclass
class Stats:
    steps: int = 0
    decode_passes: int = 0
    decode_rows: int = 0
    max_rows: int = 0  # the widest decode pass so far
    prefill_passes: int = 0
    prefill_tokens: int = 0
    reused_tokens: int = 0
    compiled_passes: int = 0  # decode passes made by the compiled pass
