"""Several futures from one point: ``n`` continuations of a prompt, sampled together in one batch
(forks of one prefill), each with its tokens' logprobs and its mean logprob per token."""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from typing import Any, Optional

from ..api.errors import BadRequest
from ..api.shorthand import from_settings
from ..engine.records import Delta, TokenRecord


@dataclass
class Path:
    text: str
    tokens: list[TokenRecord]
    seed: int

    @property
    def mean_logprob(self) -> float:
        """Per token, so paths of different lengths compare fairly (-inf for an empty path)."""
        return sum(t.logprob for t in self.tokens) / len(self.tokens) if self.tokens else float("-inf")


@dataclass
class Futures:
    prompt: str
    model_id: str
    paths: list[Path]

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<li><code>{html.escape(p.text)}</code> <small>mean logprob {p.mean_logprob:.2f}</small></li>" for p in self.paths
        )
        return f"<div>{len(self.paths)} futures of {html.escape(repr(self.prompt[-60:]))}<ol>{rows}</ol></div>"


def futures(
    prompt: str, n: int = 5, max_tokens: int = 16, seed: int = 0, model_id: Optional[str] = None, **sampling: Any
) -> Futures:
    """``n`` continuations of ``prompt`` (path j uses seed ``seed + j``); ``sampling``: the same
    options as ``compare()``'s settings (temperature, top_p, top_k, repetition_penalty, ...)."""
    from ..service import build_request, open_events

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 16:
        raise BadRequest("n", f"must be an integer in [1, 16], got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BadRequest("seed", f"must be an integer, got {seed!r}")
    params, _ = from_settings({"temperature": 1.0, **sampling, "max_tokens": max_tokens}, "sampling")
    request = build_request(prompt, model_id, params, logprobs={"top_k": 1})
    cancel = threading.Event()
    streams = []
    try:  # all opened before any is read: one prefill, the paths stepped together
        for j in range(n):
            streams.append(open_events(request, seed=seed + j, cancel=cancel))
        paths = []
        for j, stream in enumerate(streams):
            tokens = [t for event in stream if isinstance(event, Delta) for t in event.tokens]
            paths.append(Path("".join(t.text for t in tokens), tokens, seed + j))
    except BaseException:
        cancel.set()
        raise
    return Futures(prompt, request.model_id, paths)
