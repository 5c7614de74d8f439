"""Run a call on a thread with a large native stack, so native recursion cannot kill the process.

llguidance compiles grammars in Rust, recursively; on the 8 MiB stack of a main or pool thread a
deep enough grammar overflows it, and a stack overflow in native code is a segfault: the server
or the Jupyter kernel dies. ``run(fn, *args)`` calls ``fn`` on a fresh thread whose stack is
``STACK_BYTES`` (256 MiB of address space, reserved, not committed: only the pages the recursion
touches use memory) and returns its result or raises its exception in the caller.
``grammar_limits`` refuses grammars far below what this stack holds; the stack is the margin.

    >>> run(sum, [1, 2, 3])
    6
"""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["run", "STACK_BYTES"]

STACK_BYTES = 256 * 1024 * 1024
_stack_size_lock = threading.Lock()  # threading.stack_size is process-wide: set, start, restore


def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on a thread with a ``STACK_BYTES`` stack; blocks until it returns."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller as it is
            outcome["error"] = exc

    with _stack_size_lock:
        previous = threading.stack_size(STACK_BYTES)
        try:
            worker = threading.Thread(target=call, name="nb-completion-deep-stack", daemon=True)
            worker.start()
        finally:
            threading.stack_size(previous)
    worker.join()
    if "error" in outcome:
        error = outcome.pop("error")
        try:
            raise error
        finally:
            del error
    return outcome["value"]
