"""Typed errors that carry the spec's ``Error`` body; every frontend shows or sends that body.

Whatever a request sent and an error echoes (a model id, a field name, a compiler's message that
quotes the grammar) is shortened, so an error body stays small whatever the request held.
"""

from __future__ import annotations

from .types import Error

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

MAX_ECHOED_ID = 200  # characters of a model id or field name an error repeats
MAX_DETAIL = 2000  # characters of an error's detail


def shorten(text: str, limit: int = MAX_ECHOED_ID) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out.

    >>> shorten("x" * 300, 10)
    'xxxxxxxxxx… (290 more characters)'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class CompletionError(Exception):
    """A request that cannot be served. ``.error`` is the spec's ``Error`` body."""

    def __init__(self, status: int, detail: str, title: str | None = None):
        detail = shorten(detail, MAX_DETAIL)
        self.error = Error(status=status, title=title or _TITLES.get(status, "Error"), detail=detail)
        super().__init__(f"{self.error.status} {self.error.title}: {detail}")

    @property
    def status(self) -> int:
        return self.error.status

    @property
    def title(self) -> str:
        return self.error.title

    @property
    def detail(self) -> str:
        return self.error.detail


class BadRequest(CompletionError):
    """400: the detail names the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field = shorten(field)
        self.message = message
        super().__init__(400, f"{field}: {message}" if field else message)


class ModelNotFound(CompletionError):
    def __init__(self, model_id: str, available: list[str]):
        self.model_id = model_id
        listed = ", ".join(available) if available else "(none registered)"
        super().__init__(404, f"model_id: unknown model '{shorten(model_id)}'. Available models: {listed}")


class EngineFailure(CompletionError):
    """500: generation failed; the message carries no stack trace."""

    def __init__(self, detail: str = "The engine failed while generating."):
        super().__init__(500, detail)


def as_completion_error(exc: BaseException, when: str = "while generating") -> CompletionError:
    """``exc`` itself when it is a ``CompletionError``, else the ``EngineFailure`` it means (its
    type named, no trace). Called once, where an engine's errors reach a frontend:
    ``service.open_events`` and the server's queue."""
    if isinstance(exc, CompletionError):
        return exc
    return EngineFailure(f"The engine failed {when} ({type(exc).__name__}).")
