"""OpenAI-compatible ``POST /v1/completions``: the legacy completions shapes over the same engine.

Request: ``model``, ``prompt`` (a string, or a list holding one string), ``max_tokens`` (absent:
16 as OpenAI; ``null``: until an end token or the context is full, as vLLM), ``temperature``
(default 1; 0 is greedy), ``top_p`` (default 1), ``stop`` (a string or up to 4), ``logprobs``
(an int, 0-20), ``stream`` (always SSE), ``stream_options.include_usage``, ``seed``; and vLLM's extensions
``top_k``, ``repetition_penalty``, ``guided_json``, ``guided_regex``, ``guided_grammar`` (GBNF).
``echo`` with ``logprobs`` returns the prompt's tokens first, scored as OpenAI does (the first
token's logprob is ``null``; ``max_tokens: 0`` then only scores, generating nothing).
``prompt`` may also be a list of strings, a list of token ids or a list of lists of them (a
choice each, ``index = prompt * n + j``); ``n`` and ``best_of`` (up to 16; the best by mean
logprob); ``logit_bias``, ``presence_penalty`` and ``frequency_penalty`` (OpenAI's additive
definitions, on the generated tokens); up to 16 ``stop`` strings; ``max_tokens: 0`` generates
nothing. ``suffix`` is accepted only empty; any other field is a 400 naming it.

Errors carry the spec's ``Error`` fields and, for OpenAI clients, ``error.message``/``type``/
``param``/``code``; they name this route's fields (``guided_json``, ``max_tokens``), never the
llama-stack request it is translated into. A ``temperature`` below 1e-6 samples as greedy (as 0
does). Log-probabilities that are not finite are sent as -9999.0 (OpenAI's floor).
"""

from __future__ import annotations

import math
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from ..api.errors import BadRequest, CompletionError, ModelNotFound
from ..api.shorthand import response_format_from
from ..api.types import CompletionRequest
from ..api.bounds import BOUNDS, MIN_TEMPERATURE, OPENAI_MAX_TOKENS
from ..api.validation import check_seed, check_text, parse_request
from ..engine.fold import Metrics, fold
from ..engine.records import Delta, Finished, TokenRecord
from ..service import spelled

DEFAULT_MAX_TOKENS = OPENAI_MAX_TOKENS
FLOOR = -9999.0

_NEUTRAL = {
    "n": None,  # checked by _choices
    "best_of": None,
    "suffix": (None, ""),
    "frequency_penalty": None,  # checked by _adjust
    "presence_penalty": None,
    "user": None,  # any value: informational
    "logit_bias": None,
}
_FIELDS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "logprobs",
    "stream",
    "stream_options",
    "seed",
    "top_k",
    "repetition_penalty",
    "guided_json",
    "guided_regex",
    "guided_grammar",
    "echo",
    *_NEUTRAL,
}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


def _number(body: dict, name: str, default: float | None) -> float | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(name, f"must be a finite number, got {value!r}")
    return float(value)


def _integer(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadRequest(name, f"must be an integer, got {value!r}")
    return value


MAX_PROMPTS = 64  # prompts in one request (lm-eval batches a few)
MAX_CHOICES = 16  # n and best_of
MAX_STOPS = 16  # OpenAI allows 4; vLLM more, and lm-eval adds its end string to a task's own 4


def _prompts(body: dict) -> list:
    """The prompts: a string, a list of strings, a list of token ids, or a list of lists of ids."""
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt:
        prompts = prompt
    else:
        raise BadRequest("prompt", "must be a string, a list of strings, a list of token ids or a list of lists of token ids")
    if len(prompts) > MAX_PROMPTS:
        raise BadRequest("prompt", f"at most {MAX_PROMPTS} prompts in one request, got {len(prompts)}")
    for i, item in enumerate(prompts):
        if isinstance(item, str):
            continue
        if not isinstance(item, list) or not item:
            raise BadRequest(f"prompt[{i}]", "must be a string or a non-empty list of token ids")
        bad = next((t for t in item if isinstance(t, bool) or not isinstance(t, int) or t < 0), None)
        if bad is not None:
            raise BadRequest(f"prompt[{i}]", f"token ids must be integers >= 0, got {bad!r}")
    return prompts


def _choices(body: dict, stream: bool) -> tuple[int, int]:
    """``n`` and ``best_of`` (how many are generated per prompt; the n best are returned)."""
    n = _integer(body, "n")
    n = 1 if n is None else n
    if not 1 <= n <= MAX_CHOICES:
        raise BadRequest("n", f"must be in [1, {MAX_CHOICES}], got {n}")
    best_of = _integer(body, "best_of")
    best_of = n if best_of is None else best_of
    if not n <= best_of <= MAX_CHOICES:
        raise BadRequest("best_of", f"must be in [n, {MAX_CHOICES}] (n is {n}), got {best_of}")
    if stream and best_of > n:
        raise BadRequest("best_of", "cannot be combined with stream (the best are known only at the end)")
    return n, best_of


def _adjust(body: dict) -> dict | None:
    """OpenAI's ``logit_bias`` ({token id: -100..100}) and additive ``presence_penalty`` /
    ``frequency_penalty`` (-2..2), as ``RowParams`` fields; None when all are neutral."""
    adjust: dict[str, Any] = {}
    for name in ("presence_penalty", "frequency_penalty"):
        value = _number(body, name, 0.0)
        if not -2.0 <= value <= 2.0:
            raise BadRequest(name, f"must be in [-2, 2], got {value}")
        if value:
            adjust[name] = value
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise BadRequest("logit_bias", "must be an object mapping token ids to numbers")
        parsed: dict[int, float] = {}
        for key, value in bias.items():
            if not (isinstance(key, str) and key.isdigit()) and not (isinstance(key, int) and key >= 0):
                raise BadRequest("logit_bias", f"keys are token ids (integers >= 0), got {key!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
                raise BadRequest("logit_bias", f"values are numbers in [-100, 100], got {value!r} for {key!r}")
            parsed[int(key)] = float(value)
        if len(parsed) > 300:
            raise BadRequest("logit_bias", f"at most 300 token ids, got {len(parsed)}")
        if parsed:
            adjust["logit_bias"] = parsed
    return adjust or None


def _stops(body: dict) -> list[str] | None:
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise BadRequest("stop", "must be a string or a list of strings")
    if stop and len(stop) > MAX_STOPS:
        raise BadRequest("stop", f"at most {MAX_STOPS} stop strings, got {len(stop)}")
    if stop and any(s == "" for s in stop):
        raise BadRequest("stop", "stop strings must not be empty")
    return stop or None


def _strategy(body: dict) -> dict:
    temperature = _number(body, "temperature", 1.0)
    top_p = _number(body, "top_p", 1.0)
    top_k = _integer(body, "top_k")
    if temperature < 0:
        raise BadRequest("temperature", f"must be >= 0, got {temperature}")
    if not BOUNDS["top_p"].holds(top_p):
        raise BadRequest("top_p", f"{BOUNDS['top_p'].text}, got {top_p}")
    if temperature < MIN_TEMPERATURE:  # 0, or so cold that it is greedy in all but name
        return {"type": "greedy"}
    if top_k is not None and top_k > 0:
        if temperature != 1.0 or top_p != 1.0:
            raise BadRequest("top_k", "can only be combined with temperature 1 and top_p 1 (or temperature 0 for greedy)")
        return {"type": "top_k", "top_k": top_k}
    if top_k is not None and top_k not in (0, -1):
        raise BadRequest("top_k", f"must be >= 1, or 0 / -1 for off; got {top_k}")
    return {"type": "top_p", "temperature": temperature, "top_p": top_p}


def _response_format(body: dict) -> dict | None:
    given = [k for k in ("guided_json", "guided_regex", "guided_grammar") if body.get(k) is not None]
    if len(given) > 1:
        raise BadRequest(given[1], f"only one of guided_json, guided_regex, guided_grammar; got {', '.join(given)}")
    if not given:
        return None
    key, value = given[0], body[given[0]]
    if key == "guided_json":  # as sent: parse_request names a non-object guided_json
        return {"type": "json_schema", "json_schema": value}
    if not isinstance(value, str):
        raise BadRequest(key, "must be a string")
    return response_format_from(grammar=value, syntax="regex" if key == "guided_regex" else "gbnf", names=("guided_json", key))


def parse_openai(body: Any) -> tuple[CompletionRequest, dict]:
    """An OpenAI completions body as a ``CompletionRequest`` plus the options shaping the answer."""
    if not isinstance(body, dict):
        raise BadRequest("request", f"the request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(unknown[0], f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    for name in ("model", "prompt"):
        if name not in body:
            raise BadRequest(name, "field required")
    if not isinstance(body["model"], str):
        raise BadRequest("model", "must be a string")
    for name, neutral in _NEUTRAL.items():
        if neutral is not None and name in body and body[name] not in neutral:
            raise BadRequest(name, f"only {neutral[-1]!r} is supported, got {body[name]!r}")
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    max_tokens = 0 if max_tokens is None else max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise BadRequest("max_tokens", f"must be an integer >= 0 (or null: until the end), got {max_tokens!r}")
    stop = _stops(body)
    if isinstance(body.get("logprobs"), bool):  # llama-stack 0.2's client sends a boolean
        body = {**body, "logprobs": 1 if body["logprobs"] else None}
    logprobs = _integer(body, "logprobs")
    if logprobs is not None and not BOUNDS["logprobs_top_k"].holds(logprobs):
        raise BadRequest("logprobs", f"{BOUNDS['logprobs_top_k'].text}, got {logprobs}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise BadRequest("stream", "must be a boolean")
    options = body.get("stream_options")
    options = {} if options is None else options
    if not isinstance(options, dict) or set(options) - {"include_usage", "continuous_usage_stats"}:
        raise BadRequest("stream_options", "only {'include_usage': bool} is supported")
    seed = check_seed(body.get("seed"))
    echo = body.get("echo") or False
    if not isinstance(echo, bool):
        raise BadRequest("echo", "must be a boolean")
    prompts = _prompts(body)
    n, best_of = _choices(body, bool(stream))
    nothing = body.get("max_tokens") == 0  # OpenAI: generate nothing (with echo: only score)
    params: dict[str, Any] = {"strategy": _strategy(body), "max_tokens": 1 if nothing else max_tokens}
    if stop:
        params["stop"] = stop[:4]  # the contract's bound; the rest are added after its checks
    penalty = _number(body, "repetition_penalty", None)
    if penalty is not None:
        params["repetition_penalty"] = penalty
    first = next((p for p in prompts if isinstance(p, str)), "") or " "
    request_body: dict[str, Any] = {"model_id": body["model"], "content": first, "sampling_params": params}
    fmt = _response_format(body)
    if fmt is not None:
        request_body["response_format"] = fmt
    if logprobs is not None:
        request_body["logprobs"] = {"top_k": logprobs}
    with openai_names(body):
        request = parse_request(request_body)
        if stop and len(stop) > 4:
            check_text(stop, "sampling_params.stop")
            sampling = request.sampling_params.model_copy(update={"stop": list(stop)})
            request = request.model_copy(update={"sampling_params": sampling})
    return request, {
        "stream": bool(stream),
        "seed": seed,
        "logprobs": logprobs,
        "include_usage": bool(options.get("include_usage")),
        "echo": echo,
        "nothing": nothing,
        "prompts": prompts,
        "adjust": _adjust(body),
        "n": n,
        "best_of": best_of,
    }


# The llama-stack field each OpenAI field is translated into, most specific first.
_LLAMA_TO_OPENAI = (
    ("sampling_params.strategy.temperature", "temperature"),
    ("sampling_params.strategy.top_p", "top_p"),
    ("sampling_params.strategy.top_k", "top_k"),
    ("sampling_params.strategy", "temperature"),
    ("sampling_params.max_tokens", "max_tokens"),
    ("sampling_params.repetition_penalty", "repetition_penalty"),
    ("sampling_params.stop", "stop"),
    ("logprobs.top_k", "logprobs"),
    ("logprobs", "logprobs"),
    ("model_id", "model"),
    ("content", "prompt"),
)


def openai_field(field: str, body: Any) -> str:
    """The OpenAI request's name for a llama-stack field path (``response_format.json_schema.x``
    -> ``guided_json.x``); other paths unchanged."""
    if field.startswith("response_format") and isinstance(body, dict):
        given = next((k for k in ("guided_json", "guided_regex", "guided_grammar") if body.get(k) is not None), None)
        if given is not None:
            for prefix in (
                "response_format.json_schema",
                "response_format.bnf.regex",
                "response_format.bnf.gbnf",
                "response_format.bnf",
                "response_format",
            ):
                if field == prefix or field.startswith(prefix + ".") or field.startswith(prefix + "["):
                    return given + field[len(prefix) :]
    for ours, theirs in _LLAMA_TO_OPENAI:
        if field == ours or field.startswith(ours + ".") or field.startswith(ours + "["):
            return theirs + field[len(ours) :]
    return field


@contextmanager
def openai_names(body: Any) -> Iterator[None]:
    """Re-raise a ``BadRequest`` naming the OpenAI request's field instead of the translation's."""
    try:
        yield
    except BadRequest as exc:
        renamed = openai_field(exc.field, body)
        if renamed == exc.field:
            raise
        raise BadRequest(renamed, exc.message) from None


def echo_tokens(request: CompletionRequest, cancel: Any = None, ids: Any = None) -> list:
    """The prompt's tokens scored (``scoring.score``; ``ids``: exactly these token ids) for
    ``echo``; blocking (a forward pass), stopped by ``cancel`` (``scoring.ScoringCancelled``)."""
    from ..scoring import _local_backend, score, score_ids

    try:
        if ids is not None:
            return score_ids(_local_backend(request.model_id), ids, cancel=cancel)
        return score(request.content, request.model_id, cancel=cancel).tokens
    except BadRequest as exc:
        raise BadRequest("echo", exc.detail.split(": ", 1)[-1]) from None


def error_body(error: CompletionError) -> dict:
    """The spec's ``Error`` fields plus OpenAI's ``error`` object, so both kinds of client read it."""
    body = error.error.model_dump(exclude_none=True)
    body["error"] = {
        "message": error.detail,
        "type": _ERROR_TYPES.get(error.status, "server_error"),
        "param": getattr(error, "field", None) or ("model" if isinstance(error, ModelNotFound) else None),
        "code": error.status,
    }
    return body


def _finite(value: float) -> float:
    return value if math.isfinite(value) else FLOOR


class OpenAIShaper:
    """Turns the engine's events into OpenAI ``text_completion`` objects (one choice)."""

    def __init__(self, model: str, logprobs: int | None, echo: list | None = None, index: int = 0, id: str | None = None):
        self.echo = echo  # the prompt's scored tokens, sent before the first generated text
        self.index = index  # the choice's index (prompt i, sample j of n: i * n + j)
        self.id = id or f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.n_logprobs = logprobs
        self._offset = 0

    def _frame(self, choices: list, **extra: Any) -> dict:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def _logprobs(self, tokens: Iterable[TokenRecord]) -> dict | None:
        if self.n_logprobs is None:
            return None
        block: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token in tokens:
            pairs = token.top[: self.n_logprobs] if self.n_logprobs > 0 else ((spelled(token), token.logprob),)
            top: dict[str, float] = {}
            for text, logprob in pairs:
                top[text] = max(top.get(text, FLOOR), _finite(logprob))
            block["tokens"].append(spelled(token))
            block["token_logprobs"].append(_finite(token.logprob))
            block["top_logprobs"].append(top)
            block["text_offset"].append(self._offset)
            self._offset += len(token.text)
        return block

    def _echo_block(self) -> tuple[str, dict | None]:
        """The prompt's text and logprobs (first token: null), once; then ("", None)."""
        tokens, self.echo = self.echo, None
        if not tokens:
            return "", None
        text = "".join(t.text for t in tokens)
        if self.n_logprobs is None:
            self._offset += len(text)
            return text, None
        block: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token in tokens:
            top: dict[str, float] | None = None
            if token.logprob is not None:
                top = {}
                for alt, logprob in token.top[: self.n_logprobs] if self.n_logprobs > 0 else ((spelled(token), token.logprob),):
                    top[alt] = max(top.get(alt, FLOOR), _finite(logprob))
            block["tokens"].append(spelled(token))
            block["token_logprobs"].append(None if token.logprob is None else _finite(token.logprob))
            block["top_logprobs"].append(top)
            block["text_offset"].append(self._offset)
            self._offset += len(token.text)
        return text, block

    def _with_echo(self, text: str, tokens: Iterable[TokenRecord]) -> tuple[str, dict | None]:
        """The echoed prompt (once, first) and ``tokens``' logprobs block, offsets running on."""
        echoed, head = self._echo_block() if self.echo is not None else ("", None)
        block = self._logprobs(tokens)
        if head is not None and block is not None:
            block = {key: head[key] + block[key] for key in head}
        return echoed + text, head if block is None else block

    def echo_response(self, prompt_tokens: int) -> dict:
        """``echo`` with ``max_tokens: 0``: the prompt scored, nothing generated."""
        text, block = self._echo_block()
        choice = {"index": self.index, "text": text, "logprobs": block, "finish_reason": "length"}
        return self._frame(
            [choice], usage={"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens}
        )

    @staticmethod
    def finish_reason(finished: Finished) -> str:
        return "length" if finished.stop_reason == "out_of_tokens" else "stop"

    @staticmethod
    def usage(finished: Finished) -> dict:
        return Metrics.of(finished).usage()

    def chunk(self, event: Delta | Finished) -> dict | None:
        """One stream chunk, or ``None`` for an empty delta."""
        if isinstance(event, Delta):
            if not event.text and not event.tokens:
                return None
            text, logprobs = self._with_echo(event.text, event.tokens)
            choice = {"index": self.index, "text": text, "logprobs": logprobs, "finish_reason": None}
            return self._frame([choice])
        end = (event.end_token,) if event.end_token is not None else ()
        text, logprobs = self._with_echo("", end) if self.echo is not None or end else ("", None)
        choice = {"index": self.index, "text": text, "logprobs": logprobs, "finish_reason": self.finish_reason(event)}
        return self._frame([choice])

    def usage_chunk(self, finished: Finished) -> dict:
        return self._frame([], usage=self.usage(finished))

    def response(self, events: Iterable[Delta | Finished]) -> dict:
        from ..service import finished_of

        run = fold(events)
        finished = finished_of(run)
        end = [finished.end_token] if finished.end_token is not None else []
        content, logprobs = self._with_echo(run.text, [*run.tokens, *end])
        choice = {
            "index": self.index,
            "text": content,
            "logprobs": logprobs,
            "finish_reason": self.finish_reason(finished),
        }
        return self._frame([choice], usage=self.usage(finished))
