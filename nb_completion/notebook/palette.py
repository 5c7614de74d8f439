"""The heatmap colours, from ``palette.json`` — the one definition the widget's bundle also reads
(``js/src/palette.js``), so the live panel and the static HTML/SVG colour a token alike.

Probability is coloured by surprisal, ``-ln p``, a log scale: the probabilities of sampled tokens
span orders of magnitude (95%, 20%, 2%, 0.1%), and on a linear scale everything under ~30% looks
equally dark while 90% and 60% barely differ; one step of the log scale is one factor of ~3.2
(100%, 32%, 10%, 3%, 1%). Entropy shares the axis in nats: its darkest shade, ln 100 nats, is the
spread of a uniform choice among 100 tokens, the same shade as a token of probability 1%.

    >>> probability_color(0.0), probability_color(-30.0)
    ('#fef0d9', '#e34a33')
    >>> entropy_color(float("nan")) == entropy_color(99.0)
    True
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

__all__ = ["PALETTE", "MAX_NATS", "ramp", "probability_color", "entropy_color", "legend_colors"]

PALETTE: dict = json.loads((Path(__file__).parent.parent / "palette.json").read_text(encoding="utf-8"))
MAX_NATS: float = float(PALETTE["max_nats"])


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


_STOPS = {name: [_rgb(c) for c in PALETTE[name]["stops"]] for name in ("probability", "entropy")}


def _clamp01(x: float) -> float:
    """Like the JS side: NaN and negatives are 0, above 1 is 1."""
    if not x > 0:
        return 0.0
    return 1.0 if x > 1 else x


def ramp(stops: Sequence[tuple[int, int, int]], x: float) -> str:
    """``x`` in [0, 1] along the colour stops, as ``#rrggbb`` (the same arithmetic as palette.js)."""
    at = _clamp01(x) * (len(stops) - 1)
    i = min(math.floor(at), len(stops) - 2)
    f = at - i
    rgb = (math.floor(a + (b - a) * f + 0.5) for a, b in zip(stops[i], stops[i + 1]))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def probability_color(logprob: float) -> str:
    """Likely tokens pale, unlikely ones dark orange-red (log scale, ≤1% darkest)."""
    return ramp(_STOPS["probability"], -logprob / MAX_NATS)


def entropy_color(entropy: float) -> str:
    """Confident steps pale, uncertain ones dark blue; an unknown entropy is drawn as uncertain."""
    return ramp(_STOPS["entropy"], entropy / MAX_NATS if math.isfinite(entropy) else 1.0)


def legend_colors(color_by: str) -> list[tuple[str, str]]:
    """(colour, label) of the legend's cells: the palette's stops with their values."""
    spec = PALETTE[color_by]
    return list(zip(spec["stops"], spec["labels"]))
