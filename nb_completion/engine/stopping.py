"""Stop strings that never reach the output, also while streaming.

``StopStringFilter`` receives each token's text and releases only text that cannot be the start
of a stop string. It also tracks which tokens the released text belongs to, so each ``Delta``
carries exactly the tokens whose text it delivers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from .records import Delta, TokenRecord


def _held_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StopStringFilter:
    def __init__(self, stops: Sequence[str] | None):
        self._stops = [s for s in (stops or []) if s]
        self._pending: list[TokenRecord] = []  # tokens not yet (fully) delivered
        self._buffer = ""  # their text, not yet delivered
        self.stopped = False
        self.matched: str | None = None  # the stop string found, once stopped

    def push(self, record: TokenRecord) -> Delta:
        """Add a token; return what can be delivered now. Sets ``stopped`` on a stop string."""
        if self.stopped:
            return Delta(text="")
        self._pending.append(record)
        self._buffer += record.text
        if not self._stops:
            return self._release(len(self._buffer))
        hits = [(i, s) for i, s in ((self._buffer.find(s), s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            at, self.matched = min(hits, key=lambda hit: hit[0])
            delta = self._release(at)
            self._pending, self._buffer = [], ""
            return delta
        return self._release(len(self._buffer) - _held_suffix(self._buffer, self._stops))

    def flush(self) -> Delta:
        """The end of generation: held text was not a stop string after all."""
        return self._release(len(self._buffer))

    def _release(self, upto: int) -> Delta:
        """Deliver the whole tokens that fit in ``buffer[:upto]``; on a stop, also the token
        that straddles the stop string, trimmed to the text before it. A token is never split
        across deltas, so each token appears in exactly one ``Delta``."""
        delivered: list[TokenRecord] = []
        consumed = 0
        while self._pending:
            record = self._pending[0]
            if consumed + len(record.text) <= upto:
                delivered.append(self._pending.pop(0))
                consumed += len(record.text)
                continue
            if self.stopped and consumed < upto:
                delivered.append(replace(record, text=record.text[: upto - consumed]))
                self._pending.pop(0)
                consumed = upto
            break
        text, self._buffer = self._buffer[:consumed], self._buffer[consumed:]
        return Delta(text=text, tokens=tuple(delivered))
