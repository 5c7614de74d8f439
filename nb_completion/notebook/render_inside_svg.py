"""The inside views as SVG images, for handouts and viewers that strip HTML styles: the logit
lens grid (layers x top tokens, each cell coloured by its probability with the heatmaps' palette,
the layer where the final answer first becomes top marked) and one token's attention (colour
behind each earlier token). Each is ``role="img"`` with a ``<title>`` saying what it shows.

Input: the plain data of ``LogitLens.grid()`` and ``Attention.row()`` (what the widget receives).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from .palette import PALETTE, probability_color
from .render_svg import _xml_text

FONT = 12
CELL_W = 118
ROW = 20
PAD = 8
LABEL_W = 64
MUTED = "#666666"
MARK = PALETTE["chart"]["chosen"]
ATTEND = PALETTE["chart"]["kept"]
ALPHA = 0.6  # the strongest attention colour, as in the widget (js/src/inside.js): black text stays >= 7:1


def _shown(text: str) -> str:
    return text.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


def _fit(text: str, cells: int) -> str:
    return text if len(text) <= cells else text[: cells - 1] + "…"


def _pct(logprob: float) -> str:
    p = 100 * math.exp(logprob)
    return f"{p:.0f}%" if p >= 1 else "<1%"


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{_xml_text(title)}" font-family="ui-monospace,SFMono-Regular,Menlo,Consolas,monospace" font-size="{FONT}" fill="{PALETTE["text"]}">'
        f'<title>{_xml_text(title)}</title><rect width="100%" height="100%" rx="6" fill="#ffffff"/>' + "".join(body) + "</svg>"
    )


def lens_title(grid: Mapping[str, Any]) -> str:
    """The alt text: what the grid shows and where the final answer first becomes top."""
    context = "".join(grid["context"])[-40:]
    first = grid.get("first_top")
    where = f"first top at layer {first + 1}" if first is not None else "never top before the output"
    return (
        f"Logit lens of {grid.get('model', 'the model')} after {context!r}: the top {len(grid['layers'][0])} "
        f"next tokens at each of {len(grid['layers'])} layers; the final answer {grid['final']!r} is {where}"
    )


def lens_svg(grid: Mapping[str, Any]) -> str:
    """Layers (rows, layer 1 at the top) x the top tokens (columns) with their probabilities."""
    layers = grid["layers"]
    k = len(layers[0])
    first, final = grid.get("first_top"), grid["final"]
    tracks = [(final, "answer", grid["answer_track"])] if grid.get("answer_track") else []
    if grid.get("chosen_track") and grid.get("chosen") is not None:
        tracks.append((grid["chosen"], "written", grid["chosen_track"]))
    columns = len(tracks) + k
    width = PAD * 2 + LABEL_W + columns * CELL_W
    body = [
        f'<text x="{PAD}" y="18" font-weight="bold">{_xml_text(_fit("Logit lens after " + repr("".join(grid["context"])[-40:]), int((width - 2 * PAD) / 7.2)))}</text>'
    ]
    y = 28
    if tracks:  # the tracked tokens' column heads, then "top", "2nd", ...
        heads = [f"{_shown(text)!r} ({what})" for text, what, _ in tracks] + ["top"] + [f"#{c + 1}" for c in range(1, k)]
        for c, head in enumerate(heads):
            body.append(
                f'<text x="{PAD + LABEL_W + c * CELL_W + 4}" y="{y + 12}" font-size="11" fill="{MUTED}">{_xml_text(_fit(head, 16))}</text>'
            )
        y += ROW
    for n, row in enumerate(layers):
        marked = n == first
        label = f"{'▶ ' if marked else ''}L{n + 1}"
        bold = ' font-weight="bold"' if marked else ""
        body.append(f'<text x="{PAD}" y="{y + 14}" fill="{MARK if marked else MUTED}"{bold}>{label}</text>')
        for c, (_, _, track) in enumerate(tracks):
            x = PAD + LABEL_W + c * CELL_W
            logprob, rank = track[n]
            body.append(
                f'<rect x="{x}" y="{y}" width="{CELL_W - 4}" height="{ROW - 3}" rx="3" fill="{probability_color(logprob)}"/>'
            )
            body.append(f'<text x="{x + 4}" y="{y + 13}">{_xml_text(f"{_pct(logprob)} #{rank}")}</text>')
        for c, (text, logprob) in enumerate(row, start=len(tracks)):
            x = PAD + LABEL_W + c * CELL_W
            stroke = f' stroke="{MARK}" stroke-width="2"' if text == final else ""
            body.append(
                f'<rect x="{x}" y="{y}" width="{CELL_W - 4}" height="{ROW - 3}" rx="3" fill="{probability_color(logprob)}"{stroke}/>'
            )
            cell = _fit(_shown(text), 9) + " " + _pct(logprob)
            body.append(f'<text x="{x + 4}" y="{y + 13}">{_xml_text(cell)}</text>')
        y += ROW
    note = f"outlined: the final answer {_shown(final)!r}; ▶ the layer where it first becomes top"
    if grid.get("note"):
        note += f"; {grid['note']}"
    body.append(
        f'<text x="{PAD}" y="{y + 14}" font-size="11" fill="{MUTED}">{_xml_text(_fit(note, int((width - 2 * PAD) / 6.6)))}</text>'
    )
    return _svg(width, y + 24, lens_title(grid), body)


def decoder_layer(row: Mapping[str, Any], layer: int) -> int:
    """The decoder layer of the row's ``layer``-th attention (a hybrid such as Jamba attends in some)."""
    ids = row.get("layer_ids") or []
    return ids[layer] if layer < len(ids) else layer


def _where(row: Mapping[str, Any]) -> str:
    """ "token #3" as the widget numbers it (generated tokens; ``prompt``: prompt tokens), else the
    position in the text."""
    if row.get("position") is None:
        return f"token #{row['index']}"
    return f"{'prompt token' if row.get('prompt') else 'token'} #{row['position']}"


def attention_title(row: Mapping[str, Any], layer: int, head: Optional[int]) -> str:
    weights = row["mean"][layer] if head is None else row["per_head"][layer][head]
    best = max(range(len(weights)), key=lambda j: weights[j])
    who = "the mean over heads" if head is None else f"head {head + 1}"
    return (
        f"Attention of {_where(row)} {row['tokens'][-1]!r} in layer {decoder_layer(row, layer) + 1}, {who}, over the "
        f"{len(weights)} tokens up to it: most to {row['tokens'][best]!r} ({100 * weights[best]:.0f}%)"
    )


def attention_svg(row: Mapping[str, Any], layer: int, head: Optional[int] = None, width: int = 640) -> str:
    """The tokens up to the chosen one, each with colour behind it: how much the chosen token
    attended to it (opacity relative to the row's largest weight, the value in each title)."""
    weights = row["mean"][layer] if head is None else row["per_head"][layer][head]
    top = max(weights) or 1.0
    title = attention_title(row, layer, head)
    body = [f'<text x="{PAD}" y="18" font-weight="bold">{_xml_text(_fit(title, int((width - 2 * PAD) / 7.2)))}</text>']
    x, y = PAD, 28
    for j, (token, w) in enumerate(zip(row["tokens"], weights)):
        shown = _shown(token) or "∅"
        w_px = 7.2 * len(shown) + 6
        if x + w_px > width - PAD:
            x, y = PAD, y + ROW + 4
        stroke = f' stroke="{MARK}" stroke-width="2"' if j == len(weights) - 1 else ""
        body.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w_px:.1f}" height="{ROW}" rx="3" fill="{ATTEND}" fill-opacity="{ALPHA * w / top:.3f}"{stroke}>'
            f"<title>{_xml_text(f'{token!r}: {100 * w:.1f}%')}</title></rect>"
        )
        body.append(f'<text x="{x + 3:.1f}" y="{y + 14}">{_xml_text(shown)}</text>')
        x += w_px + 2
    body.append(
        f'<text x="{PAD}" y="{y + ROW + 16}" font-size="11" fill="{MUTED}">darkest: the largest weight ({100 * top:.0f}%); outlined: the attending token</text>'
    )
    return _svg(width, y + ROW + 26, title, body)
