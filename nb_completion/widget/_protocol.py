"""The custom messages between the kernel and the widget's view: the Python half of
``js/src/protocol.js`` (keep the two in step).

Kernel -> view (the final state also lands in traits):
  ``{type: "delta", run, start, tokens, metrics}``   tokens[start..] of run ``run``
  ``{type: "snapshot", run, tokens, metrics}``       everything sent so far
View -> kernel: ``generate``, ``stop``, ``branch`` (index, text), ``snapshot``, ``models``, and
the teaching views' ``step``, ``score``, ``force`` (position, token_id), ``distribution``
(index, prompt), ``show_branch`` (id), and the inside views' ``lens`` and ``attention`` (index,
prompt) and ``sample`` (index).
A token is ``{index, text, logprob, rank, top: [[text, logprob]...], entropy, forced, branch?}``
(``_tokens.token_dict``).
"""

from __future__ import annotations

from typing import Any, Optional

# view -> kernel
GENERATE, STOP, BRANCH, SNAPSHOT, MODELS = "generate", "stop", "branch", "snapshot", "models"
STEP, SCORE, FORCE, DISTRIBUTION, SHOW_BRANCH = "step", "score", "force", "distribution", "show_branch"
LENS, ATTENTION, SAMPLE = "lens", "attention", "sample"
VIEW_MESSAGES = (GENERATE, STOP, BRANCH, SNAPSHOT, MODELS, STEP, SCORE, FORCE, DISTRIBUTION, SHOW_BRANCH, LENS, ATTENTION, SAMPLE)


def kind_of(content: Any) -> Optional[str]:
    """The ``type`` of a message from the view (None for anything that is not a message dict)."""
    return content.get("type") if isinstance(content, dict) else None


# kernel -> view


def delta(run: int, start: int, tokens: list[dict], metrics: dict) -> dict[str, Any]:
    """New tokens of run ``run``, to be placed from index ``start``."""
    return {"type": "delta", "run": run, "start": start, "tokens": tokens, "metrics": metrics}


def snapshot(run: int, tokens: list[dict], metrics: dict) -> dict[str, Any]:
    """Every token of run ``run`` so far (the view asks after a missed delta)."""
    return {"type": SNAPSHOT, "run": run, "tokens": tokens, "metrics": metrics}
