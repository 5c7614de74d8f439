"""The logit lens: what the model would predict after each token if it stopped at layer k.

Each decoder layer's output (the residual stream) goes through the model's final norm and its
output layer, as the last layer's does: ``LogitLens.layers[k].top(i)`` are the tokens layer k
would predict after tokens 0..i. The last entry is the model's own output (``score()``'s numbers).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .model_parts import decoder_parts, encode, local_backend

TOP = 10


@dataclass
class LensLayer:
    index: int  # 0-based decoder layer
    logprobs: torch.Tensor  # [tokens, vocab], float32
    _piece: Any

    def top(self, i: int, k: int = TOP) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after token ``i``, best first, as (text, logprob)."""
        values, ids = torch.topk(self.logprobs[i], k)
        return [(self._piece(int(t)), float(v)) for t, v in zip(ids, values)]


@dataclass
class LogitLens:
    text: str
    model_id: str
    token_ids: list[int]
    tokens: list[str]
    layers: list[LensLayer]

    def first_layer_with(self, i: int, token_text: str) -> Optional[int]:
        """The first layer whose top prediction after token ``i`` is ``token_text`` (None: never)."""
        return next((layer.index for layer in self.layers if layer.top(i, 1)[0][0] == token_text), None)

    def _repr_html_(self) -> str:
        i = len(self.tokens) - 1
        final = self.layers[-1].top(i, 1)[0][0]
        rows = "".join(
            f"<tr><td>{layer.index + 1}</td>"
            + "".join(
                f"<td title='{lp:.3f}'>{html.escape(t)} {100 * torch.tensor(lp).exp():.0f}%</td>" for t, lp in layer.top(i, 5)
            )
            + "</tr>"
            for layer in self.layers
        )
        first = self.first_layer_with(i, final)
        caption = f"Logit lens after {html.escape(repr(self.text[-40:]))}: the final answer {html.escape(repr(final))} is top from layer {first + 1 if first is not None else '-'}"
        return f"<table><caption>{caption}</caption><tr><th>layer</th><th colspan=5>top 5</th></tr>{rows}</table>"


def logit_lens(text: str, model_id: Optional[str] = None) -> LogitLens:
    """The logit lens of ``text`` on ``model_id`` (the default model if None)."""
    backend = local_backend(model_id)
    model = backend.model
    ids = encode(backend, text)
    layers, norm = decoder_parts(model)
    head = model.get_output_embeddings()
    if norm is None or head is None:
        from ..api.errors import BadRequest

        raise BadRequest("model_id", f"{type(model).__name__} has no final norm or output layer the lens can read through")
    captured: list[torch.Tensor] = []

    def keep(module: Any, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    hooks = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids], device=backend.device), use_cache=False)
            out = [
                LensLayer(k, torch.log_softmax(head(norm(h)).float()[0], dim=-1).cpu(), backend.piece)
                for k, h in enumerate(captured)
            ]
    finally:
        for hook in hooks:
            hook.remove()
    return LogitLens(text, backend.info.identifier, ids, [backend.piece(t) for t in ids], out)
