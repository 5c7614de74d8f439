"""JSON responses and the spec's ``Error`` body with its status (both routes and the guard)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import Response

from ..api.errors import CompletionError
from . import sse
from .openai_compat import error_body

log = logging.getLogger("nb_completion.server")

# Statuses answered before the request body was read: the connection is closed after them, so
# that unread body bytes are never taken for the next request.
_CLOSE_AFTER = {403, 408, 413, 415, 421}


def json_response(value: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(sse.compact(value), status_code=status, media_type="application/json", headers=headers)


def error_response(error: CompletionError, openai: bool = False, where: str = "") -> Response:
    """The error as a response. A 5xx is logged with its traceback (and its cause's) here: the
    body says only what failed, never how."""
    if error.status >= 500:
        log_server_error(error, where)
    headers = {}
    if error.status == 429:  # ours, or a remote backend's passed on
        headers["Retry-After"] = str(getattr(error, "retry_after", 1))
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if error.status in _CLOSE_AFTER or getattr(error, "close_connection", False):
        headers["Connection"] = "close"
    body = error_body(error) if openai else error.error.model_dump(exclude_none=True)
    return json_response(body, error.status, headers)


def log_server_error(error: BaseException, where: str) -> None:
    log.error("%s failed: %s", where or "request", error, exc_info=(type(error), error, error.__traceback__))
