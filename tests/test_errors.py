"""Every malformed request raises a CompletionError whose spec Error body names the field."""

import pytest

from nb_completion import CompletionError, complete
from nb_completion.api.types import Error


def error_of(**kwargs):
    kwargs.setdefault("content", "hello")
    with pytest.raises(CompletionError) as info:
        complete(**kwargs)
    body = info.value.error
    assert isinstance(body, Error)
    Error.model_validate(body.model_dump())  # the spec's shape
    return body


def test_unknown_model_is_404_listing_the_ids(tiny_model_id):
    body = error_of(model_id="no-such-model")
    assert body.status == 404 and body.title == "Not Found"
    assert "no-such-model" in body.detail and tiny_model_id in body.detail


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(sampling_params={"strategy": {"type": "top_p", "temperature": 0}}), "sampling_params.strategy.temperature"),
        (dict(sampling_params={"strategy": {"type": "top_p", "temperature": -1}}), "sampling_params.strategy.temperature"),
        (dict(sampling_params={"strategy": {"type": "top_p", "top_p": 0}}), "sampling_params.strategy.top_p"),
        (dict(sampling_params={"strategy": {"type": "top_p", "top_p": 1.2}}), "sampling_params.strategy.top_p"),
        (dict(sampling_params={"strategy": {"type": "top_k", "top_k": 0}}), "sampling_params.strategy.top_k"),
        (dict(sampling_params={"strategy": {"type": "top_k"}}), "sampling_params.strategy.top_k"),
        (dict(sampling_params={"strategy": {"type": "beam"}}), "sampling_params.strategy"),
        (dict(sampling_params={"repetition_penalty": 0}), "sampling_params.repetition_penalty"),
        (dict(sampling_params={"repetition_penalty": -1.5}), "sampling_params.repetition_penalty"),
        (dict(sampling_params={"stop": ["a", "b", "c", "d", "e"]}), "sampling_params.stop"),
        (dict(sampling_params={"max_tokens": -1}), "sampling_params.max_tokens"),
        (dict(sampling_params={"max_tokens": "many"}), "sampling_params.max_tokens"),
        (dict(sampling_params={"temperature": 0.5}), "sampling_params.temperature"),
        (dict(logprobs={"top_k": 21}), "logprobs.top_k"),
        (dict(logprobs={"top_k": -1}), "logprobs.top_k"),
        (dict(logprobs={"k": 2}), "logprobs.k"),
        (dict(response_format={"type": "grammar", "bnf": {"ebnf": "x"}}), "response_format.bnf"),
        (dict(response_format={"type": "xml"}), "response_format"),
        (dict(content=42), "content"),
    ],
)
def test_bad_input_is_400_naming_the_field(tiny_model_id, kwargs, field):
    body = error_of(model_id=tiny_model_id, **kwargs)
    assert body.status == 400 and body.title == "Bad Request"
    assert body.detail.startswith(field), body.detail


def test_unknown_top_level_field_is_named(tiny_model_id):
    body = error_of(content={"model_id": tiny_model_id, "content": "hi", "temperature": 0.2})
    assert body.status == 400 and body.detail.startswith("temperature")


def test_prompt_plus_max_tokens_over_context_gives_both_numbers(tiny_backend, tiny_model_id):
    body = error_of(model_id=tiny_model_id, content="hello", sampling_params={"max_tokens": 1000})
    assert body.status == 400 and body.detail.startswith("sampling_params.max_tokens")
    assert "1000" in body.detail and str(tiny_backend.context_length) in body.detail


def test_prompt_longer_than_context_is_400(tiny_model_id):
    body = error_of(model_id=tiny_model_id, content="word " * 600)
    assert body.status == 400 and body.detail.startswith("content")


def test_image_content_for_a_text_only_model_is_400_naming_it(tiny_model_id):
    content = [{"type": "text", "text": "Describe"}, {"type": "image", "image": {"url": {"uri": "https://x/y.png"}}}]
    body = error_of(model_id=tiny_model_id, content=content)
    assert body.status == 400 and tiny_model_id in body.detail and "image" in body.detail


def test_text_items_are_joined_in_order(tiny_model_id):
    items = [{"type": "text", "text": "The capital"}, {"type": "text", "text": " of"}]
    joined = complete(items, model_id=tiny_model_id, sampling_params={"max_tokens": 5})
    plain = complete("The capital of", model_id=tiny_model_id, sampling_params={"max_tokens": 5})
    assert joined.content == plain.content


def test_engine_keeps_working_after_a_failure_inside_a_pass(tiny_backend, tiny_model_id, monkeypatch):
    """A pass that raises mid-generation fails that request with a 500 (not a hang, not a dead
    engine thread), and the next request is served by the same engine."""
    runner = tiny_backend.engine.runner
    real_forward = runner.forward
    calls = {"n": 0}

    def failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the prompt's pass went through; the first decode step fails
            raise RuntimeError("injected fault")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(runner, "forward", failing_once)
    with pytest.raises(CompletionError) as failed:
        complete("Once upon a time", model_id=tiny_model_id, sampling_params={"max_tokens": 8})
    assert failed.value.status == 500 and calls["n"] >= 2
    monkeypatch.setattr(runner, "forward", real_forward)
    after = complete("Once", model_id=tiny_model_id, sampling_params={"max_tokens": 2})
    assert after.stop_reason and len(after.content) > 0


# ---- strict types, numeric extremes, lone surrogates, echoed ids (issue 10) ---------------------


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(stream="yes"), "stream"),
        (dict(sampling_params={"max_tokens": "10"}), "sampling_params.max_tokens"),
        (dict(sampling_params={"max_tokens": True}), "sampling_params.max_tokens"),
        (dict(sampling_params={"max_tokens": 2.5}), "sampling_params.max_tokens"),
        (dict(sampling_params={"strategy": {"type": "top_p", "temperature": "0.5"}}), "sampling_params.strategy.temperature"),
        (dict(sampling_params={"strategy": {"type": "top_p", "temperature": True}}), "sampling_params.strategy.temperature"),
        (dict(sampling_params={"strategy": {"type": "top_k", "top_k": "3"}}), "sampling_params.strategy.top_k"),
        (dict(sampling_params={"strategy": {"type": "top_p", "top_p": float("inf")}}), "sampling_params.strategy.top_p"),
        (dict(sampling_params={"repetition_penalty": float("nan")}), "sampling_params.repetition_penalty"),
        (dict(logprobs={"top_k": "2"}), "logprobs.top_k"),
    ],
)
def test_json_types_are_strict_and_finite(tiny_model_id, kwargs, field):
    body = error_of(model_id=tiny_model_id, **kwargs)
    assert body.status == 400 and body.detail.startswith(field), body.detail


def test_an_integer_is_still_a_number(tiny_model_id):
    result = complete(
        "Hi",
        model_id=tiny_model_id,
        sampling_params={"strategy": {"type": "top_p", "temperature": 1, "top_p": 1}, "max_tokens": 2},
    )
    assert result.stop_reason == "out_of_tokens"


@pytest.mark.parametrize(
    "params,field",
    [
        ({"strategy": {"type": "top_p", "temperature": 1e-38}}, "sampling_params.strategy.temperature"),
        ({"strategy": {"type": "top_p", "temperature": 1e-300, "top_p": 0.5}}, "sampling_params.strategy.temperature"),
        ({"strategy": {"type": "top_p"}, "repetition_penalty": 1e-300}, "sampling_params.repetition_penalty"),
        ({"strategy": {"type": "top_p"}, "repetition_penalty": 1e39}, "sampling_params.repetition_penalty"),
    ],
)
def test_numeric_extremes_that_overflow_are_400(tiny_model_id, params, field):
    body = error_of(model_id=tiny_model_id, sampling_params={**params, "max_tokens": 3})
    assert body.status == 400 and body.detail.startswith(field), body.detail


@pytest.mark.parametrize(
    "params",
    [
        {"strategy": {"type": "top_p", "temperature": 1e-6}},
        {"strategy": {"type": "top_p", "temperature": 1e300}},
        {"strategy": {"type": "top_p"}, "repetition_penalty": 1e-6},
        {"strategy": {"type": "top_p"}, "repetition_penalty": 1e6},
    ],
)
@pytest.mark.timeout(60)  # a request the engine cannot place must fail, never hang (main's 7ba3d0a)
def test_numeric_extremes_inside_the_bounds_work(tiny_model_id, params):
    result = complete("Hello there", model_id=tiny_model_id, sampling_params={**params, "max_tokens": 4}, seed=1)
    assert result.stop_reason == "out_of_tokens"
    assert {m.metric: m.value for m in result.metrics}["completion_tokens"] == 4


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(content="hi \ud800 there"), "content"),
        (dict(content=[{"type": "text", "text": "ok"}, {"type": "text", "text": "\udfff"}]), "content[1].text"),
        (dict(sampling_params={"stop": ["fine", "x\ud800"]}), "sampling_params.stop[1]"),
        (dict(response_format={"type": "grammar", "bnf": {"regex": "a\ud800"}}), "response_format.bnf.regex"),
    ],
)
def test_lone_surrogate_is_400_naming_the_field(tiny_model_id, kwargs, field):
    body = error_of(model_id=tiny_model_id, **kwargs)
    assert body.status == 400 and body.detail.startswith(field + ":"), body.detail
    body.model_dump_json()  # the error itself is valid Unicode


def test_echoed_ids_are_capped(tiny_model_id):
    body = error_of(model_id="m" * 100_000)
    assert body.status == 404 and len(body.detail) < 1000 and "more characters" in body.detail
    body = error_of(content={"model_id": tiny_model_id, "content": "hi", "k" * 100_000: 1})
    assert body.status == 400 and len(body.detail) < 1000


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(content=[{"type": "text", "text": 5}]), "content[0].text"),
        (dict(content={"type": "text", "text": 5}), "content.text"),
        (dict(content=[{"type": "image", "image": {"url": 5}}]), "content[0].image.url"),
        (dict(content=[{"type": "text", "text": "ok"}, {"type": "image", "image": {"data": 5}}]), "content[1].image.data"),
        (dict(sampling_params={"strategy": {"type": "top_p", "top_p": "x"}}), "sampling_params.strategy.top_p"),
        (dict(sampling_params={"strategy": {"type": "greedy", "temperature": 1}}), "sampling_params.strategy.temperature"),
        (dict(response_format={"type": "json_schema", "json_schema": 5}), "response_format.json_schema"),
    ],
)
def test_error_names_the_field_sent_not_the_union_branch(tiny_model_id, kwargs, field):
    body = error_of(model_id=tiny_model_id, **kwargs)
    assert body.status == 400 and body.detail.startswith(field + ":"), body.detail
