"""Attention weights of every layer and head for one text: transformers' eager attention, run
once on demand (the engine's passes use fused attention and keep no weights)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..api.errors import BadRequest
from ..engine.model_lock import model_lock
from .model_parts import check_ids, encode, local_backend


@dataclass
class Attention:
    text: str
    model_id: str
    token_ids: list[int]
    tokens: list[str]
    _weights: list[torch.Tensor]  # per layer that attends [heads, T, T]
    layer_ids: list[int] = field(default_factory=list)  # each one's decoder layer (Jamba: only some attend)
    decoder_layers: int = 0

    @property
    def layers(self) -> int:
        return len(self._weights)

    @property
    def heads(self) -> int:
        return int(self._weights[0].shape[0])

    def weights(self, layer: int, head: Optional[int] = None) -> torch.Tensor:
        """``[T, T]``: row i, how much token i attended to each token 0..i (``head`` None: the
        average over heads). ``layer`` counts the layers that attend: every decoder layer in most
        models; in a hybrid (Jamba, RecurrentGemma) ``layer_ids[layer]`` is its decoder layer."""
        w = self._weights[layer]
        return w.mean(0) if head is None else w[head]

    def row(self, i: Optional[int] = None, digits: int = 4) -> dict[str, Any]:
        """What token ``i`` (default: the last) attended to, as plain data: ``heads[layer][h]``
        is head h's weights over tokens 0..i, ``mean[layer]`` the average over heads."""
        i = len(self.tokens) - 1 if i is None else i
        r = lambda w: [round(float(a), digits) for a in w[: i + 1]]  # noqa: E731
        return {
            "model": self.model_id,
            "tokens": self.tokens[: i + 1],
            "index": i,
            "layers": self.layers,
            "layer_ids": self.layer_ids,
            "decoder_layers": self.decoder_layers,
            "heads": self.heads,
            "mean": [r(w.mean(0)[i]) for w in self._weights],
            "per_head": [[r(w[h, i]) for h in range(w.shape[0])] for w in self._weights],
        }

    def to_svg(self, i: Optional[int] = None, layer: Optional[int] = None, head: Optional[int] = None) -> str:
        """Token ``i``'s attention in ``layer`` (default: the last), ``head`` (None: the mean
        over heads) as an SVG image, for handouts."""
        from ..notebook.render_inside_svg import attention_svg

        return attention_svg(self.row(i), self.layers - 1 if layer is None else layer, head)

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
    return attention_of_ids(backend, encode(backend, text), text)


def attention_of_ids(backend: Any, ids: list[int], text: Optional[str] = None) -> Attention:
    """``attention()`` of token ids on a local ``backend``; a model whose layers keep no
    attention weights (recurrent state, a fused kernel only) is a ``BadRequest`` saying so."""
    model = backend.model
    ids = check_ids(backend, list(ids))
    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    with model_lock(model):  # no engine step runs while the model's attention is eager
        try:
            _set_attention(model, "eager")
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([ids], device=backend.device), output_attentions=True, use_cache=False)
            t = len(ids)  # softmax attention is [batch, heads, T, T] per layer (RWKV returns its state here)
            found = [
                a for a in (getattr(out, "attentions", None) or ()) if a is not None and a.dim() == 4 and a.shape[-2:] == (t, t)
            ]
            weights = [a[0].float().cpu() for a in found]
        finally:
            if previous is not None:
                _set_attention(model, previous)
    if not weights:
        raise BadRequest(
            "model_id",
            f"{type(model).__name__} returns no attention weights: its layers keep a recurrent state, not attention over earlier tokens",
        )
    tokens = [backend.piece(t) for t in ids]
    total = int(getattr(config, "num_hidden_layers", 0) or len(weights))
    return Attention(
        text if text is not None else "".join(tokens),
        backend.info.identifier,
        ids,
        tokens,
        weights,
        _layer_ids(config, total, len(weights)),
        total,
    )


def _layer_ids(config: Any, total: int, found: int) -> list[int]:
    """Which decoder layer each returned attention belongs to: all of them, or, for a hybrid whose
    recurrent layers return none (Jamba, RecurrentGemma), the layers its config says attend."""
    if found == total:
        return list(range(total))
    kinds = list(getattr(config, "layers_block_type", None) or [])[:total]
    attends = [i for i, kind in enumerate(kinds) if str(kind).endswith("attention") and not str(kind).startswith("linear")]
    return attends if len(attends) == found else list(range(found))


def _set_attention(model: Any, implementation: str) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(implementation)
    else:
        model.config._attn_implementation = implementation
