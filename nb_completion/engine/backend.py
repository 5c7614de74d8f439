"""The interface every model backend (local transformers model, remote server) implements."""

from __future__ import annotations

import enum
import threading
from typing import Any, Iterator, Protocol

from ..api.types import CompletionRequest
from .records import Event, ModelInfo

__all__ = ["Backend", "BackendKind", "Event", "is_local"]


class BackendKind(str, enum.Enum):
    """What a backend is, asked one way everywhere (``is_local``).

    ``LOCAL``: a model in this process (``engine/local.LocalBackend``). It has a tokenizer and
    weights (``encode``, ``tokenizer``, ``model``, ``vocab_size``, ``context_length``); its
    ``open`` takes prepared token ids, a compiled constraint and OpenAI's adjustments, continues
    a sampling generator, and pushes events to a callback (``deliver``); Step, Score, the
    distribution and the inside views run on it.
    ``REMOTE``: another server (``remote/``): text in, records out, nothing more."""

    LOCAL = "local"
    REMOTE = "remote"


def is_local(backend: Any) -> bool:
    return backend.kind is BackendKind.LOCAL


class Backend(Protocol):
    info: ModelInfo
    kind: BackendKind

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
