"""Inside the model: the logit lens, attention and futures against transformers on the tiny
model, and compare() with a model per setting."""

from __future__ import annotations

import pytest
import torch

import nb_completion as nb
from nb_completion.engine.records import Delta
from nb_completion.service import build_request, open_events

TEXT = "The capital of France is Paris. The capital of Italy is"


def test_the_lens_last_layer_is_the_models_output_and_scores(tiny_backend, tiny_model_id):
    lens = nb.logit_lens(TEXT, model_id=tiny_model_id)
    model = tiny_backend.model
    assert len(lens.layers) == model.config.num_hidden_layers
    assert lens.token_ids == tiny_backend.encode(TEXT) and len(lens.tokens) == len(lens.token_ids)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([lens.token_ids]), output_hidden_states=True)
    logprobs = torch.log_softmax(out.logits[0].float(), -1)
    assert torch.allclose(lens.layers[-1].logprobs, logprobs, atol=1e-4)
    scored = nb.score(TEXT, model_id=tiny_model_id).tokens
    for i in range(len(lens.tokens) - 1):
        top = lens.layers[-1].top(i)
        assert len(top) == 10 and [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
        assert top[0][0] == scored[i + 1].top[0][0]
        assert top[0][1] == pytest.approx(scored[i + 1].top[0][1], abs=1e-4)


def test_an_earlier_layer_reads_its_own_residual_through_the_final_norm(tiny_backend, tiny_model_id):
    lens = nb.logit_lens(TEXT, model_id=tiny_model_id)
    model = tiny_backend.model
    with torch.inference_mode():
        hidden = model(input_ids=torch.tensor([lens.token_ids]), output_hidden_states=True).hidden_states
        first = torch.log_softmax(model.lm_head(model.model.norm(hidden[1]))[0].float(), -1)
    assert torch.allclose(lens.layers[0].logprobs, first, atol=1e-4)
    assert lens.first_layer_with(len(lens.tokens) - 1, lens.layers[-1].top(len(lens.tokens) - 1, 1)[0][0]) is not None


def test_attention_equals_transformers_eager_attentions(tiny_backend, tiny_model_id):
    from transformers import AutoModelForCausalLM

    before = tiny_backend.model.config._attn_implementation
    seen = nb.attention(TEXT, model_id=tiny_model_id)
    assert tiny_backend.model.config._attn_implementation == before  # put back for generation
    eager = AutoModelForCausalLM.from_config(tiny_backend.model.config, attn_implementation="eager")
    eager.load_state_dict(tiny_backend.model.state_dict())
    with torch.inference_mode():
        reference = eager(input_ids=torch.tensor([seen.token_ids]), output_attentions=True).attentions
    assert seen.layers == len(reference)
    for layer in range(seen.layers):
        for head in range(seen.heads):
            w = seen.weights(layer, head)
            assert torch.allclose(w, reference[layer][0, head].float(), atol=1e-4)
            assert torch.allclose(w.sum(-1), torch.ones(w.shape[0]), atol=1e-5)
            assert torch.equal(torch.triu(w, diagonal=1), torch.zeros_like(w))  # nothing from the future
    # generation still works after the eager pass (the implementation was put back)
    assert nb.complete("Once", model_id=tiny_model_id, sampling_params={"max_tokens": 3}).stop_reason


def test_futures_are_seeded_batched_and_each_its_own_run(tiny_model_id):
    first = nb.futures("Once upon a time", n=4, max_tokens=8, seed=3, model_id=tiny_model_id)
    again = nb.futures("Once upon a time", n=4, max_tokens=8, seed=3, model_id=tiny_model_id)
    assert [p.text for p in first.paths] == [p.text for p in again.paths]
    assert len({p.text for p in first.paths}) > 1  # sampled, not four copies
    for path in first.paths:  # each equals the same seed run alone
        request = build_request(
            "Once upon a time", tiny_model_id, {"strategy": {"type": "top_p", "temperature": 1.0}, "max_tokens": 8}
        )
        alone = [t for e in open_events(request, seed=path.seed) if isinstance(e, Delta) for t in e.tokens]
        assert [t.token_id for t in path.tokens] == [t.token_id for t in alone]
        assert path.mean_logprob == pytest.approx(sum(t.logprob for t in alone) / len(alone), abs=1e-4)


def test_compare_runs_each_setting_on_its_own_model(tiny_model_id, save_tiny):
    other = str(save_tiny("second-model"))
    both = nb.compare("Once upon a time", settings=[{"model_id": tiny_model_id}, {"model_id": other}], max_tokens=6, live=False)
    for run, model in zip(both.runs, [tiny_model_id, other]):
        alone = nb.complete(
            "Once upon a time",
            model_id=model,
            sampling_params={**run.request.sampling_params.model_dump(exclude_none=True)},
        )
        assert run.request.model_id == model and run.text == alone.content
    assert tiny_model_id in both.model_id and other in both.model_id


@pytest.mark.real_model
def test_the_lens_and_attention_on_the_default_model(real_backend, real_model_id):
    lens = nb.logit_lens("The capital of France is", model_id=real_model_id)
    last = len(lens.tokens) - 1
    assert lens.layers[-1].top(last, 1)[0][0] == " Paris"
    scored = nb.score("The capital of France is Paris", model_id=real_model_id).tokens
    paris = scored[-1]
    assert paris.top[0][0] == " Paris"
    assert lens.layers[-1].top(last, 1)[0][1] == pytest.approx(paris.top[0][1], abs=1e-4)
    decided = lens.first_layer_with(last, " Paris")
    assert decided is not None and decided >= len(lens.layers) - 2  # only at the last layers (the notebook says so)
    seen = nb.attention("The capital of France is Paris", model_id=real_model_id)
    assert seen.layers == 30 and seen.heads == 9
    w = seen.weights(seen.layers - 1)
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[0]), atol=1e-5)


@pytest.fixture(scope="module")
def arch_tokenizer():
    from nb_completion.engine.tiny import build_tokenizer

    return build_tokenizer()


def _arch_backend(name, tokenizer):
    from arch_configs import build

    from nb_completion.engine.local import LocalBackend

    return LocalBackend(build(name, len(tokenizer)), tokenizer, f"tiny-{name}")


def _arch_names():
    from arch_configs import ARCHS

    return sorted(ARCHS)


@pytest.mark.parametrize("name", _arch_names())
def test_the_lens_reads_every_architecture_the_engine_runs(name, arch_tokenizer):
    """Its last layer is the model's own output (scaled or soft-capped logits included);
    attention is there for every model that attends, and a clear refusal for one that does not."""
    from nb_completion.api.errors import BadRequest
    from nb_completion.inside.attention import attention_of_ids
    from nb_completion.inside.lens import lens_of_ids

    backend = _arch_backend(name, arch_tokenizer)
    ids = arch_tokenizer(TEXT)["input_ids"]
    lens = lens_of_ids(backend, ids)
    with torch.inference_mode():
        own = torch.log_softmax(backend.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    assert len(lens.layers) == backend.model.config.num_hidden_layers
    assert torch.equal(lens.layers[-1].logprobs, own)
    if name in ("mamba", "mamba2", "rwkv"):
        with pytest.raises(BadRequest, match="no attention weights: its layers keep a recurrent state"):
            attention_of_ids(backend, ids)
    else:
        w = attention_of_ids(backend, ids).weights(0)
        assert torch.allclose(w.sum(-1), torch.ones(len(ids)), atol=1e-4)


@pytest.mark.parametrize(
    ("name", "what"), [("gemma2", "soft-capped at 30"), ("cohere", "scaled by 0.0625"), ("granite", "divided by 4")]
)
def test_each_layer_of_the_lens_gets_the_models_final_scaling(name, what, arch_tokenizer):
    from arch_configs import ARCHS

    from nb_completion.inside.lens import lens_of_ids

    if name == "granite":  # its default scaling is 1: a model that divides by 4
        ARCHS_backup = dict(ARCHS["granite"])
        ARCHS["granite"]["logits_scaling"] = 4.0
        try:
            backend = _arch_backend(name, arch_tokenizer)
        finally:
            ARCHS["granite"] = ARCHS_backup
    else:
        backend = _arch_backend(name, arch_tokenizer)
    model = backend.model
    ids = arch_tokenizer(TEXT)["input_ids"]
    lens = lens_of_ids(backend, ids)
    assert what in lens.note
    with torch.inference_mode():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1]
        raw = model.lm_head(model.model.norm(hidden))[0].float()
    config = model.config
    scaled = {
        "gemma2": lambda x: torch.tanh(x / config.final_logit_softcapping) * config.final_logit_softcapping,
        "cohere": lambda x: x * config.logit_scale,
        "granite": lambda x: x / config.logits_scaling,
    }[name](raw)
    assert torch.allclose(lens.layers[0].logprobs, torch.log_softmax(scaled, -1), atol=1e-4)
    assert not torch.allclose(lens.layers[0].logprobs, torch.log_softmax(raw, -1), atol=1e-2)  # the scaling matters


@pytest.mark.parametrize(
    ("name", "attending"), [("jamba", [1]), ("recurrent_gemma", [1]), ("falcon_h1", [0, 1]), ("llama", [0, 1])]
)
def test_attention_names_the_decoder_layer_of_each_attention(name, attending, arch_tokenizer):
    """A hybrid attends in some layers only: each returned attention keeps its decoder layer
    (Jamba's layer 2 is its attention layer, its layer 1 a Mamba block), and the SVG says so."""
    from nb_completion.inside.attention import attention_of_ids

    backend = _arch_backend(name, arch_tokenizer)
    att = attention_of_ids(backend, arch_tokenizer(TEXT)["input_ids"])
    assert att.layer_ids == attending and att.layers == len(attending) and att.decoder_layers == 2
    row = att.row()
    assert row["layer_ids"] == attending
    assert f"in layer {attending[-1] + 1}," in att.to_svg()


def test_a_layer_reads_a_position_when_asked_and_agrees_with_its_whole_readout(tiny_backend):
    """Layers keep their residual stream, not [tokens, vocab] floats: a position read alone
    (``row``, what ``top`` and the widget use) equals that row of the whole readout."""
    from nb_completion.inside.lens import lens_of_ids

    ids = tiny_backend.encode(TEXT)
    lens = lens_of_ids(tiny_backend, ids)
    for layer in lens.layers:
        whole = layer.logprobs
        assert len(layer) == len(ids) == whole.shape[0]
        for i in (0, len(ids) // 2, len(ids) - 1):
            assert torch.allclose(layer.row(i), whole[i], atol=1e-6)
    with pytest.raises(IndexError, match="no position"):
        lens.layers[0].row(len(ids))
