"""A model served elsewhere, as a ``Backend``: a llama-stack 0.2.x server (``POST
/v1/inference/completion``) or an OpenAI-compatible one such as vLLM (``POST /v1/completions``).

``register_remote(base_url, model_id=...)`` registers it, so ``complete()``, the widget and the
magic use it like a local model. It always streams from the remote (server-sent events over
httpx) and turns each remote chunk into ``Delta``/``Finished`` events.

What a remote cannot tell us (token ids, ranks outside the reported top-k, the entropy) and
what the records hold instead: see ``remote_records``.

A remote error body (the spec's ``Error``, or OpenAI's ``{"error": {"message": ...}}``) becomes a
``CompletionError`` with the same status, title and detail; an unreachable remote is a 502.
Setting ``cancel`` closes the connection (so the remote stops too) within one token.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import replace
from typing import Any, Iterator, Literal

import httpx

from ..api.errors import BadRequest, CompletionError
from ..api.types import CompletionRequest, ImageContentItem, SamplingParams, TextContentItem
from . import registry
from .backend import Event
from .records import Delta, Finished, ModelInfo
from .remote_records import make_record, openai_chosen, split_delta, sse_data

Api = Literal["llama-stack", "openai"]
PATHS = {"llama-stack": "/v1/inference/completion", "openai": "/v1/completions"}
_OPENAI_FINISH = {"stop": "end_of_turn", "length": "out_of_tokens", "eos": "end_of_turn"}


# ---- remote errors --------------------------------------------------------------------------


def error_from(body: Any, status: int) -> CompletionError:
    """A remote error body as a ``CompletionError`` with the same status, title and detail."""
    inner = body.get("error") if isinstance(body, dict) else None
    for candidate in (body, inner):
        if isinstance(candidate, dict) and isinstance(candidate.get("detail"), str):
            return CompletionError(int(candidate.get("status") or status), candidate["detail"], candidate.get("title"))
    if isinstance(inner, dict) and inner.get("message"):
        code = inner.get("code")
        return CompletionError(code if isinstance(code, int) and 400 <= code < 600 else status, str(inner["message"]))
    if isinstance(body, dict) and isinstance(body.get("detail"), (list, dict)):  # FastAPI's 422
        return CompletionError(status, json.dumps(body["detail"]))
    return CompletionError(status, f"the remote answered {status}: {str(body)[:500]}")


def _error_of_response(response: httpx.Response) -> CompletionError:
    body: Any = ""
    try:
        response.read()
        body = response.json()
    except Exception:
        body = response.text if response.is_stream_consumed else ""
    return error_from(body, response.status_code)


# ---- request bodies ---------------------------------------------------------------------------


def _text(content: Any, model_id: str) -> str:
    items = content if isinstance(content, list) else [content]
    parts = []
    for item in items:
        if isinstance(item, ImageContentItem):
            raise BadRequest("content", f"model '{model_id}' is served through an OpenAI completions route, which takes text only")
        parts.append(item.text if isinstance(item, TextContentItem) else item)
    return "".join(parts)


def llama_stack_body(request: CompletionRequest, remote_id: str, top_k: int) -> dict:
    body = request.model_dump(mode="json", exclude_none=True)
    body.update(model_id=remote_id, stream=True, logprobs={"top_k": top_k})
    return body


def openai_body(request: CompletionRequest, remote_id: str, top_k: int, seed: int | None) -> dict:
    params = request.sampling_params or SamplingParams()
    strategy = params.strategy
    body: dict[str, Any] = {
        "model": remote_id,
        "prompt": _text(request.content, request.model_id),
        "max_tokens": params.max_tokens or None,  # 0 (until the end) is null, as vLLM reads it
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": top_k,
    }
    if strategy.type == "greedy":
        body["temperature"] = 0.0
    elif strategy.type == "top_p":
        body["temperature"] = 1.0 if strategy.temperature is None else strategy.temperature
        body["top_p"] = 0.95 if strategy.top_p is None else strategy.top_p
    else:
        body.update(temperature=1.0, top_k=strategy.top_k)
    if params.repetition_penalty not in (None, 1.0):
        body["repetition_penalty"] = params.repetition_penalty
    if params.stop:
        body["stop"] = params.stop
    if seed is not None:
        body["seed"] = seed
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema":
        body["guided_json"] = fmt.json_schema
    elif fmt is not None:
        kind, text = next(iter(fmt.bnf.items()))
        if kind == "lark":
            raise BadRequest("response_format.bnf", "an OpenAI-compatible remote takes 'gbnf' or 'regex' grammars, not 'lark'")
        body["guided_regex" if kind == "regex" else "guided_grammar"] = text
    return body


# ---- the stream ---------------------------------------------------------------------------------


class _Tally:
    """What the stream has delivered so far, for ``Finished``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.tokens = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def saw_output(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def finished(self, stop_reason: str, metrics: dict[str, float], cancelled: bool = False) -> Finished:
        completion = int(metrics.get("completion_tokens", self.tokens))
        ttft = metrics.get("time_to_first_token", None if self.first is None else self.first - self.start)
        tps = metrics.get("tokens_per_second")
        if tps is None and self.first is not None and completion:
            tps = completion / max(time.perf_counter() - self.first, 1e-9)
        return Finished(stop_reason, int(metrics.get("prompt_tokens", 0)), completion, ttft, tps, cancelled)


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


class RemoteBackend:
    def __init__(self, base_url: str, model_id: str, api: Api = "llama-stack", api_key: str | None = None,
                 name: str | None = None, timeout: float = 300.0, context_length: int | None = None):
        if api not in PATHS:
            raise ValueError(f"api must be 'llama-stack' or 'openai', got {api!r}")
        self.base_url = base_url.rstrip("/")
        self.remote_id = model_id
        self.api = api
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))
        self.info = ModelInfo(
            identifier=name or model_id,
            provider_id=f"remote:{api}",
            provider_resource_id=model_id,
            metadata={"base_url": self.base_url, "api": api, "remote_model_id": model_id},
            context_length=context_length,
            loaded=True,
        )

    def open(self, request: CompletionRequest, *, seed: int | None = None,
             cancel: threading.Event | None = None) -> Iterator[Event]:
        top_k = 0 if request.logprobs is None else (request.logprobs.top_k or 0)
        if self.api == "openai":
            body = openai_body(request, self.remote_id, top_k, seed)
        else:
            body = llama_stack_body(request, self.remote_id, top_k)
        tally = _Tally()
        outgoing = self.client.build_request("POST", PATHS[self.api], json=body, headers={"Accept": "text/event-stream"})
        # The HTTP exchange runs in a pump thread, so that a cancel is seen at once even while the
        # remote is silent (queued behind other requests, or slow per token): the caller gets its
        # cancelled Finished right away and the pump drops the connection at its next chance.
        channel: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        threading.Thread(target=self._pump, args=(outgoing, top_k, tally, channel, stop), daemon=True,
                         name=f"nb-completion-remote:{self.info.identifier}").start()
        first = _take(channel, cancel)
        if first is _CANCELLED:
            stop.set()
            return iter([tally.finished("out_of_tokens", {"prompt_tokens": 0, "completion_tokens": 0}, cancelled=True)])
        if isinstance(first, BaseException):
            raise first
        return RemoteStream(self._drain(channel, cancel, stop, tally), stop)

    def _drain(self, channel: "queue.Queue[Any]", cancel: threading.Event | None, stop: threading.Event,
               tally: _Tally) -> Iterator[Event]:
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

    def _pump(self, outgoing: httpx.Request, top_k: int, tally: _Tally, channel: "queue.Queue[Any]",
              stop: threading.Event) -> None:
        """Send the request and put ``_OPENED`` (or the error), then each event, on ``channel``.
        Whatever happens, the last item put is a ``Finished`` or an exception: never silence."""
        try:
            response = self.client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            channel.put(CompletionError(502, f"could not reach the remote at {self.base_url}: {type(exc).__name__}: {exc}", "Bad Gateway"))
            return
        except BaseException as exc:  # pragma: no cover - a bug here must not hang the caller
            channel.put(CompletionError(502, f"the request to the remote failed: {type(exc).__name__}: {exc}", "Bad Gateway"))
            return
        try:
            if stop.is_set():
                return
            if response.status_code >= 400:
                channel.put(_error_of_response(response))
                return
            channel.put(_OPENED)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                events = self._whole(response, top_k, tally)
            else:
                parse = self._openai_events if self.api == "openai" else self._llama_events
                events = parse(sse_data(response.iter_lines()), top_k, tally)
            for event in events:
                if stop.is_set():
                    return  # closing the response drops the connection: the remote sees it and stops
                channel.put(event)
                if isinstance(event, Finished):
                    return
            channel.put(CompletionError(502, "the remote stream ended without a stop reason", "Bad Gateway"))
        except CompletionError as exc:
            channel.put(exc)
        except httpx.HTTPError as exc:
            channel.put(CompletionError(502, f"the remote stream broke: {type(exc).__name__}: {exc}", "Bad Gateway"))
        except BaseException as exc:  # an unreadable chunk: report it, never hang the caller
            channel.put(CompletionError(502, f"the remote sent an unreadable stream: {type(exc).__name__}: {exc}", "Bad Gateway"))
        finally:
            response.close()

    # Each parser yields Delta events and ends with Finished.

    def _llama_events(self, datas: Iterator[str], top_k: int, tally: _Tally) -> Iterator[Event]:
        for data in datas:
            chunk = json.loads(data)
            if "error" in chunk:
                raise error_from(chunk["error"], 500)
            yield from self._delta(chunk.get("delta", ""), [e.get("logprobs_by_token", {}) for e in chunk.get("logprobs") or []], top_k, tally)
            if chunk.get("stop_reason"):
                metrics = {m["metric"]: m["value"] for m in chunk.get("metrics") or []}
                yield tally.finished(chunk["stop_reason"], metrics)

    def _delta(self, text: str, reported: list[dict[str, float]], top_k: int, tally: _Tally) -> Iterator[Event]:
        if not text and not reported:
            return
        tally.saw_output()
        shares = split_delta(text, reported) if reported else []
        records = []
        for alternatives, (share, chosen) in zip(reported, shares):
            records.append(make_record(tally.tokens, share, chosen, alternatives, top_k, tally.elapsed()))
            tally.tokens += 1
        yield Delta(text, tuple(records))

    def _openai_events(self, datas: Iterator[str], top_k: int, tally: _Tally) -> Iterator[Event]:
        finish: str | None = None
        usage: dict = {}
        for data in datas:
            if data.strip() == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk and not chunk.get("choices"):
                raise error_from(chunk, 500)
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                text = choice.get("text") or ""
                block = choice.get("logprobs") or {}
                tokens = block.get("tokens") or []
                if text or tokens:
                    tally.saw_output()
                    records = []
                    for i, token_text in enumerate(tokens):
                        top = (block.get("top_logprobs") or [None] * len(tokens))[i] or {}
                        chosen_lp = (block.get("token_logprobs") or [None] * len(tokens))[i]
                        reported = dict(top)
                        if top_k == 0 and chosen_lp is not None:
                            reported = {token_text: chosen_lp}
                        record = make_record(tally.tokens, token_text, openai_chosen(token_text, chosen_lp, reported),
                                             reported, top_k, tally.elapsed())
                        if chosen_lp is not None and top_k > 0:  # OpenAI gives the chosen token's own logprob
                            record = replace(record, logprob=chosen_lp)
                        records.append(record)
                        tally.tokens += 1
                    yield Delta(text, tuple(records))
                finish = choice.get("finish_reason") or finish
        if finish is None:
            raise CompletionError(502, "the remote stream ended without a finish reason", "Bad Gateway")
        yield tally.finished(_OPENAI_FINISH.get(finish, "end_of_turn"), dict(usage))

    def _whole(self, response: httpx.Response, top_k: int, tally: _Tally) -> Iterator[Event]:
        """A remote that answered with one JSON body instead of a stream."""
        response.read()
        body = response.json()
        if self.api == "openai":
            yield from self._openai_events(iter([json.dumps(body)]), top_k, tally)
            return
        yield from self._delta(body.get("content", ""), [e.get("logprobs_by_token", {}) for e in body.get("logprobs") or []], top_k, tally)
        metrics = {m["metric"]: m["value"] for m in body.get("metrics") or []}
        yield tally.finished(body.get("stop_reason") or "end_of_turn", metrics)


def remote_models(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> list[dict]:
    """``GET /v1/models`` of a remote: each entry with at least ``identifier``."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(base_url.rstrip("/") + "/v1/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CompletionError(502, f"could not reach the remote at {base_url}: {type(exc).__name__}: {exc}", "Bad Gateway") from None
    if response.status_code >= 400:
        raise _error_of_response(response)
    entries = response.json().get("data") or []
    return [{**e, "identifier": e.get("identifier") or e.get("id")} for e in entries if e.get("model_type", "llm") == "llm"]


def register_remote(base_url: str, model_id: str | None = None, api: Api = "llama-stack", api_key: str | None = None,
                    name: str | None = None, timeout: float = 300.0, check: bool = True) -> RemoteBackend:
    """Register a model served at ``base_url`` so ``complete()``, the widget and the magic use it.

    ``model_id``: the remote's id (default: the first model the remote lists). ``name``: the id
    it gets here (default: ``model_id``; give another when a local model has that id). ``api``:
    ``"llama-stack"`` or ``"openai"`` (vLLM and other OpenAI-compatible servers). ``check``
    lists the remote's models first, so a wrong id or an unreachable server fails now.

    >>> register_remote("http://gpu-box:8321", "meta-llama/Llama-3.2-3B-Instruct")  # doctest: +SKIP
    """
    context_length = None
    if check or model_id is None:
        listed = remote_models(base_url, api_key)
        ids = [e["identifier"] for e in listed]
        if model_id is None:
            if not ids:
                raise CompletionError(404, f"the remote at {base_url} lists no models")
            model_id = ids[0]
        if model_id not in ids:
            raise CompletionError(404, f"model_id: the remote at {base_url} has no model '{model_id}'. Available models: {', '.join(ids)}")
        entry = listed[ids.index(model_id)]
        context_length = (entry.get("metadata") or {}).get("context_length") or entry.get("max_model_len")
    backend = RemoteBackend(base_url, model_id, api, api_key, name, timeout, context_length)
    registry.register(backend)
    return backend
