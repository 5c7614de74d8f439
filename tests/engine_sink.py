"""A sink for ``Engine.submit``: it keeps the ``Chosen`` tokens, how the sequence ended, and the
engine step of the first token (set ``sink.engine`` first)."""

from __future__ import annotations

import threading


class Collect:
    """A sink that keeps what the engine hands it."""

    def __init__(self):
        self.tokens: list = []
        self.end = threading.Event()
        self.reason = None
        self.first_token_step = None
        self.engine = None

    def on_token(self, chosen, now):
        if self.first_token_step is None:
            self.first_token_step = self.engine.stats.steps
        self.tokens.append(chosen)
        return False

    def on_end(self, reason, stop_token_id, steps):
        self.reason = reason
        self.end.set()

    def on_error(self, exc):
        self.reason = exc
        self.end.set()
