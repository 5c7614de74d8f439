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
from typing import Any, Iterable, Sequence

from ..engine.records import TokenRecord
from ..engine.token_text import PARTIAL_BYTES
from .palette import MAX_NATS, PALETTE, entropy_color, legend_colors, probability_color

__all__ = [
    "heatmap_html",
    "visible",
    "token_title",
    "color_for",
    "legend_html",
    "legend_keys",
    "shown_text",
    "text_block_html",
    "error_html",
]

COLOR_BY = ("probability", "entropy")
ENTROPY_MAX = MAX_NATS  # nats at which both scales saturate (palette.json): ln 100
TEXT_COLOR = PALETTE["text"]  # dark text on light backgrounds reads in light and dark themes alike
NOT_TOP = f"border-bottom:2px dashed {PALETTE['not_top_border']}"  # sampled something other than the top choice
MUTED = "opacity:0.55"
MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
BYTES_STYLE = "font-size:0.85em;opacity:0.75"  # ‹E3 81›: part of a multi-byte character

_GLYPHS = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}


def color_for(record: TokenRecord, color_by: str = "probability") -> str:
    """Background colour of a token: unlikely (probability, log scale) or uncertain (entropy) is
    darker. The palette and its arithmetic are shared with the widget (``nb_completion.palette``)."""
    if color_by == "entropy":
        return entropy_color(record.entropy)
    return probability_color(record.logprob)


def _visible_chars(text: str) -> str:
    out: list[str] = []
    for ch in text:
        glyph = _GLYPHS.get(ch)
        if glyph is None:
            out.append(html.escape(ch))
        else:
            # a real line break after ↵, and a wrap opportunity after the · that replaces a space
            out.append(f'<span style="{MUTED}">{glyph}</span>' + ("\n" if ch == "\n" else "<wbr>"))
    return "".join(out)


def visible(text: str) -> str:
    """Escaped HTML with spaces, tabs and newlines drawn as faint glyphs (newlines still break),
    and the bytes of a partial character (``‹E3 81›``) set apart."""
    out: list[str] = []
    at = 0
    for match in PARTIAL_BYTES.finditer(text):
        out.append(_visible_chars(text[at : match.start()]))
        out.append(f'<span style="{BYTES_STYLE}">{html.escape(match.group())}</span>')
        at = match.end()
    out.append(_visible_chars(text[at:]))
    return "".join(out)


def shown_text(record: TokenRecord) -> str:
    """What a token shows: its text, or for a token holding only part of a character (no text
    yet) its bytes, ``‹E3 81›``; "" for a withheld end token."""
    if record.text:
        return record.text
    return record.piece if PARTIAL_BYTES.search(record.piece or "") else ""


def _plain_visible(text: str) -> str:
    return "".join(_GLYPHS.get(ch, ch) for ch in text) if text else "∅"


def _pct(logprob: float) -> str:
    p = math.exp(logprob) * 100
    return f"{p:.1f}%" if p >= 0.1 else f"{p:.2g}%"


def token_title(record: TokenRecord) -> str:
    """The tooltip text: the token, its probability and rank, entropy, and the top alternatives."""
    lines = [
        f"#{record.index} {_plain_visible(shown_text(record))!s}: {_pct(record.logprob)} (logprob {record.logprob:.3f})",
        f"rank {record.rank} · entropy {record.entropy:.2f} nats" + (" · forced by the grammar" if record.forced else ""),
    ]
    if record.top:
        lines.append("alternatives:")
        for n, (text, logprob) in enumerate(record.top, 1):
            mark = " ◀" if n == record.rank else ""  # top is sorted: the chosen token sits at its rank
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
        style.append(NOT_TOP)
    if record.forced:
        style.append("font-style:italic")
    shown = shown_text(record)  # a partial character shows its bytes; a withheld end token ⟨end⟩
    body = visible(shown) if shown else f'<span style="{MUTED}">⟨end⟩</span>'
    title = html.escape(token_title(record), quote=True).replace("\n", "&#10;")
    return f'<span data-token-index="{record.index}" tabindex="0" title="{title}" style="{";".join(style)}">{body}</span>'


def legend_html(color_by: str = "probability", *, forced: bool = False, partial: bool = False) -> str:
    """The colour key (the palette's stops and values) and the marks. The italic mark is explained
    only when some token was ``forced`` by a grammar, the bytes mark only when a token is a
    ``partial`` character (``legend_keys(tokens)`` gives both)."""
    title = PALETTE[color_by]["title"]
    cells = "".join(
        f'<span style="display:inline-block;padding:0 5px;background:{c};color:{TEXT_COLOR}">{html.escape(t)}</span>'
        for c, t in legend_colors(color_by)
    )
    return (
        f'<div style="font-size:11px;margin-top:6px;{MONO};opacity:0.9">'
        f"{html.escape(title)}: {cells} &nbsp;·&nbsp; "
        f'<span style="{NOT_TOP}">dashed</span>: not the top choice'
        + (" &nbsp;·&nbsp; <i>italic</i>: forced by the grammar" if forced else "")
        + " &nbsp;·&nbsp; · space ↵ newline"
        + (" &nbsp;·&nbsp; ‹E3 81›: bytes of a partial character" if partial else "")
        + " &nbsp;·&nbsp; hover a token for its alternatives</div>"
    )


def legend_keys(tokens: Iterable[TokenRecord]) -> dict[str, bool]:
    """Which marks ``tokens`` need explained: ``{"forced": ..., "partial": ...}``."""
    tokens = list(tokens)
    return {"forced": any(t.forced for t in tokens), "partial": any(PARTIAL_BYTES.search(shown_text(t)) for t in tokens)}


END_CHIP = (
    '<span class="nbc-end" title="the model\'s end token: it chose to stop here" style="font-size:11px;'
    'color:#595959;border:1px solid #595959;border-radius:3px;padding:0 3px;margin-left:2px">⟨end⟩</span>'
)


def ended_on_end_token(finished: Any) -> bool:
    """Whether a run ended on the model's own end token (not a stop string, not max tokens)."""
    return finished is not None and finished.stop_reason == "end_of_turn" and getattr(finished, "stop_string", None) is None


def heatmap_html(tokens: Sequence[TokenRecord], *, color_by: str = "probability", legend: bool = True, end: bool = False) -> str:
    """The tokens as coloured ``<span>``s, each with a ``title`` listing the top-k alternatives.

    ``color_by`` is ``"probability"`` (darker = less likely under the model) or ``"entropy"``
    (darker = the model was less sure at that step).
    """
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    spans = "".join(_token_span(t, color_by) for t in tokens)
    if not tokens:
        spans = f'<span style="{MUTED}">(no tokens)</span>'
    spans += END_CHIP if end else ""  # the run ended on the end token: say so where the text stops
    body = (
        f'<div class="nbc-heatmap" style="{MONO};font-size:13px;line-height:1.8;white-space:pre-wrap;'
        f'overflow-wrap:anywhere">{spans}</div>'
    )
    key = legend_html(color_by, **legend_keys(tokens)) if legend else ""
    return f'<div class="nbc-heatmap-wrap">{body}{key}</div>'


def text_block_html(text: str, status: str | None = None, extra: str = "", end: bool = False) -> str:
    """The completion as a readable block (wrapping, monospace), a marked ⟨end⟩ where the model
    chose its end token (``end``), a faint status line, extras."""
    status_html = f'<div style="font-size:11px;{MUTED};margin-top:4px">{html.escape(status)}</div>' if status else ""
    return (
        f'<div class="nbc-completion"><div style="{MONO};font-size:13px;white-space:pre-wrap;'
        f'word-break:break-word">{html.escape(text)}{END_CHIP if end else ""}</div>{status_html}{extra}</div>'
    )


def error_html(error: Any) -> str:
    """A spec ``Error`` (or anything with status/title/detail) as a short red box."""
    return (
        '<div class="nbc-error" style="border-left:4px solid #d33;padding:4px 10px;'
        f'background:rgba(221,51,51,0.08)"><b>{html.escape(str(error.status))} {html.escape(error.title)}</b>'
        f"<br>{html.escape(error.detail)}</div>"
    )
