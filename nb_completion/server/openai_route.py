"""The OpenAI completions route: prompts (text or token ids) times ``n`` choices, streamed or
not, over the engine queue; shapes from ``openai_compat``."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..api.errors import BadRequest, CompletionError
from ..api.types import CompletionRequest
from ..engine.backend import is_local
from ..engine.records import Delta, Finished
from ..service import load_backend
from . import sse
from .jobs import collect, open_job, open_jobs, scored_in_queue, sse_body, streaming, watching, where
from .openai_compat import OpenAIShaper, error_body, openai_names, parse_openai
from .precheck import precheck
from .queue import END, Job
from .responses import json_response, log_server_error

LLAMA_STACK_PATH = "/v1/openai/v1/completions"


def stream_end(request: Request) -> bytes:
    """What follows the last chunk: OpenAI's ``data: [DONE]``, or nothing on llama-stack's alias
    (llama-stack's server sends no ``[DONE]``, and its client reads every event as JSON)."""
    return b"" if request.url.path.rstrip("/") == LLAMA_STACK_PATH else sse.DONE


async def openai_completions(request: Request) -> Response:
    """OpenAI's completions: every prompt of the request (text or token ids), ``n`` choices each
    (``best_of`` generated, the best by mean logprob kept), indexed ``prompt * n + j``."""
    state: Any = request.app.state.server
    state.authorize(request)

    sent: dict = {}

    def prepare(body: Any) -> tuple[list, dict]:
        sent["body"] = body
        parsed, options = parse_openai(body)
        with openai_names(body):
            return openai_prompts(state, parsed, options["prompts"], options["adjust"]), options

    prompts, options = await state.bodies.prepare(request, prepare)
    echoes: list = []
    for completion_request, plan in prompts:
        if not options["echo"]:
            echoes.append(None)
            continue
        ids = plan.ids
        scored = await scored_in_queue(request, state, completion_request, ids)
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
            shaper(i, j).echo_response(len(echoes[i]) if echoes[i] else len(plan.ids or []))
            for i, (_, plan) in enumerate(prompts)
            for j in range(n)
        ]
        merged = merge_frames(frames, n)
        if not options["stream"]:
            return json_response(merged)
        chunks = [sse.event({**merged, "choices": [c]}) for c in merged["choices"]]
        if options["include_usage"]:
            chunks.append(sse.event({**merged, "choices": []}))
        return Response(b"".join([*chunks, stream_end(request)]), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)

    if len(prompts) == 1 and best_of == 1:
        return await _one_choice(request, state, prompts[0], options, shaper(0, 0), sent["body"])
    planned, shapers = [], []
    for i, (completion_request, plan) in enumerate(prompts):
        for j in range(best_of):
            seed = None if options["seed"] is None else options["seed"] + j
            # a compiled grammar is the state of one generation: each further choice forks it
            planned.append((completion_request, seed, plan if j == 0 else plan.fork()))
            shapers.append(shaper(i, j))
    with openai_names(sent["body"]):
        opened = await open_jobs(request, state, planned)
    if opened is None:
        return Response(status_code=204)
    jobs = list(zip(opened, shapers))
    if options["stream"]:
        return StreamingResponse(
            _merged_sse(jobs, n, options["include_usage"], stream_end(request), where=where(request)),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
            background=BackgroundTask(lambda: [job.cancel.set() for job, _ in jobs]),
        )
    results = []
    for job, _ in jobs:
        async with watching(request, job):
            results.append(await collect(job))
    frames = [s.response(events) for (_, s), events in zip(jobs, results)]
    return json_response(merge_frames(best_choices(frames, n, best_of), n))


def openai_prompts(state: Any, parsed: CompletionRequest, prompts: list, adjust: dict | None = None) -> list:
    """Each prompt as its own request with what the precheck computed (token-id prompts are used
    as they are; their text, decoded, is only for display), and ``adjust`` (logit bias and
    additive penalties) for the engine, which only a model in this server can apply."""
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            request, plan = state.prepare(parsed.model_copy(update={"content": prompt}))
        else:
            state.check_model(parsed.model_id)
            backend = load_backend(parsed.model_id)
            if not is_local(backend):
                raise BadRequest("prompt", f"token-id prompts need a model in this server; '{parsed.model_id}' is remote")
            vocab = backend.vocab_size
            bad = next((t for t in prompt if t >= vocab), None)
            if bad is not None:
                field = f"prompt[{i}]" if len(prompts) > 1 else "prompt"
                raise BadRequest(field, f"token id {bad} is outside the vocabulary ({vocab})")
            text = backend.tokenizer.decode(prompt)
            request, plan = precheck(
                parsed.model_copy(update={"content": text or " "}), backend, state.max_tokens_cap, ids=list(prompt)
            )
        if adjust:
            if not is_local(plan.backend):
                name = next(iter(adjust))
                raise BadRequest(name, f"needs a model in this server; '{parsed.model_id}' is served elsewhere")
            vocab = int(plan.backend.vocab_size)
            bad = next((t for t in (adjust.get("logit_bias") or {}) if t >= vocab), None)
            if bad is not None:
                raise BadRequest("logit_bias", f"token id {bad} is outside the vocabulary ({vocab})")
            plan = plan.with_adjust(adjust)
        out.append((request, plan))
    return out


async def _one_choice(request: Request, state: Any, prompt: tuple, options: dict, shaper: OpenAIShaper, body: Any) -> Response:
    completion_request, plan = prompt
    with openai_names(body):  # the engine's own 400s, named as this route names them
        job = await open_job(request, state, completion_request, options["seed"], plan)
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
        return streaming(job, sse_body(job, encode, on_error, stream_end(request), where=where(request)))
    async with watching(request, job):
        events = await collect(job)
    return json_response(shaper.response(events))


async def _merged_sse(jobs: list, n: int, include_usage: bool, tail: bytes, where: str) -> AsyncIterator[bytes]:
    """The chunks of several choices as they come, each with its index; one usage chunk at the end."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(k: int, job: Job) -> None:
        while True:
            item = await job.next()
            await queue.put((k, item))
            if item is END or isinstance(item, CompletionError):
                return

    tasks = [asyncio.create_task(pump(k, job)) for k, (job, _) in enumerate(jobs)]
    counted: list[tuple[int, dict]] = []
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
                counted.append((shaper.index, shaper.usage(item)))
        if include_usage:
            yield sse.event(jobs[0][1]._frame([], usage=summed_usage(counted, n)))
        if tail:
            yield tail
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
    """One ``text_completion`` from one frame per choice: choices in index order, usage summed."""
    choices = sorted((f["choices"][0] for f in frames), key=lambda c: c["index"])
    usage = summed_usage([(f["choices"][0]["index"], f.get("usage") or {}) for f in frames], n)
    return {**frames[0], "choices": choices, "usage": usage}


def summed_usage(counted: list[tuple[int, dict]], n: int) -> dict:
    """The usage of several choices ``(index, usage)``: every choice's completion tokens, each
    prompt's tokens once (its choice j = 0), as OpenAI counts them."""
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for index, one in counted:
        usage["completion_tokens"] += one.get("completion_tokens", 0)
        if index % n == 0:
            usage["prompt_tokens"] += one.get("prompt_tokens", 0)
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage
