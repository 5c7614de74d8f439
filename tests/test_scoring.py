"""``score()`` against a plain transformers forward: each token's logprob is ``log_softmax`` of
the logits the model gives to the ids before it (one forward per prefix here, so the oracle does
not share the scorer's single pass), ranks equal, perplexity is exp(-mean logprob)."""

import math

import pytest
import torch

import nb_completion
from nb_completion import BadRequest

TEXTS = ["The capital of France is Paris. The capital of Italy is Rome.", "Café, naïve, 東京 🙂\n  def add(a, b):"]


def oracle(backend, ids):
    """(logprob, rank) of ids[i] given ids[:i], for i >= 1: a separate forward per prefix, float32."""
    out = []
    with torch.inference_mode():
        for i in range(1, len(ids)):
            logits = backend.model(input_ids=torch.tensor([ids[:i]]), use_cache=False).logits[0, -1].float()
            lp = torch.log_softmax(logits, -1)
            out.append((float(lp[ids[i]]), int((lp > lp[ids[i]]).sum()) + 1))
    return out


def check(backend, text):
    scored = nb_completion.score(text, model_id=backend.info.identifier)
    ids = backend.encode(text)
    assert [t.token_id for t in scored.tokens] == ids
    assert scored.tokens[0].logprob is None and scored.tokens[0].rank is None
    expected = oracle(backend, ids)
    for token, (lp, rank) in zip(scored.tokens[1:], expected):
        assert token.logprob == pytest.approx(lp, abs=1e-4)
        assert token.rank == rank
        assert token.top[0][1] >= token.logprob
        assert len(token.top) == 5
    mean = sum(lp for lp, _ in expected) / len(expected)
    assert scored.perplexity == pytest.approx(math.exp(-mean), rel=1e-4)
    return scored


@pytest.mark.parametrize("text", TEXTS)
def test_score_equals_log_softmax_of_a_plain_forward(tiny_backend, text):
    scored = check(tiny_backend, text)
    # the tokens' texts give back the text (the tiny tokenizer adds no special token)
    assert "".join(t.text for t in scored.tokens) == text


def test_score_renders_a_heatmap_of_prompt_tokens(tiny_backend):
    scored = nb_completion.score("The capital of France is Paris.", model_id=tiny_backend.info.identifier)
    bundle = scored._repr_mimebundle_()
    assert "perplexity" in bundle["text/plain"]
    html = bundle["text/html"]
    n = len(scored.tokens)
    for i in range(n):
        assert f'data-prompt="true" data-token-index="{i}"' in html
    assert html.count("data-token-index=") == n
    assert bundle["image/svg+xml"].startswith("<svg") and "perplexity" in bundle["image/svg+xml"]


@pytest.mark.real_model
def test_score_a_scrambled_sentence_is_more_surprising(real_model_id):
    mid = real_model_id
    good = nb_completion.score("The capital of France is Paris. The capital of Italy is Rome.", model_id=mid)
    bad = nb_completion.score("Rome capital The Paris. is of Italy France The is capital of", model_id=mid)
    assert bad.perplexity > good.perplexity


def test_score_refuses_non_text(tiny_backend):
    with pytest.raises(BadRequest) as info:
        nb_completion.score(42, model_id=tiny_backend.info.identifier)
    assert "text" in info.value.error.detail


@pytest.mark.real_model
def test_score_real_model_equals_log_softmax_of_a_plain_forward(real_backend_f32):
    scored = check(real_backend_f32, "The capital of France is Paris, and the capital of Germany is Berlin.")
    assert scored.perplexity < 50


def test_complete_magic_score_shows_the_scored_cell(tiny_backend):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext nb_completion")
    mid = tiny_backend.info.identifier
    result = ip.run_cell(f"%%complete --score --model {mid} -o s\nThe capital of France is Paris.\n")
    assert result.success
    scored = ip.user_ns["s"]
    assert result.result is scored and scored.text == "The capital of France is Paris."
    assert scored.perplexity == pytest.approx(nb_completion.score(scored.text, model_id=mid).perplexity)
