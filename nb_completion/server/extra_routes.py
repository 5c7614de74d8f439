"""The routes clients probe besides completion: one model by id, tokenize / detokenize (vLLM's and
llama.cpp's shapes, which lm-eval and others look for), and llama-stack 0.2's provider list."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..api.errors import BadRequest
from ..engine import registry
from ..engine.backend import is_local
from ..engine.records import ModelInfo
from ..service import load_backend
from .responses import json_response


def _state(request: Request) -> Any:
    state = request.app.state.server
    state.authorize(request)
    return state


async def model_by_id(request: Request) -> Response:
    """``GET /v1/models/{id}`` (ids may hold slashes): the entry ``GET /v1/models`` lists."""
    from .app import _model_entry

    state = _state(request)
    model_id = request.path_params["model_id"]
    state.check_model(model_id)
    info = next((i for i in registry.list_models() if i.identifier == model_id), None)
    return json_response(
        _model_entry(info or ModelInfo(identifier=model_id, provider_resource_id=model_id), state.max_tokens_cap)
    )


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise BadRequest("request", "the request body must be a JSON object")
    return body


def _local(state: Any, body: dict) -> Any:
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest("model", "field required (a string)")
    state.check_model(model)
    backend = load_backend(model)
    if not is_local(backend):
        raise BadRequest("model", f"'{model}' is remote: its tokenizer is not in this server")
    return backend


async def tokenize(request: Request) -> Response:
    """``{"model", "prompt", "add_special_tokens"?}`` -> ``{"tokens", "count", "max_model_len"}``."""
    state = _state(request)

    def work(body: Any) -> dict:
        body = _object(body)
        backend = _local(state, body)
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
    """``{"model", "tokens"}`` -> ``{"prompt"}``."""
    state = _state(request)

    def work(body: Any) -> dict:
        body = _object(body)
        backend = _local(state, body)
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in tokens):
            raise BadRequest("tokens", "must be a list of token ids (integers >= 0)")
        bad = next((t for t in tokens if t >= backend.vocab_size), None)
        if bad is not None:
            raise BadRequest("tokens", f"token id {bad} is outside the vocabulary ({backend.vocab_size})")
        return {"prompt": backend.tokenizer.decode(tokens)}

    return json_response(await state.bodies.prepare(request, work))


async def providers(request: Request) -> Response:
    """llama-stack 0.2's ``GET /v1/providers``: one inline inference provider, this server."""
    _state(request)
    provider = {
        "api": "inference",
        "provider_id": "nb_completion",
        "provider_type": "inline::nb_completion",
        "config": {},
        "health": {"status": "OK"},
    }
    return json_response({"data": [provider]})
