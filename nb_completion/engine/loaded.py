"""Several models side by side: ``nb.models()`` lists the loaded ones with their memory,
``nb.unload_model(model_id)`` ends one's engine and frees it."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from ..api.errors import ModelNotFound
from . import registry
from .architectures import path_name
from .backend import is_local


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    weight_bytes: int  # parameters and buffers as they sit in memory (quantized blocks as stored)
    cache_bytes: int  # the batched engine's KV slots as allocated (0 before its first request)
    path: str  # "batched" or "per-sequence" (docs/models.md); "remote" for a remote backend
    dtype: str
    device: str

    def __str__(self) -> str:
        mib = 1024 * 1024
        return (
            f"{self.model_id}: {self.weight_bytes / mib:.1f} MiB weights, {self.cache_bytes / mib:.1f} MiB KV cache, "
            f"{self.path} path, {self.dtype or '?'} on {self.device or '?'}"
        )


def _tensor_bytes(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for tensor in (*model.parameters(), *model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def _cache_bytes(backend: Any) -> int:
    store = getattr(backend._engine, "store", None) if is_local(backend) else None  # the per-sequence path has none
    if store is None:
        return 0
    return sum(t.numel() * t.element_size() for t in (*store.keys, *store.values))


def models() -> list[LoadedModel]:
    """The models loaded in this process (local ones with their memory; remote ones listed)."""
    listed = []
    for model_id in registry.registered_ids():
        backend = registry.registered(model_id)
        if backend is None:
            continue  # the default model, not loaded yet
        model = backend.model if is_local(backend) else None
        meta = backend.info.metadata or {}
        listed.append(
            LoadedModel(
                model_id=model_id,
                weight_bytes=_tensor_bytes(model) if model is not None else 0,
                cache_bytes=_cache_bytes(backend),
                path=path_name(model) if model is not None else "remote",
                dtype=str(meta.get("dtype", "")),
                device=str(meta.get("device", "")),
            )
        )
    return listed


def unload_model(model_id: str) -> None:
    """End ``model_id``'s engine, forget it and free its memory (a 404 if it is not loaded)."""
    backend = registry.registered(model_id)
    if backend is None:
        raise ModelNotFound(model_id, [m.model_id for m in models()])
    registry.unregister(model_id)
    if is_local(backend):
        backend.close()  # its engine thread lets the model go
    del backend
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
