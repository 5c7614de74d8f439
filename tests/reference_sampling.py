"""One-row reference processors, as Hugging Face defines them (``generate()`` is the oracle):
``(generated_ids, logits) -> logits`` on a 1-D float tensor, each built by a factory that checks
its value against the bounds table. Moved here from the engine (issue 24): the engine's one
sampler is ``batch_sampling.process``; these are what the tests compare it with."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from nb_completion.engine.sampling import check as _check
from nb_completion.engine.sampling import make_generator

__all__ = ["repetition_penalty", "temperature", "top_k", "top_p", "chain", "apply_all", "choose", "make_generator"]

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def repetition_penalty(penalty: float) -> Optional[Processor]:
    """Multiplicative penalty on every token already in prompt or output (1.0 = off)."""
    _check("repetition_penalty", penalty)
    if penalty == 1.0:
        return None

    def apply(ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen = ids.unique()
        scores = logits.gather(0, seen)
        scores = torch.where(scores < 0, scores * penalty, scores / penalty)
        return logits.scatter(0, seen, scores)

    return apply


def temperature(value: float) -> Optional[Processor]:
    _check("temperature", value)
    if value == 1.0:
        return None
    return lambda ids, logits: logits / value


def top_k(k: int) -> Processor:
    """Keep the k highest logits (ties at the k-th value are kept, as in Hugging Face)."""
    _check("top_k", k)

    def apply(ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        kth = torch.topk(logits, min(k, logits.numel())).values[-1]
        return logits.masked_fill(logits < kth, float("-inf"))

    return apply


def top_p(p: float) -> Optional[Processor]:
    """Nucleus: keep the smallest set whose probability reaches ``p`` (at least one token)."""
    _check("top_p", p)
    if p == 1.0:
        return None

    def apply(ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative <= (1 - p)
        remove[-1] = False
        return logits.masked_fill(remove.scatter(0, order, remove), float("-inf"))

    return apply


def chain(*processors: Optional[Processor]) -> list[Processor]:
    return [p for p in processors if p is not None]


def apply_all(processors: list[Processor], ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    for process in processors:
        logits = process(ids, logits)
    return logits


def choose(logits: torch.Tensor, generator: Optional[torch.Generator]) -> int:
    """Greedy (``generator is None``): argmax. Otherwise a seeded draw from softmax(logits)."""
    if generator is None:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float(), dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))
