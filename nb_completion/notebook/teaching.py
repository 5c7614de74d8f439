"""``next_token_distribution(text)``: the model's distribution for the token after ``text``, to show
in a lesson how temperature, top-k and top-p reshape it (the widget's figure, as a static chart).

    >>> d = nb_completion.next_token_distribution("The capital of France is")  # doctest: +SKIP
    >>> d                                   # the raw distribution: a bar per top token  # doctest: +SKIP
    >>> d.show(strategy="top_k", top_k=3)   # the same logits after top-k 3 (no new forward pass)  # doctest: +SKIP
    >>> d.table(5, temperature=0.5)         # [(text, raw p, processed p), ...]  # doctest: +SKIP

The processed numbers come from the engine's own processors (``render_teach_svg``).
"""

from __future__ import annotations

from typing import Any, Optional

from ..api.errors import BadRequest
from ..engine.backend import is_local

__all__ = ["next_token_distribution", "NextToken"]

_DEFAULTS = {"strategy": "greedy", "temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}


def _controls(settings: dict) -> dict:
    unknown = sorted(set(settings) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unexpected setting(s): {', '.join(unknown)} (use {', '.join(_DEFAULTS)})")
    out = {**_DEFAULTS, **settings}
    if "strategy" not in settings:
        out["strategy"] = "top_k" if "top_k" in settings else "top_p" if {"temperature", "top_p"} & set(settings) else "greedy"
    return out


class Chart:
    """One rendering of a distribution under some settings (SVG, and a text table)."""

    def __init__(self, svg: str, text: str):
        self.svg, self.text = svg, text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"image/svg+xml": self.svg, "text/plain": self.text}


class NextToken:
    """The raw next-token logits after a text (top 256, the rest summarised), shown under settings."""

    def __init__(self, text: str, model_id: str, distribution: dict):
        self.text, self.model_id, self.distribution = text, model_id, distribution

    def table(self, n: int = 10, **settings: Any) -> list[tuple[str, float, float]]:
        """The ``n`` most likely tokens: (text, raw probability, probability after ``settings``)."""
        from .render_teach_svg import processed_probabilities

        raw, processed = processed_probabilities(self.distribution, _controls(settings))
        return [(self.distribution["texts"][i], raw[i], processed[i]) for i in range(min(n, len(raw)))]

    def show(self, **settings: Any) -> Chart:
        """The chart under ``settings`` (strategy, temperature, top_p, top_k, repetition_penalty)."""
        from .render_teach_svg import distribution_svg

        controls = _controls(settings)
        rows = self.table(10, **settings)
        kept = sum(p > 0 for _, _, p in self.table(len(self.distribution["ids"]), **settings))
        text = "\n".join(f"{t!r:>16} {r:7.2%} -> {p:7.2%}" for t, r, p in rows) + f"\n{kept} tokens kept"
        return Chart(distribution_svg(self.distribution, controls), text)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """The model's own distribution: sampling at temperature 1, nothing cut."""
        return self.show(strategy="top_p", temperature=1.0, top_p=1.0)._repr_mimebundle_()


def next_token_distribution(text: str, model_id: Optional[str] = None) -> NextToken:
    """The distribution of the token after ``text`` (one forward for the last token; the
    engine reuses a cached prefix)."""
    from ..service import build_request, load_backend
    from ..stepping import distribution_at

    if not isinstance(text, str) or not text:
        raise BadRequest("text", "must be a non-empty string")
    backend = load_backend(model_id)
    if not is_local(backend):
        raise BadRequest("model_id", f"'{backend.info.identifier}' is remote: the distribution needs a model in this kernel")
    ids = backend.encode(text)
    request = build_request(text, model_id=backend.info.identifier, sampling_params={"max_tokens": 1})
    dist = distribution_at(backend, request, ids)
    return NextToken(text, backend.info.identifier, {**dist.to_dict(), "index": 0, "prompt": False, "chosen": None, "end": True})
