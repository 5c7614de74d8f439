"""The HTTP routes (Starlette) over the engine queue.

``POST /v1/inference/completion`` (llama-stack: JSON, or SSE when ``stream`` is true),
``POST /v1/completions`` (OpenAI legacy completions), ``GET /v1/models``, ``GET /v1/health``,
``GET /openapi.json``. Every error is the spec's ``Error`` body with its status. Every 4xx is
answered before a stream starts, and those that need only the tokenizer (validation, prompt
length, grammar compilation, image content) before the request takes a queue place: the body is
read (``body.py``), parsed, validated and pre-checked (``precheck.py``) in a worker thread, then
queued; the engine opens it before the first event, so its own 4xx come back as a status too.
Every 5xx is logged with its traceback. A client that disconnects cancels its request.
The app sits behind the Host/Origin guard (``guard.py``).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import Any, Iterable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..api.errors import BadRequest, CompletionError, EngineFailure, ModelNotFound, shorten
from ..api.types import CompletionRequest
from ..api.validation import parse_request
from ..engine import registry
from ..engine.backend import is_local
from ..engine.records import Delta, Finished, ModelInfo
from ..engine.plan import Plan
from ..service import StreamChunks, load_backend, to_response
from . import extra_routes, sse, tokenizer_routes
from .body import BodyReader
from .guard import HostPolicy, middleware
from .jobs import collect, open_job, open_jobs, sse_body, streaming, watching, where
from .openai_route import LLAMA_STACK_PATH, openai_completions
from .openapi import build_openapi
from .defaults import DEFAULT_MAX_TOKENS_CAP
from .precheck import precheck
from .queue import EngineQueue
from .responses import error_response, json_response, log_server_error

log = logging.getLogger("nb_completion.server")

OPENAI_PATH = "/v1/completions"


class ServerState:
    def __init__(
        self, models: Iterable[str] | None, api_key: str | None, engine: EngineQueue, max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP
    ):
        self.models = list(models) if models is not None else None
        self.api_key = api_key or None
        self.engine = engine
        self.max_tokens_cap = max_tokens_cap
        self.bodies = BodyReader()

    def prepare(self, request: CompletionRequest) -> tuple[CompletionRequest, Plan]:
        """The model id and the tokenizer's checks, with ``max_tokens`` resolved against the cap,
        and what they computed for the engine (in a worker thread: tokenizing and compiling a
        grammar take time). The default model loads here on its first request."""
        self.check_model(request.model_id)
        return precheck(request, load_backend(request.model_id), self.max_tokens_cap)

    def model_ids(self) -> list[str]:
        return list(self.models) if self.models is not None else registry.registered_ids()

    def check_model(self, model_id: str) -> None:
        ids = self.model_ids()
        if model_id not in ids:
            raise ModelNotFound(model_id, ids)

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise CompletionError(401, "missing or wrong bearer token: send 'Authorization: Bearer <api key>'")


# ---- routes ------------------------------------------------------------------------------------


async def completion(request: Request) -> Response:
    state: ServerState = request.app.state.server
    state.authorize(request)
    completion_request, plan = await state.bodies.prepare(request, lambda body: state.prepare(parse_request(body)))
    top_k = None if completion_request.logprobs is None else (completion_request.logprobs.top_k or 0)
    job = await open_job(request, state, completion_request, None, plan)
    if job is None:
        return Response(status_code=204)
    if completion_request.stream:
        chunks = StreamChunks(top_k)  # a token that adds no text yet goes out with the next chunk

        def encode(event: Delta | Finished) -> list[bytes]:
            return [sse.event(c) for c in chunks(event)]

        return streaming(job, sse_body(job, encode, sse.error_event, where=where(request)))
    async with watching(request, job):
        events = await collect(job)
    return json_response(to_response(events, top_k))


async def batch_completion(request: Request) -> Response:
    """llama-stack's ``POST /v1/inference/batch-completion``: ``content_batch`` with the same
    sampling, each run as its own request (together in the batch); ``{"batch": [responses]}``."""
    state: ServerState = request.app.state.server
    state.authorize(request)

    def prepare(body: Any) -> list:
        if not isinstance(body, dict):
            raise BadRequest("request", "the request body must be a JSON object")
        batch = body.get("content_batch")
        if not isinstance(batch, list) or not batch:
            raise BadRequest("content_batch", "must be a non-empty list of contents")
        if len(batch) > 64:
            raise BadRequest("content_batch", f"at most 64 contents, got {len(batch)}")
        if body.get("stream"):
            raise BadRequest("stream", "batch completion does not stream")
        rest = {k: v for k, v in body.items() if k != "content_batch"}
        return [state.prepare(parse_request({**rest, "content": content})) for content in batch]

    prepared_batch = await state.bodies.prepare(request, prepare)
    opened = await open_jobs(request, state, [(r, None, p) for r, p in prepared_batch])
    if opened is None:
        return Response(status_code=204)
    answers = []
    for job, (completion_request, _) in zip(opened, prepared_batch):
        top_k = None if completion_request.logprobs is None else (completion_request.logprobs.top_k or 0)
        async with watching(request, job):
            answers.append(to_response(await collect(job), top_k).model_dump(mode="json", exclude_none=True))
    return json_response({"batch": answers})


def _is_path(value: Any) -> bool:
    """A local filesystem path (the model cache, a .gguf file): not for the network to see."""
    if not isinstance(value, str):
        return False
    return os.path.isabs(value) or value.startswith(("~", "./", "../")) or (os.sep in value and os.path.exists(value))


def _model_entry(info: Any, max_tokens_cap: int) -> dict:
    metadata = json.loads(json.dumps(dict(info.metadata or {}), default=str))
    metadata = {k: v for k, v in metadata.items() if not _is_path(v)}
    metadata.setdefault("loaded", bool(info.loaded))
    if info.context_length:
        metadata.setdefault("context_length", info.context_length)
    metadata["max_tokens_cap"] = max_tokens_cap
    backend = registry.registered(info.identifier)
    if backend is not None and is_local(backend):  # eager, compiling or compiled (docs/engine.md)
        metadata["decode_pass"] = backend.decode_pass()
    resource_id = info.provider_resource_id or info.identifier
    return {
        "identifier": info.identifier,
        "provider_resource_id": info.identifier if _is_path(resource_id) else resource_id,
        "provider_id": info.provider_id,
        "type": "model",
        "metadata": metadata,
        "model_type": "llm",
        # OpenAI's model object, so OpenAI clients can list models too
        "id": info.identifier,
        "object": "model",
        "created": 0,
        "owned_by": info.provider_id,
    }


async def models_route(request: Request) -> Response:
    state: ServerState = request.app.state.server
    state.authorize(request)
    ids = state.model_ids()
    infos = {info.identifier: info for info in registry.list_models()}
    data = [_model_entry(infos.get(i) or ModelInfo(identifier=i, provider_resource_id=i), state.max_tokens_cap) for i in ids]
    return json_response({"object": "list", "data": data})


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return json_response({"status": "OK", "queue": state.engine.status()})


async def openapi(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return json_response(build_openapi(api_key_required=state.api_key is not None))


# ---- errors ------------------------------------------------------------------------------------


def _is_openai(request: Request) -> bool:
    return request.url.path.rstrip("/") in (OPENAI_PATH, LLAMA_STACK_PATH)


async def _on_completion_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CompletionError)
    return error_response(exc, _is_openai(request), where(request))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = shorten(request.url.path)
    if exc.status_code == 404:
        error = CompletionError(404, f"no route {shorten(request.method, 20)} {path}")
    elif exc.status_code == 405:
        error = CompletionError(405, f"method {shorten(request.method, 20)} not allowed on {path}")
    else:
        error = CompletionError(exc.status_code, str(exc.detail))
    return error_response(error, _is_openai(request))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log_server_error(exc, where(request))
    return error_response(EngineFailure("The server failed while answering this request."), _is_openai(request))


def create_app(
    models: Iterable[str] | None = None,
    api_key: str | None = None,
    queue_size: int = 8,
    engine: EngineQueue | None = None,
    *,
    max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP,
    host_policy: HostPolicy | None = None,
) -> Starlette:
    """The ASGI app. ``models``: the ids served (default: every registered model, the default
    model included and loaded on first use). ``max_tokens_cap``: the most tokens one request may
    generate (``max_tokens`` 0 means up to it). ``host_policy``: the Host/Origin guard (default:
    loopback names only, no CORS). ``app.state.server.engine.stop()`` ends the worker."""
    if max_tokens_cap < 1:
        raise ValueError(f"max_tokens_cap must be >= 1, got {max_tokens_cap}")
    state = ServerState(models, api_key, engine or EngineQueue(queue_size), max_tokens_cap)
    app = Starlette(
        middleware=middleware(host_policy or HostPolicy()),
        routes=[
            Route("/v1/inference/completion", completion, methods=["POST"]),
            Route("/v1/inference/batch-completion", batch_completion, methods=["POST"]),
            Route(OPENAI_PATH, openai_completions, methods=["POST"]),
            Route(LLAMA_STACK_PATH, openai_completions, methods=["POST"]),  # llama-stack 0.2's client
            Route("/v1/models", models_route, methods=["GET"]),
            Route("/v1/openai/v1/models", models_route, methods=["GET"]),
            Route("/v1/models/{model_id:path}", extra_routes.model_by_id, methods=["GET"]),
            Route("/v1/providers", extra_routes.providers, methods=["GET"]),
            Route("/tokenize", tokenizer_routes.tokenize, methods=["POST"]),
            Route("/detokenize", tokenizer_routes.detokenize, methods=["POST"]),
            Route("/tokenizer_info", tokenizer_routes.tokenizer_info_route, methods=["GET"]),
            Route("/v1/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={
            CompletionError: _on_completion_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
    )
    app.state.server = state
    return app
