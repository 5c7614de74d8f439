"""Ctrl-C or closing the iterator during ``complete(stream=True)`` cancels the sequence at once
(issue 21, finding 6: generation went on while IPython kept the interrupted frames alive in
``sys.last_traceback``)."""

from __future__ import annotations

import sys
import threading

import pytest

import nb_completion as nb
from nb_completion.service import build_request, open_events

LONG = {"strategy": {"type": "greedy"}, "max_tokens": 200}


def test_ctrl_c_while_streaming_cancels_even_while_the_traceback_lives(tiny_model_id):
    cancel = threading.Event()
    chunks = nb.complete("Once upon a time", model_id=tiny_model_id, sampling_params=LONG, stream=True, cancel=cancel)
    next(chunks)
    with pytest.raises(KeyboardInterrupt):
        try:
            chunks.throw(KeyboardInterrupt())  # what a Ctrl-C raises in the waiting frame
        except KeyboardInterrupt:
            sys.last_traceback = sys.exc_info()[2]  # as IPython keeps it
            raise
    try:
        assert cancel.is_set()
    finally:
        sys.last_traceback = None


def test_ctrl_c_inside_the_event_stream_cancels(tiny_model_id):
    cancel = threading.Event()
    events = open_events(build_request("Once upon a time", tiny_model_id, LONG), cancel=cancel)
    next(events)
    with pytest.raises(KeyboardInterrupt) as caught:
        events.throw(KeyboardInterrupt())
    kept = caught.value.__traceback__  # noqa: F841 - the frames stay alive, as in IPython
    assert cancel.is_set()


def test_a_ctrl_c_during_a_whole_completion_cancels(tiny_model_id, monkeypatch):
    from nb_completion import service

    cancel = threading.Event()

    def interrupted(events):
        next(iter(events))
        raise KeyboardInterrupt

    monkeypatch.setattr(service, "fold", interrupted)
    with pytest.raises(KeyboardInterrupt):
        nb.complete("Once upon a time", model_id=tiny_model_id, sampling_params=LONG, cancel=cancel)
    assert cancel.is_set()


def test_closing_the_iterator_cancels(tiny_model_id):
    cancel = threading.Event()
    chunks = nb.complete("Once upon a time", model_id=tiny_model_id, sampling_params=LONG, stream=True, cancel=cancel)
    next(chunks)
    chunks.close()
    assert cancel.is_set()
