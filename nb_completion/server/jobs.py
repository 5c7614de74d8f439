"""Waiting on a queued job while watching its client: the pieces every HTTP route shares."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ..api.errors import CompletionError
from ..engine.records import Delta, Finished
from ..engine.plan import Plan
from . import sse
from .openai_compat import echo_tokens
from .queue import END, Job
from .responses import log_server_error


class ClientLeft(Exception):
    """The client disconnected while its request waited."""


@asynccontextmanager
async def watching(request: Request, job: Job) -> AsyncIterator[None]:
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


async def collect(job: Job) -> list[Delta | Finished]:
    events: list[Delta | Finished] = []
    while True:
        item = await job.next()
        if item is END:
            return events
        if isinstance(item, CompletionError):
            raise item
        events.append(item)


async def sse_body(
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


def streaming(job: Job, body: AsyncIterator[bytes]) -> StreamingResponse:
    # The background task runs however the response ends, even when the client leaves before
    # the body's first event (then the body generator never starts and its `finally` never runs).
    return StreamingResponse(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS, background=BackgroundTask(job.cancel.set))


async def open_job(request: Request, state: Any, completion_request: Any, seed: int | None, plan: Plan | None) -> Job | None:
    """Queue the request and wait until the engine has opened it (raising its 4xx)."""
    job = state.engine.submit(completion_request, seed=seed, plan=plan)
    async with watching(request, job):
        first = await job.next()
    if first is END:  # the client left while waiting
        return None
    if isinstance(first, CompletionError):
        raise first
    return job


async def scored_in_queue(request: Request, state: Any, completion_request: Any, ids: Any = None) -> list | None:
    """``echo``'s prompt scoring as a queued job (a place, a 429 when full, cancelled when the
    client leaves); None when the client left."""
    from ..scoring import ScoringCancelled

    def work(cancel: Any) -> list | None:
        try:
            return echo_tokens(completion_request, cancel, ids)
        except ScoringCancelled:
            return None

    job = state.engine.submit_work(completion_request, work)
    async with watching(request, job):
        items = [await job.next()]
        while items[-1] is not END:
            items.append(await job.next())
    for item in items:
        if isinstance(item, CompletionError):
            raise item
    scored = [item for item in items if isinstance(item, list)]
    return scored[0] if scored and not job.cancel.is_set() else None


def where(request: Request) -> str:
    return f"{request.method} {request.url.path}"


async def open_jobs(request: Request, state: Any, planned: list[tuple[Any, int | None, Any]]) -> list[Job] | None:
    """Open each ``(completion_request, seed, plan)`` in turn; None when the client left.
    A failure cancels the jobs already opened and is raised."""
    jobs: list[Job] = []
    try:
        for completion_request, seed, plan in planned:
            job = await open_job(request, state, completion_request, seed, plan)
            if job is None:
                raise ClientLeft()
            jobs.append(job)
    except BaseException as exc:
        for job in jobs:
            job.cancel.set()
        if isinstance(exc, ClientLeft):
            return None
        raise
    return jobs
