"""One lock per model: held by every pass that reads the model's attention setting (the engines'
steps) and by the one pass that changes it for a moment (``inside.attention``: transformers'
eager attention is the only one that returns weights, and it is chosen through the model's shared
config). Uncontended, it costs a lock per step; the attention pass waits for a step to end."""

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
