"""The Python API: ``complete()``. Every frontend goes through ``open_events`` (rich records) or
``complete`` (spec shapes); both turn input into one ``CompletionRequest`` and drain one backend.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Iterator

from .api.errors import CompletionError, EngineFailure, as_completion_error
from .api.types import (
    CompletionRequest,
    CompletionResponse,
    CompletionResponseStreamChunk,
    MetricInResponse,
    TokenLogProbs,
)
from .api.validation import check_cancel, check_flag, check_seed, parse_request
from .engine import registry
from .engine.backend import Backend, Event, is_local
from .engine.loading import ProgressCallback
from .engine.plan import Plan
from .engine.fold import Folded, Metrics, fold
from .engine.records import Delta, Finished, TokenRecord

__all__ = ["complete", "build_request", "apply_chat", "open_events", "open_plan", "to_chunks", "to_response", "metrics_of"]


def build_request(
    content: Any,
    model_id: str | None = None,
    sampling_params: Any = None,
    response_format: Any = None,
    stream: bool | None = None,
    logprobs: Any = None,
) -> CompletionRequest:
    """A validated request from keyword arguments, or from a ``CompletionRequest`` / dict body."""
    if isinstance(content, CompletionRequest):
        return parse_request(content)
    if isinstance(content, dict) and "content" in content:
        return parse_request(content)
    body: dict[str, Any] = {"model_id": model_id or registry.DEFAULT_MODEL_ID, "content": content}
    if sampling_params is not None:
        body["sampling_params"] = (
            sampling_params.model_dump(exclude_none=True) if hasattr(sampling_params, "model_dump") else sampling_params
        )
    if response_format is not None:
        body["response_format"] = response_format
    if stream is not None:
        body["stream"] = stream
    if logprobs is not None:
        if isinstance(logprobs, bool):
            logprobs = {"top_k": 0} if logprobs else None
        elif isinstance(logprobs, int):
            logprobs = {"top_k": logprobs}
        if logprobs is not None:
            body["logprobs"] = logprobs.model_dump() if hasattr(logprobs, "model_dump") else logprobs
    return parse_request(body)


def load_backend(model_id: str | None, on_progress: ProgressCallback | None = None) -> Backend:
    """The backend for ``model_id``, loaded on first use (``load.ensure_loaded``: a status line)."""
    from .load import ensure_loaded

    try:
        return ensure_loaded(model_id, on_progress)
    except CompletionError:
        raise
    except Exception as exc:  # a loader bug must not look like a crash of the caller
        raise EngineFailure(f"Could not load '{model_id}': {type(exc).__name__}") from exc


def apply_chat(request: CompletionRequest, on_progress: ProgressCallback | None = None) -> CompletionRequest:
    """``request`` with its content wrapped in the model's chat template as one user turn (see
    ``chat.py``); loads the model first if needed, since the template is its tokenizer's."""
    from .chat import with_chat_template

    return with_chat_template(request, load_backend(request.model_id, on_progress))


def open_events(
    request: CompletionRequest,
    *,
    seed: int | None = None,
    cancel: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    generator: Any = None,
    plan: Plan | None = None,
    observe: Any = None,
) -> Iterator[Event]:
    """Validate eagerly (raising ``CompletionError``), then stream ``Delta``s and one ``Finished``.
    A model that is not loaded yet loads first (``on_progress`` receives the steps). A local
    backend runs the request's ``plan`` (``backend.prepare``: made now unless given), its
    sampling may continue a given ``torch.Generator`` (the widget's Step after Generate) and
    ``observe`` sees each step (the teaching views, ``stepping.py``)."""
    backend = load_backend(request.model_id, on_progress)
    if is_local(backend):
        plan = plan if plan is not None and plan.backend is backend else backend.prepare(request)
        return open_plan(plan, seed=seed, cancel=cancel, generator=generator, observe=observe)
    seed = check_seed(seed)
    check_cancel(cancel)
    try:
        events = backend.open(request, seed=seed, cancel=cancel)
    except Exception as exc:  # a backend bug must not look like a crash of the caller
        raise as_completion_error(exc, "before generating") from exc
    return _named_errors(events)


def open_plan(
    plan: Plan, *, seed: int | None = None, cancel: threading.Event | None = None, generator: Any = None, observe: Any = None
) -> Iterator[Event]:
    """Stream a local backend's prepared ``plan`` on that backend (Step and the distribution,
    which hold their backend, and ``open_events``)."""
    seed = check_seed(seed)
    check_cancel(cancel)
    try:
        events = plan.backend.open(plan.request, plan=plan, seed=seed, cancel=cancel, generator=generator, observe=observe)
    except Exception as exc:  # a backend bug must not look like a crash of the caller
        raise as_completion_error(exc, "before generating") from exc
    return _named_errors(events)


def open_pushed(
    request: CompletionRequest,
    deliver: Callable[[Event | CompletionError], None],
    *,
    seed: int | None = None,
    cancel: threading.Event | None = None,
    plan: Plan | None = None,
) -> Any | None:
    """Like ``open_events``, but the backend hands each event to ``deliver`` on its own thread as
    it is made (the server's queue: no reader thread per stream); what ends the stream early
    arrives as a ``CompletionError`` (its ``__cause__`` the engine's exception). Returns a handle
    whose ``close()`` cancels (keep it until the stream ends: dropping it cancels too), or None
    when the backend cannot push (then read ``open_events`` instead)."""
    backend = load_backend(request.model_id)
    if not is_local(backend):
        return None

    def named(item: Any) -> None:
        if isinstance(item, BaseException):
            error = as_completion_error(item)
            if error is not item:
                error.__cause__ = item
            item = error
        deliver(item)

    try:
        plan = plan if plan is not None and plan.backend is backend else backend.prepare(request)
        return backend.open(request, plan=plan, seed=seed, cancel=cancel, deliver=named)
    except Exception as exc:
        raise as_completion_error(exc, "before generating") from exc


def _named_errors(events: Iterator[Event]) -> Iterator[Event]:
    """``events``, with whatever ends them early raised as a ``CompletionError``: the one place
    an engine's error is turned into the spec's ``Error`` for every frontend. Closing this
    iterator closes ``events`` (cancelling the generation)."""
    try:
        yield from events
    except Exception as exc:
        raise as_completion_error(exc) from exc
    finally:  # closed, interrupted (Ctrl-C) or failed: the sequence stops now, not when collected
        _close(events)


def _close(events: Any) -> None:
    """Close an event stream (cancelling its generation); for iterables that can close."""
    close = getattr(events, "close", None)
    if close is not None:
        close()


# ---- shaping the rich records into the contract ----------------------------------------------


def spelled(record: TokenRecord) -> str:
    """A token as logprobs answers spell it: the token decoded alone, as its alternatives are
    spelled (``<|im_end|>`` for an end token, ``‹EF BC›`` for part of a character), so the
    chosen token is found among its alternatives; its ``text`` (what it adds to the output, which
    may be nothing or the held-back bytes of a character) gives the offsets."""
    return record.piece or record.text


def token_logprobs(record: TokenRecord, top_k: int) -> TokenLogProbs:
    """``logprobs_by_token``: the top_k most likely texts, or the chosen token alone for top_k 0."""
    pairs = record.top[:top_k] if top_k > 0 else ((spelled(record), record.logprob),)
    by_token: dict[str, float] = {}
    for text, logprob in pairs:
        if text not in by_token or logprob > by_token[text]:
            by_token[text] = logprob
    return TokenLogProbs(logprobs_by_token=by_token)


def metrics_of(finished: Finished) -> list[MetricInResponse]:
    """The spec's ``metrics`` list (``fold.Metrics`` computes the numbers)."""
    return [MetricInResponse(metric=name, value=value, unit=unit) for name, value, unit in Metrics.of(finished).rows()]


def finished_of(run: Folded) -> Finished:
    """The run's ``Finished``; a stream that ended without one is the engine's failure."""
    if run.finished is None:
        raise EngineFailure("The engine ended without a stop reason.")
    return run.finished


def _top_k(request: CompletionRequest) -> int | None:
    if request.logprobs is None:
        return None
    return request.logprobs.top_k or 0


class StreamChunks:
    """The spec's stream chunks, made one engine event at a time. Each chunk's ``logprobs`` has
    an entry for each token whose text it delivers: a token that adds no text yet (part of a
    character, or text held back while it may begin a stop string) waits for the chunk that
    delivers its text, so a chunk with an empty delta has no logprobs, but the last one (the end
    token's, and any held to the end)."""

    def __init__(self, top_k: int | None):
        self.top_k = top_k
        self.held: list[TokenLogProbs] = []

    def _entries(self, tokens: Iterable[TokenRecord]) -> None:
        if self.top_k is not None:
            self.held.extend(token_logprobs(t, self.top_k) for t in tokens)

    def __call__(self, event: Event) -> list[CompletionResponseStreamChunk]:
        if isinstance(event, Delta):
            self._entries(event.tokens)
            if not event.text:
                return []
            logprobs, self.held = (self.held if self.top_k is not None else None), []
            return [CompletionResponseStreamChunk(delta=event.text, logprobs=logprobs)]
        self._entries([event.end_token] if event.end_token is not None else [])
        logprobs, self.held = (self.held or None), []
        return [
            CompletionResponseStreamChunk(delta="", stop_reason=event.stop_reason, logprobs=logprobs, metrics=metrics_of(event))
        ]


def to_chunks(events: Iterable[Event], top_k: int | None) -> Iterator[CompletionResponseStreamChunk]:
    """The spec's stream chunks (``StreamChunks``). Closing this iterator, or an exception in it
    (a Ctrl-C while it waits for a token), closes ``events`` at once: the generation does not go
    on while something (IPython's ``sys.last_traceback``) keeps the interrupted frames alive."""
    make = StreamChunks(top_k)
    try:
        for event in events:
            yield from make(event)
    finally:
        _close(events)


def _with_end(tokens: list[TokenRecord], finished: Finished) -> list[TokenRecord]:
    """Every generated token's record, the end token included (it has a logprob like any)."""
    return [*tokens, finished.end_token] if finished.end_token is not None else list(tokens)


def to_response(events: Iterable[Event], top_k: int | None) -> CompletionResponse:
    """The spec's ``CompletionResponse`` for a whole stream (or an already ``Folded`` run)."""
    if isinstance(events, Folded):
        run = events
    else:
        try:
            run = fold(events)
        finally:  # a Ctrl-C while waiting cancels the generation at once
            _close(events)
    finished = finished_of(run)
    return CompletionResponse(
        content=run.text,
        stop_reason=finished.stop_reason,
        logprobs=[token_logprobs(t, top_k) for t in _with_end(run.tokens, finished)] if top_k is not None else None,
        metrics=metrics_of(finished),
    )


def complete(
    content: Any,
    model_id: str | None = None,
    sampling_params: Any = None,
    response_format: Any = None,
    stream: bool = False,
    logprobs: Any = None,
    seed: int | None = None,
    cancel: threading.Event | None = None,
    chat: bool = False,
) -> CompletionResponse | Iterator[CompletionResponseStreamChunk]:
    """Complete ``content`` with a local (or registered remote) model.

    ``content`` is a string, content items, a ``CompletionRequest`` or a request dict. Returns a
    ``CompletionResponse``, or with ``stream=True`` an iterator of ``CompletionResponseStreamChunk``
    whose last chunk has an empty delta, the stop reason and the metrics. Bad input raises
    ``CompletionError`` (its ``.error`` is the spec's ``Error`` body) before anything streams.

    ``model_id``: a registered id, or a local folder, ``.gguf`` path or cached hub id (loaded on
    first use). ``chat=True`` wraps the content in the model's chat template as one user turn
    (an Instruct model then answers instead of continuing the text); the default is a raw
    completion of the text as written.

    >>> complete("The capital of France is", sampling_params={"max_tokens": 8}).content  # doctest: +SKIP
    ' Paris...'
    >>> complete("What is the capital of Germany?", chat=True).content  # doctest: +SKIP
    'The capital of Germany is Berlin.'

    Every argument is checked as strictly as the HTTP body: ``seed`` an int in the sampler's
    range (not a bool, str or float), ``cancel`` a ``threading.Event``, ``stream`` and ``chat``
    bools; a wrong one is a ``CompletionError`` naming it.
    """
    if stream is not None:
        check_flag(stream, "stream")
    check_flag(chat, "chat")
    seed = check_seed(seed)
    check_cancel(cancel)
    request = build_request(content, model_id, sampling_params, response_format, stream or None, logprobs)
    if chat:
        request = apply_chat(request)
    if request.stream:
        stream = True
    events = open_events(request, seed=seed, cancel=cancel)
    if stream:
        return to_chunks(events, _top_k(request))
    return to_response(events, _top_k(request))
