"""``drain``: every event collected, progress paced by an injected clock, errors kept."""

from __future__ import annotations

import itertools
import threading

from nb_completion.api.errors import BadRequest
from nb_completion.engine.records import Delta, Finished, TokenRecord
from nb_completion.notebook.drain import drain


def events(n: int, fail: Exception | None = None):
    for i in range(n):
        yield Delta(f" w{i}", (TokenRecord(i, i, f" w{i}", -0.1, 1, (), 0.0),))
    if fail is not None:
        raise fail
    yield Finished("end_of_turn", 2, n)


def test_progress_is_paced_by_the_clock_not_by_the_number_of_events():
    seen: list[int] = []
    frozen = drain(events(20), threading.Event(), lambda run: seen.append(len(run.tokens)), interval=0.08, clock=lambda: 0.0)
    assert seen == [20]  # the clock never moved: only the final call
    assert frozen.text == "".join(f" w{i}" for i in range(20)) and frozen.finished.completion_tokens == 20

    seen.clear()
    ticks = itertools.count(step=1.0)  # a second per reading: every new delta is due
    drain(events(5), threading.Event(), lambda run: seen.append(len(run.tokens)), interval=0.08, clock=lambda: next(ticks))
    assert seen[-1] == 5 and seen == sorted(seen) and len(seen) >= 2


def test_an_error_ending_the_stream_is_kept_with_the_partial_output():
    run = drain(events(3, fail=BadRequest("content", "no")), threading.Event(), clock=lambda: 0.0)
    assert run.error is not None and run.error.status == 400 and run.finished is None
    assert [t.text for t in run.tokens] == [" w0", " w1", " w2"]
