"""Static HTML of a completion: the token heatmap, the streamed text block, errors.

Self-contained on purpose: inline styles only, no ``<style>``, no scripts, no external assets,
so the output reads the same live, in nbconvert exports and on GitHub. Everything user- or
model-provided is escaped. Shared by ``%%complete``, ``compare()`` and the widget's static
``_repr_mimebundle_``.

    >>> from nb_completion.engine.records import TokenRecord
    >>> t = TokenRecord(0, 42, " Paris", -0.1, 1, ((" Paris", -0.1), (" Lyon", -3.0)), 0.4)
    >>> "data-token-index=\\"0\\"" in heatmap_html([t])
    True
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

from .engine.records import Finished, TokenRecord

__all__ = [
    "heatmap_html",
    "visible",
    "token_title",
    "color_for",
    "legend_html",
    "text_block_html",
    "error_html",
    "stats_text",
]

COLOR_BY = ("probability", "entropy")
ENTROPY_MAX = 6.0  # nats at which the entropy scale saturates
SURPRISAL_MAX = math.log(100)  # probability is shown on a log scale: 100% palest, <= 1% darkest
TEXT_COLOR = "#1a1a1a"  # dark text on light backgrounds reads in light and dark themes alike
MUTED = "opacity:0.55"
MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"

# ColorBrewer sequential scales (colour-blind safe): pale = unremarkable, dark = look here.
_SURPRISE = ((0xFE, 0xF0, 0xD9), (0xFD, 0xD4, 0x9E), (0xFD, 0xBB, 0x84), (0xFC, 0x8D, 0x59), (0xE3, 0x4A, 0x33))
_UNCERTAINTY = ((0xF1, 0xEE, 0xF6), (0xD0, 0xD1, 0xE6), (0xA6, 0xBD, 0xDB), (0x74, 0xA9, 0xCF), (0x36, 0x90, 0xC0))

_GLYPHS = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}


def _ramp(stops: Sequence[tuple[int, int, int]], x: float) -> str:
    """``x`` in [0, 1] along the colour stops, as ``#rrggbb``."""
    x = min(max(x, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    f = x - i
    rgb = (round(a + (b - a) * f) for a, b in zip(stops[i], stops[i + 1]))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def color_for(record: TokenRecord, color_by: str = "probability") -> str:
    """Background colour of a token: unlikely (probability) or uncertain (entropy) is darker."""
    if color_by == "entropy":
        entropy = record.entropy if math.isfinite(record.entropy) else ENTROPY_MAX
        return _ramp(_UNCERTAINTY, entropy / ENTROPY_MAX)
    return _ramp(_SURPRISE, -record.logprob / SURPRISAL_MAX)  # log scale: 100%, 32%, 10%, 3%, 1%


def visible(text: str) -> str:
    """Escaped HTML with spaces, tabs and newlines drawn as faint glyphs (newlines still break)."""
    out: list[str] = []
    for ch in text:
        glyph = _GLYPHS.get(ch)
        if glyph is None:
            out.append(html.escape(ch))
        else:
            # a real line break after ↵, and a wrap opportunity after the · that replaces a space
            out.append(f'<span style="{MUTED}">{glyph}</span>' + ("\n" if ch == "\n" else "<wbr>"))
    return "".join(out)


def _plain_visible(text: str) -> str:
    return "".join(_GLYPHS.get(ch, ch) for ch in text) if text else "∅"


def _pct(logprob: float) -> str:
    p = math.exp(logprob) * 100
    return f"{p:.1f}%" if p >= 0.1 else f"{p:.2g}%"


def token_title(record: TokenRecord) -> str:
    """The tooltip text: the token, its probability and rank, entropy, and the top alternatives."""
    lines = [
        f"#{record.index} {_plain_visible(record.text)!s}: {_pct(record.logprob)} (logprob {record.logprob:.3f})",
        f"rank {record.rank} · entropy {record.entropy:.2f} nats" + (" · forced by the grammar" if record.forced else ""),
    ]
    if record.top:
        lines.append("alternatives:")
        for n, (text, logprob) in enumerate(record.top, 1):
            mark = " ◀" if text == record.text and n == record.rank else ""
            lines.append(f"{n:>2}. {_plain_visible(text)}  {_pct(logprob)}{mark}")
    return "\n".join(lines)


def _token_span(record: TokenRecord, color_by: str) -> str:
    style = [
        f"background:{color_for(record, color_by)}",
        f"color:{TEXT_COLOR}",
        "border-radius:3px",
        "padding:1px 0",
        "box-shadow:inset -1px 0 0 rgba(255,255,255,0.85)",  # a hairline between neighbours
    ]
    if record.rank > 1:
        style.append("border-bottom:2px dashed #555")  # sampled something other than the top choice
    if record.forced:
        style.append("font-style:italic")
    # An empty text is the first byte(s) of a character that the next token completes.
    body = visible(record.text) if record.text else f'<span style="{MUTED}">⋯</span>'
    title = html.escape(token_title(record), quote=True).replace("\n", "&#10;")
    return (
        f'<span data-token-index="{record.index}" tabindex="0" title="{title}" '
        f'style="{";".join(style)}">{body}</span>'
    )


def legend_html(color_by: str = "probability") -> str:
    if color_by == "entropy":
        stops, title = _UNCERTAINTY, "entropy (how unsure the model was)"
        labels = [f"{ENTROPY_MAX * x / 4:g}" for x in range(4)] + [f"≥{ENTROPY_MAX:g} nats"]
        colors = [_ramp(stops, x / 4) for x in range(5)]
    else:
        stops, title = _SURPRISE, "probability of the chosen token"
        probs = [1.0, 0.316, 0.1, 0.0316, 0.01]
        labels = ["100%", "32%", "10%", "3%", "≤1%"]
        colors = [_ramp(stops, -math.log(p) / SURPRISAL_MAX) for p in probs]
    cells = "".join(
        f'<span style="display:inline-block;padding:0 5px;background:{c};color:{TEXT_COLOR}">{html.escape(t)}</span>'
        for c, t in zip(colors, labels)
    )
    return (
        f'<div style="font-size:11px;margin-top:6px;{MONO};opacity:0.9">'
        f"{html.escape(title)}: {cells} &nbsp;·&nbsp; "
        f'<span style="border-bottom:2px dashed #555">dashed</span>: not the top choice'
        " &nbsp;·&nbsp; <i>italic</i>: forced by the grammar &nbsp;·&nbsp; · space ↵ newline"
        " &nbsp;·&nbsp; hover a token for its alternatives</div>"
    )


def heatmap_html(tokens: Sequence[TokenRecord], *, color_by: str = "probability", legend: bool = True) -> str:
    """The tokens as coloured ``<span>``s, each with a ``title`` listing the top-k alternatives.

    ``color_by`` is ``"probability"`` (darker = less likely under the model) or ``"entropy"``
    (darker = the model was less sure at that step).
    """
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    spans = "".join(_token_span(t, color_by) for t in tokens)
    if not tokens:
        spans = f'<span style="{MUTED}">(no tokens)</span>'
    body = (
        f'<div class="nbc-heatmap" style="{MONO};font-size:13px;line-height:1.8;white-space:pre-wrap;'
        f'overflow-wrap:anywhere">{spans}</div>'
    )
    return f'<div class="nbc-heatmap-wrap">{body}{legend_html(color_by) if legend else ""}</div>'


def stats_text(finished: Finished | None, n_tokens: int | None = None) -> str:
    """``'24 tokens · 31.5 tokens/s · stop: out_of_tokens'`` (or why it ended early)."""
    if finished is None:
        return f"{n_tokens or 0} tokens · generating…"
    parts = [f"{finished.completion_tokens} tokens"]
    if finished.tokens_per_second:
        parts.append(f"{finished.tokens_per_second:.1f} tokens/s")
    parts.append("interrupted, partial text kept" if finished.cancelled else f"stop: {finished.stop_reason}")
    return " · ".join(parts)


def text_block_html(text: str, status: str | None = None, extra: str = "") -> str:
    """The completion as a readable block (wrapping, monospace), a faint status line, extras."""
    status_html = f'<div style="font-size:11px;{MUTED};margin-top:4px">{html.escape(status)}</div>' if status else ""
    return (
        f'<div class="nbc-completion"><div style="{MONO};font-size:13px;white-space:pre-wrap;'
        f'word-break:break-word">{html.escape(text)}</div>{status_html}{extra}</div>'
    )


def error_html(error: Any) -> str:
    """A spec ``Error`` (or anything with status/title/detail) as a short red box."""
    return (
        '<div class="nbc-error" style="border-left:4px solid #d33;padding:4px 10px;'
        f'background:rgba(221,51,51,0.08)"><b>{html.escape(str(error.status))} {html.escape(error.title)}</b>'
        f"<br>{html.escape(error.detail)}</div>"
    )
