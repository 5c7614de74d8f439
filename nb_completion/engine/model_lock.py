"""One lock per model: held by every pass of the engines and scoring, and by the inside views'
one pass that changes the model for a moment: ``inside.attention`` switches it to eager attention
(the only kind that returns weights, chosen through the model's shared config) and
``inside.lens`` hooks every layer (a hook would also catch an engine step). Uncontended, it costs
a lock per step; a view waits for a step to end."""

from __future__ import annotations

import threading
import weakref
from typing import Any

_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The lock of ``model`` (made on first use, gone with the model)."""
    with _GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock
