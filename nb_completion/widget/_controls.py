"""The widget's control values: checks that flag a control before any request is sent, and the
request those values make. Mirrors ``js/src/validate.js`` (the browser checks first; this is the
source of truth for Python-set values and for what is sent).
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Mapping

from pydantic import BaseModel

from ..api.bounds import BOUNDS, MAX_STOP_STRINGS
from ..api.errors import BadRequest
from ..api.shorthand import flat_options, response_format_from, sampling_params_from, schema_from
from ..api.types import CompletionRequest
from ..service import build_request

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


def control_of(field: str, response_format: str = "none") -> str | None:
    """The control a 400's field (``BadRequest.field``) points at, if any."""
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


# what the table's bound text leaves unsaid, per control
_NOTES = {"max_tokens": " (0: until the model stops)", "repetition_penalty": " (1.0 is off)"}


def _out_of_bounds(name: str, value: Any) -> str | None:
    """The message for ``value`` outside ``bounds.BOUNDS[name]`` (as ``js/src/validate.js`` says it), or None."""
    bound = BOUNDS[name]
    return None if bound.holds(value) else bound.text.replace(">=", "≥") + _NOTES.get(name, "")


def check_controls(v: Mapping[str, Any]) -> dict[str, str]:
    """``{control: message}`` for every relevant control whose value cannot be sent."""
    names = {"top_p": ("temperature", "top_p"), "top_k": ("top_k",)}.get(v["strategy"], ())
    names += ("max_tokens", "repetition_penalty", "logprobs_top_k")
    bad = {name: message for name in names if (message := _out_of_bounds(name, v[name]))}
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
    strategy = v["strategy"]
    sampling = sampling_params_from(
        strategy,
        temperature=v["temperature"] if strategy == "top_p" else None,
        top_p=v["top_p"] if strategy == "top_p" else None,
        top_k=v["top_k"] if strategy == "top_k" else None,
        max_tokens=v["max_tokens"],
        repetition_penalty=v["repetition_penalty"],
        stop=[s for s in v["stop_strings"] if s != ""] or None,
    )
    response_format = None
    if v["response_format"] == "json_schema":
        response_format = response_format_from(json_schema=v["json_schema"])
    elif v["response_format"] == "grammar":
        response_format = response_format_from(grammar=v["grammar"], syntax=v["grammar_syntax"])
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
    return value if isinstance(value, str) else json.dumps(schema_from(value), indent=2)


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
    out = flat_options(params)
    if "stop" in out:
        out["stop_strings"] = out.pop("stop")
    return out
