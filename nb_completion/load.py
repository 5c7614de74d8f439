"""Loading a model as the frontends do it: ``engine/loading.py`` loads, silently unless given a
``progress``; here a frontend's call gets the plain status line of ``load_progress.py`` (one line
in a notebook, rewritten in a terminal, one line per step in a log). ``nb.load_model`` and
``nb.ensure_loaded`` are these."""

from __future__ import annotations

from typing import Any

from .engine import loading, registry
from .engine.loading import ProgressCallback
from .load_progress import LoadProgress


def ensure_loaded(
    model_id: str | None = None, on_progress: ProgressCallback | None = None, *, dtype: str = "auto", device: str = "auto"
) -> Any:
    """The backend for ``model_id``, loading it first (with a status line) when it is not registered."""
    name = model_id or registry.DEFAULT_MODEL_ID
    return loading.ensure_loaded(model_id, on_progress or LoadProgress(name), dtype=dtype, device=device)


def load_model(
    model_id: str | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Any:
    """Load (or return the already loaded) model and register it under ``model_id`` (or ``name``);
    returns its ``LocalBackend``. See ``engine.loading.load_model`` for the arguments."""
    shown = name or model_id or registry.DEFAULT_MODEL_ID
    return loading.load_model(model_id, dtype=dtype, device=device, name=name, on_progress=on_progress or LoadProgress(shown))
