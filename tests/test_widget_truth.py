"""One true state on screen (issue 22): a Generate re-run with the same seed adds no duplicate
branch, and an edited prompt drops the perplexity of the old text. Tiny model, real engine."""

from nb_completion import CompletionWidget

PROMPT = "Once upon a time there was"
SAMPLING = dict(strategy="top_p", temperature=1.2, top_p=0.95, seed=5, max_tokens=5)


def ids_of(w):
    return [t["token_id"] for t in w.tokens]


def test_generate_twice_with_the_same_seed_keeps_one_path(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, **SAMPLING)
    w.generate(wait=True, timeout=60)
    first = ids_of(w)
    w.generate(wait=True, timeout=60)
    assert ids_of(w) == first and len(first) == 5
    assert [(t["id"], t["current"], t["tokens"]) for t in w.tree] == [(0, True, 5)]
    w.seed = 6  # another seed draws another text: a second path under the original
    w.generate(wait=True, timeout=60)
    assert ids_of(w) != first
    assert [(t["id"], t["parent"], t["current"]) for t in w.tree] == [(0, None, False), (1, 0, True)]
    w.step()  # Step continues the shown (merged-into) path
    assert len(w.tree) == 2 and w.tree[1]["tokens"] == 6


def test_a_duplicate_of_an_earlier_run_shows_that_run(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, **SAMPLING)
    w.generate(wait=True, timeout=60)
    first = ids_of(w)
    w.seed = 6
    w.generate(wait=True, timeout=60)
    w.seed = 5
    w.generate(wait=True, timeout=60)
    assert ids_of(w) == first and len(w.tree) == 2 and w.tree[0]["current"]


def test_editing_the_prompt_clears_the_old_perplexity(tiny_model_id):
    w = CompletionWidget("The capital of France is Paris.", model_id=tiny_model_id)
    w.score_prompt()
    assert w.perplexity is not None and any("logprob" in t for t in w.prompt_tokens)
    w.content = "The capital of France is Paris."  # the same text: the score stays
    assert w.perplexity is not None
    w.content = "The capital of Italy is Rome."
    assert w.perplexity is None
    assert not any("logprob" in t for t in w.prompt_tokens)  # no surprisals of the old text
    w.score_prompt()
    assert w.perplexity is not None and [t["prompt"] for t in w.prompt_tokens].count(True) == len(w.prompt_tokens)


def test_showing_a_branch_shows_its_own_count_and_no_other_draw(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, **{**SAMPLING, "max_tokens": 8})
    w.generate(wait=True, timeout=60)
    assert w.metrics["tokens"] == 8 and w.metrics.get("tokens_per_second")
    w.show_distribution(2)
    w.force(2, w.distribution["ids"][3])  # a branch: 3 tokens
    w.step()  # a draw on the branch
    assert w.draw is not None and w.draw["index"] == 3
    w.show_branch(0)
    assert w.status == "done" and w.metrics == {"tokens": 8} and w.draw is None
    assert len(w.tokens) == 8 and w.tree[0]["current"]
    w.show_branch(1)
    assert w.metrics == {"tokens": 4} and len(w.tokens) == 4 and w.draw is None


def test_a_new_run_clears_the_last_steps_draw(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, **SAMPLING)
    w.step(2)
    assert w.draw is not None and w.draw["index"] == 1
    assert w.draw["text"] == w.tokens[1]["text"]  # the draw names its token by text, on the bar or not
    w.generate(wait=True, timeout=60)
    assert w.draw is None and w.status == "done"
