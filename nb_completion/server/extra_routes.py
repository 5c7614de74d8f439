"""The routes clients probe besides completion: one model by id and llama-stack 0.2's provider
list (the tokenizer's routes are in ``tokenizer_routes``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..engine import registry
from ..engine.records import ModelInfo
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
