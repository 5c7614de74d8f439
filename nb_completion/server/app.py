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

import asyncio
import hmac
import json
import logging
import os
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..api.errors import BadRequest, CompletionError, EngineFailure, ModelNotFound, shorten
from ..api.types import CompletionRequest
from ..api.validation import parse_request
from ..engine import registry
from ..engine.records import Delta, Finished, ModelInfo
from ..service import Prepared, load_backend, to_chunks, to_response
from . import extra_routes, sse
from .body import BodyReader
from .guard import HostPolicy, middleware
from .openai_compat import OpenAIShaper, echo_tokens, error_body, openai_names, parse_openai
from .openapi import build_openapi
from .defaults import DEFAULT_MAX_TOKENS_CAP
from .precheck import precheck
from .queue import END, EngineQueue, Job
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

    def prepare(self, request: CompletionRequest) -> tuple[CompletionRequest, Prepared | None]:
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


async def _sse_body(
    job: Job,
    encode: Callable[[Any], list[bytes]],
    on_error: Callable[[CompletionError], bytes],
    tail: bytes = b"",
    where: str = "",
) -> AsyncIterator[bytes]:
    """The stream's SSE bytes: whatever items are waiting go out as one write."""
    try:
        while True:
            out: list[bytes] = []
            for item in [await job.next(), *job.ready()]:
                if item is END:
                    if tail:
                        out.append(tail)
                    if out:
                        yield b"".join(out)
                    return
                if isinstance(item, CompletionError):
                    if item.status >= 500:
                        log_server_error(item, where)
                    out.append(on_error(item))
                    yield b"".join(out)
                    return
                out.extend(encode(item))
            if out:
                yield b"".join(out)
    finally:
        job.cancel.set()  # a dropped client lands here at once (the response task is cancelled)


def _streaming(job: Job, body: AsyncIterator[bytes]) -> StreamingResponse:
    # The background task runs however the response ends, even when the client leaves before
    # the body's first event (then the body generator never starts and its `finally` never runs).
    return StreamingResponse(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS, background=BackgroundTask(job.cancel.set))


async def _open(
    request: Request, state: ServerState, completion_request: Any, seed: int | None, prepared: Prepared | None
) -> Job | None:
    """Queue the request and wait until the engine has opened it (raising its 4xx)."""
    job = state.engine.submit(completion_request, seed=seed, prepared=prepared)
    async with _watching(request, job):
        first = await job.next()
    if first is END:  # the client left while waiting
        return None
    if isinstance(first, CompletionError):
        raise first
    return job


async def _scored_in_queue(request: Request, state: ServerState, completion_request: Any, ids: Any = None) -> list | None:
    """``echo``'s prompt scoring as a queued job (a place, a 429 when full, cancelled when the
    client leaves); None when the client left."""
    from ..scoring import ScoringCancelled

    def work(cancel: Any) -> list | None:
        try:
            return echo_tokens(completion_request, cancel, ids)
        except ScoringCancelled:
            return None

    job = state.engine.submit_work(completion_request, work)
    async with _watching(request, job):
        items = [await job.next()]
        while items[-1] is not END:
            items.append(await job.next())
    for item in items:
        if isinstance(item, CompletionError):
            raise item
    scored = [item for item in items if isinstance(item, list)]
    return scored[0] if scored and not job.cancel.is_set() else None


# ---- routes ------------------------------------------------------------------------------------


def _where(request: Request) -> str:
    return f"{request.method} {request.url.path}"


async def completion(request: Request) -> Response:
    state: ServerState = request.app.state.server
    state.authorize(request)
    completion_request, prepared = await state.bodies.prepare(request, lambda body: state.prepare(parse_request(body)))
    top_k = None if completion_request.logprobs is None else (completion_request.logprobs.top_k or 0)
    job = await _open(request, state, completion_request, None, prepared)
    if job is None:
        return Response(status_code=204)
    if completion_request.stream:

        def encode(event: Delta | Finished) -> list[bytes]:
            # a delta that delivers no text and (logprobs not asked) nothing else is not sent
            return [sse.event(c) for c in to_chunks([event], top_k) if c.delta or c.logprobs or c.stop_reason]

        return _streaming(job, _sse_body(job, encode, sse.error_event, where=_where(request)))
    async with _watching(request, job):
        events = await _collect(job)
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
    jobs = []
    try:
        for completion_request, prepared in prepared_batch:
            job = await _open(request, state, completion_request, None, prepared)
            if job is None:
                raise _ClientLeft()
            jobs.append((job, completion_request))
    except BaseException as exc:
        for job, _ in jobs:
            job.cancel.set()
        if isinstance(exc, _ClientLeft):
            return Response(status_code=204)
        raise
    answers = []
    for job, completion_request in jobs:
        top_k = None if completion_request.logprobs is None else (completion_request.logprobs.top_k or 0)
        async with _watching(request, job):
            answers.append(to_response(await _collect(job), top_k).model_dump(mode="json", exclude_none=True))
    return json_response({"batch": answers})


async def openai_completions(request: Request) -> Response:
    """OpenAI's completions: every prompt of the request (text or token ids), ``n`` choices each
    (``best_of`` generated, the best by mean logprob kept), indexed ``prompt * n + j``."""
    state: ServerState = request.app.state.server
    state.authorize(request)

    sent: dict = {}

    def prepare(body: Any) -> tuple[list, dict]:
        sent["body"] = body
        parsed, options = parse_openai(body)
        with openai_names(body):
            return openai_prompts(state, parsed, options["prompts"]), options

    prompts, options = await state.bodies.prepare(request, prepare)
    echoes: list = []
    for completion_request, prepared in prompts:
        if not options["echo"]:
            echoes.append(None)
            continue
        ids = prepared.ids if prepared is not None else None
        scored = await _scored_in_queue(request, state, completion_request, ids)
        if scored is None:  # the client left while its prompt was scored
            return Response(status_code=204)
        echoes.append(scored)
    n, best_of = options["n"], options["best_of"]
    model = prompts[0][0].model_id
    response_id = f"cmpl-{uuid.uuid4().hex[:24]}"

    def shaper(i: int, j: int) -> OpenAIShaper:
        return OpenAIShaper(model, options["logprobs"], echoes[i], index=i * n + j, id=response_id)

    if options["nothing"]:  # max_tokens 0: nothing generated (with echo, the prompts scored)
        frames = [
            shaper(i, j).echo_response(len(echoes[i]) if echoes[i] else len(prepared.ids if prepared else []))
            for i, (_, prepared) in enumerate(prompts)
            for j in range(n)
        ]
        merged = merge_frames(frames, n)
        if not options["stream"]:
            return json_response(merged)
        chunks = [sse.event({**merged, "choices": [c]}) for c in merged["choices"]]
        if options["include_usage"]:
            chunks.append(sse.event({**merged, "choices": []}))
        return Response(b"".join([*chunks, sse.DONE]), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)

    if len(prompts) == 1 and best_of == 1:
        return await _one_choice(request, state, prompts[0], options, shaper(0, 0), sent["body"])
    jobs: list[tuple[Job, OpenAIShaper]] = []
    try:
        with openai_names(sent["body"]):
            for i, (completion_request, prepared) in enumerate(prompts):
                for j in range(best_of):
                    seed = None if options["seed"] is None else options["seed"] + j
                    job = await _open(request, state, completion_request, seed, prepared if j == 0 else fork(prepared))
                    if job is None:
                        raise _ClientLeft()
                    jobs.append((job, shaper(i, j)))
    except BaseException as exc:
        for job, _ in jobs:
            job.cancel.set()
        if isinstance(exc, _ClientLeft):
            return Response(status_code=204)
        raise
    if options["stream"]:
        return StreamingResponse(
            _merged_sse(jobs, options["include_usage"], where=_where(request)),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
            background=BackgroundTask(lambda: [job.cancel.set() for job, _ in jobs]),
        )
    results = []
    for job, _ in jobs:
        async with _watching(request, job):
            results.append(await _collect(job))
    frames = [s.response(events) for (_, s), events in zip(jobs, results)]
    return json_response(merge_frames(best_choices(frames, n, best_of), n))


class _ClientLeft(Exception):
    pass


def openai_prompts(state: ServerState, parsed: CompletionRequest, prompts: list) -> list:
    """Each prompt as its own request with what the precheck computed (token-id prompts are used
    as they are; their text, decoded, is only for display)."""
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            out.append(state.prepare(parsed.model_copy(update={"content": prompt})))
            continue
        state.check_model(parsed.model_id)
        backend = load_backend(parsed.model_id)
        vocab = getattr(backend, "vocab_size", None)
        if getattr(backend, "tokenizer", None) is None or vocab is None:
            raise BadRequest("prompt", f"token-id prompts need a model in this server; '{parsed.model_id}' is remote")
        bad = next((t for t in prompt if t >= vocab), None)
        if bad is not None:
            raise BadRequest(
                f"prompt[{i}]" if len(prompts) > 1 else "prompt", f"token id {bad} is outside the vocabulary ({vocab})"
            )
        text = backend.tokenizer.decode(prompt)
        out.append(precheck(parsed.model_copy(update={"content": text or " "}), backend, state.max_tokens_cap, ids=list(prompt)))
    return out


def fork(prepared: Prepared | None) -> Prepared | None:
    """Another generation's copy: a compiled grammar is the state of one generation."""
    if prepared is None or prepared.constraint is None:
        return prepared
    return Prepared(prepared.backend, prepared.ids, prepared.constraint.fork())


async def _one_choice(
    request: Request, state: ServerState, prompt: tuple, options: dict, shaper: OpenAIShaper, body: Any
) -> Response:
    completion_request, prepared = prompt
    with openai_names(body):  # the engine's own 400s, named as this route names them
        job = await _open(request, state, completion_request, options["seed"], prepared)
    if job is None:
        return Response(status_code=204)
    if options["stream"]:

        def encode(event: Delta | Finished) -> list[bytes]:
            out = []
            chunk = shaper.chunk(event)
            if chunk is not None and (
                chunk["choices"][0]["text"] or chunk["choices"][0]["logprobs"] or chunk["choices"][0]["finish_reason"]
            ):
                out.append(sse.event(chunk))
            if isinstance(event, Finished) and options["include_usage"]:
                out.append(sse.event(shaper.usage_chunk(event)))
            return out

        on_error = lambda error: sse.event(error_body(error))  # noqa: E731
        return _streaming(job, _sse_body(job, encode, on_error, sse.DONE, where=_where(request)))
    async with _watching(request, job):
        events = await _collect(job)
    return json_response(shaper.response(events))


async def _merged_sse(jobs: list, include_usage: bool, where: str) -> AsyncIterator[bytes]:
    """The chunks of several choices as they come, each with its index; one usage chunk at the end."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(k: int, job: Job) -> None:
        while True:
            item = await job.next()
            await queue.put((k, item))
            if item is END or isinstance(item, CompletionError):
                return

    tasks = [asyncio.create_task(pump(k, job)) for k, (job, _) in enumerate(jobs)]
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    open_jobs = len(jobs)
    try:
        while open_jobs:
            k, item = await queue.get()
            if item is END:
                open_jobs -= 1
                continue
            if isinstance(item, CompletionError):
                if item.status >= 500:
                    log_server_error(item, where)
                yield sse.event(error_body(item))
                return
            shaper = jobs[k][1]
            chunk = shaper.chunk(item)
            if chunk is not None and (
                chunk["choices"][0]["text"] or chunk["choices"][0]["logprobs"] or chunk["choices"][0]["finish_reason"]
            ):
                yield sse.event(chunk)
            if isinstance(item, Finished):
                for key, value in shaper.usage(item).items():
                    usage[key] = usage.get(key, 0) + value
        if include_usage:
            yield sse.event(jobs[0][1]._frame([], usage=usage))
        yield sse.DONE
    finally:
        for task in tasks:
            task.cancel()
        for job, _ in jobs:
            job.cancel.set()


def best_choices(frames: list[dict], n: int, best_of: int) -> list[dict]:
    """Of each prompt's ``best_of`` answers, the ``n`` with the highest mean logprob per token
    (as OpenAI ranks them), re-indexed; all of them when ``best_of == n``."""
    if best_of == n:
        return frames
    kept = []
    for start in range(0, len(frames), best_of):
        group = frames[start : start + best_of]
        ranked = sorted(group, key=lambda f: -_mean_logprob(f))[:n]
        for j, frame in enumerate(ranked):
            choice = {**frame["choices"][0], "index": (start // best_of) * n + j}
            kept.append({**frame, "choices": [choice]})
    return kept


def _mean_logprob(frame: dict) -> float:
    logprobs = (frame["choices"][0].get("logprobs") or {}).get("token_logprobs") or []
    values = [v for v in logprobs if v is not None]
    return sum(values) / len(values) if values else float("-inf")


def merge_frames(frames: list[dict], n: int) -> dict:
    """One ``text_completion`` from one frame per choice: choices in index order, usage summed
    (each prompt's tokens counted once, as OpenAI counts them)."""
    choices = sorted((f["choices"][0] for f in frames), key=lambda c: c["index"])
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for frame in frames:
        counted = frame.get("usage") or {}
        usage["completion_tokens"] += counted.get("completion_tokens", 0)
        if frame["choices"][0]["index"] % n == 0:
            usage["prompt_tokens"] += counted.get("prompt_tokens", 0)
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {**frames[0], "choices": choices, "usage": usage}


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
    if hasattr(backend, "decode_pass"):  # a local model: eager, compiling or compiled (docs/engine.md)
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
    return request.url.path.rstrip("/") in (OPENAI_PATH, "/v1/openai/v1/completions")


async def _on_completion_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CompletionError)
    return error_response(exc, _is_openai(request), _where(request))


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
    log_server_error(exc, _where(request))
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
            Route("/v1/openai/v1/completions", openai_completions, methods=["POST"]),  # llama-stack 0.2's client
            Route("/v1/models", models_route, methods=["GET"]),
            Route("/v1/openai/v1/models", models_route, methods=["GET"]),
            Route("/v1/models/{model_id:path}", extra_routes.model_by_id, methods=["GET"]),
            Route("/v1/providers", extra_routes.providers, methods=["GET"]),
            Route("/tokenize", extra_routes.tokenize, methods=["POST"]),
            Route("/detokenize", extra_routes.detokenize, methods=["POST"]),
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
