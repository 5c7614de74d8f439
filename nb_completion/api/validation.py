"""Turn user input into a valid ``CompletionRequest`` or a ``BadRequest`` naming the field."""

from __future__ import annotations

import numbers

import inspect
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import BadRequest
from .shorthand import response_format_from, schema_from
from .types import (
    CompletionRequest,
    GrammarResponseFormat,
    TextContentItem,
    TopKSamplingStrategy,
    TopPSamplingStrategy,
)

from .bounds import (  # noqa: F401 - MAX_* re-exported: the widget reads them here
    BOUNDS,
    MAX_LOGPROBS_TOP_K,
    MAX_STOP_STRINGS,
    MIN_TEMPERATURE,
    REPETITION_PENALTY_RANGE,
    SEED_RANGE,
)

GRAMMAR_KEYS = ("gbnf", "lark", "regex")


def lone_surrogate(text: str) -> int | None:
    """The index of the first lone UTF-16 surrogate in ``text`` (JSON's ``"\\ud800"`` decodes to
    one; it is not Unicode text and no tokenizer can encode it), else ``None``."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_text(value: Any, field: str) -> None:
    """A 400 naming the field (``content``, ``content[2].text``, ``stop[0]``...) of the first
    string inside ``value`` (strings, lists, dicts and their keys) that holds a lone surrogate."""
    if isinstance(value, str):
        at = lone_surrogate(value)
        if at is not None:
            raise BadRequest(
                field or "request", f"holds a lone UTF-16 surrogate {value[at]!r} at index {at} (not valid Unicode text)"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, field)
            check_text(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_text(item, f"{field}[{index}]")


def check_seed(seed: Any, field: str = "seed") -> int | None:
    """``seed`` as an int in the range the sampler takes, or a 400 naming ``field``."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):  # numpy ints are integers
        raise BadRequest(field, f"must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    low, high = SEED_RANGE
    if not low <= seed <= high:
        raise BadRequest(field, f"must be in [-2**63, 2**64 - 1], got {seed}")
    return seed


def check_cancel(cancel: Any, field: str = "cancel") -> Any:
    """``cancel`` as given when it is a ``threading.Event`` or behaves like one (``is_set()`` and
    ``set()``: the engine reads it and sets it when the stream closes), or a 400 naming ``field``."""
    if cancel is None:
        return None
    if not (callable(getattr(cancel, "is_set", None)) and callable(getattr(cancel, "set", None))):
        raise BadRequest(field, f"must be a threading.Event (an object with is_set() and set()), got {type(cancel).__name__}")
    return cancel


def check_flag(value: Any, field: str) -> bool:
    """A keyword that must be a real ``bool`` (``chat``, ``stream``), or a 400 naming ``field``."""
    if not isinstance(value, bool):
        raise BadRequest(field, f"must be True or False, got {type(value).__name__}")
    return value


def _field_path(loc: tuple, data: Any = None) -> tuple[str, int]:
    """pydantic's error location as the request's field path, walking the input alongside so that
    a discriminated union's tag (``strategy.top_p.temperature``) and union-branch labels
    (``content.str``) are left out: they name a type, not a field the user sent. Also returns how
    many steps of the path exist in the input (the error's depth into what was sent)."""
    parts: list[str] = []
    node = data
    depth = 0
    tag_seen: Any = None
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            if isinstance(node, list) and -len(node) <= item < len(node):
                node, depth = node[item], depth + 1
            else:
                node = None
            continue
        if isinstance(node, dict) and node.get("type") == item and tag_seen is not node:
            tag_seen = node
            continue  # the tag pydantic adds for the union member it chose (before its fields)
        if isinstance(node, dict) and item in node:
            parts.append(("." if parts else "") + str(item))
            node, depth = node[item], depth + 1
            continue
        if item == "str" or "tagged-union" in item or item.startswith(("function-", "list[")):
            continue  # pydantic's union-branch labels are noise to a user
        if not isinstance(node, dict) and item in _BRANCH_LABELS:
            continue  # a union member's label where the input was not an object
        parts.append(("." if parts else "") + str(item))
        node = None
    return "".join(parts), depth


_BRANCH_LABELS = {"ImageContentItem", "TextContentItem", "image", "text", "greedy", "top_p", "top_k", "json_schema", "grammar"}
_BRANCH_MISMATCHES = {"string_type", "model_type", "list_type", "dict_type", "model_attributes_type"}


def from_validation_error(exc: ValidationError, data: Any = None) -> BadRequest:
    """The most specific pydantic error as a 400 that names its field: the one reaching deepest
    into what was sent (for ``content: [{"type": "text", "text": 5}]`` that is ``content[0].text``,
    not the ``content`` union's other branches), then one that is not a union-branch mismatch."""
    errors = exc.errors(include_url=False)
    located = [(error, *_field_path(tuple(error["loc"]), data)) for error in errors]
    located.sort(key=lambda e: (-e[2], e[0]["type"] in _BRANCH_MISMATCHES, -len(e[0]["loc"])))
    first, field, _ = located[0]
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field (the request schema allows no additional properties)"
    elif first["type"] == "missing":
        message = "field required"
    return BadRequest(field or "request", message)


def normalise_response_format(value: Any) -> Any:
    """Accept a pydantic model class wherever a JSON Schema is accepted."""
    if inspect.isclass(value) and issubclass(value, BaseModel):
        return response_format_from(json_schema=value)
    if isinstance(value, dict) and value.get("type") == "json_schema":
        inner = value.get("json_schema")
        if inspect.isclass(inner) and issubclass(inner, BaseModel):
            return {**value, "json_schema": schema_from(inner)}
    return value


def check(request: CompletionRequest) -> CompletionRequest:
    """Bounds the schema cannot express; see shared/spec/README.md."""
    params = request.sampling_params
    if params is not None:
        strategy = params.strategy
        if isinstance(strategy, TopPSamplingStrategy):
            if strategy.temperature is not None and not BOUNDS["temperature"].holds(strategy.temperature):
                raise BadRequest(
                    "sampling_params.strategy.temperature", f"{BOUNDS['temperature'].text}, got {strategy.temperature}"
                )
            if strategy.temperature is not None and strategy.temperature < MIN_TEMPERATURE:
                raise BadRequest(
                    "sampling_params.strategy.temperature",
                    f"must be >= {MIN_TEMPERATURE:g} (lower overflows the logits; use the greedy strategy), got {strategy.temperature}",
                )
            if strategy.top_p is not None and not BOUNDS["top_p"].holds(strategy.top_p):
                raise BadRequest("sampling_params.strategy.top_p", f"{BOUNDS['top_p'].text}, got {strategy.top_p}")
        if isinstance(strategy, TopKSamplingStrategy) and not BOUNDS["top_k"].holds(strategy.top_k):
            raise BadRequest("sampling_params.strategy.top_k", f"{BOUNDS['top_k'].text}, got {strategy.top_k}")
        if params.max_tokens is not None and not BOUNDS["max_tokens"].holds(params.max_tokens):
            raise BadRequest("sampling_params.max_tokens", f"{BOUNDS['max_tokens'].text}, got {params.max_tokens}")
        penalty = params.repetition_penalty
        if penalty is not None and not BOUNDS["repetition_penalty"].holds(penalty):
            raise BadRequest(
                "sampling_params.repetition_penalty",
                f"{BOUNDS['repetition_penalty'].text} (multiplicative; 1.0 is off), got {penalty}",
            )
        low, high = REPETITION_PENALTY_RANGE
        if penalty is not None and not low <= penalty <= high:
            raise BadRequest(
                "sampling_params.repetition_penalty",
                f"must be in [{low:g}, {high:g}] (beyond, it overflows the logits; 1.0 is off), got {penalty}",
            )
        if params.stop is not None:
            if len(params.stop) > MAX_STOP_STRINGS:
                raise BadRequest("sampling_params.stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(params.stop)}")
            if any(s == "" for s in params.stop):
                raise BadRequest("sampling_params.stop", "stop strings must not be empty")
            check_text(params.stop, "sampling_params.stop")
    if request.logprobs is not None and request.logprobs.top_k is not None:
        if not BOUNDS["logprobs_top_k"].holds(request.logprobs.top_k):
            raise BadRequest("logprobs.top_k", f"{BOUNDS['logprobs_top_k'].text}, got {request.logprobs.top_k}")
    if isinstance(request.response_format, GrammarResponseFormat):
        grammar_key(request.response_format)
    check_text(request.model_id, "model_id")
    check_text(_texts(request.content), "content")
    if request.response_format is not None:
        fmt = request.response_format
        check_text(
            fmt.bnf if isinstance(fmt, GrammarResponseFormat) else fmt.json_schema,
            "response_format.bnf" if isinstance(fmt, GrammarResponseFormat) else "response_format.json_schema",
        )
    return request


def _texts(content: Any) -> Any:
    """The strings of ``content``, shaped so that ``check_text`` names ``content[i].text``."""
    if isinstance(content, list):
        return [{"text": item.text} if isinstance(item, TextContentItem) else None for item in content]
    if isinstance(content, TextContentItem):
        return {"text": content.text}
    return content


def grammar_key(fmt: GrammarResponseFormat) -> str:
    """The one syntax key of ``bnf`` (gbnf | lark | regex), or a 400 naming the accepted keys."""
    keys = list(fmt.bnf)
    if len(keys) != 1 or keys[0] not in GRAMMAR_KEYS or not isinstance(fmt.bnf[keys[0]], str):
        raise BadRequest(
            "response_format.bnf",
            f"must hold exactly one of {', '.join(repr(k) for k in GRAMMAR_KEYS)} with the grammar text; got keys {keys}",
        )
    return keys[0]


def parse_request(data: Any) -> CompletionRequest:
    """A request body (dict or ``CompletionRequest``) checked against the contract."""
    if isinstance(data, CompletionRequest):
        return check(data)
    if not isinstance(data, dict):
        raise BadRequest("request", f"the request body must be a JSON object, got {type(data).__name__}")
    if isinstance(data.get("response_format"), (dict, type)):
        data = {**data, "response_format": normalise_response_format(data["response_format"])}
    try:
        request = CompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, data) from None
    return check(request)
