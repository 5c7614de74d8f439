"""The logit lens: what the model would predict after each token if it stopped at layer k.

Each decoder layer's output (the residual stream) goes through the model's final norm, its
output layer and whatever the model does to its logits after that (Gemma 2's soft cap, Cohere's
and Granite's scaling), as the last layer's does: ``LogitLens.layers[k].top(i)`` are the tokens
layer k would predict after tokens 0..i. The last entry is the model's own output (``score()``'s
numbers). Where reading the last layer this way does not give the model's output (a final norm
or head the lens cannot find or repeat), the lens refuses with a message saying so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..api.errors import BadRequest
from ..engine.model_lock import model_lock
from .model_parts import check_ids, decoder_parts, encode, final_scaling, local_backend

TOP = 10
AGREE = 1e-2  # nats: the last layer's readout and the model's output must agree this closely


class LensLayer:
    """One layer's readout. It keeps the layer's residual stream (``[tokens, hidden]``) and reads
    a position through the final norm, the head and the model's scaling when asked: a few
    megabytes per layer instead of ``[tokens, vocab]`` floats (30 layers x 500 tokens x a 128k
    vocabulary would be 7.7 GB). The last layer holds the model's own output instead."""

    def __init__(self, index: int, piece: Any, first: int, *, hidden: Any = None, readout: Any = None, own: Any = None):
        self.index = index  # 0-based decoder layer
        self._piece = piece
        self.first = first  # the position of row 0
        self._hidden, self._readout, self._own = hidden, readout, own
        self._rows: dict[int, torch.Tensor] = {}  # the last few positions read

    def __len__(self) -> int:
        return len(self._own if self._own is not None else self._hidden)

    @property
    def logprobs(self) -> torch.Tensor:
        """``[tokens, vocab]`` float32 log-probabilities of every position (computed now)."""
        if self._own is not None:
            return self._own
        return self._readout(self._hidden)

    def row(self, i: int) -> torch.Tensor:
        """The log-probabilities ``[vocab]`` of the next token after token ``i``."""
        if not self.first <= i < self.first + len(self):
            raise IndexError(f"this lens has no position {i} (it holds {self.first}..{self.first + len(self) - 1})")
        if self._own is not None:
            return self._own[i - self.first]
        if i not in self._rows:
            if len(self._rows) >= 4:
                self._rows.pop(next(iter(self._rows)))
            j = i - self.first
            self._rows[i] = self._readout(self._hidden[j : j + 1])[0]
        return self._rows[i]

    def top(self, i: int, k: int = TOP) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after token ``i``, best first, as (text, logprob)."""
        values, ids = torch.topk(self.row(i), k)
        return [(self._piece(int(t)), float(v)) for t, v in zip(ids, values)]

    def track(self, i: int, token_id: int) -> tuple[float, int]:
        """``token_id``'s (logprob, rank) after token ``i`` at this layer (rank 1: the top)."""
        row = self.row(i)
        value = row[token_id]
        return float(value), int((row > value).sum()) + 1


@dataclass
class LogitLens:
    text: str
    model_id: str
    token_ids: list[int]
    tokens: list[str]
    layers: list[LensLayer]
    note: Optional[str] = field(default=None)  # the final scaling applied to every layer, if any

    def first_layer_with(self, i: int, token_text: str) -> Optional[int]:
        """The first layer whose top prediction after token ``i`` is ``token_text`` (None: never)."""
        return next((layer.index for layer in self.layers if layer.top(i, 1)[0][0] == token_text), None)

    def grid(self, i: int, k: int = 5, chosen_id: Optional[int] = None) -> dict[str, Any]:
        """Layers x top ``k`` after token ``i`` as plain data (the widget's and the SVG's input),
        with the output's answer tracked through every layer (``answer_track``: [logprob, rank]
        per layer, however far down it is) and, given ``chosen_id``, the token written there."""
        final = self.layers[-1].top(i, 1)[0][0]
        first = self.first_layer_with(i, final)
        answer = int(torch.argmax(self.layers[-1].row(i)))
        out = {
            "model": self.model_id,
            "context": self.tokens[: i + 1],
            "layers": [[[t, round(lp, 5)] for t, lp in layer.top(i, k)] for layer in self.layers],
            "final": final,
            "first_top": first,
            "answer_track": self._track(i, answer),
            "note": self.note,
        }
        if chosen_id is not None and chosen_id != answer:
            out["chosen_track"] = self._track(i, chosen_id)
        return out

    def _track(self, i: int, token_id: int) -> list[list[float]]:
        return [[round(lp, 5), rank] for lp, rank in (layer.track(i, token_id) for layer in self.layers)]

    def to_svg(self, i: Optional[int] = None, k: int = 5) -> str:
        """The grid after token ``i`` (default: the last) as an SVG image, for handouts."""
        from ..notebook.render_inside_svg import lens_svg

        return lens_svg(self.grid(len(self.tokens) - 1 if i is None else i, k))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/html": self._repr_html_(), "image/svg+xml": self.to_svg(), "text/plain": repr(self)}

    def __repr__(self) -> str:
        return f"LogitLens({self.text[-40:]!r}, {len(self.layers)} layers, {self.model_id})"

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
        if self.note:
            caption += f" ({html.escape(self.note)})"
        return f"<table><caption>{caption}</caption><tr><th>layer</th><th colspan=5>top 5</th></tr>{rows}</table>"


def logit_lens(text: str, model_id: Optional[str] = None) -> LogitLens:
    """The logit lens of ``text`` on ``model_id`` (the default model if None)."""
    backend = local_backend(model_id)
    return lens_of_ids(backend, encode(backend, text), text=text)


def lens_of_ids(backend: Any, ids: list[int], text: Optional[str] = None, last_only: bool = False) -> LogitLens:
    """The lens of token ids on a local ``backend``; ``last_only``: only after the last token
    (the widget's case: one position read, not every position's residual stream kept)."""
    ids = check_ids(backend, list(ids))
    model = backend.model
    name = type(model).__name__
    layers, norm = decoder_parts(model)
    head = model.get_output_embeddings()
    if norm is None or head is None:
        raise BadRequest(
            "model_id", f"The logit lens does not apply to {name}: it has no final norm or output layer the lens can read through"
        )
    scaling, note = final_scaling(model.config)
    captured: list[torch.Tensor] = []

    def keep(module: Any, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    at = slice(-1, None) if last_only else slice(None)

    def readout(hidden: torch.Tensor) -> torch.Tensor:
        """``[n, hidden]`` residual rows -> ``[n, vocab]`` float32 log-probabilities on the CPU."""
        with torch.inference_mode():
            return torch.log_softmax(scaling(head(norm(hidden[None])))[0].float(), dim=-1).cpu()

    with model_lock(model):  # the hooks see this pass only, not an engine step's
        hooks = [layer.register_forward_hook(keep) for layer in layers]
        try:
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([ids], device=backend.device), use_cache=False)
                own = torch.log_softmax(out.logits[0, at].float(), dim=-1).cpu()
        finally:
            for hook in hooks:
                hook.remove()
    if len(captured) != len(layers):
        raise BadRequest(
            "model_id", f"The logit lens does not apply to {name}: its layers ran {len(captured)} times, not {len(layers)}"
        )
    streams = [h[0, at].detach() for h in captured]
    gap = float((readout(streams[-1]).clamp(min=-1e4) - own.clamp(min=-1e4)).abs().max())
    if not gap <= AGREE:
        raise BadRequest(
            "model_id",
            f"The logit lens is meaningless on {name}: its last layer read through the final norm and output layer "
            f"differs from the model's own output by up to {gap:.3g} nats, so earlier layers read that way would mislead",
        )
    piece = backend.piece
    tokens = [piece(t) for t in ids]
    first = len(ids) - len(own)
    read = [LensLayer(k, piece, first, hidden=h, readout=readout) for k, h in enumerate(streams[:-1])]
    read.append(LensLayer(len(streams) - 1, piece, first, own=own))  # the model's own numbers, exactly score()'s
    return LogitLens(text if text is not None else "".join(tokens), backend.info.identifier, ids, tokens, read, note)
