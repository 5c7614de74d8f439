"""The one table of sampling defaults and bounds.

``api/validation`` (every request), the sampling factories (``engine/sampling``), the magic's
options, the CLI, ``compare()`` and the OpenAI route read their numbers here;
``js/src/validate.js`` mirrors them and ``tests/test_bounds.py`` checks that it agrees.
No imports: the engine's pure core reads it without pulling in pydantic.

    >>> BOUNDS["top_p"].text
    'must be in (0, 1]'
    >>> BOUNDS["top_k"].holds(0)
    False
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "Bound",
    "BOUNDS",
    "TOP_P",
    "TEMPERATURE",
    "ALTERNATIVES",
    "DEFAULT_MAX_TOKENS",
    "COMPARE_MAX_TOKENS",
    "OPENAI_MAX_TOKENS",
    "MIN_TEMPERATURE",
    "REPETITION_PENALTY_RANGE",
    "MAX_STOP_STRINGS",
    "MAX_LOGPROBS_TOP_K",
    "SEED_RANGE",
]

# ---- defaults --------------------------------------------------------------------------------

TOP_P = 0.95  # the contract's default nucleus for the top_p strategy
TEMPERATURE = 1.0  # the contract's default temperature for the top_p strategy
ALTERNATIVES = 5  # alternatives recorded per token at least (heatmap tooltips, compare(), the widget)
# Frontends that cannot wait for "until the context is full" (the contract's 0) choose a budget:
DEFAULT_MAX_TOKENS = 256  # %%complete: a few paragraphs, seconds on a CPU
COMPARE_MAX_TOKENS = 40  # compare(): several runs side by side, each a few lines
OPENAI_MAX_TOKENS = 16  # POST /v1/completions without max_tokens: OpenAI's documented default

# ---- bounds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """An interval a number must lie in; ``low_open`` excludes ``low`` (``> 0`` rather than ``>= 0``)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False

    def holds(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    @property
    def text(self) -> str:
        """``must be > 0``, ``must be in (0, 1]``, ``must be >= 1``."""
        low = f"{self.low:g}" if self.low is not None else ""
        if self.high is not None:
            return f"must be in {'(' if self.low_open else '['}{low}, {self.high:g}]"
        return f"must be {'>' if self.low_open else '>='} {low}"


BOUNDS: dict[str, Bound] = {
    "temperature": Bound(0, low_open=True),
    "top_p": Bound(0, 1, low_open=True),
    "top_k": Bound(1, integer=True),
    "max_tokens": Bound(0, integer=True),  # 0: until an end token or the context is full
    "repetition_penalty": Bound(0, low_open=True),  # multiplicative; 1.0 is off
    "logprobs_top_k": Bound(0, 20, integer=True),
}

# Logits are float32 when sampled: below this temperature dividing them overflows (1e-38 made
# every probability NaN); a temperature this low samples like greedy anyway.
MIN_TEMPERATURE = 1e-6
# The same for the repetition penalty, which divides or multiplies logits (1e-300 and 1e39
# overflowed); any practical penalty lies far inside.
REPETITION_PENALTY_RANGE = (1e-6, 1e6)
MAX_STOP_STRINGS = 4
MAX_LOGPROBS_TOP_K = int(BOUNDS["logprobs_top_k"].high)  # type: ignore[arg-type]
# torch.Generator.manual_seed takes any integer in this range.
SEED_RANGE = (-(2**63), 2**64 - 1)
