"""A request's ``content`` (a string, one content item, or a list of them) as one text."""

from __future__ import annotations

from typing import Any

from .errors import BadRequest
from .types import ImageContentItem, TextContentItem


def content_text(content: Any, *, images_refused: str) -> str:
    """The text of ``content``; an image item is a 400 on ``content`` saying ``images_refused``
    (why this model or route takes text only)."""
    items = content if isinstance(content, list) else [content]
    parts: list[str] = []
    for item in items:
        if isinstance(item, ImageContentItem):
            raise BadRequest("content", images_refused)
        parts.append(item.text if isinstance(item, TextContentItem) else item)
    return "".join(parts)
