"""One token at a time (``stepping.py``) through the engine, tiny model: n Steps with a seed draw
the same tokens as one n-token run with that seed; the draw's uniform number falls in the chosen
token's interval of the cumulative bar; the distribution is the run's raw distribution; a
position's prefix comes from the engine's cache."""

import math

import pytest

from nb_completion.engine.records import Delta
from nb_completion.engine.sampling import make_generator
from nb_completion.service import build_request, open_events
from nb_completion.stepping import distribution_at, step

PROMPT = "Once upon a time there was"
STRATEGIES = [
    {"type": "top_p", "temperature": 1.3, "top_p": 0.9},
    {"type": "top_k", "top_k": 5},
    {"type": "top_p", "temperature": 0.7, "top_p": 1.0},
    {"type": "greedy"},
]


def request(model_id, strategy, n, **extra):
    params = {"strategy": strategy, "max_tokens": n, **extra}
    return build_request(PROMPT, model_id=model_id, sampling_params=params, logprobs=5)


def generate(model_id, strategy, n, seed, **extra):
    events = open_events(request(model_id, strategy, n, **extra), seed=seed)
    return [t for e in events if isinstance(e, Delta) for t in e.tokens]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s["type"] + str(s.get("temperature", s.get("top_k", ""))))
def test_step_n_times_equals_generate_n_with_the_seed(tiny_backend, strategy):
    mid, n, seed = tiny_backend.info.identifier, 12, 7
    expected = generate(mid, strategy, n, seed)
    req = request(mid, strategy, n)
    ids = tiny_backend.encode(PROMPT)
    generator = make_generator(seed, tiny_backend.device)
    stepped = []
    for _ in range(n):
        result = step(tiny_backend, req, ids, generator)
        if result.record is None:
            break
        stepped.append(result.record)
        ids = ids + [result.token_id]
    assert [r.token_id for r in stepped] == [r.token_id for r in expected]
    assert [r.logprob for r in stepped] == pytest.approx([r.logprob for r in expected], abs=1e-5)


def test_step_with_repetition_penalty_equals_generate(tiny_backend):
    mid, n, seed = tiny_backend.info.identifier, 10, 3
    strategy = {"type": "top_p", "temperature": 1.0, "top_p": 0.95}
    expected = generate(mid, strategy, n, seed, repetition_penalty=1.3)
    req = request(mid, strategy, n, repetition_penalty=1.3)
    ids, generator = tiny_backend.encode(PROMPT), make_generator(seed, tiny_backend.device)
    got = []
    for _ in range(len(expected)):
        result = step(tiny_backend, req, ids, generator)
        got.append(result.token_id)
        ids = ids + [result.token_id]
    assert got == [r.token_id for r in expected]


def test_the_draw_falls_in_the_chosen_tokens_interval(tiny_backend):
    mid = tiny_backend.info.identifier
    req = request(mid, {"type": "top_p", "temperature": 1.5, "top_p": 1.0}, 1)
    ids, generator = tiny_backend.encode(PROMPT), make_generator(11, tiny_backend.device)
    for _ in range(8):
        result = step(tiny_backend, req, ids, generator)
        draw = result.draw
        assert not draw.greedy and 0 <= draw.u <= 1
        assert draw.before <= draw.u <= draw.before + draw.p + 1e-12
        # the bar is the processed distribution, most likely first; the chosen one sits at `before`
        probs = [p for _, _, p in draw.bar]
        assert probs == sorted(probs, reverse=True) and sum(probs) + draw.rest == pytest.approx(1.0)
        ids = ids + [result.token_id]


def test_greedy_draw_is_the_argmax(tiny_backend):
    mid = tiny_backend.info.identifier
    result = step(tiny_backend, request(mid, {"type": "greedy"}, 1), tiny_backend.encode(PROMPT))
    assert result.draw.greedy and result.draw.u is None
    assert result.token_id == result.distribution.ids[0]
    assert result.draw.p == 1.0 and result.draw.before == 0.0


def test_distribution_is_the_raw_distribution_and_its_prefix_is_cached(tiny_backend):
    mid = tiny_backend.info.identifier
    records = generate(mid, {"type": "greedy"}, 6, None)
    ids = tiny_backend.encode(PROMPT)
    engine = tiny_backend.engine
    before = engine.stats.prefill_tokens
    dist = distribution_at(tiny_backend, request(mid, {"type": "greedy"}, 1), ids + [r.token_id for r in records[:3]])
    assert engine.stats.prefill_tokens == before  # the finished run's cache: nothing re-computed
    record = records[3]
    assert dist.position == len(ids) + 3
    assert dist.logprob(record.token_id) == pytest.approx(record.logprob, abs=1e-5)
    assert [dist.texts[i] for i in range(5)] == [t for t, _ in record.top]
    # the summary keeps all the mass: the rest bins and the top logits normalise to 1
    total = sum(math.exp(v - dist.log_z) for v in dist.logits) + sum(math.exp(lse - dist.log_z) for _, lse in dist.rest)
    assert total == pytest.approx(1.0, abs=1e-9)
    assert len(dist.ids) + sum(n for n, _ in dist.rest) == tiny_backend.vocab_size


def test_the_teaching_views_are_computed_on_the_callers_thread_not_the_engines(tiny_backend, monkeypatch):
    """Issue 24: a Step's distribution and draw are built after the read-back, on the thread that
    asked for them; the engine thread only copies the row's tensors (other rows never wait)."""
    import threading

    from nb_completion import stepping

    threads = []
    real_summarize, real_draw = stepping.summarize, stepping.draw_of

    def summarize(*args, **kwargs):
        threads.append(threading.current_thread())
        return real_summarize(*args, **kwargs)

    def draw_of(*args, **kwargs):
        threads.append(threading.current_thread())
        return real_draw(*args, **kwargs)

    monkeypatch.setattr(stepping, "summarize", summarize)
    monkeypatch.setattr(stepping, "draw_of", draw_of)
    ids = tiny_backend.encode(PROMPT)
    result = step(
        tiny_backend, request(tiny_backend.info.identifier, STRATEGIES[0], 1), ids, make_generator(3, tiny_backend.device)
    )
    assert result.draw.u is not None and result.record is not None
    assert threads == [threading.current_thread()] * 2


def test_next_token_distribution_runs_on_a_local_model_and_equals_the_engines_numbers(tiny_backend):
    from nb_completion.notebook.teaching import next_token_distribution

    mid = tiny_backend.info.identifier
    shown = next_token_distribution(PROMPT, model_id=mid)
    first = generate(mid, {"type": "greedy"}, 1, None)[0]
    (text, raw, processed), *_ = shown.table(3, strategy="greedy")
    assert text == first.text and processed == 1.0  # greedy keeps its top token only
    assert math.log(raw) == pytest.approx(first.logprob, abs=1e-5)
