"""``Plan``: a request made ready for one backend, once.

``backend.prepare(request, ids=, max_tokens_cap=)`` checks what the schema cannot (the prompt
against the context, ``max_tokens`` against the room left and a server's cap), tokenizes the
prompt, builds the sampling parameters and compiles ``response_format`` (stepped once on a fork,
since some grammars fail only at their first token). Every frontend opens a request through it:
the server calls it before a request takes a queue place (so a 400 never waits behind a running
generation) and hands the plan through the queue; ``complete()``, the magic, ``compare()``, the
widget, Step and the distribution get theirs from ``service.open_events``. A plan runs once: its
constraint is the state of one generation (``fork()`` for another).

A remote backend's plan holds the request with the cap applied, and nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from ..api.errors import BadRequest
from ..api.types import CompletionRequest, SamplingParams

if TYPE_CHECKING:  # torch: imported only where a model runs (``nb-completion load --if-needed`` stays light)
    from .batch_sampling import RowParams


@dataclass
class Plan:
    backend: Any  # the backend it was made for (and only that one runs it)
    request: CompletionRequest  # max_tokens resolved against a server's cap
    ids: Optional[list[int]] = None  # the prompt's token ids (a local backend's)
    row: Optional[RowParams] = None  # sampling parameters, checked; the generator comes at open()
    max_new: int = 0
    constraint: Any = None  # response_format compiled, at its start
    stops: list[str] = field(default_factory=list)
    adjust: Optional[dict] = None  # OpenAI's logit_bias and additive penalties (its route checks them)

    def fork(self) -> "Plan":
        """The same plan for one more generation (its own constraint state)."""
        constraint = self.constraint.fork() if self.constraint is not None else None
        row = dataclasses.replace(self.row) if self.row is not None else None
        return dataclasses.replace(self, constraint=constraint, row=row)

    def with_adjust(self, adjust: Optional[dict]) -> "Plan":
        return dataclasses.replace(self, adjust=adjust or None)


def resolve_max_tokens(
    requested: int, cap: Optional[int], room: Optional[int], model_id: str, prompt_tokens: Optional[int]
) -> int:
    """``max_tokens`` checked against a server's ``cap`` and the ``room`` left in the context; 0
    (until the end token) becomes the smaller of the two."""
    if cap is not None and requested > cap:
        raise BadRequest(
            "sampling_params.max_tokens", f"must be at most {cap} on this server (its --max-tokens-cap), got {requested}"
        )
    if room is not None and requested > room:
        raise BadRequest(
            "sampling_params.max_tokens",
            f"prompt tokens ({prompt_tokens}) + max_tokens ({requested}) = {prompt_tokens + requested} exceeds the "
            f"context length of '{model_id}' ({prompt_tokens + room})",
        )
    if requested == 0:
        limits = [n for n in (cap, room) if n is not None]
        return min(limits) if limits else 0
    return requested


def with_max_tokens(request: CompletionRequest, max_tokens: int) -> CompletionRequest:
    params = request.sampling_params or SamplingParams()
    if params.max_tokens == max_tokens:
        return request
    return request.model_copy(update={"sampling_params": params.model_copy(update={"max_tokens": max_tokens})})


def text_plan(backend: Any, request: CompletionRequest, max_tokens_cap: Optional[int] = None) -> Plan:
    """The plan of a backend that takes text (a remote server): the cap applied, nothing else."""
    params = request.sampling_params or SamplingParams()
    if max_tokens_cap is not None:
        max_tokens = resolve_max_tokens(params.max_tokens or 0, max_tokens_cap, None, request.model_id, None)
        request = with_max_tokens(request, max_tokens)
    return Plan(backend=backend, request=request)


class TakesText:
    """``prepare`` for a backend that takes text (a remote server, a test's double): the plan is
    the request with a server's cap applied; token ids are refused."""

    def prepare(
        self, request: CompletionRequest, *, ids: Optional[list[int]] = None, max_tokens_cap: Optional[int] = None
    ) -> Plan:
        if ids is not None:
            raise BadRequest("content", f"token-id prompts need a model in this server; '{request.model_id}' is remote")
        return text_plan(self, request, max_tokens_cap)
