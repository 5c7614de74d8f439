"""A request body, read the safe way: JSON only, its size checked before and while it is read,
no read that stalls for ever, and parsed off the event loop.

* ``Content-Type`` must be ``application/json`` (415 otherwise): a web page can send a
  cross-origin ``text/plain`` POST without asking the browser's permission, never a JSON one.
* A declared ``Content-Length`` over the limit is a 413 before a byte is read; a body without one
  (chunked) is counted as it arrives and refused the moment it passes the limit, so a large body
  never sits in memory whole.
* A body that stops arriving for ``idle_timeout`` seconds is a 408, and so is one that has not
  arrived whole ``total_timeout`` seconds after it began (one byte every few seconds would
  otherwise hold a connection and a request for ever).
* Parsing runs in a worker thread (a 15 MB body of 500k items took 2 s on the loop). Bodies over
  ``BIG_BODY_BYTES`` take one of ``BIG_BODY_SLOTS`` slots, so a flood of large bodies holds a
  bounded amount of memory; the rest wait, their bytes left in the socket. A declared large body
  takes its slot before it is read; a chunked one (no ``Content-Length``) only once it has grown
  past ``BIG_BODY_BYTES``, so two slow chunked uploads cannot make a small chunked request wait.
* A client that disconnects mid-body is one quiet log line (``ClientGone``), not a 500.
* JSON is read strictly: ``NaN``/``Infinity`` and numbers that overflow to infinity (``1e400``)
  are refused, as are strings holding a lone UTF-16 surrogate (``"\\ud800"``), naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, Awaitable, Callable, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from ..api.errors import BadRequest, CompletionError
from ..api.validation import lone_surrogate

MAX_BODY_BYTES = 16 * 1024 * 1024
BODY_IDLE_TIMEOUT = 30.0
BODY_TOTAL_TIMEOUT = 60.0  # seconds from the first awaited byte to the last
BIG_BODY_BYTES = 1024 * 1024
BIG_BODY_SLOTS = 2
JSON_MEDIA_TYPE = "application/json"

T = TypeVar("T")


log = logging.getLogger("nb_completion.server")


class TooLarge(CompletionError):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over {limit} bytes")


class ClientGone(CompletionError):
    """The client closed the connection before its body arrived whole. Its response goes
    nowhere; it is logged as one line at INFO (``error_response`` logs no 4xx)."""

    def __init__(self, received: int):
        self.received = received
        super().__init__(400, f"the client disconnected after {received} bytes of its request body")


def check_content_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        shown = f"'{media_type[:100]}'" if media_type else "none"
        raise CompletionError(415, f"Content-Type must be {JSON_MEDIA_TYPE}, got {shown}")


def declared_length(request: Request, limit: int) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise BadRequest("Content-Length", f"must be a whole number of bytes, got '{value[:40]}'")
    length = int(value)
    if length > limit:
        raise TooLarge(limit)
    return length


async def read_body(
    request: Request,
    limit: int = MAX_BODY_BYTES,
    idle_timeout: float = BODY_IDLE_TIMEOUT,
    total_timeout: float = BODY_TOTAL_TIMEOUT,
    on_big: Callable[[], Awaitable[None]] | None = None,
) -> bytes:
    """The whole body, or 413 / 408 / ``ClientGone`` (see the module's notes). ``on_big`` is
    awaited once, when the body grows past ``BIG_BODY_BYTES`` (a chunked body taking its slot)."""
    declared_length(request, limit)
    body = bytearray()
    chunks = request.stream().__aiter__()
    deadline = asyncio.get_running_loop().time() + total_timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(0.0, min(idle_timeout, left)))
        except StopAsyncIteration:
            return bytes(body)
        except ClientDisconnect:
            log.info("%s %s: the client disconnected mid-body (%d bytes read)", request.method, request.url.path, len(body))
            raise ClientGone(len(body)) from None
        except asyncio.TimeoutError:
            if left <= idle_timeout:
                raise CompletionError(408, f"the request body did not arrive whole within {total_timeout:g} s") from None
            raise CompletionError(408, f"the request body stopped arriving for {idle_timeout:g} s") from None
        if len(body) + len(chunk) > limit:
            raise TooLarge(limit)
        if on_big is not None and len(body) <= BIG_BODY_BYTES < len(body) + len(chunk):
            await on_big()
        body += chunk


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_values(value: Any, root: str = "") -> None:
    """A 400 naming the first non-finite number or string with a lone surrogate (keys too).

    Iterative, so a deeply nested body cannot exhaust the stack here."""
    stack: list[tuple[Any, str]] = [(value, root)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            at = lone_surrogate(item)
            if at is not None:
                raise BadRequest(
                    path or "request", f"holds a lone UTF-16 surrogate {item[at]!r} at index {at} (not valid Unicode text)"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BadRequest(path or "request", "must be a finite number (this one overflows to infinity)")
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if lone_surrogate(key) is not None:
                    raise BadRequest(path or "request", "holds a key with a lone UTF-16 surrogate (not valid Unicode text)")
                stack.append((child, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))


def parse_json(raw: bytes) -> Any:
    """The parsed body, or a 400 (malformed, empty, ``NaN``, ``1e400``, lone surrogates)."""
    if not raw.strip():
        raise BadRequest("request", "empty body: send a JSON object")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("request", f"malformed JSON: {exc}") from None
    _check_values(value)
    return value


class BodyReader:
    """Reads, parses and prepares request bodies for one app (it holds the big-body slots)."""

    def __init__(
        self, limit: int = MAX_BODY_BYTES, idle_timeout: float = BODY_IDLE_TIMEOUT, total_timeout: float = BODY_TOTAL_TIMEOUT
    ):
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout
        self._big = asyncio.Semaphore(BIG_BODY_SLOTS)

    async def prepare(self, request: Request, then: Callable[[Any], T]) -> T:
        """Check the content type, read and parse the body, then run ``then(parsed)`` (validation
        and the tokenizer's checks) in a worker thread; its result or its error comes back."""
        check_content_type(request)
        declared = declared_length(request, self.limit)
        held = False

        async def take_slot() -> None:
            nonlocal held
            await self._big.acquire()
            held = True

        try:
            if declared is not None and declared > BIG_BODY_BYTES:
                await take_slot()
            chunked = take_slot if declared is None else None
            raw = await read_body(request, self.limit, self.idle_timeout, self.total_timeout, on_big=chunked)
            return await run_in_threadpool(lambda: then(parse_json(raw)))
        finally:
            if held:
                self._big.release()
