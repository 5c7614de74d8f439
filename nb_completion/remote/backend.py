"""A model served elsewhere, as a ``Backend``: a llama-stack 0.2.x server (``POST
/v1/inference/completion``) or an OpenAI-completions one (``POST /v1/completions``): vLLM,
llama.cpp's ``llama-server``, this project's own server, or another.

``register_remote(base_url, model_id=...)`` registers it, so ``complete()``, the widget and the
magic use it like a local model. It always streams from the remote (server-sent events over
httpx) and turns each remote chunk into ``Delta``/``Finished`` events. With ``api="openai"``
the dialect (where structured output goes, which log-probability shape comes back) is detected
(``dialects``); ``api="llama.cpp"`` or ``api="vllm"`` names it.

What a remote cannot tell us (token ids from vLLM, ranks outside the reported top-k, the
entropy) and what the records hold instead: see ``records`` and ``openai_answer``.

A remote error body becomes a ``CompletionError`` with the remote's status and message
(``errors``); an unreachable remote, one that breaks off mid-stream or sends nothing for
``timeout`` seconds, is a 502. Setting ``cancel`` closes the connection (so the remote stops
too) within one token. Stop strings never reach the output, also from a remote that ignores
``stop``.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Iterator, Literal

import httpx

from ..api.errors import CompletionError
from ..api.types import CompletionRequest
from ..engine import registry
from ..engine.backend import BackendKind, Event
from ..engine.plan import TakesText
from ..engine.records import Delta, Finished, ModelInfo, TokenRecord
from .dialects import Dialect, detect, llama_stack_body, openai_body
from .errors import error_from, gateway_error
from .openai_answer import OpenAIAnswer, Tally
from .records import make_record, split_delta, sse_data
from ..engine.stopping import StopStringFilter

Api = Literal["llama-stack", "openai", "llama.cpp", "vllm"]
APIS = ("llama-stack", "openai", "llama.cpp", "vllm")
PATHS = {"llama-stack": "/v1/inference/completion", "openai": "/v1/completions"}


def _error_of_response(response: httpx.Response) -> CompletionError:
    body: Any = ""
    try:
        response.read()
        body = response.json()
    except Exception:
        body = response.text if response.is_stream_consumed else ""
    return error_from(body, response.status_code)


def trim_stops(events: Iterator[Event], stops: list[str] | None, tally: Tally) -> Iterator[Event]:
    """The remote's events with any stop string cut off (and the stream ended there), for a
    remote that does not apply ``stop`` itself. Text a delta carries without token records
    travels as a stand-in record (index -1) that is dropped again on the way out."""
    if not stops:
        yield from events
        return
    keep = StopStringFilter(stops)

    def out(delta: Delta) -> Delta:
        return Delta(delta.text, tuple(t for t in delta.tokens if t.index >= 0))

    for event in events:
        if isinstance(event, Finished):
            tail = keep.flush()
            if tail.text or tail.tokens:
                yield out(tail)
            yield event
            return
        covered = sum(len(t.text) for t in event.tokens)
        records = list(event.tokens)
        if covered < len(event.text):
            records.append(TokenRecord(-1, -1, event.text[covered:], 0.0, 0, (), 0.0))
        for record in records:
            delta = keep.push(record)
            if delta.text or delta.tokens:
                yield out(delta)
            if keep.stopped:
                yield tally.finished("end_of_turn", {"completion_tokens": tally.tokens})
                return


# ---- the stream ---------------------------------------------------------------------------------


class RemoteStream:
    """The iterator ``RemoteBackend.open`` returns; ``close()`` (or dropping it) lets the
    connection go, so the remote stops generating too."""

    def __init__(self, events: Iterator[Event], stop: threading.Event):
        self._events = events
        self._stop = stop

    def __iter__(self) -> "RemoteStream":
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        self._stop.set()
        self._events.close()  # type: ignore[attr-defined]

    def __del__(self) -> None:
        self._stop.set()


_OPENED = object()
_CANCELLED = object()
_POLL = 0.05  # seconds between looks at the cancel event while the remote is silent


def _take(channel: "queue.Queue[Any]", cancel: threading.Event | None) -> Any:
    """The next item from the pump, or ``_CANCELLED`` as soon as ``cancel`` is set."""
    while True:
        if cancel is not None and cancel.is_set():
            return _CANCELLED
        try:
            return channel.get(timeout=_POLL if cancel is not None else None)
        except queue.Empty:
            continue


class RemoteBackend(TakesText):  # prepare: the server's cap only (engine/plan.py)
    kind = BackendKind.REMOTE

    def __init__(
        self,
        base_url: str,
        model_id: str,
        api: Api = "llama-stack",
        api_key: str | None = None,
        name: str | None = None,
        timeout: float = 300.0,
        context_length: int | None = None,
        dialect: Dialect | None = None,
    ):
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(repr(a) for a in APIS)}, got {api!r}")
        self.base_url = base_url.rstrip("/")
        self.remote_id = model_id
        self.api = api
        self.route = PATHS["llama-stack" if api == "llama-stack" else "openai"]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0))
        )
        self.timeout = timeout
        self.dialect = dialect  # None: detected at the first request
        self.info = ModelInfo(
            identifier=name or model_id,
            provider_id=f"remote:{api}",
            provider_resource_id=model_id,
            metadata={"base_url": self.base_url, "api": api, "remote_model_id": model_id},
            context_length=context_length,
            loaded=True,
        )
        self._note_dialect()

    def _note_dialect(self) -> None:
        if self.dialect is not None:
            self.info.metadata["dialect"] = self.dialect.label

    def _dialect(self) -> Dialect:
        if self.dialect is None:
            self.dialect = detect(self.client, name=None if self.api == "openai" else self.api)
            self._note_dialect()
        return self.dialect

    def open(
        self, request: CompletionRequest, *, seed: int | None = None, cancel: threading.Event | None = None
    ) -> Iterator[Event]:
        top_k = 0 if request.logprobs is None else (request.logprobs.top_k or 0)
        if self.api == "llama-stack":
            body = llama_stack_body(request, self.remote_id, top_k)
        else:
            body = openai_body(request, self.remote_id, top_k, seed, self._dialect())
        stops = list(request.sampling_params.stop or []) if request.sampling_params else []
        tally = Tally()
        outgoing = self.client.build_request("POST", self.route, json=body, headers={"Accept": "text/event-stream"})
        # The HTTP exchange runs in a pump thread, so that a cancel is seen at once even while the
        # remote is silent (queued behind other requests, or slow per token): the caller gets its
        # cancelled Finished right away and the pump drops the connection at its next chance.
        channel: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        threading.Thread(
            target=self._pump,
            args=(outgoing, top_k, stops, tally, channel, stop),
            daemon=True,
            name=f"nb-completion-remote:{self.info.identifier}",
        ).start()
        first = _take(channel, cancel)
        if first is _CANCELLED:
            stop.set()
            return iter([tally.finished("out_of_tokens", {"prompt_tokens": 0, "completion_tokens": 0}, cancelled=True)])
        if isinstance(first, BaseException):
            raise first
        return RemoteStream(self._drain(channel, cancel, stop, tally), stop)

    def _drain(
        self, channel: "queue.Queue[Any]", cancel: threading.Event | None, stop: threading.Event, tally: Tally
    ) -> Iterator[Event]:
        delivered = 0
        try:
            while True:
                item = _take(channel, cancel)
                if item is _CANCELLED:
                    yield tally.finished("out_of_tokens", {"completion_tokens": delivered}, cancelled=True)
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Delta):
                    delivered += len(item.tokens)
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            stop.set()

    def _pump(
        self,
        outgoing: httpx.Request,
        top_k: int,
        stops: list[str],
        tally: Tally,
        channel: "queue.Queue[Any]",
        stop: threading.Event,
    ) -> None:
        """Send the request and put ``_OPENED`` (or the error), then each event, on ``channel``.
        Whatever happens, the last item put is a ``Finished`` or an exception: never silence."""
        try:
            response = self.client.send(outgoing, stream=True)
        except httpx.TimeoutException as exc:
            channel.put(
                gateway_error(f"the remote at {self.base_url} did not answer within {self.timeout:g} s ({type(exc).__name__})")
            )
            return
        except httpx.HTTPError as exc:
            channel.put(gateway_error(f"could not reach the remote at {self.base_url}: {type(exc).__name__}: {exc}"))
            return
        except BaseException as exc:  # pragma: no cover - a bug here must not hang the caller
            channel.put(gateway_error(f"the request to the remote failed: {type(exc).__name__}: {exc}"))
            return
        try:
            if stop.is_set():
                return
            if response.status_code >= 400:
                channel.put(_error_of_response(response))
                return
            channel.put(_OPENED)
            for event in trim_stops(self._events(response, top_k, tally), stops, tally):
                if stop.is_set():
                    return  # closing the response drops the connection: the remote sees it and stops
                channel.put(event)
                if isinstance(event, Finished):
                    return
            channel.put(gateway_error("the remote stream ended without a stop reason"))
        except CompletionError as exc:
            channel.put(exc)
        except httpx.TimeoutException as exc:
            channel.put(
                gateway_error(
                    f"the remote at {self.base_url} sent nothing for {self.timeout:g} s mid-stream ({type(exc).__name__})"
                )
            )
        except httpx.HTTPError as exc:
            channel.put(gateway_error(f"the remote stream broke: {type(exc).__name__}: {exc}"))
        except BaseException as exc:  # an unreadable chunk: report it, never hang the caller
            channel.put(gateway_error(f"the remote sent an unreadable stream: {type(exc).__name__}: {exc}"))
        finally:
            response.close()

    def _events(self, response: httpx.Response, top_k: int, tally: Tally) -> Iterator[Event]:
        streamed = "text/event-stream" in response.headers.get("content-type", "")
        if streamed:
            datas = sse_data(response.iter_lines())
        else:  # a remote that answered with one JSON body instead of a stream
            response.read()
            datas = iter([response.text])
        if self.api == "llama-stack":
            yield from (self._llama_events(datas, top_k, tally) if streamed else self._llama_whole(response.text, top_k, tally))
            return
        answer = OpenAIAnswer(top_k, tally)
        try:
            yield from answer.events(datas)
        finally:
            if answer.shape == "llama.cpp" and self.dialect is not None and self.dialect.name == "openai":
                self.dialect = Dialect("llama.cpp")  # the first answer told: llama.cpp's logprobs shape
                self._note_dialect()

    # llama-stack: each chunk is the spec's CompletionResponseStreamChunk

    def _llama_events(self, datas: Iterator[str], top_k: int, tally: Tally) -> Iterator[Event]:
        for data in datas:
            chunk = json.loads(data)
            if "error" in chunk:
                raise error_from(chunk["error"], 500)
            yield from self._delta(
                chunk.get("delta", ""), [e.get("logprobs_by_token", {}) for e in chunk.get("logprobs") or []], top_k, tally
            )
            if chunk.get("stop_reason"):
                metrics = {m["metric"]: m["value"] for m in chunk.get("metrics") or []}
                yield tally.finished(chunk["stop_reason"], metrics)

    def _llama_whole(self, text: str, top_k: int, tally: Tally) -> Iterator[Event]:
        body = json.loads(text)
        yield from self._delta(
            body.get("content", ""), [e.get("logprobs_by_token", {}) for e in body.get("logprobs") or []], top_k, tally
        )
        metrics = {m["metric"]: m["value"] for m in body.get("metrics") or []}
        yield tally.finished(body.get("stop_reason") or "end_of_turn", metrics)

    def _delta(self, text: str, reported: list[dict[str, float]], top_k: int, tally: Tally) -> Iterator[Event]:
        if not text and not reported:
            return
        tally.saw_output()
        shares = split_delta(text, reported) if reported else []
        records = []
        for alternatives, (share, chosen) in zip(reported, shares):
            records.append(make_record(tally.tokens, share, chosen, alternatives, top_k, tally.elapsed()))
            tally.tokens += 1
        yield Delta(text, tuple(records))


# ---- registration -----------------------------------------------------------------------------------


def _list_models(base_url: str, api_key: str | None, timeout: float) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(base_url.rstrip("/") + "/v1/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise gateway_error(f"could not reach the remote at {base_url}: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        raise _error_of_response(response)
    try:
        body = response.json()
    except ValueError:
        raise gateway_error(f"the remote at {base_url} answered GET /v1/models with something not JSON") from None
    return body if isinstance(body, dict) else {}


def _entries(listing: dict) -> list[dict]:
    entries = [e for e in listing.get("data") or [] if isinstance(e, dict)]
    return [{**e, "identifier": e.get("identifier") or e.get("id")} for e in entries if e.get("model_type", "llm") == "llm"]


def remote_models(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> list[dict]:
    """``GET /v1/models`` of a remote: each entry with at least ``identifier``."""
    return _entries(_list_models(base_url, api_key, timeout))


def _context_length(entry: dict) -> int | None:
    for value in (
        (entry.get("metadata") or {}).get("context_length"),
        entry.get("max_model_len"),
        (entry.get("meta") or {}).get("n_ctx"),
    ):
        if isinstance(value, int) and value > 0:
            return value
    return None


def register_remote(
    base_url: str,
    model_id: str | None = None,
    api: Api = "llama-stack",
    api_key: str | None = None,
    name: str | None = None,
    timeout: float = 300.0,
    check: bool = True,
) -> RemoteBackend:
    """Register a model served at ``base_url`` so ``complete()``, the widget and the magic use it.

    ``model_id``: the remote's id (default: the first model the remote lists). ``name``: the id
    it gets here (default: ``model_id``; give another when a local model has that id). ``api``:
    ``"llama-stack"``, or ``"openai"`` for an OpenAI-completions server, whose dialect (vLLM,
    llama.cpp, ...) is then detected; ``"llama.cpp"`` or ``"vllm"`` name it. ``check`` lists the
    remote's models first, so a wrong id or an unreachable server fails now. ``timeout``: seconds
    the remote may stay silent before the request fails with a 502.

    >>> register_remote("http://gpu-box:8321", "meta-llama/Llama-3.2-3B-Instruct")  # doctest: +SKIP
    >>> register_remote("http://localhost:8080", api="openai")                       # doctest: +SKIP
    """
    if api not in APIS:
        raise ValueError(f"api must be one of {', '.join(repr(a) for a in APIS)}, got {api!r}")
    context_length = None
    listing = None
    if check or model_id is None:
        listing = _list_models(base_url, api_key, min(timeout, 10.0))
        listed = _entries(listing)
        ids = [e["identifier"] for e in listed]
        if model_id is None:
            if not ids:
                raise CompletionError(404, f"the remote at {base_url} lists no models")
            model_id = ids[0]
        if model_id not in ids:
            raise CompletionError(
                404, f"model_id: the remote at {base_url} has no model '{model_id}'. Available models: {', '.join(ids)}"
            )
        context_length = _context_length(listed[ids.index(model_id)])
    backend = RemoteBackend(base_url, model_id, api, api_key, name, timeout, context_length)
    if api != "llama-stack" and listing is not None:  # else at the first request
        backend.dialect = detect(backend.client, listing, name=None if api == "openai" else api)
        backend._note_dialect()
    registry.register(backend)
    return backend
