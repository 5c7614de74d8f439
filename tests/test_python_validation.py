"""``complete()`` checks its Python-only arguments as strictly as HTTP checks a body (issue 21,
finding 8): ``seed="1"``, ``1.5`` and ``True`` sampled as seed 1; ``2**70`` and ``nan`` named
``sampling_params``; ``seed=[1]`` and a ``cancel`` that is not an Event were 500s."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import nb_completion as nb
from nb_completion.api.errors import BadRequest

GREEDY = {"strategy": {"type": "greedy"}, "max_tokens": 3}


@pytest.mark.parametrize("seed", ["1", 1.5, True, False, [1], 2**70, -(2**63) - 1, float("nan"), None.__class__])
def test_a_seed_that_is_not_an_integer_in_range_is_a_400_naming_seed(tiny_model_id, seed):
    with pytest.raises(BadRequest) as caught:
        nb.complete("Hello", model_id=tiny_model_id, sampling_params=GREEDY, seed=seed)
    assert caught.value.field == "seed"


@pytest.mark.parametrize("stream", [False, True])
def test_integer_seeds_from_numpy_sample_like_python_ints(tiny_model_id, stream):
    params = {"strategy": {"type": "top_p", "temperature": 1.0, "top_p": 1.0}, "max_tokens": 6}
    first = nb.complete("Hello", model_id=tiny_model_id, sampling_params=params, seed=7)
    again = nb.complete("Hello", model_id=tiny_model_id, sampling_params=params, seed=np.int64(7), stream=stream)
    text = again.content if not stream else "".join(chunk.delta for chunk in again)
    assert text == first.content


@pytest.mark.parametrize("cancel", [True, 1, "stop", object(), threading.Lock()])
def test_a_cancel_that_is_not_an_event_is_a_400_naming_cancel(tiny_model_id, cancel):
    with pytest.raises(BadRequest) as caught:
        nb.complete("Hello", model_id=tiny_model_id, sampling_params=GREEDY, cancel=cancel)
    assert caught.value.field == "cancel"


def test_an_event_cancels(tiny_model_id):
    cancel = threading.Event()
    cancel.set()
    result = nb.complete("Hello", model_id=tiny_model_id, sampling_params={**GREEDY, "max_tokens": 50}, cancel=cancel)
    assert result.content == ""


@pytest.mark.parametrize(("keyword", "value"), [("chat", "yes"), ("chat", 1), ("stream", "no"), ("stream", 0)])
def test_flags_must_be_bools(tiny_model_id, keyword, value):
    with pytest.raises(BadRequest) as caught:
        nb.complete("Hello", model_id=tiny_model_id, sampling_params=GREEDY, **{keyword: value})
    assert caught.value.field == keyword


def test_open_events_checks_seed_and_cancel_too(tiny_model_id):
    from nb_completion.service import build_request, open_events

    request = build_request("Hello", tiny_model_id, GREEDY)
    with pytest.raises(BadRequest, match="seed"):
        open_events(request, seed="3")
    with pytest.raises(BadRequest, match="cancel"):
        open_events(request, cancel="now")
