"""model_id -> backend: a plain mapping, no loading here.

Loading on first use (the default model, a folder, a ``.gguf``, a cached hub id) is
``loading.ensure_loaded``, which every frontend calls; this module only remembers what is loaded
or registered (local, remote, test helpers) and lists it.
"""

from __future__ import annotations

import threading

from ..api.errors import ModelNotFound
from .backend import Backend
from .records import ModelInfo

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

_backends: dict[str, Backend] = {}
_lock = threading.RLock()


def register(backend: Backend, model_id: str | None = None) -> Backend:
    with _lock:
        _backends[model_id or backend.info.identifier] = backend
    return backend


def unregister(model_id: str) -> None:
    with _lock:
        _backends.pop(model_id, None)


def registered_ids() -> list[str]:
    with _lock:
        ids = list(_backends)
    if DEFAULT_MODEL_ID not in ids:
        ids.insert(0, DEFAULT_MODEL_ID)
    return ids


def list_models() -> list[ModelInfo]:
    """Registered models; the default is listed (unloaded) even before its first use."""
    with _lock:
        infos = [b.info for b in _backends.values()]
    if DEFAULT_MODEL_ID not in {i.identifier for i in infos}:
        infos.insert(0, ModelInfo(identifier=DEFAULT_MODEL_ID, provider_resource_id=DEFAULT_MODEL_ID))
    return infos


def registered(model_id: str) -> Backend | None:
    with _lock:
        return _backends.get(model_id)


def get(model_id: str | None) -> Backend:
    """The registered backend for ``model_id`` (None: the default); ``ModelNotFound`` otherwise.
    Never loads: use ``loading.ensure_loaded`` for that."""
    model_id = model_id or DEFAULT_MODEL_ID
    backend = registered(model_id)
    if backend is None:
        raise ModelNotFound(model_id, registered_ids())
    return backend
