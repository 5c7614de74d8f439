"""A transformers model in this process, as a ``Backend``: turns a ``CompletionRequest`` into a
``DecodeConfig``, drains ``generate_steps`` and shapes each step into a ``TokenRecord`` with its
text (incremental detokenizer), holding back text that may start a stop string.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator, Optional

import torch

from ..api.errors import BadRequest, CompletionError, EngineFailure
from ..api.types import (
    CompletionRequest,
    ImageContentItem,
    SamplingParams,
    TextContentItem,
    TopKSamplingStrategy,
    TopPSamplingStrategy,
)
from . import sampling
from .backend import Event
from .detokenize import StreamingDetokenizer
from .generate import DecodeConfig, Outcome, generate_steps
from .records import Finished, ModelInfo, TokenRecord
from .stopping import StopStringFilter
from .token_text import token_display_text

END_OF_MESSAGE_TOKENS = ("<|eom_id|>",)


def content_text(content: Any, model_id: str) -> str:
    """The request's content as one text; image items are refused by a text-only model."""
    items = content if isinstance(content, list) else [content]
    parts: list[str] = []
    for item in items:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, TextContentItem):
            parts.append(item.text)
        elif isinstance(item, ImageContentItem):
            raise BadRequest("content", f"model '{model_id}' is text-only and cannot take image content")
    return "".join(parts)


@dataclass
class _Plan:
    prompt_ids: torch.Tensor
    config: DecodeConfig
    stops: list[str]
    started: float


class LocalBackend:
    """One loaded model and tokenizer; generates one request at a time."""

    def __init__(self, model: Any, tokenizer: Any, model_id: str, *, source: str = "", dtype: str = "", device: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        self.vocab_size = int(model.config.vocab_size)
        self.info = ModelInfo(
            identifier=model_id,
            provider_resource_id=source or model_id,
            metadata={"dtype": dtype, "device": device, "context_length": self.context_length},
            context_length=self.context_length,
            loaded=True,
        )
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()
        self._pieces: dict[int, str] = {}
        self.stop_token_ids, self.end_of_message_ids = self._end_tokens()

    def _end_tokens(self) -> tuple[frozenset[int], frozenset[int]]:
        ids: set[int] = set()
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        eom: set[int] = set()
        vocab = self.tokenizer.get_vocab()
        for name in END_OF_MESSAGE_TOKENS:
            if name in vocab:
                eom.add(vocab[name])
        return frozenset(ids | eom), frozenset(eom)

    def piece(self, token_id: int) -> str:
        text = self._pieces.get(token_id)
        if text is None:
            text = self._pieces[token_id] = token_display_text(self.tokenizer, token_id)  # partial bytes as ‹E3 81›
        return text

    # ---- request -> plan (every 4xx is raised here, before streaming) ----------------------

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id]
        return list(ids)

    def _plan(self, request: CompletionRequest, seed: Optional[int]) -> _Plan:
        started = time.perf_counter()
        text = content_text(request.content, self.info.identifier)
        ids = self.encode(text)
        if not ids:
            raise BadRequest("content", "is empty and the model has no beginning-of-sequence token")
        params = request.sampling_params or SamplingParams()
        max_tokens = params.max_tokens or 0
        room = self.context_length - len(ids)
        if room <= 0:
            raise BadRequest(
                "content", f"the prompt has {len(ids)} tokens; the context length of '{self.info.identifier}' is {self.context_length}"
            )
        if max_tokens > room:
            raise BadRequest(
                "sampling_params.max_tokens",
                f"prompt tokens ({len(ids)}) + max_tokens ({max_tokens}) = {len(ids) + max_tokens} exceeds the context "
                f"length of '{self.info.identifier}' ({self.context_length})",
            )
        strategy = params.strategy
        try:
            processors = sampling.chain(sampling.repetition_penalty(params.repetition_penalty or 1.0))
            generator = None
            samplers: list = []
            if isinstance(strategy, TopPSamplingStrategy):
                temperature = 1.0 if strategy.temperature is None else strategy.temperature
                top_p = 0.95 if strategy.top_p is None else strategy.top_p
                samplers = sampling.chain(sampling.temperature(temperature), sampling.top_p(top_p))
                generator = sampling.make_generator(seed)
            elif isinstance(strategy, TopKSamplingStrategy):
                samplers = sampling.chain(sampling.top_k(strategy.top_k))
                generator = sampling.make_generator(seed)
        except ValueError as exc:
            raise BadRequest("sampling_params", str(exc)) from None
        top = request.logprobs.top_k or 0 if request.logprobs is not None else 0
        config = DecodeConfig(
            max_new_tokens=max_tokens or room,
            processors=processors,
            samplers=samplers,
            generator=generator,
            top_logprobs=max(top, 5),  # always keep a few alternatives for the heatmap
            stop_token_ids=self.stop_token_ids,
            constraint=self._constraint(request),
        )
        prompt = torch.tensor(ids, dtype=torch.long, device=self.device)
        return _Plan(prompt_ids=prompt, config=config, stops=list(params.stop or []), started=started)

    def _constraint(self, request: CompletionRequest) -> Any:
        if request.response_format is None:
            return None
        try:
            from .constraints import compile_constraint
        except ImportError:
            raise BadRequest("response_format", "structured output is not supported yet") from None
        return compile_constraint(request.response_format, self.tokenizer, self.vocab_size)

    # ---- streaming ----------------------------------------------------------------------------

    def open(
        self, request: CompletionRequest, *, seed: Optional[int] = None, cancel: Optional[threading.Event] = None
    ) -> Iterator[Event]:
        plan = self._plan(request, seed)
        return self._run(plan, cancel)

    def _run(self, plan: _Plan, cancel: Optional[threading.Event]) -> Iterator[Event]:
        with self._lock:
            try:
                yield from self._events(plan, cancel)
            except CompletionError:
                raise
            except Exception as exc:
                raise EngineFailure(f"The engine failed while generating ({type(exc).__name__}).") from exc

    def _events(self, plan: _Plan, cancel: Optional[threading.Event]) -> Iterator[Event]:
        outcome = Outcome()
        detok = StreamingDetokenizer(self.tokenizer, plan.prompt_ids.tolist())
        stops = StopStringFilter(plan.stops)
        first = last = None
        index = 0
        for step in generate_steps(self.model, plan.prompt_ids, plan.config, outcome, cancel):
            first = first or step.time
            last = step.time
            if step.token_id in self.stop_token_ids:
                continue  # the end token carries no text; the core returns after it
            record = TokenRecord(
                index=index,
                token_id=step.token_id,
                text=detok.add_token(step.token_id),
                logprob=step.logprob,
                rank=step.rank,
                top=tuple((self.piece(i), lp) for i, lp in zip(step.top_ids, step.top_logprobs)),
                entropy=step.entropy,
                forced=step.forced,
                elapsed=step.time - plan.started,
                piece=self.piece(step.token_id),
            )
            index += 1
            delta = stops.push(record)
            if delta.text or delta.tokens:
                yield delta
            if stops.stopped:
                break
        if not stops.stopped:
            delta = stops.flush()
            if delta.text or delta.tokens:
                yield delta
            # Bytes of a character that max_tokens cut short are dropped (they would decode as
            # U+FFFD), so the output is always exactly the join of its tokens' texts.
        yield replace(self._finished(plan, outcome, stops.stopped, first, last), stop_string=stops.matched)

    def _finished(self, plan: _Plan, outcome: Outcome, stopped: bool, first, last) -> Finished:
        if stopped or outcome.reason == "grammar_complete":
            reason = "end_of_turn"
        elif outcome.reason == "stop_token":
            reason = "end_of_message" if outcome.stop_token_id in self.end_of_message_ids else "end_of_turn"
        else:
            reason = "out_of_tokens"
        ttft = (first - plan.started) if first is not None else None
        rate = None
        if first is not None and last is not None and outcome.steps > 1 and last > first:
            rate = (outcome.steps - 1) / (last - first)
        return Finished(
            stop_reason=reason,
            prompt_tokens=int(plan.prompt_ids.numel()),
            completion_tokens=outcome.steps,
            time_to_first_token=ttft,
            tokens_per_second=rate,
            cancelled=outcome.reason == "cancelled",
        )
