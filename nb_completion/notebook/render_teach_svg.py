"""Static SVG of the teaching views, for the widget's mime bundle (saved notebooks, GitHub,
nbconvert): the next-token distribution chart (raw and processed bars on one fixed 0-100 % scale,
excluded tokens struck out, the top-p cut), the last Step's draw (the cumulative bar and where u
fell), the Score line and the branch tree; ``stack_svg`` puts several SVGs one under the other.
Each carries its alt text (``<title>`` and ``aria-label``) saying what it shows in words.

The processed distribution is computed by the engine's own processors
(``batch_sampling.process``) on the logits the widget holds: the top tokens, and each bin of
the rest as tokens of equal logit (exact at temperature 1, as in the browser's ``reshape.js``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from .palette import PALETTE
from .render_svg import _xml_text

__all__ = ["processed_probabilities", "distribution_svg", "draw_svg", "score_svg", "tree_svg", "stack_svg"]

CHART = PALETTE["chart"]
BARS = 24
ROW = 18
MUTED = "#666666"


def processed_probabilities(dist: Mapping[str, Any], controls: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """(raw, processed) probabilities of ``dist``'s top tokens under the controls' settings."""
    import torch

    from ..engine.batch_sampling import RowParams, RowTable, process

    logits = list(dist["logits"])
    seen = [i for i, s in enumerate(dist.get("seen") or []) if s]
    for n, lse in dist.get("rest") or []:
        logits += [lse - math.log(n)] * int(n)
    x = torch.tensor(logits, dtype=torch.float32)
    strategy = controls.get("strategy", "greedy")
    row = RowParams(repetition_penalty=float(controls.get("repetition_penalty", 1.0)))
    if strategy == "top_k":
        row.greedy, row.top_k = False, min(int(controls["top_k"]), x.numel())
    elif strategy == "top_p":
        row.greedy, row.temperature, row.top_p = False, float(controls["temperature"]), float(controls["top_p"])
    x_processed = process(x[None], RowTable.one(row, seen, x.numel())).logits[0]  # the engine's processors
    n = len(dist["logits"])
    raw = torch.softmax(x.double(), -1)[:n].tolist()
    if row.greedy:
        chosen = int(torch.argmax(x_processed))
        processed = [1.0 if i == chosen else 0.0 for i in range(n)]
    else:
        processed = torch.softmax(x_processed.double(), -1)[:n].tolist()
    return raw, processed


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%" if p >= 0.001 else ("0%" if p == 0 else f"{100 * p:.2g}%")


def _settings(c: Mapping[str, Any]) -> str:
    if c.get("strategy") == "top_k":
        return f"top-k {c['top_k']}"
    if c.get("strategy") == "top_p":
        return f"temperature {c['temperature']}, top-p {c['top_p']}"
    return "greedy"


def distribution_svg(dist: Mapping[str, Any], controls: Mapping[str, Any], width: int = 640) -> str:
    """The chart: per top token a grey raw bar and a blue processed bar; excluded tokens struck out."""
    raw, processed = processed_probabilities(dist, controls)
    n = min(BARS, len(raw))
    top = 1.0  # one fixed scale: the same probability is the same width in every figure
    where = (
        "the next token"
        if dist.get("end")
        else (f"before prompt token #{dist['index']}" if dist.get("prompt") else f"before token #{dist['index']}")
    )
    body = [
        f'<text x="8" y="18" font-weight="bold">{_xml_text(f"Next-token distribution, {where}")}</text>',
        f'<text x="8" y="34" fill="{MUTED}" font-size="11">{_xml_text(f"grey: raw probability · blue: processed, after {_settings(controls)}")}</text>',
        f'<text x="8" y="48" fill="{MUTED}" font-size="11">{_xml_text("struck out: excluded · every bar on one 0-100 % scale")}</text>',
    ]
    label_w, bar_x, bar_w = 150, 160, width - 160 - 130
    y = 56
    cut_drawn = False
    for i in range(n):
        excluded = processed[i] == 0.0
        chosen = dist.get("chosen") == dist["ids"][i]
        text = _xml_text(str(dist["texts"][i]).replace("\n", "↵").replace(" ", "·"))
        colour = CHART["chosen"] if chosen else CHART["kept"]
        body.append(f'<g data-token-id="{dist["ids"][i]}" data-excluded="{str(excluded).lower()}">')
        body.append(
            f'<text x="8" y="{y + 13}" font-size="12"{f" fill={chr(34)}{MUTED}{chr(34)}" if excluded else ""}>{text}</text>'
        )
        if excluded:
            body.append(
                f'<line x1="8" y1="{y + 9}" x2="{min(8 + 7.2 * len(dist["texts"][i]), label_w)}" y2="{y + 9}" stroke="{MUTED}"/>'
            )
        body.append(f'<rect x="{bar_x}" y="{y + 2}" width="{bar_w * raw[i] / top:.1f}" height="6" fill="{CHART["raw"]}"/>')
        body.append(f'<rect x="{bar_x}" y="{y + 9}" width="{bar_w * processed[i] / top:.1f}" height="6" fill="{colour}"/>')
        value = f"{_pct(raw[i])} → {'excluded' if excluded else _pct(processed[i])}"
        body.append(f'<text x="{width - 125}" y="{y + 13}" font-size="11" fill="{MUTED}">{_xml_text(value)}</text></g>')
        y += ROW
        if controls.get("strategy") == "top_p" and float(controls.get("top_p", 1)) < 1 and not cut_drawn:
            following = processed[i + 1] if i + 1 < n else 0.0
            if not excluded and following == 0.0 and i + 1 < n:
                body.append(
                    f'<line x1="8" y1="{y + 1}" x2="{width - 8}" y2="{y + 1}" stroke="{CHART["cut"]}" stroke-width="2" stroke-dasharray="5 3"/>'
                )
                cut_text = _xml_text(f"top-p cut: the tokens above reach {controls.get('top_p')}")
                body.append(f'<text x="{bar_x}" y="{y + 13}" font-size="10" fill="{CHART["cut"]}">{cut_text}</text>')
                cut_drawn = True
                y += 18
    others = len(dist["ids"]) - n + sum(k for k, _ in dist.get("rest") or [])
    rest_raw, rest_processed = (max(0.0, 1 - sum(p[:n])) for p in (raw, processed))
    rest_processed = 0.0 if rest_processed < 1e-9 else rest_processed  # rounding of a sum that is 1
    rest = f"the other {others:,} tokens: {_pct(rest_raw)} → {'excluded' if rest_processed == 0 else _pct(rest_processed)}"
    body.append(f'<text x="8" y="{y + 14}" font-size="11" fill="{MUTED}">{_xml_text(rest)}</text>')
    kept = sum(p > 0 for p in processed[:n])
    alt = (
        f"Next-token distribution, {where}, under {_settings(controls)}: the most likely token is "
        f"{dist['texts'][0]!r} at {_pct(raw[0])} raw, {_pct(processed[0])} processed; {kept} of the top {n} tokens are kept."
    )
    return _wrap(width, y + 24, body, alt)


def draw_svg(draw: Mapping[str, Any], width: int = 640) -> str:
    """The last Step's draw: the processed distribution as one cumulative bar, the chosen token's
    segment outlined, and u (a black triangle and line: a shape, not only a colour) where it fell."""
    index = draw.get("index")
    chosen_text = draw.get("text")
    at = f"token #{index}" if index is not None else "the end"
    if draw.get("greedy"):
        words = f"Step at {at}: greedy takes the most likely token {chosen_text!r} ({_pct(draw['p'])}); nothing is drawn."
    else:
        lo, hi = float(draw["before"]), float(draw["before"]) + float(draw["p"])
        words = (
            f"Step at {at}: u = {draw['u']:.3f} fell in {chosen_text!r}'s interval {lo:.3f}-{hi:.3f} "
            f"of the processed distribution, so {chosen_text!r} was chosen ({_pct(draw['p'])})."
        )
    x0, w, y0 = 8, width - 16, 30
    body = [f'<text x="8" y="18" font-weight="bold">{_xml_text(f"The draw at {at}")}</text>']
    x = x0
    chosen_id = draw.get("token_id")
    for token_id, text, p in draw.get("bar") or []:
        seg = w * float(p)
        is_chosen = token_id == chosen_id
        fill = CHART["chosen"] if is_chosen else CHART["kept"]
        outline = ' stroke="#000000" stroke-width="2"' if is_chosen else ' stroke="#ffffff" stroke-width="1"'
        body.append(f'<rect x="{x:.1f}" y="{y0}" width="{seg:.1f}" height="22" fill="{fill}"{outline}/>')
        if seg > 46:
            label = _xml_text(str(text).replace("\n", "↵").replace(" ", "·")[:12])
            body.append(f'<text x="{x + 4:.1f}" y="{y0 + 15}" font-size="11" fill="#ffffff">{label}</text>')
        x += seg
    if draw.get("rest", 0) > 0:
        body.append(f'<rect x="{x:.1f}" y="{y0}" width="{w * float(draw["rest"]):.1f}" height="22" fill="{CHART["raw"]}"/>')
    if not draw.get("greedy") and draw.get("u") is not None:
        ux = x0 + w * float(draw["u"])
        body.append(f'<line x1="{ux:.1f}" y1="{y0 - 4}" x2="{ux:.1f}" y2="{y0 + 26}" stroke="#000000" stroke-width="2"/>')
        body.append(f'<path d="M{ux - 6:.1f} {y0 + 34} L{ux + 6:.1f} {y0 + 34} L{ux:.1f} {y0 + 26} Z" fill="#000000"/>')
        body.append(f'<text x="{min(ux + 8, width - 60):.1f}" y="{y0 + 40}" font-size="11">u = {float(draw["u"]):.3f}</text>')
    lines, height = _paragraph(8, y0 + 58, words, width, size=11, fill=MUTED)
    body += lines
    return _wrap(width, y0 + 50 + height, body, words)


def score_svg(perplexity: float, tokens: int, width: int = 640) -> str:
    """The Score line: the prompt's perplexity under the model, in words."""
    words = (
        f"Score: the prompt's perplexity is {perplexity:.2f} over {tokens} predicted tokens "
        f"(on average the model was as unsure as among {perplexity:.1f} equally likely choices)."
    )
    body, height = _paragraph(8, 20, words, width, size=12)
    return _wrap(width, 12 + height, body, words)


def _paragraph(x: float, y: float, text: str, width: int, size: int = 12, fill: str = "") -> tuple[list[str], float]:
    """``text`` wrapped at word boundaries to fit ``width`` (monospace: 0.6 em a character), as
    ``<text>`` lines from baseline ``y``; and the height they take."""
    per_line = max(20, int((width - 2 * x) / (0.6 * size)))
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= per_line:
            lines[-1] += " " + word
        else:
            lines.append(word)
    colour = f' fill="{fill}"' if fill else ""
    step = size + 4
    out = [
        f'<text x="{x}" y="{y + i * step}" font-size="{size}"{colour}>{_xml_text(line)}</text>' for i, line in enumerate(lines)
    ]
    return out, len(lines) * step


def tree_svg(items: Sequence[Mapping[str, Any]], width: int = 640) -> str:
    """The branch tree: one line per path, indented by depth, the shown one in bold."""
    body = ['<text x="8" y="18" font-weight="bold">Branches</text>']
    y = 24
    for item in items:
        tail = f"{item['tokens']} tokens · Σ log p {item['logprob']:.2f}"
        if item.get("parent") is None:
            label = f"original run ({item['kind']}) · {tail}"
        else:
            token = "" if item.get("token") is None else f" → {item['token']!r}"
            label = f"at #{item['split']}{token} ({item['kind']}) · {tail}"
        weight = ' font-weight="bold"' if item.get("current") else ""
        x = 12 + 18 * int(item.get("depth", 0))
        if item.get("parent") is not None:
            body.append(f'<path d="M{x - 12} {y + 2} v8 h8" fill="none" stroke="{MUTED}"/>')
        body.append(f'<text x="{x}" y="{y + 14}" font-size="12"{weight}>{_xml_text(label)}</text>')
        y += ROW
    shown = next((item for item in items if item.get("current")), None)
    alt = f"Branch tree: {len(items)} path{'s' if len(items) != 1 else ''}"
    if shown is not None:
        alt += f"; shown: {'the original run' if shown.get('parent') is None else 'the branch at #' + str(shown['split'])}"
    return _wrap(width, y + 10, body, alt)


def _wrap(width: float, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{_xml_text(label)}" font-family="ui-monospace,SFMono-Regular,Menlo,Consolas,monospace" '
        f'font-size="13" fill="{PALETTE["text"]}"><title>{_xml_text(label)}</title><rect width="100%" height="100%" rx="6" fill="#ffffff"/>'
        + "".join(body)
        + "</svg>"
    )


_LABEL = re.compile(r'aria-label="([^"]*)"')
_SIZE = re.compile(r'^<svg[^>]*?\swidth="([\d.]+)"[^>]*?\sheight="([\d.]+)"')


def stack_svg(parts: Sequence[str], gap: int = 8) -> str:
    """Several SVG images one under the other, as one SVG (nested ``<svg>`` elements)."""
    sizes = [tuple(float(v) for v in _SIZE.match(p).groups()) for p in parts]
    width = max(w for w, _ in sizes)
    y, body = 0.0, []
    for part, (_, h) in zip(parts, sizes):
        body.append(part.replace("<svg ", f'<svg x="0" y="{y:.0f}" ', 1))
        y += h + gap
    height = y - gap
    labels = [m.group(1) for m in (_LABEL.search(p) for p in parts) if m]
    label = " ".join(labels)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{label}"><title>{label}</title>' + "".join(body) + "</svg>"
    )
