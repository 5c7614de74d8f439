"""The interface every model backend (local transformers model, remote server) implements."""

from __future__ import annotations

import threading
from typing import Iterator, Protocol

from ..api.types import CompletionRequest
from .records import Event, ModelInfo

__all__ = ["Backend", "Event"]


class Backend(Protocol):
    info: ModelInfo

    def open(
        self,
        request: CompletionRequest,
        *,
        seed: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Validate ``request`` now (raising ``CompletionError`` before anything streams), then
        return an iterator of ``Delta`` events closed by exactly one ``Finished``.

        Setting ``cancel`` ends generation within one token; the stream then finishes normally
        with ``Finished(cancelled=True)`` and keeps the partial output.
        """
        ...
