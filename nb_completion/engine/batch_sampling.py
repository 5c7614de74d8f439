"""One step's choosing and measuring for a whole batch, on the device, with one read-back.

Per row (a sequence) the parameters live in per-slot tensors (``RowTable``): greedy or not,
temperature, top-k, top-p, repetition penalty and the set of tokens seen so far. Per step:

1. ``log_softmax`` of the raw logits, once: the chosen token's logprob, its rank, the entropy
   and the top alternatives are all measured on it (the *raw* distribution, as before).
2. The processors, in Hugging Face's order: repetition penalty (from the seen mask), the
   grammar mask (host side, only rows that have one), temperature, top-k, top-p. top-p works on
   a top-``PREFILTER`` prefix of the sorted distribution and falls back to a full sort only for
   rows whose nucleus is wider than that.
3. The choice: argmax for greedy rows; for sampling rows the Gumbel-max trick
   (``argmax(logits - log(E))`` with ``E ~ Exp(1)``), which draws exactly from softmax(logits).
   ``E`` comes from the sequence's own ``torch.Generator`` (``vocab`` draws per step), so a seed
   reproduces a sequence whatever else is in the batch. CPU and CUDA generators are different
   algorithms: a seed reproduces on the same device type, not across them. ``E`` is drawn as
   ``-log(1 - U)`` from a uniform ``U`` (inverse transform: the same Exp(1)), floored at the
   smallest normal float so ``log E`` stays finite: on a CPU ``uniform_`` and two logs cost a
   fifth of ``exponential_`` (4 ms instead of 17 ms for 16 rows of a 49,152-token vocabulary,
   a quarter of a 16-row decode step of the default model).
4. Everything the host needs, packed into one ``[rows, 4 + 2k]`` float64 tensor and read back
   once: token id, logprob, rank, entropy, top-k ids, top-k logprobs.

Steps 2 and 1's numbers are the pure functions ``process`` and ``measure``: the one sampler and
the one measurement, used by the engine, ``score()``, the static teaching figures and the
browser's vectors. Semantics match Hugging Face's logits processors (``tests/reference_sampling.py``
holds one-row reference processors, which the tests compare with ``generate()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

PREFILTER = 256
NEG_INF = float("-inf")


@dataclass
class RowParams:
    """One sequence's sampling parameters (validated by ``sampling.py`` before they get here)."""

    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    repetition_penalty: float = 1.0
    top_logprobs: int = 5
    generator: Optional[torch.Generator] = None
    # OpenAI's additive adjustments (its route only): logits[t] += logit_bias[t], and
    # -= frequency_penalty * count[t] + presence_penalty * (count[t] > 0), counting generated tokens
    logit_bias: Optional[dict[int, float]] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # Called on the engine thread at every step with (raw logits, processed logits, Gumbel noise
    # or None for greedy, chosen id): the teaching views' window into one step (``stepping.py``).
    # It must only copy what it keeps; the views are computed on the caller's thread.
    observe: Optional[Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], int], None]] = None


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_TINY = float(torch.finfo(torch.float32).tiny)


class RowTable:
    """Per-slot parameter tensors on the device, so a step slices ``[:rows]`` instead of building."""

    def __init__(self, slots: int, vocab: int, device: torch.device):
        self.vocab = vocab
        self.temperature = torch.ones(slots, device=device)
        self.top_k = torch.zeros(slots, dtype=torch.long, device=device)
        self.top_p = torch.ones(slots, device=device)
        self.penalty = torch.ones(slots, device=device)
        self.seen = torch.zeros(slots, vocab, dtype=torch.bool, device=device)
        self.counts = torch.zeros(slots, vocab, device=device)  # generated tokens (OpenAI's penalties)
        self.params: list[Optional[RowParams]] = [None] * slots

    def set(self, slot: int, params: RowParams, ids: Sequence[int]) -> None:
        self.params[slot] = params
        # float32 holds temperatures up to ~3.4e38; beyond that the distribution is uniform anyway
        self.temperature[slot] = min(params.temperature, _FLOAT32_MAX)
        self.top_k[slot] = params.top_k
        self.top_p[slot] = params.top_p
        self.penalty[slot] = params.repetition_penalty
        self.seen[slot] = False
        self.counts[slot] = 0
        if params.repetition_penalty != 1.0 and ids:
            self.seen[slot, torch.tensor(list(ids), device=self.seen.device)] = True

    def move(self, source: int, target: int) -> None:
        for tensor in (self.temperature, self.top_k, self.top_p, self.penalty, self.seen, self.counts):
            tensor[target] = tensor[source]
        self.params[target] = self.params[source]

    @classmethod
    def one(cls, params: RowParams, seen_ids: Sequence[int], vocab: int, device: torch.device | str = "cpu") -> "RowTable":
        """A table of one row: ``process`` on a single distribution (the static teaching figures)."""
        table = cls(1, vocab, torch.device(device))
        table.set(0, params, seen_ids)
        return table

    def clear(self, slot: int) -> None:
        self.params[slot] = None


@dataclass
class Chosen:
    """What the host reads back for one row."""

    token_id: int
    logprob: float
    rank: int
    entropy: float
    top_ids: tuple[int, ...]
    top_logprobs: tuple[float, ...]
    forced: bool
    error: Optional[BaseException] = None  # the row's grammar failed; the sequence must end


def _top_p_mask(x: torch.Tensor, top_p: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """True where a token falls outside the nucleus (only for ``rows``)."""
    probs = torch.softmax(x, dim=-1)
    k = min(PREFILTER, x.shape[-1])
    values = torch.topk(probs, k, dim=-1).values
    exclusive = values.cumsum(-1) - values  # mass of the strictly more likely tokens
    keep = (exclusive < top_p[:, None]).sum(-1).clamp(min=1)
    overflow = rows & (keep >= k) & (k < x.shape[-1])
    if bool(overflow.any()):  # a nucleus wider than the prefilter: a longer sorted prefix for these rows
        for b in overflow.nonzero().flatten().tolist():
            values[b, -1] = _nucleus_floor(probs[b], float(top_p[b]), k)
            keep[b] = k
    threshold = values.gather(1, (keep - 1)[:, None])
    return rows[:, None] & (probs < threshold)


def _nucleus_floor(probs: torch.Tensor, top_p: float, k: int) -> torch.Tensor:
    """The smallest probability the nucleus keeps, for a nucleus wider than ``k``: a sorted prefix
    four times longer each try (``topk``, a fraction of a full sort's cost), the whole row last.
    Exact: the prefix holds the same values in the same order as a full sort's, so its exclusive
    cumulative sums are the same numbers; once one reaches ``top_p`` every later one does too."""
    n = probs.shape[-1]
    while True:
        k = min(4 * k, n)
        head = torch.topk(probs, k).values if k < n else torch.sort(probs, descending=True).values
        excl = head.cumsum(-1) - head
        inside = excl < top_p
        if k == n or not bool(inside[-1]):
            return head[int(inside.sum().clamp(min=1)) - 1]


def _adjust(x: torch.Tensor, counts: torch.Tensor, params: Sequence[RowParams]) -> torch.Tensor:
    """OpenAI's additive penalties on the tokens generated so far, then each row's logit bias."""
    frequency = torch.tensor([p.frequency_penalty for p in params], device=x.device, dtype=x.dtype)[:, None]
    presence = torch.tensor([p.presence_penalty for p in params], device=x.device, dtype=x.dtype)[:, None]
    x = x - counts * frequency - (counts > 0).to(x.dtype) * presence
    for b, p in enumerate(params):
        if p.logit_bias:
            ids = torch.tensor(list(p.logit_bias), device=x.device)
            x[b, ids] += torch.tensor(list(p.logit_bias.values()), device=x.device, dtype=x.dtype)
    return x


@dataclass
class Processed:
    """``process``'s result: the processed logits, and per row whether a grammar left one token
    (forced) or failed (the error ends that row)."""

    logits: torch.Tensor
    forced: list[bool]
    errors: list[Optional[BaseException]]


def process(raw: torch.Tensor, table: RowTable, first: int = 0, constraints: Sequence[Any] = ()) -> Processed:
    """The processors on ``raw`` ([rows, vocab] float32; row ``b`` is slot ``first + b`` of
    ``table``), in Hugging Face's order: repetition penalty, OpenAI's additive penalties and logit
    bias, the grammar mask, then for sampling rows temperature, top-k, top-p. ``raw`` is not
    changed. The one implementation: the engine's step, the static teaching figures and the
    browser's vectors (``js/test/fixtures``) all use it."""
    rows = raw.shape[0]
    slots = slice(first, first + rows)
    params = table.params[slots]
    x = raw
    if any(p.repetition_penalty != 1.0 for p in params):
        penalty = table.penalty[slots, None]
        x = torch.where(table.seen[slots], torch.where(x < 0, x * penalty, x / penalty), x)
    if any(p.presence_penalty or p.frequency_penalty or p.logit_bias for p in params):
        x = _adjust(x.clone() if x is raw else x, table.counts[slots], params)
    forced = [False] * rows
    errors: list[Optional[BaseException]] = [None] * rows
    if any(c is not None for c in constraints):
        x = x.clone() if x is raw else x
        for b, constraint in enumerate(constraints):
            if constraint is not None:
                try:
                    forced[b] = constraint.mask(x[b]) == 1
                except Exception as exc:  # this row ends with an error; the others go on
                    errors[b] = exc
    if any(not p.greedy for p in params):
        x = x / table.temperature[slots, None]
        top_k = table.top_k[slots]
        k_max = max((p.top_k for p in params if not p.greedy), default=0)
        if k_max > 0:
            kth = torch.topk(x, min(k_max, x.shape[-1]), dim=-1).values
            threshold = kth.gather(1, (top_k.clamp(min=1, max=kth.shape[-1]) - 1)[:, None])
            x = x.masked_fill((top_k > 0)[:, None] & (x < threshold), NEG_INF)
        if any(not p.greedy and p.top_p < 1.0 for p in params):
            top_p = table.top_p[slots]
            x = x.masked_fill(_top_p_mask(x, top_p, top_p < 1.0), NEG_INF)
    return Processed(x, forced, errors)


def measure(logprobs: torch.Tensor, chosen: torch.Tensor, top_n: int) -> torch.Tensor:
    """Per row of ``logprobs`` ([rows, vocab], the raw log-softmax): the ``chosen`` token's
    logprob, its rank (1 = the most likely), the entropy, then the top ``top_n`` ids and their
    logprobs, as one ``[rows, 3 + 2 * top_n]`` float64 tensor. The one measurement: the engine's
    records, ``score()`` and Step show these numbers."""
    chosen_lp = logprobs.gather(1, chosen[:, None])
    rank = (logprobs > chosen_lp).sum(-1, keepdim=True)
    entropy = -(logprobs.exp() * torch.nan_to_num(logprobs, neginf=0.0)).sum(-1, keepdim=True)
    top_values, top_ids = torch.topk(logprobs, min(top_n, logprobs.shape[-1]), dim=-1)
    return torch.cat([chosen_lp.double(), rank.double() + 1, entropy.double(), top_ids.double(), top_values.double()], dim=1)


def choose_batch(
    raw: torch.Tensor,
    table: RowTable,
    first: int,
    constraints: Sequence[Any],
    top_n: int,
) -> list[Chosen]:
    """Choose and measure one token per row of ``raw`` ([rows, vocab]; row b is slot first + b)."""
    rows = raw.shape[0]
    raw = raw.float()
    params = table.params[first : first + rows]
    logprobs = torch.log_softmax(raw, dim=-1)
    processed = process(raw, table, first, constraints)
    x, forced, errors = processed.logits, processed.forced, processed.errors
    if any(not p.greedy for p in params):
        noise = torch.zeros_like(x)
        for b, p in enumerate(params):
            if not p.greedy:
                noise[b].uniform_(generator=p.generator).neg_().log1p_().neg_().clamp_(min=_TINY).log_().neg_()
        chosen = torch.argmax(x + noise, dim=-1)
    else:
        chosen = torch.argmax(x, dim=-1)
    packed = torch.cat([chosen[:, None].double(), measure(logprobs, chosen, top_n)], dim=1)
    for b, p in enumerate(params):
        if p.observe is not None:
            p.observe(raw[b], x[b], noise[b] if not p.greedy else None, int(chosen[b]))
    if any(p.repetition_penalty != 1.0 for p in params):
        table.seen[torch.arange(first, first + rows, device=raw.device), chosen] = True
    if any(p.presence_penalty or p.frequency_penalty for p in params):
        table.counts[torch.arange(first, first + rows, device=raw.device), chosen] += 1
    host = packed.cpu().tolist()  # the one read-back of the step
    result = []
    for b, row in enumerate(host):
        n = params[b].top_logprobs
        result.append(
            Chosen(
                token_id=int(row[0]),
                logprob=row[1],
                rank=int(row[2]),
                entropy=row[3],
                top_ids=tuple(int(i) for i in row[4 : 4 + n]),
                top_logprobs=tuple(row[4 + top_n : 4 + top_n + n]),
                forced=forced[b],
                error=errors[b],
            )
        )
    return result
