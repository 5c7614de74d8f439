"""Which engine path an architecture takes (docs/models.md).

The batched, forking engine (``batch_engine.py``) keeps keys and values in its own slot store
(``kv.py``) and hands the model a 4-D additive causal mask and per-row positions. That holds a model
exactly when every layer is full attention over a standard key/value cache that the model reads
through ``cache.update`` and the mask it is given. It is verified token-identical with HF
``generate()`` for the ``model_type``s in ``BATCHED`` (tests/test_architectures.py); anything else
(sliding windows, ALiBi, learned positions, recurrent state, unknown layouts) runs the per-sequence
path (``sequential.py``), which uses the model's own forward and cache and is HF-identical.
"""

from __future__ import annotations

from typing import Any

# full attention + rotary positions + a standard cache: the batched slot cache holds these right
BATCHED = frozenset(
    {
        "llama",
        "qwen2",
        "qwen3",
        "mistral",
        "gemma",
        "phi",
        "phi3",
        "granite",
        "olmo",
        "olmo2",
        "stablelm",
        "starcoder2",
        "cohere",
        "smollm3",
        "helium",
        "glm",
        "mixtral",
        "qwen2_moe",
        "qwen3_moe",
    }
)


def windowed(config: Any) -> bool:
    """Whether some layer attends to a sliding window shorter than the context."""
    layer_types = getattr(config, "layer_types", None) or ()
    if any(t != "full_attention" for t in layer_types):
        return True
    window = getattr(config, "sliding_window", None)
    if window is None or getattr(config, "use_sliding_window", True) is False:
        return False
    context = int(getattr(config, "max_position_embeddings", 0) or 0)
    return not context or int(window) < context


def batched_path_holds(model: Any) -> bool:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in BATCHED:
        return False
    return not windowed(config)


def path_name(model: Any) -> str:
    return "batched" if batched_path_holds(model) else "per-sequence"


# encoders transformers can put a (bidirectional) LM head on: they fill in masked tokens, they do
# not generate left to right, so AutoModelForCausalLM's "works" would be silently wrong text
ENCODERS = frozenset(
    {"bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "electra", "ernie", "roberta-prelayernorm",
     "bert-generation", "data2vec-text", "megatron-bert", "rembert", "roc_bert", "xmod", "modernbert"}
)  # fmt: skip


def refusal(config: Any) -> str | None:
    """Why a model with this config cannot generate here (a 400's reason), or None."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False):
        return f"is an encoder-decoder model ({model_type}); only decoder-only causal language models run here"
    if model_type in ENCODERS and not getattr(config, "is_decoder", False):
        return f"is an encoder ({model_type}, bidirectional attention): it fills in masked tokens, it does not generate left to right"
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"has no causal language-model head in transformers (model_type {model_type}, e.g. a vision-only or encoder model): it cannot generate text"
    return None
