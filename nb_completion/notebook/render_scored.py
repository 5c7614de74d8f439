"""Static renderings of ``score()``'s result: the text as a heatmap coloured by surprisal (HTML
with hover titles, and SVG for viewers that strip styles), headed by the perplexity.

Scored tokens are prompt tokens: their elements carry ``data-prompt="true"`` next to
``data-token-index`` (the position in the text's ids). A first token with nothing before it is
shown muted, unscored.
"""

from __future__ import annotations

import html
from typing import Any

from .render import MONO, MUTED, heatmap_html, visible
from .render_svg import heatmap_svg

__all__ = ["scored_html", "scored_svg"]


def _first_html(scored: Any) -> str:
    first = scored.tokens[0] if scored.tokens and scored.tokens[0].logprob is None else None
    if first is None:
        return ""
    title = html.escape(f"#0 {first.piece!r} (id {first.token_id}): the first token, nothing before it to score", quote=True)
    return (
        f'<span data-prompt="true" data-token-index="0" tabindex="0" title="{title}" '
        f'style="{MUTED};outline:1px dashed #999;border-radius:3px">{visible(first.text or first.piece)}</span>'
    )


def scored_html(scored: Any) -> str:
    """The perplexity line and the heatmap of the scored tokens (prompt tokens: data-prompt)."""
    body = heatmap_html(scored.records()).replace("<span data-token-index=", '<span data-prompt="true" data-token-index=')
    first = _first_html(scored)
    if first:  # the first token goes inside the heatmap block, before the scored ones
        body = body.replace('overflow-wrap:anywhere">', 'overflow-wrap:anywhere">' + first, 1)
    head = f'<div style="{MONO};font-size:12px;margin-bottom:4px"><b>Score</b> · {html.escape(scored.summary())}</div>'
    return f'<div class="nbc-scored">{head}{body}</div>'


def scored_svg(scored: Any) -> str:
    """The heatmap as SVG, the perplexity (and an unscored first token) in its header."""
    header = [f"Score · {scored.summary()}"]
    first = scored.tokens[0] if scored.tokens and scored.tokens[0].logprob is None else None
    if first is not None:
        header.append(f"first token {first.piece!r} (id {first.token_id}): nothing before it to score")
    return heatmap_svg(scored.records(), header=header)
