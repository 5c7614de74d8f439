"""``runner``: the one runner of the magic, ``compare()`` and the widget.

Scripted streams pin the pacing (an injected clock), the errors and the grace period; the tiny
random Llama runs the real engine for what involves generation: the folded result, a cancel
within one token, a kernel interrupt, and an abandoned stream leaving the engine's batch.
"""

from __future__ import annotations

import itertools
import signal
import threading

import pytest

from nb_completion.api.errors import BadRequest, EngineFailure
from nb_completion.engine.records import Delta, Finished, TokenRecord
from nb_completion.runner import GRACE_S, Drained, Runner, drain
from nb_completion.service import build_request, complete, open_events

DEADLINE = 30.0  # seconds; only ever reached when something is broken


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

    shown = [threading.Event() for _ in range(5)]

    def lockstep():  # the next token only once the last one was shown
        for i, event in enumerate(events(5)):
            yield event
            if i < 5:
                assert shown[i].wait(DEADLINE)

    def show(run: Drained) -> None:
        seen.append(len(run.tokens))
        shown[len(run.tokens) - 1].set()

    seen.clear()
    ticks = itertools.count(step=1.0)  # a second per reading: every new delta is due
    drain(lockstep(), threading.Event(), show, interval=0.08, clock=lambda: next(ticks))
    assert seen == [1, 2, 3, 4, 5, 5]  # one update per due delta, then the final call


def test_an_error_ending_the_stream_is_kept_with_the_partial_output():
    run = drain(events(3, fail=BadRequest("content", "no")), threading.Event(), clock=lambda: 0.0)
    assert run.error is not None and run.error.status == 400 and run.finished is None
    assert [t.text for t in run.tokens] == [" w0", " w1", " w2"]


def test_a_bug_is_raised_by_drain_and_is_an_engine_failure_in_the_background():
    with pytest.raises(ZeroDivisionError):
        drain(events(2, fail=ZeroDivisionError("ours")), threading.Event(), clock=lambda: 0.0)

    done: list[Drained] = []
    runner = Runner(lambda: events(2, fail=ZeroDivisionError("ours")), threading.Event(), on_done=done.append).start()
    assert runner.join(DEADLINE) and not runner.running
    assert done == [runner.result] and isinstance(runner.result.error, EngineFailure)
    assert "ZeroDivisionError" in runner.result.error.detail and len(runner.result.tokens) == 2


def test_batches_go_out_first_at_once_then_at_most_one_per_interval_and_the_rest_at_the_end():
    now = [0.0]

    def paced(n: int):  # 98 tokens, 0.01 s apart on the injected clock
        for i in range(n):
            yield Delta(f" {i}", (TokenRecord(i, i, f" {i}", -0.1, 1, (), 0.0),))
            now[0] += 0.01
        yield Finished("out_of_tokens", 1, n)

    batches: list[list[int]] = []
    order: list[str] = []
    runner = Runner(
        lambda: paced(98),
        threading.Event(),
        on_batch=lambda records: (batches.append([r.index for r in records]), order.append("batch")),
        on_done=lambda run: order.append("done"),
        interval=1 / 30,
        clock=lambda: now[0],
    ).start()
    assert runner.join(DEADLINE)
    assert batches[0] == [0]  # time to first token is what users watch
    assert [i for batch in batches for i in batch] == list(range(98))  # every token once, in order
    assert len(batches) <= 0.98 * 30 + 2
    assert order[-1] == "done" and order.count("done") == 1
    assert [r.index for r in runner.result.tokens] == list(range(98)) and runner.result.finished.completion_tokens == 98


def test_the_engine_ignoring_a_cancel_is_left_after_the_grace_period_with_the_partial_output():
    release = threading.Event()

    def deaf():  # one token, then nothing until released: a cancel it never sees
        yield Delta(" a", (TokenRecord(0, 5, " a", -0.1, 1, (), 0.0),))
        release.wait(DEADLINE)
        yield Finished("out_of_tokens", 1, 1)

    ticks = itertools.count(step=GRACE_S / 3)  # a third of the grace period per reading

    def interrupt(run: Drained) -> None:
        if run.tokens and not run.interrupted:
            raise KeyboardInterrupt  # as the kernel's interrupt lands in a display update

    cancel = threading.Event()
    runner = Runner(lambda: deaf(), cancel, interval=0.01, clock=lambda: next(ticks)).start()
    try:
        run = runner.wait(interrupt)
        assert run.interrupted and cancel.is_set() and run.finished is None
        assert [t.text for t in run.tokens] == [" a"]
    finally:
        release.set()
    assert runner.join(DEADLINE)


# ---- the real engine (tiny random Llama) --------------------------------------------------------

GREEDY = {"max_tokens": 40}


def test_a_background_run_folds_what_complete_returns_and_batches_every_token(tiny_model_id):
    request = build_request("Once upon a time", model_id=tiny_model_id, sampling_params=GREEDY, logprobs=3)
    expected = complete(request)
    batched: list[TokenRecord] = []
    cancel = threading.Event()
    runner = Runner(lambda: open_events(request, cancel=cancel), cancel, on_batch=batched.extend).start()
    assert runner.join(DEADLINE)
    run = runner.result
    assert run.error is None and not run.cancelled and run.text == expected.content
    assert batched == run.tokens and len(run.tokens) == len(expected.logprobs)
    assert run.finished.stop_reason == expected.stop_reason


def test_a_stop_ends_the_run_within_one_token_keeping_the_partial_output(tiny_model_id):
    request = build_request("Once upon a time", model_id=tiny_model_id, sampling_params={"max_tokens": 200})
    full = [t.token_id for e in open_events(request) if isinstance(e, Delta) for t in e.tokens]
    cancel = threading.Event()
    seen: list[TokenRecord] = []

    def stop_after_first(records: list[TokenRecord]) -> None:  # the Stop click, as the first tokens show
        seen.extend(records)
        cancel.set()

    runner = Runner(lambda: open_events(request, cancel=cancel), cancel, on_batch=stop_after_first).start()
    assert runner.join(DEADLINE)
    run = runner.result
    assert run.cancelled and run.error is None
    assert run.tokens == seen and 1 <= len(seen) < len(full)  # nothing arrived after the Stop
    assert [t.token_id for t in run.tokens] == full[: len(seen)]
    assert run.finished.completion_tokens == len(seen)


def test_a_kernel_interrupt_cancels_the_drain_instead_of_raising(tiny_model_id):
    request = build_request("Once upon a time", model_id=tiny_model_id, sampling_params={"max_tokens": 200})
    full = [t.token_id for e in open_events(request) if isinstance(e, Delta) for t in e.tokens]
    cancel = threading.Event()
    interrupted = threading.Event()

    def held_after_the_first_token(stream):  # the engine waits until the interrupt landed
        for i, event in enumerate(stream):
            yield event
            if i == 0:
                assert interrupted.wait(DEADLINE)

    def press_interrupt(run: Drained) -> None:  # on the main thread, as the kernel sends SIGINT
        if run.tokens and not interrupted.is_set():
            signal.raise_signal(signal.SIGINT)
            interrupted.set()

    before = signal.getsignal(signal.SIGINT)
    run = drain(held_after_the_first_token(open_events(request, cancel=cancel)), cancel, press_interrupt, interval=0.0)
    assert signal.getsignal(signal.SIGINT) is before  # the kernel's handler is back
    assert run.interrupted and run.cancelled and cancel.is_set() and run.error is None
    assert 1 <= len(run.tokens) < len(full) and [t.token_id for t in run.tokens] == full[: len(run.tokens)]
    assert run.finished.completion_tokens == len(run.tokens)


def test_a_failing_callback_closes_the_stream_so_the_engine_drops_the_sequence(tiny_model_id):
    request = build_request("Once upon a time", model_id=tiny_model_id, sampling_params={"max_tokens": 200})
    cancel = threading.Event()

    def broken(records: list[TokenRecord]) -> None:
        raise RuntimeError("a bug in the widget")

    done: list[Drained] = []
    runner = Runner(lambda: open_events(request, cancel=cancel), cancel, on_batch=broken, on_done=done.append).start()
    assert runner.join(DEADLINE)
    assert cancel.is_set()  # the stream was closed: its sequence leaves the engine's batch
    assert done == [runner.result] and isinstance(runner.result.error, EngineFailure)
    assert "RuntimeError" in runner.result.error.detail
