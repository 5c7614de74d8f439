"""The server prepares each request before it takes a queue place.

The engine opens requests one at a time behind the running generation: a prompt over the context,
a grammar that does not compile or an image for a text-only model would wait seconds for its 400
and hold a queue place meanwhile. So the server calls ``backend.prepare`` (``engine/plan.py``) in
a worker thread as soon as the body is parsed: the checks, the prompt's tokens, the compiled
constraint and the server's cap on generated tokens (``max_tokens`` 0, until the end token,
becomes the cap or the room left in the context, whichever is smaller; more than the cap is a
400). The ``Plan`` travels with the request through the queue to the engine, which then neither
tokenizes the prompt nor compiles the grammar again. A remote backend's plan applies the cap only.
"""

from __future__ import annotations

from typing import Any

from ..api.types import CompletionRequest
from ..engine.plan import Plan


def precheck(
    request: CompletionRequest, backend: Any, max_tokens_cap: int, ids: list[int] | None = None
) -> tuple[CompletionRequest, Plan]:
    """``request`` with ``max_tokens`` resolved against the cap, and its plan for ``backend``; or
    the 400 the engine would give. ``ids``: the prompt's token ids when the client sent ids."""
    plan = backend.prepare(request, ids=ids, max_tokens_cap=max_tokens_cap)
    return plan.request, plan
