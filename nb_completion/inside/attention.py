"""Attention weights of every layer and head for one text: transformers' eager attention, run
once on demand (the engine's passes use fused attention and keep no weights)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .model_parts import encode, local_backend


@dataclass
class Attention:
    text: str
    model_id: str
    token_ids: list[int]
    tokens: list[str]
    _weights: list[torch.Tensor]  # per layer [heads, T, T]

    @property
    def layers(self) -> int:
        return len(self._weights)

    @property
    def heads(self) -> int:
        return int(self._weights[0].shape[0])

    def weights(self, layer: int, head: Optional[int] = None) -> torch.Tensor:
        """``[T, T]``: row i, how much token i attended to each token 0..i (``head`` None: the
        average over heads)."""
        w = self._weights[layer]
        return w.mean(0) if head is None else w[head]

    def _repr_html_(self) -> str:
        i = len(self.tokens) - 1
        row = self.weights(self.layers - 1)[i]
        cells = "".join(
            f"<span title='{float(a):.3f}' style='background: rgba(0,114,178,{float(a):.3f})'>{html.escape(t)}</span>"
            for t, a in zip(self.tokens, row)
        )
        return f"<div>Last layer, mean over heads, attention of {html.escape(repr(self.tokens[-1]))}: {cells}</div>"


def attention(text: str, model_id: Optional[str] = None) -> Attention:
    """Every layer's and head's attention weights over ``text`` (a separate eager pass)."""
    backend = local_backend(model_id)
    model = backend.model
    ids = encode(backend, text)
    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    try:
        _set_attention(model, "eager")
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids], device=backend.device), output_attentions=True, use_cache=False)
        weights = [a[0].float().cpu() for a in out.attentions]
    finally:
        if previous is not None:
            _set_attention(model, previous)
    return Attention(text, backend.info.identifier, ids, [backend.piece(t) for t in ids], weights)


def _set_attention(model: Any, implementation: str) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(implementation)
    else:
        model.config._attn_implementation = implementation
