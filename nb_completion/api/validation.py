"""Turn user input into a valid ``CompletionRequest`` or a ``BadRequest`` naming the field."""

from __future__ import annotations

import inspect
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import BadRequest
from .types import (
    CompletionRequest,
    GrammarResponseFormat,
    TopKSamplingStrategy,
    TopPSamplingStrategy,
)

MAX_STOP_STRINGS = 4
MAX_LOGPROBS_TOP_K = 20
GRAMMAR_KEYS = ("gbnf", "lark", "regex")


def _field_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item == "str" or "tagged-union" in item or item.startswith(("function-", "list[")):
            continue  # pydantic's union-branch labels are noise to a user
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def from_validation_error(exc: ValidationError) -> BadRequest:
    """The first, most specific pydantic error as a 400 that names its field."""
    errors = exc.errors(include_url=False)
    # Prefer errors that are not union-branch mismatches of `content`.
    errors.sort(key=lambda e: (e["type"] in {"string_type", "model_type"}, -len(e["loc"])))
    first = errors[0]
    field = _field_path(tuple(first["loc"]))
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field (the request schema allows no additional properties)"
    elif first["type"] == "missing":
        message = "field required"
    elif first["type"] == "union_tag_invalid":
        message = first["msg"]
    return BadRequest(field or "request", message)


def schema_from(value: Any) -> dict:
    """A JSON Schema from a dict, a JSON string, or a pydantic model class or instance."""
    if inspect.isclass(value) and issubclass(value, BaseModel):
        return value.model_json_schema()
    if isinstance(value, BaseModel):
        return type(value).model_json_schema()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRequest("response_format.json_schema", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("response_format.json_schema", "must be a JSON object or a pydantic model")
    return value


def normalise_response_format(value: Any) -> Any:
    """Accept a pydantic model class wherever a JSON Schema is accepted."""
    if inspect.isclass(value) and issubclass(value, BaseModel):
        return {"type": "json_schema", "json_schema": value.model_json_schema()}
    if isinstance(value, dict) and value.get("type") == "json_schema":
        inner = value.get("json_schema")
        if inspect.isclass(inner) and issubclass(inner, BaseModel):
            return {**value, "json_schema": inner.model_json_schema()}
    return value


def check(request: CompletionRequest) -> CompletionRequest:
    """Bounds the schema cannot express; see shared/spec/README.md."""
    params = request.sampling_params
    if params is not None:
        strategy = params.strategy
        if isinstance(strategy, TopPSamplingStrategy):
            if strategy.temperature is not None and not strategy.temperature > 0:
                raise BadRequest("sampling_params.strategy.temperature", f"must be > 0, got {strategy.temperature}")
            if strategy.top_p is not None and not 0 < strategy.top_p <= 1:
                raise BadRequest("sampling_params.strategy.top_p", f"must be in (0, 1], got {strategy.top_p}")
        if isinstance(strategy, TopKSamplingStrategy) and strategy.top_k < 1:
            raise BadRequest("sampling_params.strategy.top_k", f"must be >= 1, got {strategy.top_k}")
        if params.max_tokens is not None and params.max_tokens < 0:
            raise BadRequest("sampling_params.max_tokens", f"must be >= 0, got {params.max_tokens}")
        if params.repetition_penalty is not None and not params.repetition_penalty > 0:
            raise BadRequest(
                "sampling_params.repetition_penalty",
                f"must be > 0 (multiplicative; 1.0 is off), got {params.repetition_penalty}",
            )
        if params.stop is not None:
            if len(params.stop) > MAX_STOP_STRINGS:
                raise BadRequest("sampling_params.stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(params.stop)}")
            if any(s == "" for s in params.stop):
                raise BadRequest("sampling_params.stop", "stop strings must not be empty")
    if request.logprobs is not None and request.logprobs.top_k is not None:
        if not 0 <= request.logprobs.top_k <= MAX_LOGPROBS_TOP_K:
            raise BadRequest("logprobs.top_k", f"must be in [0, {MAX_LOGPROBS_TOP_K}], got {request.logprobs.top_k}")
    if isinstance(request.response_format, GrammarResponseFormat):
        grammar_key(request.response_format)
    return request


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
        raise from_validation_error(exc) from None
    return check(request)
