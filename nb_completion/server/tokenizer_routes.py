"""The tokenizer's routes, in vLLM's shapes (lm-eval's ``tokenizer_backend=remote`` reads them):
``POST /tokenize``, ``POST /detokenize`` and ``GET /tokenizer_info``. ``model`` may be left out
where the server serves one model, as lm-eval leaves it out."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..api.errors import BadRequest
from ..engine.backend import is_local
from ..service import load_backend
from .responses import json_response

SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")


def _state(request: Request) -> Any:
    state = request.app.state.server
    state.authorize(request)
    return state


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise BadRequest("request", "the request body must be a JSON object")
    return body


def local_backend(state: Any, model: Any) -> Any:
    """The backend of ``model`` (``None``: the one model this server serves), with its tokenizer."""
    if model is None:
        ids = state.model_ids()
        if len(ids) != 1:
            raise BadRequest("model", f"field required: this server serves {len(ids)} models ({', '.join(ids)})")
        model = ids[0]
    if not isinstance(model, str):
        raise BadRequest("model", "must be a string")
    state.check_model(model)
    backend = load_backend(model)
    if not is_local(backend):
        raise BadRequest("model", f"'{model}' is remote: its tokenizer is not in this server")
    return backend


async def tokenize(request: Request) -> Response:
    """``{"model"?, "prompt", "add_special_tokens"?}`` -> ``{"tokens", "count", "max_model_len"}``."""
    state = _state(request)

    def work(body: Any) -> dict:
        body = _object(body)
        backend = local_backend(state, body.get("model"))
        prompt = body.get("prompt", body.get("content"))
        if not isinstance(prompt, str):
            raise BadRequest("prompt", "must be a string")
        special = body.get("add_special_tokens", True)
        if not isinstance(special, bool):
            raise BadRequest("add_special_tokens", "must be a boolean")
        ids = list(backend.tokenizer(prompt, add_special_tokens=special)["input_ids"])
        return {"tokens": ids, "count": len(ids), "max_model_len": backend.context_length}

    return json_response(await state.bodies.prepare(request, work))


async def detokenize(request: Request) -> Response:
    """``{"model"?, "tokens"}`` -> ``{"prompt"}``."""
    state = _state(request)

    def work(body: Any) -> dict:
        body = _object(body)
        backend = local_backend(state, body.get("model"))
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in tokens):
            raise BadRequest("tokens", "must be a list of token ids (integers >= 0)")
        bad = next((t for t in tokens if t >= backend.vocab_size), None)
        if bad is not None:
            raise BadRequest("tokens", f"token id {bad} is outside the vocabulary ({backend.vocab_size})")
        return {"prompt": backend.tokenizer.decode(tokens)}

    return json_response(await state.bodies.prepare(request, work))


def tokenizer_info(backend: Any) -> dict:
    """What vLLM's ``/tokenizer_info`` answers that a remote tokenizer reads: the special tokens
    (as text; ``null`` where the tokenizer has none), the chat template, the context length."""
    tokenizer = backend.tokenizer
    template = getattr(tokenizer, "chat_template", None)
    return {
        "tokenizer_class": type(tokenizer).__name__,
        **{name: getattr(tokenizer, name, None) for name in SPECIAL},
        "chat_template": template if isinstance(template, str) else None,
        "model_max_length": backend.context_length,
        "vocab_size": int(backend.vocab_size),
    }


async def tokenizer_info_route(request: Request) -> Response:
    """``GET /tokenizer_info[?model=ID]``."""
    state = _state(request)
    model = request.query_params.get("model")
    backend = await run_in_threadpool(local_backend, state, model)  # the default model loads on first use
    return json_response(tokenizer_info(backend))
