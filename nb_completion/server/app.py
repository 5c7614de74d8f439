"""The HTTP routes (Starlette) over the engine queue.

``POST /v1/inference/completion`` (llama-stack: JSON, or SSE when ``stream`` is true),
``POST /v1/completions`` (OpenAI legacy completions), ``GET /v1/models``, ``GET /v1/health``,
``GET /openapi.json``. Every error is the spec's ``Error`` body with its status. Every 4xx is
answered before a stream starts: the body is parsed and validated here, the model id checked,
and the engine opens the request (compiling grammars, counting the prompt) before the first
event, so its 4xx come back as a status too. A client that disconnects cancels its request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..api.errors import BadRequest, CompletionError, EngineFailure, ModelNotFound
from ..api.validation import parse_request
from ..engine import registry
from ..engine.records import Delta, Finished, ModelInfo
from ..service import to_chunks, to_response
from . import sse
from .openai_compat import Shaper, echo_tokens, error_body, parse_openai
from .openapi import build_openapi
from .queue import END, EngineQueue, Job

log = logging.getLogger("nb_completion.server")

MAX_BODY_BYTES = 16 * 1024 * 1024
OPENAI_PATH = "/v1/completions"


class ServerState:
    def __init__(self, models: Iterable[str] | None, api_key: str | None, engine: EngineQueue):
        self.models = list(models) if models is not None else None
        self.api_key = api_key or None
        self.engine = engine

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


# ---- responses -------------------------------------------------------------------------------


def _json(value: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(sse.compact(value), status_code=status, media_type="application/json", headers=headers)


def error_response(error: CompletionError, openai: bool = False) -> Response:
    headers = {}
    if error.status == 429:  # ours, or a remote backend's passed on
        headers["Retry-After"] = str(getattr(error, "retry_after", 1))
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(error) if openai else error.error.model_dump(exclude_none=True)
    return _json(body, error.status, headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise CompletionError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise BadRequest("request", "empty body: send a JSON object")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("request", f"malformed JSON: {exc}") from None


# ---- waiting on a job while watching the client ----------------------------------------------


@asynccontextmanager
async def _watching(request: Request, job: Job) -> AsyncIterator[None]:
    """Cancel ``job`` the moment the client disconnects, until this block ends."""

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                job.cancel.set()
                return

    task = asyncio.create_task(watch())
    try:
        yield
    except BaseException:
        job.cancel.set()
        raise
    finally:
        task.cancel()


async def _collect(job: Job) -> list[Delta | Finished]:
    events: list[Delta | Finished] = []
    while True:
        item = await job.next()
        if item is END:
            return events
        if isinstance(item, CompletionError):
            raise item
        events.append(item)


async def _sse_body(job: Job, encode: Callable[[Any], list[bytes]], on_error: Callable[[CompletionError], bytes],
                    tail: bytes = b"") -> AsyncIterator[bytes]:
    try:
        while True:
            item = await job.next()
            if item is END:
                break
            if isinstance(item, CompletionError):
                yield on_error(item)
                return
            for data in encode(item):
                yield data
        if tail:
            yield tail
    finally:
        job.cancel.set()  # a dropped client lands here at once (the response task is cancelled)


def _streaming(job: Job, body: AsyncIterator[bytes]) -> StreamingResponse:
    # The background task runs however the response ends, even when the client leaves before
    # the body's first event (then the body generator never starts and its `finally` never runs).
    return StreamingResponse(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS, background=BackgroundTask(job.cancel.set))


async def _open(request: Request, state: ServerState, completion_request: Any, seed: int | None) -> Job | None:
    """Queue the request and wait until the engine has opened it (raising its 4xx)."""
    job = state.engine.submit(completion_request, seed=seed)
    async with _watching(request, job):
        first = await job.next()
    if first is END:  # the client left while waiting
        return None
    if isinstance(first, CompletionError):
        raise first
    return job


# ---- routes ------------------------------------------------------------------------------------


async def completion(request: Request) -> Response:
    state: ServerState = request.app.state.server
    state.authorize(request)
    body = await _json_body(request)
    completion_request = parse_request(body)
    state.check_model(completion_request.model_id)
    top_k = None if completion_request.logprobs is None else (completion_request.logprobs.top_k or 0)
    job = await _open(request, state, completion_request, None)
    if job is None:
        return Response(status_code=204)
    if completion_request.stream:

        def encode(event: Delta | Finished) -> list[bytes]:
            # a delta that delivers no text and (logprobs not asked) nothing else is not sent
            return [sse.event(c) for c in to_chunks([event], top_k) if c.delta or c.logprobs or c.stop_reason]

        return _streaming(job, _sse_body(job, encode, sse.error_event))
    async with _watching(request, job):
        events = await _collect(job)
    return _json(to_response(events, top_k))


async def openai_completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    state.authorize(request)
    body = await _json_body(request)
    completion_request, options = parse_openai(body)
    state.check_model(completion_request.model_id)
    echo = await asyncio.to_thread(echo_tokens, completion_request) if options["echo"] else None
    shaper = Shaper(completion_request.model_id, options["logprobs"], echo)
    if options["echo_only"]:
        return _json(shaper.echo_response(len(echo)))
    job = await _open(request, state, completion_request, options["seed"])
    if job is None:
        return Response(status_code=204)
    if options["stream"]:

        def encode(event: Delta | Finished) -> list[bytes]:
            out = []
            chunk = shaper.chunk(event)
            if chunk is not None and (chunk["choices"][0]["text"] or chunk["choices"][0]["logprobs"]
                                      or chunk["choices"][0]["finish_reason"]):
                out.append(sse.event(chunk))
            if isinstance(event, Finished) and options["include_usage"]:
                out.append(sse.event(shaper.usage_chunk(event)))
            return out

        on_error = lambda error: sse.event(error_body(error))  # noqa: E731
        return _streaming(job, _sse_body(job, encode, on_error, sse.DONE))
    async with _watching(request, job):
        events = await _collect(job)
    return _json(shaper.response(events))


def _model_entry(info: Any) -> dict:
    metadata = json.loads(json.dumps(dict(info.metadata or {}), default=str))
    metadata.setdefault("loaded", bool(info.loaded))
    if info.context_length:
        metadata.setdefault("context_length", info.context_length)
    return {
        "identifier": info.identifier,
        "provider_resource_id": info.provider_resource_id or info.identifier,
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
    data = [_model_entry(infos.get(i) or ModelInfo(identifier=i, provider_resource_id=i)) for i in ids]
    return _json({"object": "list", "data": data})


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return _json({"status": "OK", "queue": state.engine.status()})


async def openapi(request: Request) -> Response:
    state: ServerState = request.app.state.server
    return _json(build_openapi(api_key_required=state.api_key is not None))


# ---- errors ------------------------------------------------------------------------------------


def _is_openai(request: Request) -> bool:
    return request.url.path.rstrip("/") == OPENAI_PATH


async def _on_completion_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CompletionError)
    return error_response(exc, _is_openai(request))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = CompletionError(404, f"no route {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = CompletionError(405, f"method {request.method} not allowed on {request.url.path}", title="Method Not Allowed")
    else:
        error = CompletionError(exc.status_code, str(exc.detail))
    return error_response(error, _is_openai(request))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected server error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(EngineFailure("The server failed while answering this request."), _is_openai(request))


def create_app(models: Iterable[str] | None = None, api_key: str | None = None, queue_size: int = 8,
               engine: EngineQueue | None = None) -> Starlette:
    """The ASGI app. ``models``: the ids served (default: every registered model, the default
    model included and loaded on first use). ``app.state.server.engine.stop()`` ends the worker."""
    state = ServerState(models, api_key, engine or EngineQueue(queue_size))
    app = Starlette(
        routes=[
            Route("/v1/inference/completion", completion, methods=["POST"]),
            Route(OPENAI_PATH, openai_completions, methods=["POST"]),
            Route("/v1/models", models_route, methods=["GET"]),
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

