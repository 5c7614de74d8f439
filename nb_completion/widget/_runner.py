"""Generation off the kernel's main thread: drain ``open_events`` in a background thread, hand
batched token records to a callback, and stop within one token when cancelled.

The kernel handles widget messages (the Stop click) on its main thread only while no cell is
executing; running the engine here keeps that thread free.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..api.errors import CompletionError, as_completion_error
from ..api.types import CompletionRequest, CompletionResponse
from ..engine.records import Delta, Finished, TokenRecord
from ..service import apply_chat, open_events, to_response
from ._batcher import DeltaBatcher


@dataclass
class RunResult:
    """How one widget run ended: its ``Finished``, the spec response, or the error that ended it."""

    finished: Finished | None = None
    response: CompletionResponse | None = None
    error: CompletionError | None = None

    @property
    def cancelled(self) -> bool:
        return self.finished is not None and self.finished.cancelled


class Runner:
    """One generation in a daemon thread.

    ``on_loading(message)`` is called with each step while a model that is not loaded yet loads
    (the default id, a folder, a ``.gguf`` path or a cached hub id: ``loading.ensure_loaded``);
    with ``chat=True`` the request's content is wrapped in the model's chat template first and
    ``on_prompt(templated)`` reports what the model reads;
    ``on_batch(records)`` with each batch of new token records (at most ~30 a second);
    ``on_done(outcome)`` once at the end, also after an error or a cancel.
    """

    def __init__(
        self,
        request: CompletionRequest,
        *,
        seed: int | None,
        generator: Any = None,
        on_batch: Callable[[list[TokenRecord]], None],
        on_done: Callable[[RunResult], None],
        on_loading: Callable[[str], None] | None = None,
        on_prompt: Callable[[str], None] | None = None,
        chat: bool = False,
    ):
        self.request = request
        self.chat = chat
        self._on_prompt = on_prompt
        self.seed = seed
        self.generator = generator  # a local model's sampling generator, continued by Step
        self.cancel_event = threading.Event()
        self.done = threading.Event()
        self.outcome = RunResult()
        self._on_batch = on_batch
        self._on_done = on_done
        self._on_loading = on_loading
        self._batcher: DeltaBatcher[TokenRecord] = DeltaBatcher()
        self._thread = threading.Thread(target=self._main, name="nb_completion-widget", daemon=True)

    def start(self) -> "Runner":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    def _main(self) -> None:
        outcome = self.outcome
        try:
            progress = self._on_loading or (lambda message: None)  # never a display from this thread
            if self.chat:
                self.request = apply_chat(self.request, progress)
                if self._on_prompt is not None:
                    self._on_prompt(self.request.content)
            events = []
            top_k = self.request.logprobs.top_k or 0 if self.request.logprobs else None
            for event in open_events(
                self.request, seed=self.seed, cancel=self.cancel_event, on_progress=progress, generator=self.generator
            ):
                events.append(event)
                if isinstance(event, Delta):
                    self._emit(self._batcher.add(event.tokens))
                elif isinstance(event, Finished):
                    outcome.finished = event
            self._emit(self._batcher.flush())
            outcome.response = to_response(events, top_k)
        except Exception as exc:  # never let a bug kill the thread silently or leak a trace
            self._emit(self._batcher.flush())
            outcome.error = as_completion_error(exc)
        finally:
            try:
                self._on_done(outcome)
            finally:
                self.done.set()

    def _emit(self, batch: list[TokenRecord] | None) -> None:
        if batch:
            self._on_batch(batch)
