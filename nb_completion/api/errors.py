"""Typed errors that carry the spec's ``Error`` body; every frontend shows or sends that body."""

from __future__ import annotations

from .types import Error

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


class CompletionError(Exception):
    """A request that cannot be served. ``.error`` is the spec's ``Error`` body."""

    def __init__(self, status: int, detail: str, title: str | None = None):
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
        self.field = field
        super().__init__(400, f"{field}: {message}" if field else message)


class ModelNotFound(CompletionError):
    def __init__(self, model_id: str, available: list[str]):
        self.model_id = model_id
        listed = ", ".join(available) if available else "(none registered)"
        super().__init__(404, f"model_id: unknown model '{model_id}'. Available models: {listed}")


class EngineFailure(CompletionError):
    """500: generation failed; the message carries no stack trace."""

    def __init__(self, detail: str = "The engine failed while generating."):
        super().__init__(500, detail)
