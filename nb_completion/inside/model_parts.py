"""Where a causal LM keeps its decoder layers, its final norm and its output scaling (names
differ by architecture), and the readout that turns a residual stream into logits as the model
does after its last layer."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..api.errors import BadRequest
from ..engine.backend import is_local

NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f", "ln_out", "final_norm", "layer_norm")


def local_backend(model_id: str | None) -> Any:
    from ..service import load_backend

    backend = load_backend(model_id)
    if not is_local(backend):
        raise BadRequest("model_id", f"'{backend.info.identifier}' is served elsewhere: this view needs its weights here")
    return backend


def decoder_parts(model: Any) -> tuple[torch.nn.ModuleList, torch.nn.Module | None]:
    """The decoder's layers (its longest ModuleList) and its final norm (None if it has none).
    A name that is not the final norm is caught by the lens's check that its last layer reads
    as the model's output."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        raise BadRequest("model_id", f"{type(model).__name__} has no decoder stack to look inside")
    lists = [m for m in decoder.children() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise BadRequest("model_id", f"{type(model).__name__}: no list of decoder layers found")
    layers = max(lists, key=len)
    norm = next((getattr(decoder, n) for n in NORM_NAMES if isinstance(getattr(decoder, n, None), torch.nn.Module)), None)
    return layers, norm


def final_scaling(config: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], Optional[str]]:
    """What the model does to its logits after the output layer, and a note naming it (None:
    nothing): Gemma 2/3's soft cap ``tanh(x / c) * c``, Cohere's ``logit_scale`` and Granite's
    ``logits_scaling``. The lens applies the same to every layer's readout."""
    cap = getattr(config, "final_logit_softcapping", None) or getattr(config, "logits_soft_cap", None)
    scale = getattr(config, "logit_scale", None) if "cohere" in str(getattr(config, "model_type", "")) else None
    divide = getattr(config, "logits_scaling", None)
    steps, notes = [], []
    if cap:
        steps.append(lambda x: torch.tanh(x / cap) * cap)
        notes.append(f"soft-capped at {cap:g} (tanh)")
    if scale is not None and scale != 1:
        steps.append(lambda x: x * scale)
        notes.append(f"scaled by {scale:g}")
    if divide is not None and divide != 1:
        steps.append(lambda x: x / divide)
        notes.append(f"divided by {divide:g}")

    def apply(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return apply, ("logits " + ", ".join(notes) + ", as the model's own output" if notes else None)


def encode(backend: Any, text: str, field: str = "text") -> list[int]:
    if not isinstance(text, str) or not text:
        raise BadRequest(field, "must be a non-empty string")
    ids = backend.encode(text)
    return check_ids(backend, ids, field)


def check_ids(backend: Any, ids: list[int], field: str = "text") -> list[int]:
    if not ids:
        raise BadRequest(field, "has no tokens")
    if len(ids) > backend.context_length:
        raise BadRequest(field, f"has {len(ids)} tokens; the context length is {backend.context_length}")
    return ids
