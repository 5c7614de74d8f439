"""Shorthand <-> the contract: the one translation between flat, friendly options and a request.

The magic's options, the CLI's flags and ``compare()``'s settings dicts speak in flat keys
(``temperature=0.7``, ``top_k=40``, ``json_schema=Person``); the contract nests them under a
discriminated ``strategy`` and a typed ``response_format``. ``request_parts`` turns shorthand into
the request's parts (``service.build_request`` validates them), ``flat_options`` and ``describe``
turn a request's ``sampling_params`` back into shorthand and into a short title. Conflicts the
contract cannot express (a temperature for the ``top_k`` strategy, say) are a 400 that names the
field, so every frontend says the same thing. Defaults and bounds live in ``bounds.py``.

    >>> sampling_params_from(temperature=0.7)
    {'strategy': {'type': 'top_p', 'temperature': 0.7}}
    >>> describe(sampling_params_from(top_k=40, max_tokens=30))
    'top-k 40 · max 30 tokens'
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from pydantic import BaseModel

from .bounds import TEMPERATURE, TOP_P
from .errors import BadRequest

FRIENDLY_KEYS = ("strategy", "temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "stop")
STRATEGIES = ("greedy", "top_p", "top_k")

__all__ = [
    "FRIENDLY_KEYS",
    "STRATEGIES",
    "sampling_params_from",
    "schema_from",
    "response_format_from",
    "one_format",
    "request_parts",
    "from_settings",
    "flat_options",
    "describe",
]


def _strategy(strategy: str | None, temperature: float | None, top_p: float | None, top_k: int | None) -> dict:
    field = "sampling_params.strategy"
    if strategy is None:  # infer it from what was given
        if top_k is not None:
            strategy = "top_k"
        elif top_p is not None or (temperature is not None and temperature != 0):
            strategy = "top_p"
        else:
            strategy = "greedy"  # nothing given, or temperature 0
    if strategy == "greedy":
        given = [n for n, v in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k)) if v is not None]
        if temperature == 0:
            given.remove("temperature")
        if given:
            raise BadRequest(
                f"{field}.{given[0]}",
                "the greedy strategy always picks the most likely token; drop it or choose strategy top_p / top_k",
            )
        return {"type": "greedy"}
    if strategy == "top_p":
        if top_k is not None:
            raise BadRequest(f"{field}.top_k", "the top_p strategy has no top_k in the contract; choose one of top_p / top_k")
        out: dict[str, Any] = {"type": "top_p"}
        if temperature is not None:
            out["temperature"] = temperature
        if top_p is not None:
            out["top_p"] = top_p
        return out
    if strategy == "top_k":
        if temperature is not None and temperature != 1:
            raise BadRequest(
                f"{field}.temperature",
                "the top_k strategy samples at temperature 1.0 in the contract; use strategy top_p to set a temperature",
            )
        if top_p is not None:
            raise BadRequest(f"{field}.top_p", "the top_k strategy has no top_p in the contract; choose one of top_p / top_k")
        return {"type": "top_k"} if top_k is None else {"type": "top_k", "top_k": top_k}
    raise BadRequest(f"{field}.type", f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")


def sampling_params_from(
    strategy: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    max_tokens: int | None = None,
    repetition_penalty: float | None = None,
    stop: Any = None,
) -> dict:
    """A ``sampling_params`` dict. Without ``strategy``: ``top_k`` given -> top_k; a temperature
    (other than 0) or ``top_p`` -> top_p; otherwise greedy. Validation of values (ranges) is left
    to ``parse_request`` so that every frontend reports them the same way."""
    params: dict[str, Any] = {"strategy": _strategy(strategy, temperature, top_p, top_k)}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if repetition_penalty is not None:
        params["repetition_penalty"] = repetition_penalty
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return params


def schema_from(value: Any, field: str = "response_format.json_schema") -> dict:
    """A JSON Schema from a dict, a JSON string, or a pydantic model class or instance."""
    if inspect.isclass(value) and issubclass(value, BaseModel):
        return value.model_json_schema()
    if isinstance(value, BaseModel):
        return type(value).model_json_schema()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRequest(field, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(field, "must be a JSON object or a pydantic model")
    return value


def one_format(json_schema: Any, grammar: Any, names: tuple[str, str], field: str) -> None:
    """A 400 naming ``field`` when both a schema and a grammar were given."""
    if json_schema is not None and grammar is not None:
        raise BadRequest(field, f"give {names[0]} or {names[1]}, not both")


def response_format_from(
    json_schema: Any = None,
    grammar: Any = None,
    syntax: str = "gbnf",
    *,
    names: tuple[str, str] = ("json_schema", "grammar"),
    conflict_field: str = "response_format",
) -> dict | None:
    """``response_format`` from shorthand: a schema (anything ``schema_from`` takes) or grammar
    text in ``syntax`` (gbnf | lark | regex); ``None`` for neither. ``names`` are how the
    frontend calls the two options in its messages (``--json-schema``, ``--grammar``)."""
    one_format(json_schema, grammar, names, conflict_field)
    if json_schema is not None:
        return {"type": "json_schema", "json_schema": schema_from(json_schema)}
    if grammar is not None:
        if not isinstance(grammar, str):
            raise BadRequest(names[1], f"expected grammar text, got {type(grammar).__name__}")
        return {"type": "grammar", "bnf": {syntax: grammar}}
    return None


def request_parts(
    *,
    strategy: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    max_tokens: int | None = None,
    repetition_penalty: float | None = None,
    stop: Any = None,
    response_format: dict | None = None,
    logprobs: int | None = None,
) -> dict[str, Any]:
    """``sampling_params``, ``response_format`` and ``logprobs`` for ``service.build_request``
    from flat options (``response_format`` from ``response_format_from``)."""
    params = sampling_params_from(strategy, temperature, top_p, top_k, max_tokens, repetition_penalty, stop)
    return {
        "sampling_params": params,
        "response_format": response_format,
        "logprobs": None if logprobs is None else {"top_k": logprobs},
    }


def from_settings(settings: dict, field: str = "settings") -> tuple[dict, str | None]:
    """``(sampling_params, label)`` from a ``compare()`` settings dict: friendly keys, or a full
    ``{"sampling_params": {...}}``, either with an optional ``"label"``."""
    if not isinstance(settings, dict):
        raise BadRequest(field, f"each setting must be a dict, got {type(settings).__name__}")
    settings = dict(settings)
    label = settings.pop("label", None)
    if "sampling_params" in settings:
        params = settings.pop("sampling_params")
        if settings:
            raise BadRequest(f"{field}.{next(iter(settings))}", "give either sampling_params or friendly keys, not both")
        return (params.model_dump(exclude_none=True) if hasattr(params, "model_dump") else params), label
    if isinstance(settings.get("strategy"), dict):  # already the contract's shape
        return settings, label
    unknown = [k for k in settings if k not in FRIENDLY_KEYS]
    if unknown:
        raise BadRequest(
            f"{field}.{unknown[0]}", f"unknown setting; use {', '.join(FRIENDLY_KEYS)}, label, seed or sampling_params"
        )
    return sampling_params_from(**settings), label


def flat_options(sampling_params: Any) -> dict[str, Any]:
    """The flat options a ``sampling_params`` (dict or ``SamplingParams``) means: the inverse of
    ``sampling_params_from`` (``strategy`` always present; absent values left out)."""
    if sampling_params is None:
        return {"strategy": "greedy"}
    if hasattr(sampling_params, "model_dump"):
        sampling_params = sampling_params.model_dump(exclude_none=True)
    strategy = sampling_params.get("strategy") or {"type": "greedy"}
    if hasattr(strategy, "model_dump"):
        strategy = strategy.model_dump(exclude_none=True)
    out: dict[str, Any] = {"strategy": strategy.get("type", "greedy")}
    for key in ("temperature", "top_p", "top_k"):
        if strategy.get(key) is not None:
            out[key] = strategy[key]
    for key in ("max_tokens", "repetition_penalty", "stop"):
        if sampling_params.get(key) is not None:
            out[key] = sampling_params[key]
    return out


def _number_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(sampling_params: Any) -> str:
    """A short human title: ``'top-p 0.9 · T 1.2 · rep. penalty 1.3 · max 40 tokens'``."""
    flat = flat_options(sampling_params)
    kind = flat["strategy"]
    parts: list[str] = []
    if kind == "top_p":
        parts.append(f"top-p {_number_text(flat.get('top_p', TOP_P))}")
        parts.append(f"T {_number_text(flat.get('temperature', TEMPERATURE))}")
    elif kind == "top_k":
        parts.append(f"top-k {_number_text(flat.get('top_k'))}")
    else:
        parts.append("greedy")
    penalty = flat.get("repetition_penalty")
    if penalty not in (None, 1, 1.0):
        parts.append(f"rep. penalty {_number_text(penalty)}")
    if flat.get("max_tokens"):
        parts.append(f"max {flat['max_tokens']} tokens")
    if flat.get("stop"):
        parts.append("stop " + ", ".join(repr(s) for s in flat["stop"]))
    return " · ".join(parts)
