"""What the user sees while a model loads: one plain-text status line, never a widget.

A progress *widget* (tqdm.auto) left in the first cell that loads the model saved a widget
reference that reads "Error displaying widget: model not found" when the notebook is reopened,
and a stale "Loading (int8, cpu)" line in exports. So:

- in a notebook (a kernel's main thread): one ``text/plain`` display, updated in place and
  finally replaced by one line saying what was loaded and how long it took;
- in a terminal: the line rewritten in place on stderr and cleared at the end;
- stderr not a terminal (a pipe, a log file, CI): one complete line per step, each ending in a
  newline, and the final line.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

ProgressCallback = Callable[[str], None]

__all__ = ["ProgressCallback", "LoadProgress"]


def _notebook() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False  # a display from a worker thread lands in whichever cell runs now
    try:
        from .notebook.live import notebook_shell

        return notebook_shell() is not None
    except Exception:  # noqa: BLE001 - no IPython: not a notebook
        return False


class LoadProgress:
    """``progress(message)`` for each step, then ``done(message)`` or ``failed()`` once."""

    def __init__(self, model_id: str, stream: Any = None):
        self.model_id = model_id
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.perf_counter()
        self._handle: Any = None
        self._notebook = stream is None and _notebook()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._open_line = False

    def _line(self, message: str) -> str:
        return f"{self.model_id}: {message}"

    def __call__(self, message: str) -> None:
        line = self._line(message)
        if self._notebook:
            from IPython.display import display

            bundle = {"text/plain": line}
            if self._handle is None:
                self._handle = display(bundle, raw=True, display_id=True)
            else:
                self._handle.update(bundle, raw=True)
        elif self._tty:
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
            self._open_line = True
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def done(self, message: str) -> None:
        """The final line: kept in a notebook and in logs, cleared in a terminal."""
        line = self._line(f"{message} in {time.perf_counter() - self.started:.1f} s")
        if self._notebook:
            if self._handle is not None:
                self._handle.update({"text/plain": line}, raw=True)
        elif self._tty:
            if self._open_line:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._open_line = False

    def failed(self) -> None:
        if self._notebook and self._handle is not None:
            self._handle.update({"text/plain": self._line("not loaded")}, raw=True)
        elif self._open_line:
            self.stream.write("\n")
            self.stream.flush()
        self._open_line = False
