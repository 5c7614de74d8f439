"""A remote server's error, as the spec's ``Error`` (a ``CompletionError``) with its status and
its own message.

The shapes read, as each server sends them:

- the spec's ``Error``: ``{"status", "title", "detail"}`` (llama-stack, this project's server);
- llama.cpp: ``{"error": {"code": 400, "message", "type"}}`` (also as a stream's last event);
- OpenAI, and vLLM since it wraps its errors: ``{"error": {"message", "type", "param", "code"}}``
  (OpenAI's ``code`` is a string, then the HTTP status counts);
- older vLLM: ``{"object": "error", "message", "type", "param", "code": 400}``;
- FastAPI's 422: ``{"detail": [...]}``.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from ..api.errors import CompletionError


def _title(status: int) -> str | None:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return None


def _status(code: Any, fallback: int) -> int:
    return code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600 else fallback


def gateway_error(detail: str, status: int = 502) -> CompletionError:
    """The remote could not be reached, broke off, or sent something unreadable."""
    return CompletionError(status, detail, _title(status))


def is_error_body(body: Any) -> bool:
    """An error object where an answer was expected (a stream event or a JSON body)."""
    if not isinstance(body, dict) or body.get("choices"):
        return False
    return "error" in body or body.get("object") == "error"


def error_from(body: Any, status: int) -> CompletionError:
    """A remote error body as a ``CompletionError`` with the remote's status and message."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("error") is not None:
        body = body["error"]  # a stream event wrapping a whole error response
    inner = body.get("error") if isinstance(body, dict) else None
    for candidate in (body, inner):
        if isinstance(candidate, dict) and isinstance(candidate.get("detail"), str):
            code = _status(candidate.get("status"), status)
            return CompletionError(code, candidate["detail"], candidate.get("title") or _title(code))
    for candidate in (inner, body):
        if isinstance(candidate, dict) and candidate.get("message"):
            code = _status(candidate.get("code"), status)
            return CompletionError(code, str(candidate["message"]), _title(code))
    if isinstance(inner, str) and inner:
        return CompletionError(status, inner, _title(status))
    if isinstance(body, dict) and isinstance(body.get("detail"), (list, dict)):  # FastAPI's 422
        return CompletionError(status, json.dumps(body["detail"]), _title(status))
    return CompletionError(status, f"the remote answered {status}: {str(body)[:500]}", _title(status))
