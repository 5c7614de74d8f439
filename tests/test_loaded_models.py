"""``nb.models()`` lists the loaded models with their memory; ``nb.unload_model`` frees one."""

from __future__ import annotations

import weakref

import pytest
from arch_configs import build

import nb_completion as nb
from nb_completion.api.errors import ModelNotFound
from nb_completion.engine import registry
from nb_completion.engine.local import LocalBackend
from nb_completion.engine.tiny import build_tokenizer


def test_models_lists_both_with_their_memory_and_unload_frees_one():
    tokenizer = build_tokenizer()
    llama = LocalBackend(build("llama", len(tokenizer)), tokenizer, "side-llama", dtype="float32", device="cpu")
    gpt2 = LocalBackend(build("gpt2", len(tokenizer)), tokenizer, "side-gpt2", dtype="float32", device="cpu")
    registry.register(llama)
    registry.register(gpt2)
    try:
        nb.complete("Once upon", model_id="side-llama", sampling_params={"max_tokens": 3})
        nb.complete("Once upon", model_id="side-gpt2", sampling_params={"max_tokens": 3})
        listed = {m.model_id: m for m in nb.models()}
        weights = sum(p.numel() * 4 for p in llama.model.parameters())
        assert listed["side-llama"].weight_bytes >= weights and listed["side-llama"].path == "batched"
        assert listed["side-llama"].cache_bytes > 0
        assert listed["side-gpt2"].path == "per-sequence" and listed["side-gpt2"].weight_bytes > 0
        assert "side-gpt2" in str(listed["side-gpt2"]) and "MiB weights" in str(listed["side-gpt2"])

        gone = weakref.ref(gpt2.model)
        del gpt2
        nb.unload_model("side-gpt2")
        assert "side-gpt2" not in {m.model_id for m in nb.models()}
        assert gone() is None  # nothing holds the weights any more
        with pytest.raises(ModelNotFound):
            nb.complete("Once", model_id="side-gpt2", sampling_params={"max_tokens": 2})
    finally:
        registry.unregister("side-llama")
        registry.unregister("side-gpt2")
        llama.close()


def test_unloading_a_model_that_is_not_loaded_is_a_404_naming_it():
    with pytest.raises(ModelNotFound) as caught:
        nb.unload_model("never-loaded")
    assert caught.value.status == 404 and "never-loaded" in str(caught.value)


@pytest.mark.parametrize(
    "config_args, words",
    [
        ({"model_type": "bert"}, "is an encoder"),
        ({"model_type": "t5", "d_model": 64, "d_ff": 128, "num_heads": 4, "d_kv": 16}, "encoder-decoder"),
        ({"model_type": "vit"}, "no causal language-model head"),
    ],
    ids=["bert", "t5", "vit"],
)
def test_a_model_that_cannot_generate_is_a_400_saying_why(tmp_path, config_args, words):
    from transformers import AutoConfig

    from nb_completion.api.errors import BadRequest
    from nb_completion.engine import loading

    args = dict(config_args)
    config = AutoConfig.for_model(args.pop("model_type"), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, **args)
    config.save_pretrained(tmp_path)
    build_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(BadRequest) as caught:
        loading.ensure_loaded(str(tmp_path), dtype="float32")
    assert caught.value.status == 400 and words in str(caught.value) and str(tmp_path) in str(caught.value)
