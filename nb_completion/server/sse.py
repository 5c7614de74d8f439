"""Server-sent events framing: ``data: <compact JSON>`` and a blank line; nothing else.

The llama-stack route sends no ``event:`` lines and no ``[DONE]``; an error after the stream has
begun is one last event ``data: {"error": {status, title, detail}}``. The OpenAI route ends with
``data: [DONE]`` as OpenAI does; its llama-stack alias (``/v1/openai/v1/completions``) does not,
as llama-stack's server does not.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from ..api.errors import CompletionError

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def compact(value: Any) -> str:
    """Compact JSON of a pydantic model (``None`` fields left out) or of plain data."""
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=True)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event(value: Any) -> bytes:
    return f"data: {compact(value)}\n\n".encode()


def error_event(error: CompletionError) -> bytes:
    return event({"error": error.error.model_dump(exclude_none=True)})
