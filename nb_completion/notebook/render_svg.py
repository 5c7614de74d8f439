"""The heatmap (and ``compare()``'s columns) as an SVG image, for viewers that sanitize HTML.

GitHub and similar viewers strip ``style`` attributes and ``<style>`` from a notebook's
``text/html``, so the coloured spans of ``render.py`` lose their colours. An ``image/svg+xml``
copy in the same mime bundle keeps them: colours are ``fill`` attributes, text is laid out here
(monospace cells, East Asian wide characters two cells, lines wrapped between words, never inside
one) and each token's text is fitted to its box with ``textLength``. Live front ends prefer the
interactive ``text/html``. Colours come from ``nb_completion.palette``, like everywhere else.

    >>> from nb_completion.engine.records import TokenRecord
    >>> svg = heatmap_svg([TokenRecord(0, 42, " Paris", -0.1, 1, (), 0.4)])
    >>> svg.startswith("<svg") and 'fill="#feeed4"' in svg
    True
"""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from ..engine.records import TokenRecord
from .palette import PALETTE, legend_colors
from .render import COLOR_BY, color_for, legend_keys, shown_text

__all__ = ["heatmap_svg", "columns_svg"]

FONT = 13  # px
CELL = 7.8  # px per monospace cell at FONT (0.6 em)
LINE = 22  # px per line
PAD = 8
MUTED = "#666666"
TEXT = PALETTE["text"]
_GLYPHS = {" ": "·", "\t": "→", "\r": "␍"}


def _cells(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _xml_text(text: str) -> str:
    """Escaped for XML 1.0, whose text may not hold most control characters: drawn as ␀..␟."""
    safe = "".join(chr(0x2400 + ord(c)) if ord(c) < 0x20 and c not in "\t\n" else ("␡" if c == "\x7f" else c) for c in text)
    return html.escape(safe, quote=True)


@dataclass
class _Run:
    """Consecutive characters of one token on one line."""

    token: int
    text: str
    col: int
    cells: int


def _layout(tokens: Sequence[TokenRecord], width: int) -> list[list[_Run]]:
    """Lines of runs, ``width`` cells wide, breaking after the glyph of a space or at a newline;
    a word longer than a line is split."""
    lines: list[list[_Run]] = [[]]
    col = 0
    word: list[tuple[int, str, int]] = []  # (token, char, cells) not yet placed

    def place(chars: list[tuple[int, str, int]]) -> None:
        nonlocal col
        for token, ch, cells in chars:
            if col + cells > width and col > 0:
                lines.append([])
                col = 0
            line = lines[-1]
            if line and line[-1].token == token:
                line[-1].text += ch
                line[-1].cells += cells
            else:
                line.append(_Run(token, ch, col, cells))
            col += cells

    def flush_word() -> None:
        nonlocal col
        size = sum(c for _, _, c in word)
        if col > 0 and col + size > width and size <= width:
            lines.append([])
            col = 0
        place(word)
        word.clear()

    for i, record in enumerate(tokens):
        text = shown_text(record) or "⟨end⟩"
        for ch in text:
            if ch == "\n":
                word.append((i, "↵", 1))
                flush_word()
                lines.append([])
                col = 0
                continue
            glyph = _GLYPHS.get(ch, ch)
            word.append((i, glyph, _cells(glyph)))
            if ch in " \t":
                flush_word()
    flush_word()
    return lines


def _token_layer(tokens: Sequence[TokenRecord], lines: list[list[_Run]], color_by: str, x0: float, y0: float) -> list[str]:
    out: list[str] = []
    for n, line in enumerate(lines):
        y = y0 + n * LINE
        for run in line:
            record = tokens[run.token]
            x, w = x0 + run.col * CELL, max(run.cells, 1) * CELL
            title = f"#{record.index} {record.probability:.1%} · rank {record.rank}"
            parts = [
                f"<g><title>{_xml_text(title)}</title>",
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w - 1:.1f}" height="{LINE - 3}" rx="2" fill="{color_for(record, color_by)}"/>',  # 1 px apart
                f'<text x="{x:.1f}" y="{y + LINE - 8:.1f}" textLength="{w:.1f}" lengthAdjust="spacingAndGlyphs"'
                + (' font-style="italic"' if record.forced else "")
                + f">{_xml_text(run.text)}</text>",
            ]
            if record.rank > 1:  # sampled something other than the top choice
                parts.append(
                    f'<line x1="{x:.1f}" y1="{y + LINE - 3:.1f}" x2="{x + w:.1f}" y2="{y + LINE - 3:.1f}" '
                    f'stroke="{PALETTE["not_top_border"]}" stroke-width="2" stroke-dasharray="3 2"/>'
                )
            out.append("".join(parts) + "</g>")
    return out


def _legend(color_by: str, keys: dict[str, bool], x0: float, y: float) -> tuple[list[str], float]:
    """The colour key and marks as one line; returns the elements and its width."""
    out = [f'<text x="{x0:.1f}" y="{y + 13:.1f}" font-size="11" fill="{MUTED}">{_xml_text(PALETTE[color_by]["title"])}:</text>']
    x = x0 + (len(PALETTE[color_by]["title"]) + 2) * 6.6
    for colour, label in legend_colors(color_by):
        w = (len(label) + 2) * 6.6
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="18" fill="{colour}"/>')
        out.append(f'<text x="{x + 6.6:.1f}" y="{y + 13:.1f}" font-size="11">{_xml_text(label)}</text>')
        x += w
    marks = "  dashed: not the top choice" + ("  italic: forced by the grammar" if keys["forced"] else "")
    marks += "  ‹E3 81›: bytes of a partial character" if keys["partial"] else ""
    out.append(f'<text x="{x:.1f}" y="{y + 13:.1f}" font-size="11" fill="{MUTED}" xml:space="preserve">{_xml_text(marks)}</text>')
    return out, x + len(marks) * 6.6 - x0


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{_xml_text(label)}" '
        f'font-family="ui-monospace,SFMono-Regular,Menlo,Consolas,monospace" font-size="{FONT}" fill="{TEXT}">'
        f"<title>{_xml_text(label)}</title>"  # the alt text where an <img> of the SVG is shown (GitHub)
        f'<rect width="100%" height="100%" rx="6" fill="#ffffff"/>' + "".join(body) + "</svg>"
    )


def heatmap_svg(
    tokens: Sequence[TokenRecord],
    *,
    color_by: str = "probability",
    width: int = 80,
    legend: bool = True,
    header: Sequence[str] = (),
) -> str:
    """``tokens`` as an SVG heatmap ``width`` monospace cells wide, with the legend under it and
    ``header`` lines (e.g. the model and the prompt, drawn muted) above it."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    body: list[str] = []
    y = PAD
    for text in header:
        for part in _wrap_cells(text, width):
            body.append(f'<text x="{PAD}" y="{y + 14}" fill="{MUTED}" xml:space="preserve">{_xml_text(part)}</text>')
            y += LINE - 4
    lines = _layout(tokens, width)
    body += _token_layer(tokens, lines, color_by, PAD, y)
    height = y + len(lines) * LINE
    text_width = width * CELL
    if legend:
        key, key_width = _legend(color_by, legend_keys(tokens), PAD, height + 4)
        body += key
        height += 4 + 18
        text_width = max(text_width, key_width)
    return _svg(text_width + 2 * PAD, height + PAD, body, "token heatmap")


def _wrap_cells(text: str, width: int, most: int = 6) -> list[str]:
    """A header line cut into pieces of ``width`` cells (at most ``most``; the last ends in …)."""
    out: list[str] = []
    for paragraph in text.split("\n"):
        line, cells = "", 0
        for ch in paragraph:
            c = _cells(ch)
            if cells + c > width:
                out.append(line)
                line, cells = "", 0
            line += ch
            cells += c
        out.append(line)
    return out[: most - 1] + [out[most - 1][: max(width - 1, 0)] + "…"] if len(out) > most else out


def columns_svg(
    columns: Sequence[tuple[str, str, Sequence[TokenRecord]]],
    *,
    header: str = "",
    color_by: str = "probability",
    width: int = 36,
    label: str = "",
) -> str:
    """Side-by-side columns (``compare()``): each ``(title, summary, tokens)`` ``width`` cells
    wide, a ``header`` line above, one legend under all of them; ``label``: the alt text
    (default "comparison of N runs")."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    col_width = width * CELL + 2 * PAD
    gap = 10
    top = PAD + (LINE if header else 0)
    body: list[str] = []
    if header:
        body.append(f'<text x="{PAD}" y="{PAD + 14}" font-size="12" fill="{MUTED}">{_xml_text(header)}</text>')
    laid = [
        (title, _wrap(summary, int(width * CELL / 6.6)), tokens, _layout(tokens, width)) for title, summary, tokens in columns
    ]
    heights = [18 + 15 * len(summary) + 6 + len(lines) * LINE + PAD for _, summary, _, lines in laid]
    bottom = top + max(heights, default=0)
    every: list[TokenRecord] = []
    for n, (title, summary, tokens, lines) in enumerate(laid):
        x = PAD + n * (col_width + gap)
        body.append(
            f'<rect x="{x:.1f}" y="{top}" width="{col_width:.1f}" height="{bottom - top}" rx="6" fill="none" stroke="#bbbbbb"/>'
        )
        body.append(
            f'<text x="{x + PAD:.1f}" y="{top + 16}" font-weight="bold" font-family="system-ui,sans-serif">{_xml_text(title)}</text>'
        )
        for k, part in enumerate(summary):
            body.append(f'<text x="{x + PAD:.1f}" y="{top + 32 + 15 * k}" font-size="11" fill="{MUTED}">{_xml_text(part)}</text>')
        body += _token_layer(tokens, lines, color_by, x + PAD, top + 18 + 15 * len(summary) + 6)
        every += tokens
    key, key_width = _legend(color_by, legend_keys(every), PAD, bottom + 6)
    body += key
    total_width = max(PAD + len(columns) * (col_width + gap) - gap + PAD, key_width + 2 * PAD)
    return _svg(total_width, bottom + 6 + 18 + PAD, body, label or f"comparison of {len(columns)} runs")


def _wrap(text: str, width: int) -> list[str]:
    """Plain word wrap of a short summary line."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines
