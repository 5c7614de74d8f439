"""CompletionWidget on the real engine: the tiny random Llama (fast) and the default model."""

from __future__ import annotations

import dataclasses
import time

import pytest

from nb_completion import CompletionWidget
from nb_completion.engine.token_text import PARTIAL_BYTES


def _wait_for_tokens(w: CompletionWidget, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(w.records) < n and w.running and time.monotonic() < deadline:
        time.sleep(0.005)


def test_tiny_model_generation_lands_in_traits_and_result(tiny_model_id):
    w = CompletionWidget("def add(a, b):", model_id=tiny_model_id, max_tokens=12, logprobs_top_k=3)
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)
    result = w.generate(wait=True, timeout=60)
    assert w.status == "done", w.error
    assert result is w.result and result.content == w.text
    assert len(w.tokens) == len(result.logprobs) <= 12
    assert "".join(t["text"] for t in w.tokens) == w.text
    for token, logprobs in zip(w.tokens, result.logprobs):
        assert len(token["top"]) >= 3 and token["rank"] >= 1
        assert set(logprobs.logprobs_by_token) <= {text for text, _ in token["top"]}
    streamed = [t for m in sent if m["type"] == "delta" for t in m["tokens"]]
    assert streamed == w.tokens
    assert w.metrics["completion_tokens"] >= len(w.tokens) and w.metrics["prompt_tokens"] > 0


def test_tiny_model_branch_continues_from_the_alternative(tiny_model_id):
    w = CompletionWidget("def add(a, b):", model_id=tiny_model_id, max_tokens=8, logprobs_top_k=4)
    w.generate(wait=True, timeout=60)
    assert len(w.tokens) >= 3, w.text
    first = w.tokens
    # a whole-character alternative (a partial one, ‹E3 81›, cannot end a text prompt)
    alt = next(text for text, _ in first[1]["top"] if text != first[1]["text"] and not PARTIAL_BYTES.search(text))
    w.continue_from(1, alt, wait=True)
    assert w.status == "done", w.error
    assert w.tokens[0] == first[0]
    assert w.tokens[1]["text"] == alt and w.tokens[1]["branch"] is True
    assert w.text.startswith(first[0]["text"] + alt)
    assert w.text == first[0]["text"] + alt + w.result.content
    assert w.content == "def add(a, b):"


def test_tiny_model_branch_forks_at_the_exact_token_ids(tiny_backend, tiny_model_id, monkeypatch):
    """A branch hands the engine its path's token ids (prompt + kept tokens + the alternative's
    id), not its text to re-tokenize; the engine reuses the whole cached prefix and its first new
    token comes from the decode pass alone: nothing is prefilled."""
    w = CompletionWidget("def add(a, b):", model_id=tiny_model_id, max_tokens=8, logprobs_top_k=4)
    w.generate(wait=True, timeout=60)
    first = w.records
    assert len(first) >= 3, w.text
    alt = next(text for text, _ in first[1].top if text != first[1].text and not PARTIAL_BYTES.search(text))
    w.show_distribution(1)  # the distribution at the alternative's position names its id
    shown = w.distribution
    alt_id = next(i for i, text in zip(shown["ids"], shown["texts"]) if text == alt)
    engine = tiny_backend.engine
    opened, at_first_token = [], []
    real_open = tiny_backend.open

    def spy(request, **kwargs):
        opened.append(kwargs["plan"].ids)
        events = real_open(request, **kwargs)
        if len(opened) > 1:
            return events

        def watched():
            before = dataclasses.replace(engine.stats)
            for event in events:
                if not at_first_token:
                    at_first_token.append((before, dataclasses.replace(engine.stats)))
                yield event

        return watched()

    monkeypatch.setattr(tiny_backend, "open", spy)
    w.continue_from(1, alt, wait=True)
    assert w.status == "done", w.error
    expected = tiny_backend.encode(w.prompt_echo) + [first[0].token_id, alt_id]
    assert opened[0] == expected
    assert w.records[1].token_id == alt_id and w.records[1].text == alt
    before, after = at_first_token[0]
    assert after.prefill_tokens - before.prefill_tokens == 0  # only the alternative is fed, by the decode pass
    assert after.reused_tokens - before.reused_tokens == len(expected) - 1


def test_tiny_model_errors_show_in_the_panel(tiny_model_id):
    w = CompletionWidget("x " * 400, model_id=tiny_model_id, max_tokens=8)  # longer than its context
    w.generate(wait=True, timeout=60)
    assert w.status == "error" and w.error["status"] == 400
    assert w.error["title"] == "Bad Request" and "context length" in w.error["detail"]
    w.content = "def add(a, b):"
    w.generate(wait=True, timeout=60)
    assert w.status == "done" and w.error == {}


@pytest.mark.real_model
def test_default_model_streams_and_stops_within_half_a_second(real_model_id):
    w = CompletionWidget(
        "Once upon a time, in a land far away, there lived a dragon who", model_id=real_model_id, max_tokens=2000
    )
    w.generate()
    _wait_for_tokens(w, 5)
    assert w.status == "running" and len(w.records) >= 5
    t0 = time.monotonic()
    w.stop()
    w.wait(timeout=5)
    stopped_in = time.monotonic() - t0
    assert stopped_in < 0.5, stopped_in
    assert w.status == "stopped" and w.metrics["cancelled"] is True
    assert 5 <= len(w.tokens) < 2000 and w.text == w.result.content
    greedy = CompletionWidget("The capital of France is", model_id=real_model_id, max_tokens=8)
    greedy.generate(wait=True, timeout=120)
    assert greedy.status == "done" and greedy.text.strip()
    assert greedy.metrics["weights"] == "Q4_1 weights (Q8_0 output), float32 activations"  # what computed them
    assert "Paris" in greedy.text


def test_tiny_model_follows_the_grammar_control(tiny_model_id):
    w = CompletionWidget(
        "n =", model_id=tiny_model_id, max_tokens=6, response_format="grammar", grammar_syntax="regex", grammar="[0-9]{1,4}"
    )
    w.generate(wait=True, timeout=60)
    assert w.status == "done", w.error
    assert w.text.isdigit() and 1 <= len(w.text) <= 4, w.text
    bad = CompletionWidget("n =", model_id=tiny_model_id, response_format="grammar", grammar_syntax="gbnf", grammar="root ::= (")
    bad.generate(wait=True, timeout=60)
    assert bad.status == "error" and bad.error["status"] == 400
    assert "grammar" in bad.invalid  # the engine's 400 is flagged at the grammar control


def test_tiny_model_status_tells_a_stop_string_from_the_end_token(tiny_model_id):
    w = CompletionWidget("Once upon a time", model_id=tiny_model_id, max_tokens=12)
    w.generate(wait=True, timeout=60)
    assert w.status == "done" and "stop_string" not in w.metrics, w.metrics
    stop = w.text[len(w.text) // 2 :][:2]  # a piece of what greedy decoding writes
    assert stop.strip(), w.text
    w.stop_strings = [stop]
    w.generate(wait=True, timeout=60)
    assert w.metrics["stop_reason"] == "end_of_turn" and w.metrics["stop_string"] == stop
    assert stop not in w.text
    assert "stop string" in w.to_html()


def test_tiny_model_grammar_runs_are_marked_so_the_status_says_the_output_is_complete(tiny_model_id):
    w = CompletionWidget("Answer:", model_id=tiny_model_id, max_tokens=12, grammar="(yes|no)", grammar_syntax="regex")
    w.generate(wait=True, timeout=60)
    assert w.status == "done" and w.text in ("yes", "no"), (w.text, w.error)
    assert w.metrics["grammar"] is True and w.metrics["stop_reason"] == "end_of_turn"
    plain = CompletionWidget("Answer:", model_id=tiny_model_id, max_tokens=3)
    plain.generate(wait=True, timeout=60)
    assert "grammar" not in plain.metrics
