"""The widget's teaching views with the tiny model through the real engine: Step continues a seed
exactly as one longer Generate, the distribution at a position, a forced token as a branch, the
tree, Score."""

import math

import pytest

import nb_completion
from nb_completion import CompletionWidget

PROMPT = "Once upon a time there was"
SAMPLING = dict(strategy="top_p", temperature=1.2, top_p=0.95, seed=5)


def ids_of(w):
    return [t["token_id"] for t in w.tokens]


def test_step_n_times_equals_generate_n_with_the_seed(tiny_model_id):
    n = 8
    g = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=n, **SAMPLING)
    g.generate(wait=True, timeout=60)
    s = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=n, **SAMPLING)
    for _ in range(n):
        s.step()
    assert len(ids_of(g)) == n and ids_of(s) == ids_of(g)
    assert [t["index"] for t in s.tokens] == list(range(n))
    assert s.draw["token_id"] == ids_of(s)[-1] and s.draw["before"] <= s.draw["u"] <= s.draw["before"] + s.draw["p"]
    assert len(s.tree) == 1 and s.tree[0]["tokens"] == n  # the Steps extend one path


def test_step_continues_after_generate(tiny_model_id):
    long = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=7, **SAMPLING)
    long.generate(wait=True, timeout=60)
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=4, **SAMPLING)
    w.generate(wait=True, timeout=60)
    w.step(3)
    assert ids_of(w) == ids_of(long)


def test_distribution_at_the_end_and_at_a_token(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=5)
    w.generate(wait=True, timeout=60)
    d = w.distribution  # after a run: the next token's distribution
    assert d["end"] and d["chosen"] is None and d["index"] == 5 and len(d["ids"]) >= 20
    w.show_distribution(2)
    d = w.distribution
    assert d["index"] == 2 and d["chosen"] == w.tokens[2]["token_id"] and d["ids"][0] == d["chosen"]  # greedy
    log_z = math.log(sum(math.exp(v) for v in d["logits"]) + sum(math.exp(lse) for _, lse in d["rest"]))
    assert d["logits"][0] - log_z == pytest.approx(w.tokens[2]["logprob"], abs=1e-4)


def test_forcing_a_token_branches_and_the_tree_keeps_every_path(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=5)
    w.generate(wait=True, timeout=60)
    original = ids_of(w)
    w.show_distribution(2)
    alt = w.distribution["ids"][3]
    w.force(2, alt)
    assert ids_of(w) == original[:2] + [alt]
    assert w.tokens[2]["rank"] == 4 and w.tokens[2].get("branch")
    w.step(2)
    assert len(w.tokens) == 5 and ids_of(w)[:3] == original[:2] + [alt]
    tree = w.tree
    assert [t["id"] for t in tree] == [0, 1] and tree[0]["parent"] is None and tree[1]["parent"] == 0
    assert tree[1]["split"] == 2 and tree[1]["token"] == w.tokens[2]["text"] and tree[1]["current"]
    assert tree[1]["logprob"] == pytest.approx(sum(t["logprob"] for t in w.tokens), abs=1e-3)
    w.show_branch(0)
    assert ids_of(w) == original and w.tree[0]["current"]
    w.continue_from(1, w.tokens[1]["top"][1][0], wait=True)  # an alternative from the tooltip
    assert len(w.tree) == 3 and w.tree[2]["parent"] == 0 and w.tree[2]["split"] == 1


def test_score_scores_the_prompt_and_generates_nothing(tiny_model_id):
    w = CompletionWidget("The capital of France is Paris.", model_id=tiny_model_id)
    scored = w.score_prompt()
    assert w.tokens == [] and w.status != "running"
    expected = nb_completion.score("The capital of France is Paris.", model_id=tiny_model_id)
    assert w.perplexity == pytest.approx(expected.perplexity, rel=1e-3)
    assert [t["token_id"] for t in w.prompt_tokens] == [t.token_id for t in expected.tokens]
    assert all(t["prompt"] for t in w.prompt_tokens) and "logprob" not in w.prompt_tokens[0]
    assert w.prompt_tokens[1]["logprob"] == pytest.approx(scored.tokens[1].logprob, abs=1e-4)
    assert w.prompt_tokens[1]["rank"] == scored.tokens[1].rank


def test_score_on_a_new_prompt_keeps_the_tree_and_its_branches(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=3)
    w.generate(wait=True, timeout=60)
    w.show_distribution(1)
    w.force(1, w.distribution["ids"][1])
    before = [(t["id"], t["parent"], t["kind"]) for t in w.tree]
    w.content = "The capital of France is Paris."
    w.score_prompt()
    assert [(t["id"], t["parent"], t["kind"]) for t in w.tree][:2] == before  # nothing dropped
    assert w.tree[-1]["kind"] == "score" and w.tree[-1]["parent"] is None and w.tree[-1]["current"]
    assert w.perplexity is not None and w.tokens == []
    w.show_branch(1)  # the forced branch is still there to show
    assert len(w.tokens) >= 2 and w.tree[1]["current"]
    assert not any("perplexity" in svg for svg in w.teaching_svgs())  # that score was of the other text


def test_a_tooltip_alternative_forces_one_token_like_a_bar(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=4)
    w.generate(wait=True, timeout=60)
    original = [t["text"] for t in w.tokens]
    alt = w.tokens[1]["top"][1][0]
    w._on_frontend_msg(w, {"type": "branch", "index": 1, "text": alt}, [])  # the tooltip's click
    assert [t["text"] for t in w.tokens] == [original[0], alt] and w.status == "done"  # one token, no run
    assert w.tree[-1]["kind"] == "force" and w.tree[-1]["split"] == 1
    assert w.branch == {"index": 1, "chosen": alt, "original": original[1], "rank": 2, "forced": True}
    by_alternative = w.tokens
    w.show_branch(0)
    w.show_distribution(1)
    w._on_frontend_msg(w, {"type": "force", "position": 1, "token_id": w.distribution["ids"][1]}, [])  # the bar's click
    assert w.tokens == by_alternative


def test_teaching_messages_from_the_browser(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=3)
    w.generate(wait=True, timeout=60)
    w._on_frontend_msg(w, {"type": "distribution", "index": 1}, [])
    assert w.distribution["index"] == 1
    w._on_frontend_msg(w, {"type": "force", "position": 1, "token_id": w.distribution["ids"][1]}, [])
    assert len(w.tree) == 2
    w._on_frontend_msg(w, {"type": "show_branch", "id": 7}, [])
    assert w.status == "error" and "branch" in w.error["detail"]


def test_the_distribution_and_the_tree_are_exported_as_svg(tiny_model_id):
    import xml.etree.ElementTree as ET

    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=4, strategy="top_k", top_k=3)
    w.generate(wait=True, timeout=60)
    w.show_distribution(1)
    w.force(1, w.distribution["ids"][2])  # a second path
    svg = w._repr_mimebundle_()[0]["image/svg+xml"]
    root = ET.fromstring(svg)  # well-formed
    ns = "{http://www.w3.org/2000/svg}"
    bars = [g for g in root.iter(ns + "g") if g.get("data-token-id")]
    assert len(bars) >= 20 and sum(g.get("data-excluded") == "false" for g in bars) == 3  # top-k 3
    text = " ".join(t.text or "" for t in root.iter(ns + "text"))
    assert "Next-token distribution" in text and "Branches" in text and "original run" in text and "at #1" in text


def test_step_and_distribution_after_a_branch_from_a_tooltip_alternative(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=4)
    w.generate(wait=True, timeout=60)
    alt = next(t for t, _ in w.tokens[1]["top"][1:] if "‹" not in t)  # a whole-character alternative
    w.continue_from(1, alt, wait=True)  # a branch from a tooltip alternative
    before, n = w.text, len(w.tokens)
    w.step()
    assert w.text.startswith(before) and len(w.tokens) == n + 1
    w.show_distribution(3)
    assert w.distribution["chosen"] == w.tokens[3]["token_id"]
    assert w.distribution["logits"][w.distribution["ids"].index(w.distribution["chosen"])] is not None
