"""A transformers model in this process, as a ``Backend``: turns a ``CompletionRequest`` into the
engine's ``Work`` (``batch_engine.py`` batches every open request into one forward pass per step) and
shapes each token into a ``TokenRecord`` with its text (incremental detokenizer), holding back
text that may start a stop string. ``open()`` returns an ``EventStream``: iterate it for the
``Delta``/``Finished`` events; closing it, or dropping it, cancels the sequence, so a stream left
half-read never holds the engine.
"""

from __future__ import annotations

import queue
import threading
import time
import dataclasses
from dataclasses import replace
from typing import Any, Callable, Iterator, Optional

import torch


from ..api.content import content_text
from ..api.bounds import ALTERNATIVES, TEMPERATURE, TOP_P
from ..api.errors import BadRequest
from ..api.validation import grammar_key
from ..api.types import (
    CompletionRequest,
    SamplingParams,
    TopKSamplingStrategy,
    TopPSamplingStrategy,
)
from . import sampling
from .backend import BackendKind, Event
from .batch_sampling import Chosen, RowParams
from .detokenize import StreamingDetokenizer
from .prompt_length import longest_token_bytes, over_context
from .records import Finished, ModelInfo, TokenRecord
from .architectures import batched_path_holds
from .batch_engine import Engine, default_max_batch
from .plan import Plan, resolve_max_tokens, with_max_tokens
from .config import engine_config
from .sequence import Work
from .sequential import SequentialEngine
from .stopping import StopStringFilter
from .token_text import token_display_text

END_OF_MESSAGE_TOKENS = ("<|eom_id|>",)


def compile_by_default() -> bool:
    """Whether an engine compiles its decode pass (on its own thread, docs/engine.md): only when
    asked (``EngineConfig.compile``: ``NB_COMPLETION_COMPILE=1``, ``nb-completion serve --compile``).
    The compiled pass is ~1.5x faster on the CPU but rounds a few last bits differently from the
    eager one; by default every run of a prompt gives the same numbers, from the first request on."""
    return engine_config().compile


REMEMBERED_PROMPTS = 64


class LocalBackend:
    """One loaded model and tokenizer; generates one request at a time."""

    # open(generator=...) continues a sampling generator's state; open(ids=, constraint=, adjust=)
    # takes what the server's precheck computed; open(deliver=...) pushes the events to a callback
    kind = BackendKind.LOCAL

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
        # Engine(...) keywords, read when it starts (EngineConfig: compile, and lean=False for the
        # model's own forward instead of the lean pass, the reference)
        config = engine_config()
        self.engine_options: dict[str, Any] = {"compile": config.compile, "lean": config.lean}
        self._engine: Optional[Any] = None  # Engine or SequentialEngine
        self._engine_lock = threading.Lock()
        self._pieces: dict[int, str] = {}
        self._longest_token_bytes: Optional[int] = None
        self._remembered: dict[str, list[int]] = {}  # remember_prompt_ids
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

    def remember_prompt_ids(self, text: str, ids: list[int] | None) -> None:
        """``encode(text)`` returns ``ids`` from now on (``chat.py``: a chat prompt whose user text
        holds special-token strings, kept as text); None forgets. The last ``REMEMBERED_PROMPTS``
        are kept."""
        self._remembered.pop(text, None)
        if ids is None:
            return
        self._remembered[text] = list(ids)
        while len(self._remembered) > REMEMBERED_PROMPTS:
            self._remembered.pop(next(iter(self._remembered)))

    def encode(self, text: str) -> list[int]:
        """The prompt's token ids; a 400 naming ``content`` before tokenizing it whole when it is
        certainly longer than the context (``prompt_length``: bytes first, then counted in pieces)."""
        remembered = self._remembered.get(text)
        if remembered is not None:
            return list(remembered)
        if self._longest_token_bytes is None:
            self._longest_token_bytes = longest_token_bytes(self.tokenizer)
        over = over_context(self.tokenizer, text, self.context_length, self._longest_token_bytes)
        if over is not None:
            raise BadRequest(
                "content",
                f"the prompt has more than {over - 1} tokens ({len(text):,} characters); the context length of "
                f"'{self.info.identifier}' is {self.context_length}",
            )
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id]
        return list(ids)

    def prepare(
        self, request: CompletionRequest, *, ids: Optional[list[int]] = None, max_tokens_cap: Optional[int] = None
    ) -> Plan:
        """The request checked, tokenized (unless ``ids`` are given: a client's token ids, a
        branch's exact ids), its sampling parameters built and its grammar compiled, once
        (``engine/plan.py``). ``max_tokens_cap``: a server's cap on generated tokens."""
        model_id = self.info.identifier
        if ids is None:
            ids = self.encode(
                content_text(request.content, images_refused=f"model '{model_id}' is text-only and cannot take image content")
            )
        if not ids:
            raise BadRequest("content", "is empty and the model has no beginning-of-sequence token")
        params = request.sampling_params or SamplingParams()
        room = self.context_length - len(ids)
        if room <= 0:
            raise BadRequest(
                "content", f"the prompt has {len(ids)} tokens; the context length of '{model_id}' is {self.context_length}"
            )
        max_new = resolve_max_tokens(params.max_tokens or 0, max_tokens_cap, room, model_id, len(ids))
        if max_tokens_cap is not None:
            request = with_max_tokens(request, max_new)
        return Plan(
            backend=self,
            request=request,
            ids=list(ids),
            row=self._row_params(request),
            max_new=max_new,
            constraint=self._constraint(request),
            stops=list(params.stop or []),
        )

    def _row_params(self, request: CompletionRequest) -> RowParams:
        """The sampling parameters, checked (``sampling.py``); the generator is made at ``open``."""
        params = request.sampling_params or SamplingParams()
        strategy = params.strategy
        penalty = params.repetition_penalty or 1.0
        top = request.logprobs.top_k or 0 if request.logprobs is not None else 0
        row = RowParams(repetition_penalty=penalty, top_logprobs=max(top, ALTERNATIVES))  # the heatmap's alternatives
        try:
            sampling.check("repetition_penalty", penalty)
            if isinstance(strategy, TopPSamplingStrategy):
                row.temperature = TEMPERATURE if strategy.temperature is None else strategy.temperature
                row.top_p = TOP_P if strategy.top_p is None else strategy.top_p
                sampling.check("temperature", row.temperature), sampling.check("top_p", row.top_p)
                row.greedy = False
            elif isinstance(strategy, TopKSamplingStrategy):
                sampling.check("top_k", strategy.top_k)
                row.top_k = min(int(strategy.top_k), self.vocab_size)
                row.greedy = False
        except ValueError as exc:
            raise BadRequest("sampling_params", str(exc)) from None
        return row

    def _constraint(self, request: CompletionRequest) -> Any:
        """``response_format`` compiled with this tokenizer, after one step through a fork of it,
        since some grammars compile and fail at their first token (``a{1000000}``: the lexer gives
        up on the expression's size). The compiled constraint itself is left at its start."""
        fmt = request.response_format
        if fmt is None:
            return None
        from .constraints import compile_constraint

        field = "response_format.json_schema" if fmt.type == "json_schema" else f"response_format.bnf.{grammar_key(fmt)}"
        constraint = compile_constraint(fmt, self.tokenizer, self.vocab_size)
        trial = constraint.fork()
        logits = torch.zeros(trial.vocab_size)
        try:
            trial.mask(logits)
            ends = set(trial.eos_token_ids)
            first = next((i for i in trial.allowed_ids() if i not in ends), None)
            if first is not None:
                trial.advance(first)
                trial.mask(logits)
        except RuntimeError as exc:
            message = str(exc).split("\n", 1)[0]
            raise BadRequest(field, f"the grammar cannot be used ({message})") from None
        return constraint

    # ---- streaming ----------------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """How many requests run at once (the HTTP queue admits this many into the batch)."""
        return int(self.engine_options.get("max_batch") or default_max_batch(self.device))

    @property
    def engine(self) -> Any:
        with self._engine_lock:
            if self._engine is None:
                if batched_path_holds(self.model):
                    self._engine = Engine(self.model, **self.engine_options)
                else:  # sliding windows, recurrent state, ...: the model's own cache (docs/models.md)
                    self._engine = SequentialEngine(self.model, max_batch=self.engine_options.get("max_batch"))
            return self._engine

    def decode_pass(self) -> str:
        """What the engine's decode passes run: ``Engine.decode_pass``, or "not started"."""
        engine = self._engine
        return engine.decode_pass if engine is not None else "not started"

    def open(
        self,
        request: CompletionRequest,
        *,
        plan: Optional[Plan] = None,
        seed: Optional[int] = None,
        cancel: Optional[threading.Event] = None,
        generator: Optional[torch.Generator] = None,
        observe: Any = None,
        deliver: Optional[Callable[[object], None]] = None,
    ) -> "EventStream":
        """Stream ``request``, from its ``plan`` when one was prepared with this backend (else it
        is prepared now). The teaching views' hooks (``stepping.py``): ``generator`` continues
        this sampling generator's state instead of a fresh one from ``seed`` (Step after Step
        draws what one longer run would); ``observe`` sees each step (``RowParams.observe``).

        ``deliver`` (the server's queue): each item is handed to ``deliver(item)`` on the engine
        thread as it is made (``Delta``s, then the ``Finished`` or the exception that ends the
        stream) instead of being queued for iteration, so no reader thread waits per stream; the
        returned stream is then only a handle whose ``close()`` cancels. ``deliver`` must be quick
        and must not raise."""
        started = time.perf_counter()
        if plan is None or plan.backend is not self:
            plan = self.prepare(request)
        params = dataclasses.replace(plan.row, observe=observe)
        if not params.greedy:
            params.generator = generator if generator is not None else sampling.make_generator(seed, self.device)
        for name, value in (plan.adjust or {}).items():  # OpenAI's logit_bias and penalties (its route checks them)
            setattr(params, name, value)
        cancel = cancel if cancel is not None else threading.Event()
        shaper = _Shaper(self, plan, started, deliver)
        work = Work(
            ids=plan.ids,
            params=params,
            max_new=plan.max_new,
            sink=shaper,
            stop_ids=self.stop_token_ids,
            constraint=plan.constraint,
            cancel=cancel,
        )
        engine = self.engine
        engine.submit(work)  # a failure here is wrapped once, by service.open_events
        return EventStream(shaper.inbox, cancel, engine, pushed=deliver is not None)

    def close(self) -> None:
        """End the engine thread (streams still open end with an error); ``open`` starts a new one."""
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def finish_reason(self, reason: str, stop_token_id: Optional[int]) -> str:
        if reason in ("stop_string", "grammar_complete"):
            return "end_of_turn"
        if reason == "stop_token":
            return "end_of_message" if stop_token_id in self.end_of_message_ids else "end_of_turn"
        return "out_of_tokens"


class _Shaper:
    """The engine's side of one stream (runs on the engine thread): token -> record -> Delta."""

    def __init__(self, backend: LocalBackend, plan: Plan, started: float, deliver: Optional[Callable[[object], None]] = None):
        self.backend, self.plan, self.started = backend, plan, started
        self.inbox: "queue.SimpleQueue[object]" = queue.SimpleQueue()
        self.put = deliver if deliver is not None else self.inbox.put
        self.detok = StreamingDetokenizer(backend.tokenizer, plan.ids)
        self.stops = StopStringFilter(plan.stops)
        self.index = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.end_token: Optional[TokenRecord] = None

    def on_token(self, chosen: Chosen, now: float) -> bool:
        self.first = self.first or now
        self.last = now
        backend = self.backend
        end = chosen.token_id in backend.stop_token_ids
        record = TokenRecord(
            index=self.index,
            token_id=chosen.token_id,
            text="" if end else self.detok.add_token(chosen.token_id),
            logprob=chosen.logprob,
            rank=chosen.rank,
            top=tuple((backend.piece(i), lp) for i, lp in zip(chosen.top_ids, chosen.top_logprobs)),
            top_ids=tuple(chosen.top_ids),
            entropy=chosen.entropy,
            forced=chosen.forced,
            elapsed=now - self.started,
            piece=backend.piece(chosen.token_id),
        )
        if end:  # no text: kept for Finished.end_token; the engine ends the sequence after it
            self.end_token = record
            return False
        self.index += 1
        delta = self.stops.push(record)
        if delta.text or delta.tokens:
            self.put(delta)
        return self.stops.stopped

    def on_end(self, reason: str, stop_token_id: Optional[int], steps: int) -> None:
        if not self.stops.stopped:
            # Bytes of a character that max_tokens cut short are dropped (they would decode as
            # U+FFFD), so the output is always exactly the join of its tokens' texts.
            delta = self.stops.flush()
            if delta.text or delta.tokens:
                self.put(delta)
        first, last = self.first, self.last
        rate = (steps - 1) / (last - first) if first is not None and last is not None and steps > 1 and last > first else None
        self.put(
            Finished(
                stop_reason=self.backend.finish_reason(reason, stop_token_id),
                prompt_tokens=len(self.plan.ids),
                completion_tokens=steps,
                time_to_first_token=(first - self.started) if first is not None else None,
                tokens_per_second=rate,
                cancelled=reason == "cancelled",
                stop_string=self.stops.matched,
                end_token=self.end_token if reason == "stop_token" else None,
            )
        )

    def on_error(self, exc: BaseException) -> None:
        self.put(exc)  # raised to the reader as it is; service.open_events names it for the user


class EventStream(Iterator[Event]):
    """One request's ``Delta`` events and its ``Finished``, as the engine produces them.

    The engine runs ahead of a slow reader. Once ``cancel`` is set, events not yet read are
    dropped and the stream ends with ``Finished(cancelled=True)`` counting the tokens delivered,
    so from the reader's side generation stops within one token. ``close()`` (or dropping the
    stream) cancels the sequence and frees its place in the batch.
    """

    def __init__(self, inbox: "queue.SimpleQueue[object]", cancel: threading.Event, engine: Engine, pushed: bool = False):
        self._inbox, self._cancel, self._engine = inbox, cancel, engine
        self._pushed = pushed  # opened with ``deliver``: the events go there, not here
        self._delivered = 0
        self._done = False

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Event:
        if self._pushed:
            raise TypeError("this stream's events are delivered to its `deliver` callback; it only closes")
        if self._done:
            raise StopIteration
        cancelled = self._cancel.is_set()
        if cancelled:
            self._engine.wake()
        while True:
            item = self._inbox.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if isinstance(item, Finished):
                self._done = True
                if cancelled or self._cancel.is_set() and item.cancelled:
                    item = replace(item, cancelled=True, stop_reason="out_of_tokens", completion_tokens=self._delivered)
                return item
            if cancelled:
                continue  # generated after the reader cancelled: dropped
            self._delivered += len(item.tokens)
            return item

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._cancel.set()
            self._engine.wake()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
