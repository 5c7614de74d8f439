"""The widget's static ``text/html``: prompt, heatmap (from ``nb_completion.render``), status and
errors, inline-styled so nbconvert exports and GitHub show it without a kernel; the static copy
adds the teaching views (the Score line, the draw, the distribution, the tree) as images with alt
text, since nbconvert's HTML export shows ``text/html`` only."""

from __future__ import annotations

import base64
import html
import re
from typing import Any, Mapping, Sequence

from ..engine.fold import INCOMPLETE_NOTE
from ..engine.records import TokenRecord

_BOX = "border:1px solid #c8c8c8;border-radius:6px;padding:8px 10px;font-family:system-ui,sans-serif;font-size:13px"
_MUTED = "opacity:0.6"
_MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"


def _summary(status: str, metrics: Mapping[str, Any]) -> str:
    parts = [status]
    if metrics.get("tokens") is not None:
        parts.append(f"{metrics['tokens']} tokens")
    if metrics.get("tokens_per_second"):
        parts.append(f"{metrics['tokens_per_second']:.1f} tokens/s")
    if metrics.get("cancelled"):
        parts.append("stopped, partial text kept")
    elif metrics.get("stop_string") is not None:
        parts.append(f"stop: stop string {metrics['stop_string']!r}")
    elif metrics.get("stop_reason"):
        parts.append(f"stop: {metrics['stop_reason']}")
    if metrics.get("end_token") and not metrics.get("cancelled"):
        parts.append(f"ended on its end token {metrics['end_token']} ({100 * metrics.get('end_token_p', 0):.1f}%)")
    if metrics.get("incomplete"):
        parts.append(INCOMPLETE_NOTE)
    return " · ".join(parts)


def static_html(
    records: Sequence[TokenRecord],
    *,
    prompt: str,
    color_by: str,
    status: str,
    metrics: Mapping[str, Any],
    error: Mapping[str, Any],
    model: str,
) -> str:
    from ..notebook.render import error_html, heatmap_html

    head = (
        f'<div style="{_MUTED};font-size:11px;margin-bottom:4px">nb_completion · {html.escape(model)} · '
        f"{html.escape(_summary(status, metrics))}</div>"
    )
    prompt_html = (
        f'<div style="{_MONO};{_MUTED};white-space:pre-wrap;word-break:break-word">{html.escape(prompt)}</div>' if prompt else ""
    )
    if records:
        body = heatmap_html(list(records), color_by=color_by)
    elif status == "idle":
        body = f'<div style="{_MUTED}">(no completion yet: run this widget in a live kernel and press Generate)</div>'
    else:
        body = heatmap_html([], color_by=color_by, legend=False)
    err = ""
    if error.get("title"):
        from ..api.types import Error

        err = error_html(Error(**error))
    return f'<div class="nbc-static" style="{_BOX}">{head}{prompt_html}{body}{err}</div>'


COPY_CLASS = "nbc-static-copy"  # the live view of the widget with the same key hides it (index.js)


def figures_html(svgs: list[str]) -> str:
    """The teaching views' SVGs (Score line, draw, distribution, tree) as ``<img>``s inside the
    HTML copy, each with its alt text: nbconvert's HTML export shows ``text/html`` only."""
    out = []
    for svg in svgs:
        label = re.search(r'^<svg[^>]*?\saria-label="([^"]*)"', svg)
        alt = label.group(1) if label else "nb_completion figure"  # already escaped for an attribute
        data = base64.b64encode(svg.encode()).decode()
        out.append(f'<div><img src="data:image/svg+xml;base64,{data}" alt="{alt}"></div>')
    return f'<div class="nbc-teach-copy">{"".join(out)}</div>' if out else ""


def static_copy_bundle(html_copy: str, svg: str | None, text: str, *, key: str = "", figures: list[str] = ()) -> dict[str, str]:
    """The static copy's display: ``text/plain`` (the text), ``text/html`` (the heatmap with
    hover titles, then the teaching ``figures`` as images with alt text) and, once there is
    something to draw, ``image/svg+xml`` (the colours as fill attributes).
    ``key`` names the widget it copies: only that widget's live view hides it, so a copy saved
    before a kernel restart stays visible beside other, newer widgets."""
    attr = f' data-nbc-copy="{html.escape(key)}"' if key else ""
    body = html_copy + figures_html(list(figures))
    bundle = {"text/plain": text, "text/html": f'<div class="{COPY_CLASS}"{attr}>{body}</div>'}
    if svg is not None:
        bundle["image/svg+xml"] = svg
    return bundle
