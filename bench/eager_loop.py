"""The one-sequence reference loop: prefill, then decode one token at a time with transformers'
own growing KV cache.

Requests are served by the batched engine (``nb_completion/engine/batch_engine.py``); this loop is
the eager reference the engine is measured against (``bench/engine.py``: rung 0), moved out of
the package (issue 24). Each step
measures the chosen token under the model's *raw* distribution (log-softmax of the logits before
penalty, grammar mask, temperature or truncation), then applies the processors and chooses.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol

import torch

from nb_completion.engine.kv import cache_kwarg

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def apply_all(processors: list[Processor], ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    for process in processors:
        logits = process(ids, logits)
    return logits


def choose(logits: torch.Tensor, generator: Optional[torch.Generator]) -> int:
    """Greedy (``generator is None``): argmax. Otherwise a seeded draw from softmax(logits)."""
    if generator is None:
        return int(torch.argmax(logits))
    return int(torch.multinomial(torch.softmax(logits.float(), dim=-1).cpu(), 1, generator=generator))


class GrammarMask(Protocol):
    """A grammar mask (see ``constraints.py``)."""

    def mask(self, logits: torch.Tensor) -> int: ...
    def advance(self, token_id: int) -> None: ...
    def is_finished(self) -> bool: ...


@dataclass
class DecodeConfig:
    max_new_tokens: int  # already resolved against the context window (> 0)
    processors: list[Processor] = field(default_factory=list)  # before the grammar mask
    samplers: list[Processor] = field(default_factory=list)  # after it: temperature, top-k, top-p
    generator: Optional[torch.Generator] = None  # None: greedy
    top_logprobs: int = 0  # alternatives to record per step
    stop_token_ids: frozenset[int] = frozenset()
    constraint: Optional[GrammarMask] = None


@dataclass(frozen=True)
class Step:
    token_id: int
    logprob: float
    rank: int
    top_ids: tuple[int, ...]
    top_logprobs: tuple[float, ...]
    entropy: float
    forced: bool
    time: float  # perf_counter() when the token was chosen


@dataclass
class Outcome:
    """Filled in as the generator runs; read it after the generator is exhausted."""

    reason: str = "out_of_tokens"  # "stop_token" | "grammar_complete" | "out_of_tokens" | "cancelled"
    stop_token_id: Optional[int] = None
    steps: int = 0


def _measure(logits: torch.Tensor, token_id: int, top: int) -> tuple[float, int, tuple, tuple, float]:
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs[token_id]
    rank = int((logprobs > chosen).sum()) + 1
    probs = logprobs.exp()
    entropy = float(-(probs * torch.nan_to_num(logprobs, neginf=0.0)).sum())
    if top > 0:
        values, ids = torch.topk(logprobs, top)
        top_ids, top_lps = tuple(ids.tolist()), tuple(values.tolist())
    else:
        top_ids, top_lps = (), ()
    return float(chosen), rank, top_ids, top_lps, entropy


def generate_steps(
    model: Any,
    prompt_ids: torch.Tensor,
    config: DecodeConfig,
    outcome: Outcome,
    cancel: Optional[threading.Event] = None,
) -> Iterator[Step]:
    """Yield one ``Step`` per generated token. ``prompt_ids``: 1-D LongTensor on the model's device."""
    cache_name = cache_kwarg(model)
    device = prompt_ids.device
    history = torch.empty(prompt_ids.numel() + config.max_new_tokens, dtype=torch.long, device=device)
    history[: prompt_ids.numel()] = prompt_ids
    length = prompt_ids.numel()
    next_input = prompt_ids.unsqueeze(0)
    cache = None
    with torch.inference_mode():
        for _ in range(config.max_new_tokens):
            if cancel is not None and cancel.is_set():
                outcome.reason = "cancelled"
                return
            kwargs = {cache_name: cache} if cache is not None else {}
            out = model(input_ids=next_input, use_cache=True, logits_to_keep=1, **kwargs)
            cache = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values
            raw = out.logits[0, -1]
            logits = apply_all(config.processors, history[:length], raw.float())
            forced = False
            if config.constraint is not None:
                logits = logits.clone() if logits.data_ptr() == raw.data_ptr() else logits
                forced = config.constraint.mask(logits) == 1
            logits = apply_all(config.samplers, history[:length], logits)
            token_id = choose(logits, config.generator)
            logprob, rank, top_ids, top_lps, entropy = _measure(raw, token_id, config.top_logprobs)
            now = time.perf_counter()
            history[length] = token_id
            length += 1
            outcome.steps += 1
            if config.constraint is not None:
                config.constraint.advance(token_id)
            yield Step(token_id, logprob, rank, top_ids, top_lps, entropy, forced, now)
            if token_id in config.stop_token_ids:
                outcome.reason, outcome.stop_token_id = "stop_token", token_id
                return
            if config.constraint is not None and config.constraint.is_finished():
                outcome.reason = "grammar_complete"
                return
            next_input = history[length - 1 : length].unsqueeze(0)
    outcome.reason = "out_of_tokens"
