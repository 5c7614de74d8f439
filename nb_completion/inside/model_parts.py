"""Where a causal LM keeps its decoder layers and its final norm (names differ by architecture)."""

from __future__ import annotations

from typing import Any

import torch

from ..api.errors import BadRequest
from ..engine.backend import is_local

NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f")


def local_backend(model_id: str | None) -> Any:
    from ..service import load_backend

    backend = load_backend(model_id)
    if not is_local(backend):
        raise BadRequest("model_id", f"'{backend.info.identifier}' is served elsewhere: this view needs its weights here")
    return backend


def decoder_parts(model: Any) -> tuple[torch.nn.ModuleList, torch.nn.Module | None]:
    """The decoder's layers (its longest ModuleList) and its final norm (None if it has none)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        raise BadRequest("model_id", f"{type(model).__name__} has no decoder stack to look inside")
    lists = [m for m in decoder.children() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise BadRequest("model_id", f"{type(model).__name__}: no list of decoder layers found")
    layers = max(lists, key=len)
    norm = next((getattr(decoder, n) for n in NORM_NAMES if isinstance(getattr(decoder, n, None), torch.nn.Module)), None)
    return layers, norm


def encode(backend: Any, text: str, field: str = "text") -> list[int]:
    if not isinstance(text, str) or not text:
        raise BadRequest(field, "must be a non-empty string")
    ids = backend.encode(text)
    if len(ids) > backend.context_length:
        raise BadRequest(field, f"has {len(ids)} tokens; the context length is {backend.context_length}")
    return ids
