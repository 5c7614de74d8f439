"""Friendly sampling settings -> the contract's ``sampling_params``, and back to a short title.

The magic's options and ``compare()``'s settings dicts speak in flat, friendly keys
(``temperature=0.7``, ``top_k=40``); the contract nests them under a discriminated ``strategy``.
Conflicts the contract cannot express (a temperature for the ``top_k`` strategy, say) are a 400
that names the field, so every frontend says the same thing.

    >>> sampling_params_from(temperature=0.7)
    {'strategy': {'type': 'top_p', 'temperature': 0.7}}
    >>> describe(sampling_params_from(top_k=40, max_tokens=30))
    'top-k 40 · max 30 tokens'
"""

from __future__ import annotations

from typing import Any

from .bounds import TEMPERATURE, TOP_P
from .errors import BadRequest

FRIENDLY_KEYS = ("strategy", "temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "stop")
STRATEGIES = ("greedy", "top_p", "top_k")

__all__ = ["FRIENDLY_KEYS", "STRATEGIES", "sampling_params_from", "from_settings", "describe"]


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
            raise BadRequest(f"{field}.{given[0]}", "the greedy strategy always picks the most likely token; drop it or choose strategy top_p / top_k")
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
            raise BadRequest(f"{field}.temperature", "the top_k strategy samples at temperature 1.0 in the contract; use strategy top_p to set a temperature")
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
        raise BadRequest(f"{field}.{unknown[0]}", f"unknown setting; use {', '.join(FRIENDLY_KEYS)}, label, seed or sampling_params")
    return sampling_params_from(**settings), label


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(sampling_params: Any) -> str:
    """A short human title: ``'top-p 0.9 · T 1.2 · rep. penalty 1.3 · max 40 tokens'``."""
    if sampling_params is None:
        return "greedy"
    if hasattr(sampling_params, "model_dump"):
        sampling_params = sampling_params.model_dump(exclude_none=True)
    strategy = sampling_params.get("strategy") or {"type": "greedy"}
    if hasattr(strategy, "model_dump"):
        strategy = strategy.model_dump(exclude_none=True)
    kind = strategy.get("type", "greedy")
    parts: list[str] = []
    if kind == "top_p":
        parts.append(f"top-p {_num(strategy.get('top_p') if strategy.get('top_p') is not None else TOP_P)}")
        parts.append(f"T {_num(strategy.get('temperature') if strategy.get('temperature') is not None else TEMPERATURE)}")
    elif kind == "top_k":
        parts.append(f"top-k {_num(strategy.get('top_k'))}")
    else:
        parts.append("greedy")
    penalty = sampling_params.get("repetition_penalty")
    if penalty not in (None, 1, 1.0):
        parts.append(f"rep. penalty {_num(penalty)}")
    if sampling_params.get("max_tokens"):
        parts.append(f"max {sampling_params['max_tokens']} tokens")
    if sampling_params.get("stop"):
        parts.append("stop " + ", ".join(repr(s) for s in sampling_params["stop"]))
    return " · ".join(parts)
