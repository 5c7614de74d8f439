"""A tiny random Llama and a byte-level BPE tokenizer built in-process (no weights, no network).

Used by the fast tests and by anyone who wants to try the machinery without a real model:
``register_tiny_model()`` registers it as ``"tiny-llama"``.
"""

from __future__ import annotations

from typing import Any

TINY_MODEL_ID = "tiny-llama"

_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Once upon a time there was a small model that liked to generate text.",
    "Café, naïve, jalapeño, 東京, 🙂 and other multi-byte text.",
    '{"name": "Ada", "age": 36, "tags": ["math", "engines"]}',
    "def add(a, b):\n    return a + b\n",
]


def build_tokenizer(vocab_size: int = 384) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def build_model(vocab_size: int, seed: int = 0, context_length: int = 256) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context_length,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper logits than the default init, so sampling has structure
        model.lm_head.weight.mul_(8.0)
    return model


def register_tiny_model(model_id: str = TINY_MODEL_ID, seed: int = 0) -> Any:
    from . import registry
    from .local import LocalBackend

    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), seed=seed)
    backend = LocalBackend(model, tokenizer, model_id, source="in-process random Llama", dtype="float32", device="cpu")
    registry.register(backend)
    return backend
