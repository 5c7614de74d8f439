"""``score(text)``: how surprised the model is by each token of a given text, and its perplexity.

    >>> s = nb_completion.score("The capital of France is Paris.")  # doctest: +SKIP
    >>> s.perplexity, s.tokens[3].text, s.tokens[3].logprob, s.tokens[3].rank  # doctest: +SKIP
    >>> s                     # a heatmap: each token coloured by its surprisal  # doctest: +SKIP

One plain forward pass over the text's ids (no sampling, nothing generated): the logits at
position i-1 give token i's log-probability (``log_softmax``, the raw distribution, like every
``TokenRecord``), its rank and the alternatives the model expected.

Memory stays O(tokens x top-k), not O(tokens x vocabulary): the decoder's last hidden states
are turned into logits ``CHUNK`` positions at a time, and of each chunk only the chosen token's
logprob, its rank, the entropy and the top-k are kept (full logits of a 4,800-token prompt are
0.9 GB in float32 for a 49k vocabulary, their log-softmax as much again). ``cancel`` (a
``threading.Event``) is read between chunks: the server's echo scoring stops when its client
leaves. The first token has nothing
before it, so its ``logprob`` and ``rank`` are ``None`` and it is left out of the perplexity,
``exp(-mean logprob)`` over the scored tokens. Needs a model in this kernel (a remote model's
route has no prompt logprobs).
"""

from __future__ import annotations

import weakref

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .api.errors import BadRequest
from .engine.backend import is_local
from .engine.records import TokenRecord
from .engine.model_lock import model_lock

__all__ = ["score", "Scored", "ScoredToken", "score_ids"]

TOP = 5  # alternatives kept per token
CHUNK = 256  # positions whose logits exist at once (256 x 49k x 4 bytes = 50 MB)


class ScoringCancelled(Exception):
    """``cancel`` was set while scoring."""


@dataclass(frozen=True)
class ScoredToken:
    index: int  # position in the text's ids (0 = the first token)
    token_id: int
    text: str  # what this token contributes to the text (special tokens as written: "<s>")
    logprob: Optional[float]  # None for a first token with nothing before it
    rank: Optional[int]  # 1 = what the model expected most
    top: tuple[tuple[str, float], ...] = ()  # the alternatives the model expected, most likely first
    entropy: Optional[float] = None
    piece: str = ""  # the token decoded alone (partial characters as ‹E3 81›)
    special: bool = False

    @property
    def surprisal(self) -> Optional[float]:
        """-logprob in nats (None for the first token)."""
        return None if self.logprob is None else -self.logprob


@dataclass
class Scored:
    """The scored tokens of ``text`` and its perplexity; displays as a heatmap (HTML + SVG)."""

    text: str
    model_id: str
    tokens: list[ScoredToken] = field(default_factory=list)

    @property
    def perplexity(self) -> float:
        lps = [t.logprob for t in self.tokens if t.logprob is not None]
        return math.exp(-sum(lps) / len(lps)) if lps else float("nan")

    @property
    def total_logprob(self) -> float:
        return sum(t.logprob for t in self.tokens if t.logprob is not None)

    def records(self) -> list[TokenRecord]:
        """The scored tokens (all but a first one with nothing before it) as heatmap records."""
        return [
            TokenRecord(
                index=t.index,
                token_id=t.token_id,
                text=t.text,
                logprob=t.logprob,
                rank=t.rank or 1,
                top=t.top,
                entropy=t.entropy or 0.0,
                piece=t.piece,
            )
            for t in self.tokens
            if t.logprob is not None
        ]

    def summary(self) -> str:
        n = sum(t.logprob is not None for t in self.tokens)
        return (
            f"perplexity {self.perplexity:.2f} over {n} scored tokens · total logprob {self.total_logprob:.2f} · {self.model_id}"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from .notebook.render_scored import scored_html, scored_svg

        return {"text/plain": self.summary(), "text/html": scored_html(self), "image/svg+xml": scored_svg(self)}


def _local_backend(model_id: Optional[str]) -> Any:
    from .service import load_backend

    backend = load_backend(model_id)
    if not is_local(backend):
        raise BadRequest("model_id", f"scoring needs a model in this kernel; '{backend.info.identifier}' is remote")
    return backend


def score(text: str, model_id: Optional[str] = None, cancel: Any = None) -> Scored:
    """Score ``text`` under ``model_id`` (the default model if None; loaded on first use).
    ``cancel``: a ``threading.Event``; once set, scoring stops with ``ScoringCancelled``."""
    if not isinstance(text, str):
        raise BadRequest("text", f"must be a string, got {type(text).__name__}")
    backend = _local_backend(model_id)
    try:
        ids = backend.encode(text)  # a text certainly over the context is refused before tokenizing it whole
    except BadRequest as exc:
        raise BadRequest("text", exc.message) from None
    if len(ids) > backend.context_length:
        raise BadRequest(
            "text", f"has {len(ids)} tokens; the context length of '{backend.info.identifier}' is {backend.context_length}"
        )
    return Scored(text=text, model_id=backend.info.identifier, tokens=score_ids(backend, ids, cancel=cancel))


def score_ids(backend: Any, ids: Sequence[int], top: int = TOP, cancel: Any = None) -> list[ScoredToken]:
    """Each of ``ids`` scored by one forward pass of ``backend.model`` (see the module docstring)."""
    ids = [int(i) for i in ids]
    if not ids:
        return []
    chosen, ranks, entropy, top_lp, top_ids = _position_stats(backend, ids, top, cancel)
    from .engine.detokenize import StreamingDetokenizer

    specials = set(getattr(backend.tokenizer, "all_special_ids", []) or [])
    detok = StreamingDetokenizer(backend.tokenizer)
    out: list[ScoredToken] = []
    for i, token_id in enumerate(ids):
        text = detok.add_token(token_id)
        piece = backend.piece(token_id)
        if i == 0:
            out.append(ScoredToken(0, token_id, text, None, None, (), None, piece, token_id in specials))
            continue
        alts = tuple((backend.piece(a), lp) for a, lp in zip(top_ids[i - 1], top_lp[i - 1]))
        out.append(
            ScoredToken(i, token_id, text, chosen[i - 1], int(ranks[i - 1]), alts, entropy[i - 1], piece, token_id in specials)
        )
    return out


def _position_stats(backend: Any, ids: list[int], top: int, cancel: Any) -> tuple[list, list, list, list, list]:
    """Per predicted position (token i from position i-1): logprob of the actual token, its rank,
    the entropy, and the top-``top`` logprobs and ids; logits made ``CHUNK`` rows at a time."""
    import torch

    from .engine.batch_sampling import measure

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise ScoringCancelled("scoring was cancelled")

    check()
    model = backend.model
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    stats: tuple[list, list, list, list, list] = ([], [], [], [], [])
    with torch.inference_mode():
        input_ids = torch.tensor([ids], device=backend.device)
        with model_lock(model):  # never mid-way through the attention view's switch
            if head is not None and decoder is not None and _head_of_last_hidden(model, head, decoder, input_ids):
                hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state[0]
                project = head
            else:  # a model whose logits are more than the head of the last hidden state
                hidden = model(input_ids=input_ids, use_cache=False).logits[0]
                project = None
        target = torch.tensor(ids[1:], device=hidden.device)
        for start in range(0, len(ids) - 1, CHUNK):
            check()
            rows = hidden[start : min(start + CHUNK, len(ids) - 1)]
            logits = (project(rows) if project is not None else rows).float()
            logprobs = torch.log_softmax(logits, dim=-1)
            del logits
            k = min(top, logprobs.shape[-1])
            measured = measure(logprobs, target[start : start + rows.shape[0]], k)  # the engine's numbers
            del logprobs
            for row in measured.tolist():
                stats[0].append(row[0])
                stats[1].append(int(row[1]))
                stats[2].append(row[2])
                stats[3].append(row[3 + k : 3 + 2 * k])
                stats[4].append([int(i) for i in row[3 : 3 + k]])
    return stats


_HEAD_VERDICTS: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _head_of_last_hidden(model: Any, head: Any, decoder: Any, input_ids: Any) -> bool:
    """Whether the model's logits are its head applied to the decoder's last hidden state, so
    scoring can make them a chunk at a time. Checked once per model on the first two tokens
    against its own forward: architectures that scale or cap the head's output (Gemma 2's
    soft-capping, RecurrentGemma's, Cohere's ``logit_scale``, Granite's ``logits_scaling``) are
    scored through the full forward instead, whatever their config calls it."""
    import torch

    verdict = _HEAD_VERDICTS.get(model)
    if verdict is None:
        probe = input_ids[:, :2]
        with torch.inference_mode():
            whole = model(input_ids=probe, use_cache=False).logits[0].float()
            parts = head(decoder(input_ids=probe, use_cache=False).last_hidden_state[0]).float()
        verdict = bool(whole.shape == parts.shape and torch.allclose(whole, parts, rtol=1e-4, atol=1e-4))
        _HEAD_VERDICTS[model] = verdict
    return verdict
