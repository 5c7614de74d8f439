"""Static SVG of the teaching views, for the widget's mime bundle (saved notebooks, GitHub): the
next-token distribution chart (raw and processed bars, excluded tokens struck out, the top-p cut)
and the branch tree; ``stack_svg`` puts several SVGs one under the other.

The processed distribution is computed by the engine's own processors
(``batch_sampling.process``, the one sampler) on the logits the widget holds: the top tokens, and each bin of
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
MUTED = "#595959"  # 7:1 on white


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
    where = (
        f"the next token (#{dist['index']})"
        if dist.get("end")
        else (f"before prompt token #{dist['index']}" if dist.get("prompt") else f"before token #{dist['index']}")
    )
    body = [
        f'<text x="8" y="18" font-weight="bold">{_xml_text(f"Next-token distribution, {where}")}</text>',
        f'<text x="8" y="34" fill="{MUTED}" font-size="11">{_xml_text(f"grey: raw · blue: processed (after {_settings(controls)}) · struck out: excluded")}</text>',
        f'<text x="160" y="50" fill="{MUTED}" font-size="11">0 %  —  bar scale  —  100 %</text>',
        f'<text x="{width - 125}" y="50" fill="{MUTED}" font-size="11">raw → processed</text>',
    ]
    label_w, bar_x, bar_w = 150, 160, width - 160 - 130
    y = 54
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
        body.append(f'<rect x="{bar_x}" y="{y + 2}" width="{bar_w * raw[i]:.1f}" height="6" fill="{CHART["raw"]}"/>')
        body.append(f'<rect x="{bar_x}" y="{y + 9}" width="{bar_w * processed[i]:.1f}" height="6" fill="{colour}"/>')
        value = f"{_pct(raw[i])} → {'excluded' if excluded else _pct(processed[i])}"
        body.append(f'<text x="{width - 125}" y="{y + 13}" font-size="11" fill="{MUTED}">{_xml_text(value)}</text></g>')
        y += ROW
        if controls.get("strategy") == "top_p" and float(controls.get("top_p", 1)) < 1 and not cut_drawn:
            following = processed[i + 1] if i + 1 < n else 0.0
            if not excluded and following == 0.0 and i + 1 < n:
                body.append(
                    f'<line x1="8" y1="{y + 1}" x2="{width - 8}" y2="{y + 1}" stroke="{CHART["cut"]}" stroke-width="2" stroke-dasharray="5 3"/>'
                )
                # the label has a line of its own under the cut: it never overprints a row's numbers
                cut = f"top-p cut: the {i + 1} token{'s' if i else ''} above reach {controls['top_p']}; the rest are excluded"
                body.append(f'<text x="8" y="{y + 14}" font-size="11" fill="{MUTED}">{_xml_text(cut)}</text>')
                cut_drawn = True
                y += 20
    others = len(dist["ids"]) - n + sum(k for k, _ in dist.get("rest") or [])
    rest_raw, rest_processed = (max(0.0, 1 - sum(p[:n])) for p in (raw, processed))
    rest_processed = 0.0 if rest_processed < 1e-9 else rest_processed  # the rounding of a sum that is 1
    shown = "excluded" if rest_processed == 0 else f"processed {_pct(rest_processed)}"
    rest = f"the other {others:,} tokens: raw {_pct(rest_raw)} → {shown}"
    body.append(f'<text x="8" y="{y + 14}" font-size="11" fill="{MUTED}">{_xml_text(rest)}</text>')
    top = "; ".join(
        f"{dist['texts'][i]!r} raw {_pct(raw[i])}, processed {'excluded' if processed[i] == 0 else _pct(processed[i])}"
        for i in range(min(5, n))
    )
    return _wrap(width, y + 24, body, f"Next-token distribution, {where}, after {_settings(controls)}. Most likely: {top}")


def draw_svg(draw: Mapping[str, Any], width: int = 640) -> str:
    """The last Step's draw: the processed distribution as a cumulative bar, the chosen token's
    segment orange, and u as a striped black-and-white pointer with its own label."""
    at = "the end token" if draw.get("index") is None else f"token #{draw['index']}"
    bar = draw.get("bar") or []
    chosen = next((t for i, t, _ in bar if i == draw["token_id"]), draw.get("text") or f"id {draw['token_id']}")
    if draw.get("greedy"):
        caption = f"Step (greedy) at {at}: the argmax {chosen!r}; nothing is drawn."
    else:
        lo, hi = draw["before"], draw["before"] + draw["p"]
        caption = f"Step at {at}: u = {draw['u']:.3f} fell in {chosen!r}'s interval {lo:.3f}–{hi:.3f} ({_pct(draw['p'])})."
    x0, w = 8, width - 16
    body = [
        f'<text x="8" y="18" font-weight="bold">{_xml_text(f"The draw at {at}")}</text>',
        f'<text x="8" y="36" font-size="12">{_xml_text(caption)}</text>',
        f'<rect x="{x0}" y="46" width="{w}" height="22" fill="#eeeeee" stroke="{MUTED}"/>',
    ]
    x = 0.0
    for i, t, p in bar:
        if p <= 0:
            continue
        colour = CHART["chosen"] if i == draw["token_id"] else CHART["kept"]
        body.append(f'<rect x="{x0 + w * x:.1f}" y="46" width="{w * p:.1f}" height="22" fill="{colour}" stroke="#ffffff"/>')
        if p > 0.06:
            ink = "#000000" if i == draw["token_id"] else "#ffffff"
            body.append(f'<text x="{x0 + w * x + 3:.1f}" y="61" font-size="11" fill="{ink}">{_xml_text(str(t)[:12])}</text>')
        x += p
    if not draw.get("greedy") and draw.get("u") is not None:
        ux = x0 + w * float(draw["u"])
        body.append(f'<rect x="{ux - 2:.1f}" y="41" width="4" height="32" fill="#000000"/>')
        body.append(f'<rect x="{ux - 1:.1f}" y="45" width="2" height="4" fill="#ffffff"/>')
        body.append(f'<rect x="{ux - 1:.1f}" y="57" width="2" height="4" fill="#ffffff"/>')
        anchor = "end" if draw["u"] > 0.7 else "start"
        body.append(
            f'<text x="{ux:.1f}" y="88" font-size="12" text-anchor="{anchor}">{_xml_text("u = " + format(draw["u"], ".3f"))}</text>'
        )
    return _wrap(width, 96, body, caption)


def score_svg(perplexity: float, tokens: int, width: int = 640) -> str:
    """The Score line: the prompt's perplexity over its scored tokens."""
    line = f"Score: perplexity {perplexity:.2f} over {tokens} prompt tokens (exp of the mean surprisal)"
    return _wrap(width, 28, [f'<text x="8" y="19">{_xml_text(line)}</text>'], line)


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
    return _wrap(width, y + 10, body, "Branch tree")


def _wrap(width: float, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{_xml_text(label)}" font-family="ui-monospace,SFMono-Regular,Menlo,Consolas,monospace" '
        f'font-size="13" fill="{PALETTE["text"]}"><title>{_xml_text(label)}</title>'
        '<rect width="100%" height="100%" rx="6" fill="#ffffff"/>' + "".join(body) + "</svg>"
    )


_SIZE = re.compile(r'^<svg[^>]*?\swidth="([\d.]+)"[^>]*?\sheight="([\d.]+)"')


def stack_svg(parts: Sequence[str], gap: int = 8) -> str:
    """Several SVG images one under the other, as one SVG (nested ``<svg>`` elements); its alt text
    joins the parts' own (their ``aria-label``)."""
    labels = [m.group(1) for m in (re.search(r'^<svg[^>]*?\saria-label="([^"]*)"', p) for p in parts) if m]
    label = " | ".join(labels) or "nb_completion output"
    sizes = [tuple(float(v) for v in _SIZE.match(p).groups()) for p in parts]
    width = max(w for w, _ in sizes)
    y, body = 0.0, []
    for part, (_, h) in zip(parts, sizes):
        body.append(part.replace("<svg ", f'<svg x="0" y="{y:.0f}" ', 1))
        y += h + gap
    height = y - gap
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{_xml_text(label)}"><title>{_xml_text(label)}</title>' + "".join(body) + "</svg>"
    )
