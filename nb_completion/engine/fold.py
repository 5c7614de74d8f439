"""Fold a stream of ``Delta`` / ``Finished`` events into one result, and its metrics, once.

Every frontend that needs the whole run (``service.to_response``, the OpenAI route's
``OpenAIShaper``, the notebook's ``drain``, the CLI) folds the events here, and reads the numbers
from ``Metrics`` (computed from ``Finished`` in one place) and the one-line summary from
``summary``. Pure: no torch, no pydantic.

    >>> run = fold([Delta("Hi", ()), Delta(" there", ()), Finished("end_of_turn", 3, 2, tokens_per_second=20.0)])
    >>> run.text, run.metrics.total_tokens
    ('Hi there', 5)
    >>> summary(run.finished)
    '2 tokens · 20.0 tokens/s · stop: end_of_turn'
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Iterable

from .records import Delta, Event, Finished, TokenRecord

__all__ = ["Folded", "Metrics", "fold", "summary", "end_token_text", "incomplete", "INCOMPLETE_NOTE"]


@dataclass(frozen=True)
class Metrics:
    """The numbers of one finished run, as every frontend reports them."""

    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float | None = None  # seconds
    tokens_per_second: float | None = None

    @classmethod
    def of(cls, finished: Finished) -> Metrics:
        return cls(finished.prompt_tokens, finished.completion_tokens, finished.time_to_first_token, finished.tokens_per_second)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def usage(self) -> dict[str, int]:
        """The token counts (OpenAI's ``usage``; the first three of ``rows``)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    def rows(self) -> list[tuple[str, float, str]]:
        """``(metric, value, unit)``: the token counts, then the timings that were measured
        (rounded to a microsecond and a thousandth of a token per second)."""
        rows: list[tuple[str, float, str]] = [(name, value, "tokens") for name, value in self.usage().items()]
        if self.time_to_first_token is not None:
            rows.append(("time_to_first_token", round(self.time_to_first_token, 6), "s"))
        if self.tokens_per_second is not None:
            rows.append(("tokens_per_second", round(self.tokens_per_second, 3), "tokens/s"))
        return rows


@dataclass
class Folded:
    """The run so far: text pieces, token records, every event, and the ``Finished`` once it came."""

    chunks: list[str] = field(default_factory=list)
    tokens: list[TokenRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    finished: Finished | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def metrics(self) -> Metrics | None:
        return None if self.finished is None else Metrics.of(self.finished)

    def add(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Delta):
            self.chunks.append(event.text)
            self.tokens.extend(event.tokens)
        else:
            self.finished = event


def fold(events: Iterable[Event]) -> Folded:
    """Every event of ``events`` folded into one ``Folded``."""
    run = Folded()
    for event in events:
        run.add(event)
    return run


INCOMPLETE_NOTE = (
    "incomplete: max_tokens ended the constrained output before it was complete; it may not parse (allow more tokens)"
)


def incomplete(finished: Finished | None, constrained: bool) -> bool:
    """A constrained run that hit the token limit: the grammar was not finished, so JSON may not parse."""
    return constrained and finished is not None and not finished.cancelled and finished.stop_reason == "out_of_tokens"


def summary(finished: Finished | None, n_tokens: int | None = None) -> str:
    """``'24 tokens · 31.5 tokens/s · stop: out_of_tokens'`` (or why it ended early); while
    generating (``finished`` None), ``'n tokens · generating…'``."""
    if finished is None:
        return f"{n_tokens or 0} tokens · generating…"
    n = finished.completion_tokens
    parts = [f"{n} token" if n == 1 else f"{n} tokens"]
    if finished.tokens_per_second:
        parts.append(f"{finished.tokens_per_second:.1f} tokens/s")
    parts.append("interrupted, partial text kept" if finished.cancelled else f"stop: {finished.stop_reason}")
    if finished.end_token is not None and not finished.cancelled:
        parts.append(end_token_text(finished.end_token))
    return " · ".join(parts)


def end_token_text(end: TokenRecord) -> str:
    """``'ended on its end token <|im_end|> (97.2%)'``: the token a run stopped on is shown,
    though it adds no text (a raw question often ends at once: its most likely next token)."""
    return f"ended on its end token {end.piece or end.token_id} ({100 * math.exp(end.logprob):.1f}%)"
