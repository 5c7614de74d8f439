"""The checks that need only the model's tokenizer, run before a request takes a queue place.

The engine checks the same things when it opens a request, but it opens requests one at a time
behind the running generation: a prompt over the context, a grammar that does not compile or an
image for a text-only model would wait seconds for its 400 and hold a queue place meanwhile. Here
they run in a worker thread as soon as the body is parsed, reading the backend's tokenizer and
constraint compiler without changing either. What they computed, the prompt's token ids and the
compiled constraint, travels with the request (``service.Prepared``, through the queue) to the
engine, which then neither tokenizes the prompt nor compiles the grammar again.

The server's cap on generated tokens is applied here too: ``max_tokens`` 0 (until the end token)
becomes the cap or the room left in the context, whichever is smaller; more than the cap is a 400.
Backends without a local tokenizer (remote servers) get the cap only.
"""

from __future__ import annotations

from typing import Any

from ..api.errors import BadRequest
from ..api.types import CompletionRequest, SamplingParams
from ..api.content import content_text
from ..api.validation import grammar_key
from ..service import Prepared


def _prompt_ids(backend: Any, text: str) -> list[int]:
    encode = getattr(backend, "encode", None)
    ids = encode(text) if encode is not None else backend.tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        raise BadRequest("content", "is empty and the model has no beginning-of-sequence token")
    return list(ids)


def _max_tokens(requested: int, cap: int, room: int | None, model_id: str, prompt_tokens: int | None) -> int:
    if requested > cap:
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
        return cap if room is None else min(cap, room)
    return requested


def _compile_grammar(request: CompletionRequest, backend: Any) -> Any:
    """The response format compiled with the backend's compiler, after one step through a fork
    of it, since some grammars compile and fail at their first token (``a{1000000}``: the lexer
    gives up on the expression's size). The compiled constraint itself is left at its start."""
    import torch

    from ..engine.constraints import compile_constraint

    fmt = request.response_format
    field = "response_format.json_schema" if fmt.type == "json_schema" else f"response_format.bnf.{grammar_key(fmt)}"
    constraint = compile_constraint(request.response_format, backend.tokenizer, backend.vocab_size)
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


def precheck(
    request: CompletionRequest, backend: Any, max_tokens_cap: int, ids: list[int] | None = None
) -> tuple[CompletionRequest, Prepared | None]:
    """``request`` with ``max_tokens`` resolved against the cap, and what was computed on the
    way for ``backend`` (None for a backend without a local tokenizer); or the 400 the engine
    would give. ``ids``: the prompt's token ids when the client sent ids, not text."""
    model_id = request.model_id
    params = request.sampling_params or SamplingParams()
    room = prompt_tokens = None
    prepared = None
    context = getattr(backend, "context_length", None)
    if getattr(backend, "tokenizer", None) is not None and context:
        if ids is None:  # else the prompt came as token ids (OpenAI's route), used as they are
            text = content_text(request.content, images_refused=f"model '{model_id}' is text-only and cannot take image content")
            ids = _prompt_ids(backend, text)
        prompt_tokens = len(ids)
        room = int(context) - prompt_tokens
        if room <= 0:
            raise BadRequest("content", f"the prompt has {prompt_tokens} tokens; the context length of '{model_id}' is {context}")
        constraint = None
        if request.response_format is not None and getattr(backend, "vocab_size", None):
            constraint = _compile_grammar(request, backend)
        prepared = Prepared(backend, ids, constraint)
    max_tokens = _max_tokens(params.max_tokens or 0, max_tokens_cap, room, model_id, prompt_tokens)
    if max_tokens != params.max_tokens:
        request = request.model_copy(update={"sampling_params": params.model_copy(update={"max_tokens": max_tokens})})
    return request, prepared
