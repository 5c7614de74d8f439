"""The widget's control values: checks that flag a control before any request is sent, and the
request those values make. Mirrors ``js/src/validate.js`` (the browser checks first; this is the
source of truth for Python-set values and for what is sent).
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any, Mapping

from pydantic import BaseModel

from ..api.errors import BadRequest
from ..api.types import CompletionRequest
from ..api.validation import MAX_LOGPROBS_TOP_K, MAX_STOP_STRINGS
from ..service import build_request

STRATEGIES = ("greedy", "top_p", "top_k")
FORMATS = ("none", "json_schema", "grammar")
GRAMMAR_SYNTAXES = ("gbnf", "lark", "regex")

# the traits that shape a request (all synced, all observable)
CONTROL_NAMES = (
    "content", "model_name", "strategy", "temperature", "top_p", "top_k", "max_tokens",
    "repetition_penalty", "stop_strings", "logprobs_top_k", "response_format", "json_schema",
    "grammar", "grammar_syntax", "seed", "chat",
)  # fmt: skip

# spec field of a BadRequest -> the control that sets it
_FIELD_TO_CONTROL = {
    "model_id": "model_name",
    "content": "content",
    "chat": "chat",
    "sampling_params.strategy.temperature": "temperature",
    "sampling_params.strategy.top_p": "top_p",
    "sampling_params.strategy.top_k": "top_k",
    "sampling_params.max_tokens": "max_tokens",
    "sampling_params.repetition_penalty": "repetition_penalty",
    "sampling_params.stop": "stop_strings",
    "logprobs.top_k": "logprobs_top_k",
    "response_format.json_schema": "json_schema",
    "response_format.bnf": "grammar",
}


def control_of(detail: str, response_format: str = "none") -> str | None:
    """The control a 400's detail (``"field: message"``) points at, if any."""
    field = detail.split(":", 1)[0].strip()
    for prefix, control in sorted(_FIELD_TO_CONTROL.items(), key=lambda kv: -len(kv[0])):
        if field == prefix or field.startswith(prefix + ".") or field.startswith(prefix + "["):
            return control
    if field.startswith("response_format"):
        return "grammar" if response_format == "grammar" else "json_schema"
    if field.startswith("sampling_params.strategy"):
        return "strategy"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_controls(v: Mapping[str, Any]) -> dict[str, str]:
    """``{control: message}`` for every relevant control whose value cannot be sent."""
    bad: dict[str, str] = {}
    strategy = v["strategy"]
    if strategy == "top_p":
        if not (_num(v["temperature"]) and v["temperature"] > 0):
            bad["temperature"] = "must be > 0"
        if not (_num(v["top_p"]) and 0 < v["top_p"] <= 1):
            bad["top_p"] = "must be in (0, 1]"
    elif strategy == "top_k" and not (_is_int(v["top_k"]) and v["top_k"] >= 1):
        bad["top_k"] = "must be ≥ 1"
    if not (_is_int(v["max_tokens"]) and v["max_tokens"] >= 0):
        bad["max_tokens"] = "must be ≥ 0 (0: until the model stops)"
    if not (_num(v["repetition_penalty"]) and v["repetition_penalty"] > 0):
        bad["repetition_penalty"] = "must be > 0 (1.0 is off)"
    if not (_is_int(v["logprobs_top_k"]) and 0 <= v["logprobs_top_k"] <= MAX_LOGPROBS_TOP_K):
        bad["logprobs_top_k"] = f"must be in [0, {MAX_LOGPROBS_TOP_K}]"
    seed = v["seed"]
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**63):
        bad["seed"] = "must be ≥ 0"
    stops = [s for s in v["stop_strings"] if s != ""]
    if len(stops) > MAX_STOP_STRINGS:
        bad["stop_strings"] = f"at most {MAX_STOP_STRINGS} stop strings"
    if v["response_format"] == "json_schema":
        message = _schema_problem(v["json_schema"])
        if message:
            bad["json_schema"] = message
    elif v["response_format"] == "grammar" and not v["grammar"].strip():
        bad["grammar"] = "a grammar is required"
    return bad


def _schema_problem(text: str) -> str | None:
    if not text.strip():
        return "a JSON schema is required"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc}"
    return None if isinstance(value, dict) else "must be a JSON object"


def first_problem(bad: Mapping[str, str]) -> BadRequest:
    name, message = next(iter(bad.items()))
    return BadRequest(name, message)


def build(v: Mapping[str, Any], content: Any) -> CompletionRequest:
    """The request the controls describe, for ``content``; ``BadRequest`` names the spec field."""
    strategy: dict[str, Any] = {"type": v["strategy"]}
    if v["strategy"] == "top_p":
        strategy.update(temperature=v["temperature"], top_p=v["top_p"])
    elif v["strategy"] == "top_k":
        strategy["top_k"] = v["top_k"]
    sampling: dict[str, Any] = {
        "strategy": strategy,
        "max_tokens": v["max_tokens"],
        "repetition_penalty": v["repetition_penalty"],
    }
    stops = [s for s in v["stop_strings"] if s != ""]
    if stops:
        sampling["stop"] = stops
    response_format = None
    if v["response_format"] == "json_schema":
        response_format = {"type": "json_schema", "json_schema": json.loads(v["json_schema"])}
    elif v["response_format"] == "grammar":
        response_format = {"type": "grammar", "bnf": {v["grammar_syntax"]: v["grammar"]}}
    return build_request(
        content,
        model_id=v["model_name"] or None,
        sampling_params=sampling,
        response_format=response_format,
        logprobs={"top_k": v["logprobs_top_k"]},
    )


# ---- constructor keywords -> trait values -----------------------------------------------------


def schema_text(value: Any) -> str:
    """A JSON-schema control value from a dict, JSON text or pydantic model (class or instance)."""
    if inspect.isclass(value) and issubclass(value, BaseModel):
        value = value.model_json_schema()
    elif isinstance(value, BaseModel):
        value = type(value).model_json_schema()
    return value if isinstance(value, str) else json.dumps(value, indent=2)


def from_response_format(value: Any) -> dict[str, Any]:
    """Trait values from a ``response_format`` keyword: ``"none"``, a spec dict, or a pydantic model."""
    if value is None or value == "none":
        return {"response_format": "none"}
    if isinstance(value, str):
        if value not in FORMATS:
            raise ValueError(f"response_format must be one of {FORMATS} or a spec dict, got {value!r}")
        return {"response_format": value}
    if inspect.isclass(value) or isinstance(value, BaseModel):
        return {"response_format": "json_schema", "json_schema": schema_text(value)}
    if isinstance(value, dict) and value.get("type") == "json_schema":
        return {"response_format": "json_schema", "json_schema": schema_text(value.get("json_schema", {}))}
    if isinstance(value, dict) and value.get("type") == "grammar":
        bnf = value.get("bnf") or {}
        if len(bnf) != 1 or next(iter(bnf)) not in GRAMMAR_SYNTAXES:
            raise ValueError(f"response_format.bnf must hold one of {GRAMMAR_SYNTAXES}, got {list(bnf)}")
        ((syntax, text),) = bnf.items()
        return {"response_format": "grammar", "grammar_syntax": syntax, "grammar": text}
    raise ValueError(f"response_format: expected 'none', 'json_schema', 'grammar' or a spec dict, got {value!r}")


def from_sampling_params(params: Any) -> dict[str, Any]:
    """Trait values from a spec ``sampling_params`` dict (or ``SamplingParams``)."""
    if hasattr(params, "model_dump"):
        params = params.model_dump(exclude_none=True)
    out: dict[str, Any] = {}
    strategy = dict(params.get("strategy") or {"type": "greedy"})
    out["strategy"] = strategy.pop("type", "greedy")
    for key in ("temperature", "top_p", "top_k"):
        if strategy.get(key) is not None:
            out[key] = strategy[key]
    for key in ("max_tokens", "repetition_penalty", "stop"):
        if params.get(key) is not None:
            out["stop_strings" if key == "stop" else key] = params[key]
    return out
