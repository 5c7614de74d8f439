"""Inside one step: the next-token distribution at a position, and one token drawn at a time.

Both go through the engine (``LocalBackend.open`` with ``ids=``, ``observe=``): a position's
prefix is forked from the engine's cached sequences (a parked run or a previous step), so only
the newest token is computed, never the whole prefix again.

* ``distribution_at(backend, ids)``: the raw logits the model gives the token after ``ids``, as
  the browser needs them to reshape the chart itself: the top ``TOP_N`` logits, and the rest
  summarised by ``REST_BINS`` bins (count and log-sum-exp of each), so the rest's mass under any
  temperature is ``logsumexp_b(log n_b + (lse_b - log n_b) / T)`` (exact at T = 1).
* ``step(backend, request, ids, generator)``: one token with the request's sampling, drawn by the
  engine from ``generator`` (so n steps draw what one n-token run with the same seed draws), and
  the draw made visible. The engine samples by the Gumbel-max race (``batch_sampling``): the
  winner is ``argmin_j E_j / q_j`` (``E ~ Exp(1)``, ``q`` the processed distribution); the
  winning value ``M`` is ``Exp(1)``, independent of the winner, so
  ``u = (mass before the winner) + q_winner * (1 - exp(-M))`` is a uniform number on the
  cumulative bar that falls in the winner's interval: the classic picture, for the same draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from .api.errors import BadRequest
from .engine.backend import is_local
from .service import open_plan
from .api.types import CompletionRequest
from .engine.records import Delta, Finished, TokenRecord

__all__ = ["TOP_N", "Distribution", "Draw", "StepResult", "distribution_at", "step", "summarize", "draw_of"]

TOP_N = 256  # raw logits sent per position (the chart shows the top 20-30 of them)
REST_BINS = 32
DRAW_BARS = 40  # tokens of the processed distribution drawn on the cumulative bar


@dataclass
class Distribution:
    """The raw next-token logits after ``position`` tokens (prompt included), summarised."""

    position: int
    ids: list[int]
    texts: list[str]
    logits: list[float]
    rest: list[tuple[int, float]]  # (count, logsumexp of the logits) per bin of the other tokens
    seen: list[bool] = field(default_factory=list)  # in the ids already (repetition penalty)

    @property
    def log_z(self) -> float:
        parts = list(self.logits) + [lse for n, lse in self.rest if n]
        top = max(parts)
        return top + math.log(sum(math.exp(v - top) for v in parts))

    def logprob(self, token_id: int) -> float:
        return self.logits[self.ids.index(token_id)] - self.log_z

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "ids": self.ids,
            "texts": self.texts,
            "logits": [round(v, 5) for v in self.logits],
            "rest": [[n, round(lse, 5)] for n, lse in self.rest],
            "seen": self.seen,
        }


@dataclass
class Draw:
    """One sampling step made visible: the processed distribution as a cumulative bar and ``u``."""

    token_id: int
    greedy: bool
    u: Optional[float]  # None for greedy: the argmax, nothing drawn
    bar: list[tuple[int, str, float]]  # (id, text, processed probability), most likely first
    rest: float  # processed mass of the tokens not on the bar
    before: float  # processed mass before the chosen token on the bar
    p: float  # the chosen token's processed probability

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id, "greedy": self.greedy, "u": self.u,
            "bar": [[i, t, round(p, 6)] for i, t, p in self.bar], "rest": round(self.rest, 6),
            "before": round(self.before, 6), "p": round(self.p, 6),
        }  # fmt: skip


@dataclass
class StepResult:
    record: Optional[TokenRecord]  # None when the model chose its end token
    token_id: int
    distribution: Distribution
    draw: Draw
    finished: Finished


def summarize(backend: Any, raw: torch.Tensor, position: int, ids: Sequence[int], top_n: int = TOP_N) -> Distribution:
    """The top ``top_n`` raw logits and the rest in ``REST_BINS`` bins (see the module docstring)."""
    raw = raw.detach().float().cpu()
    k = min(top_n, raw.numel())
    values, order = torch.topk(raw, k)
    rest_mask = torch.ones_like(raw, dtype=torch.bool)
    rest_mask[order] = False
    rest = raw[rest_mask & torch.isfinite(raw)].double()
    bins: list[tuple[int, float]] = []
    if rest.numel():
        lo, hi = float(rest.min()), float(rest.max())
        edges = torch.linspace(lo, hi + 1e-9, REST_BINS + 1, dtype=torch.float64)
        which = torch.bucketize(rest, edges[1:-1])
        for b in range(REST_BINS):
            members = rest[which == b]
            if members.numel():
                bins.append((int(members.numel()), float(torch.logsumexp(members, 0))))
    seen = set(int(i) for i in ids)
    top_ids = [int(i) for i in order.tolist()]
    return Distribution(
        position=position,
        ids=top_ids,
        texts=[backend.piece(i) for i in top_ids],
        logits=[float(v) for v in values.tolist()],
        rest=bins,
        seen=[i in seen for i in top_ids],
    )


def draw_of(backend: Any, processed: torch.Tensor, noise: Optional[torch.Tensor], chosen: int) -> Draw:
    """The draw as a cumulative bar (see the module docstring); greedy when ``noise`` is None."""
    if noise is None:  # greedy: the argmax takes all the mass
        q = torch.zeros(processed.numel(), dtype=torch.float64)
        q[chosen] = 1.0
    else:
        q = torch.softmax(processed.detach().double().cpu(), -1)
    k = min(DRAW_BARS, q.numel())
    top_p, top_ids = torch.topk(q, k)
    order = torch.argsort(-q, stable=True)
    rank = int((order == chosen).nonzero()[0, 0])
    before = float(q[order[:rank]].sum())
    p = float(q[chosen])
    u = None
    if noise is not None:
        e = torch.exp(-noise.detach().double().cpu())  # the engine's noise is -log E
        live = q > 0
        m = float((e[live] / q[live]).min())
        u = before + p * (1.0 - math.exp(-m))
    bar = [(int(i), backend.piece(int(i)), float(v)) for i, v in zip(top_ids.tolist(), top_p.tolist()) if v > 0]
    return Draw(chosen, noise is None, u, bar, max(0.0, 1.0 - sum(v for _, _, v in bar)), before, p)


def _one_token(request: CompletionRequest, greedy: bool = False) -> CompletionRequest:
    body = request.sampling_params.model_dump(exclude_none=True)
    body.update(max_tokens=1)
    body.pop("stop", None)
    if greedy:
        body.update(strategy={"type": "greedy"}, repetition_penalty=1.0)
    params = type(request.sampling_params).model_validate(body)
    return request.model_copy(update={"sampling_params": params, "response_format": None})


def _run(backend: Any, request: CompletionRequest, ids: list[int], generator: Any = None):
    if not is_local(backend):
        raise BadRequest(
            "model_id", f"'{backend.info.identifier}' is remote: Step and the distribution need a model in this kernel"
        )
    step: dict[str, Any] = {}

    def observe(raw: torch.Tensor, processed: torch.Tensor, noise: Optional[torch.Tensor], chosen: int) -> None:
        # on the engine thread: copy the row's tensors and go; the views are computed below, on
        # this caller's thread, so a Step never stalls the other rows of the batch
        step.update(raw=raw.clone(), processed=processed.clone(), noise=None if noise is None else noise.clone(), chosen=chosen)

    events = list(open_plan(backend.prepare(request, ids=list(ids)), generator=generator, observe=observe))
    records = [t for e in events if isinstance(e, Delta) for t in e.tokens]
    finished = next(e for e in events if isinstance(e, Finished))
    if "chosen" not in step:
        raise BadRequest("content", "the model produced no token here")
    seen = {
        "distribution": summarize(backend, step["raw"], len(ids), ids),
        "draw": draw_of(backend, step["processed"], step["noise"], step["chosen"]),
        "chosen": step["chosen"],
    }
    return seen, records, finished


def distribution_at(backend: Any, request: CompletionRequest, ids: Sequence[int]) -> Distribution:
    """The raw distribution of the token after ``ids`` (a one-token greedy probe; prefix cached)."""
    seen, _, _ = _run(backend, _one_token(request, greedy=True), list(ids))
    return seen["distribution"]


def step(backend: Any, request: CompletionRequest, ids: Sequence[int], generator: Any = None) -> StepResult:
    """One token after ``ids`` with ``request``'s sampling, drawn from ``generator``."""
    seen, records, finished = _run(backend, _one_token(request), list(ids), generator)
    record = records[0] if records else None
    return StepResult(record, seen["chosen"], seen["distribution"], seen["draw"], finished)
