"""The widget's inside views on the tiny Llama: the lens and attention of a clicked token (the
model's own numbers), Sample 5 (five branches in the tree, each its own seeded run), a second
model's column, the messages from the view, and the SVG copies of the lens and attention."""

from __future__ import annotations

import re

import pytest
import torch

import nb_completion as nb
from nb_completion import CompletionWidget
from nb_completion.engine.records import Delta
from nb_completion.inside.attention import attention_of_ids
from nb_completion.notebook.render_inside_svg import attention_svg, lens_svg
from nb_completion.service import build_request, open_events

PROMPT = "The capital of France is"


@pytest.fixture()
def widget(tiny_model_id):
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=6)
    w.generate(wait=True)
    assert w.status == "done" and len(w.tokens) == 6
    return w


def test_the_lens_of_a_generated_token_is_what_predicted_it(widget, tiny_backend, tiny_model_id):
    lens = widget.show_lens(3)
    assert widget.lens == lens and lens["index"] == 3 and "error" not in lens
    assert len(lens["layers"]) == tiny_backend.model.config.num_hidden_layers and all(len(r) == 5 for r in lens["layers"])
    # the last layer is the model's own distribution for token 3: its top alternatives
    token = widget.records[3]
    assert [t for t, _ in lens["layers"][-1]] == [tiny_backend.piece(i) for i in token.top_ids[:5]]
    assert [lp for _, lp in lens["layers"][-1]] == pytest.approx([lp for _, lp in token.top[:5]], abs=1e-4)
    assert lens["chosen"] == tiny_backend.piece(token.token_id)
    assert lens["final"] == lens["layers"][-1][0][0]
    first = lens["first_top"]
    assert lens["layers"][first][0][0] == lens["final"] and all(r[0][0] != lens["final"] for r in lens["layers"][:first])
    assert "".join(lens["context"]) == "".join(tiny_backend.piece(i) for i in tiny_backend.encode(PROMPT)) + "".join(
        tiny_backend.piece(r.token_id) for r in widget.records[:3]
    )


def test_the_lens_of_a_prompt_token_equals_score(widget, tiny_model_id):
    scored = nb.score(PROMPT, model_id=tiny_model_id).tokens
    for i in (1, len(scored) - 1):
        lens = widget.show_lens(i, prompt=True)
        assert lens["layers"][-1][0][1] == pytest.approx(scored[i].top[0][1], abs=1e-4)
    assert widget.show_lens(0, prompt=True)["error"].startswith("no prompt token 0")


def test_a_position_that_is_not_there_is_a_message_not_a_crash(widget):
    assert widget.show_lens(99) == {"index": 99, "prompt": False, "error": "no token #99 (the output has 6 tokens)"}
    assert "no token #-1" in widget.show_attention(-1)["error"]


def test_attention_of_a_token_is_its_row_of_every_layer_and_head(widget, tiny_backend):
    row = widget.show_attention(2)
    assert widget.attention_row == row and row["position"] == 2
    ids = tiny_backend.encode(PROMPT) + [r.token_id for r in widget.records[:3]]
    assert len(row["tokens"]) == len(ids)
    full = attention_of_ids(tiny_backend, ids)
    for layer in range(full.layers):
        assert row["mean"][layer] == pytest.approx(full.weights(layer)[-1].tolist(), abs=1e-4)
        for head in range(full.heads):
            assert row["per_head"][layer][head] == pytest.approx(full.weights(layer, head)[-1].tolist(), abs=1e-4)
            assert sum(row["per_head"][layer][head]) == pytest.approx(1.0, abs=1e-3)


def test_sample_five_adds_five_seeded_branches_from_one_position(widget, tiny_backend, tiny_model_id):
    shown = [t["text"] for t in widget.tokens]
    futures = widget.sample_futures(2)
    assert [t["text"] for t in widget.tokens] == shown  # the shown path stays
    paths = futures["paths"]
    assert len(paths) == 5 and futures["index"] == 2 and len({p["text"] for p in paths}) > 1
    items = {i["id"]: i for i in widget.tree}
    ids = tiny_backend.encode(PROMPT) + [r.token_id for r in widget.records[:2]]
    for j, p in enumerate(paths):
        item = items[p["id"]]
        assert item["kind"] == "sample" and item["parent"] == 0 and item["split"] == 2
        assert [t["index"] for t in p["tokens"]] == list(range(2, 2 + len(p["tokens"])))
        # each equals its seed run alone from the same ids (greedy controls: sampled at temperature 1)
        request = build_request(
            "unused",
            tiny_model_id,
            {"strategy": {"type": "top_p", "temperature": 1.0, "top_p": 1.0}, "max_tokens": 6},
            logprobs={"top_k": 5},
        )
        alone = [
            t
            for e in open_events(request, seed=j, plan=tiny_backend.prepare(request, ids=ids))
            if isinstance(e, Delta)
            for t in e.tokens
        ]
        assert [t["token_id"] for t in p["tokens"]] == [t.token_id for t in alone]
        assert p["mean_logprob"] == pytest.approx(sum(t.logprob for t in alone) / len(alone), abs=1e-3)
    widget.show_branch(paths[0]["id"])
    assert [t["text"] for t in widget.tokens] == shown[:2] + [t["text"] for t in paths[0]["tokens"]]


def test_a_second_model_column_runs_the_same_prompt_on_its_model(tiny_model_id, save_tiny):
    other = str(save_tiny("column-model"))
    w = CompletionWidget(PROMPT, model_id=tiny_model_id, max_tokens=5, seed=1)
    w.compare_model = other
    w._compare_thread.join(60)
    column = w.compare_column
    alone = nb.complete(PROMPT, model_id=other, sampling_params={"max_tokens": 5}, logprobs={"top_k": 5})
    assert column["status"] == "done" and column["model"] == other
    assert "".join(t["text"] for t in column["tokens"]) == alone.content
    w.generate(wait=True)  # a Generate runs the column again
    w._compare_thread.join(60)
    assert w.compare_column["status"] == "done" and len(w.compare_column["tokens"]) == 5
    w.compare_model = ""
    assert w.compare_column is None


def test_the_views_messages_run_off_the_kernels_thread(widget):
    for kind, trait in (("lens", "lens"), ("attention", "attention_row"), ("sample", "futures")):
        widget._on_frontend_msg(widget, {"type": kind, "index": 1, "prompt": False}, [])
        widget._inside_thread.join(60)
        assert not widget._inside_thread.is_alive()
        assert getattr(widget, trait) is not None and "error" not in getattr(widget, trait), kind
    assert widget.status == "done" and widget.error == {}


def test_the_lens_and_attention_as_svg_images(widget):
    lens = widget.show_lens(3)
    svg = lens_svg(lens)
    assert svg.startswith("<svg") and 'role="img"' in svg
    title = re.search(r"<title>(.*?)</title>", svg).group(1)
    assert f"layer {lens['first_top'] + 1}" in title and "Logit lens" in title
    assert "chosen_track" not in lens  # greedy: the written token is the answer, one tracked column
    assert svg.count("<rect") == 1 + (1 + 5) * len(lens["layers"])  # the background, the answer and the top 5 per layer
    assert "(answer)" in svg and re.search(r">(\d+%|<1%) #1<", svg)  # the answer's cell at the output: rank 1
    row = widget.show_attention(2)
    svg = attention_svg(row, layer=0, head=1)
    assert 'role="img"' in svg and "head 2" in re.search(r"<title>(.*?)</title>", svg).group(1)
    opacities = [float(x) for x in re.findall(r'fill-opacity="([\d.]+)"', svg)]
    weights = row["per_head"][0][1]
    assert opacities == pytest.approx([0.6 * w / max(weights) for w in weights], abs=1e-3)  # as the widget


def test_a_lens_that_cannot_read_the_model_says_so(widget, tiny_backend, monkeypatch):
    head = tiny_backend.model.lm_head
    weight = head.weight
    # a head that is not what the model uses after its last layer: the lens refuses, saying why
    monkeypatch.setattr(
        tiny_backend.model, "get_output_embeddings", lambda: torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    )
    lens = widget.show_lens(2)
    assert "meaningless" in lens["error"] and "final norm and output layer" in lens["error"]


def test_the_saved_copy_keeps_the_inside_views_as_images_with_alt_text(widget, tiny_model_id):
    """An exported notebook (nbconvert, GitHub) shows the lens, the attention, the futures and the
    second model's column the panel showed, each an <img> with its alt text, and the SVG stack."""
    widget.show_lens(3)
    widget.show_attention(3)
    widget.sample_futures(2)
    widget.compare_model = tiny_model_id
    widget.run_compare(wait=True)
    copy = widget._static_copy()
    alts = re.findall(r'<img src="data:image/svg\+xml;base64,[^"]+" alt="([^"]*)"', copy["text/html"])
    assert any(a.startswith("Logit lens of tiny-llama") for a in alts), alts
    assert any(a.startswith("Attention of token") for a in alts), alts
    assert "5 futures from position #2, each with its mean log-probability per token" in alts, alts
    assert f"the second model, {tiny_model_id}, on the same prompt" in alts, alts
    for svg in widget.inside_svgs():
        assert svg.startswith("<svg") and 'role="img"' in svg and "<title>" in svg
    assert copy["image/svg+xml"].count("<svg") >= 1 + 4  # the heatmap, the inside views, the teaching ones


def test_the_lens_tracks_the_answer_and_the_written_token_through_every_layer(widget, tiny_backend):
    """However far down the top 5 it is, the answer's probability and rank at each layer: rank 1
    from the marked layer on where it first becomes top, and the model's own number at the output;
    the token written there (when it is not the answer) tracked the same way."""
    from nb_completion.inside.lens import lens_of_ids

    lens = widget.show_lens(2)
    track = lens["answer_track"]
    assert len(track) == len(lens["layers"])
    assert track[-1] == [lens["layers"][-1][0][1], 1]
    assert track[lens["first_top"]][1] == 1 and all(rank > 1 for _, rank in track[: lens["first_top"]])
    assert "chosen_track" not in lens  # greedy: the token written is the answer
    ids = tiny_backend.encode(PROMPT)
    full = lens_of_ids(tiny_backend, ids)
    last = len(ids) - 1
    other = int(torch.argsort(full.layers[-1].logprobs[last])[len(full.layers[-1].logprobs[last]) // 2])  # a middling token
    grid = full.grid(last, 5, chosen_id=other)
    for n, (logprob, rank) in enumerate(grid["chosen_track"]):
        row = full.layers[n].logprobs[last]
        assert logprob == pytest.approx(float(row[other]), abs=1e-5)
        assert rank == int((row > row[other]).sum()) + 1
