"""Tiny random configs (2 layers, hidden 64) of causal-LM architectures, for tests/test_architectures.py."""

from __future__ import annotations

from typing import Any

WINDOW = 16  # sliding windows shorter than the test prompt

COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# model_type -> extra config keywords (over COMMON)
ARCHS: dict[str, dict[str, Any]] = {
    "llama": {},
    "qwen2": {},
    "qwen3": {},
    "mistral": {"sliding_window": None},
    "gemma": {"head_dim": 16},
    "phi": {},
    "phi3": {"sliding_window": None},
    "granite": {},
    "olmo": {},
    "olmo2": {},
    "stablelm": {},
    "starcoder2": {"sliding_window": None},
    "cohere": {},
    "smollm3": {},
    "helium": {"head_dim": 16},
    "glm": {"head_dim": 16},
    "mixtral": {"sliding_window": None, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    # windowed
    "mistral-window": {"model_type": "mistral", "sliding_window": WINDOW},
    "qwen2-window": {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    "gemma2": {"sliding_window": WINDOW, "head_dim": 16},
    "gemma3_text": {"sliding_window": WINDOW, "head_dim": 16, "sliding_window_pattern": 2},
    "cohere2": {"sliding_window": WINDOW},
    "phi3-window": {"model_type": "phi3", "sliding_window": WINDOW},
    "starcoder2-window": {"model_type": "starcoder2", "sliding_window": WINDOW},
    "olmo3": {"sliding_window": WINDOW},
    "exaone4": {"sliding_window": WINDOW},
    # learned / absolute positions, ALiBi, parallel blocks, MQA
    "gpt2": {},
    "gpt_neox": {},
    "opt": {"ffn_dim": 128, "word_embed_proj_dim": 64},
    "falcon": {"new_decoder_architecture": False, "multi_query": True},
    "bloom": {},
    "gpt_neo": {"attention_types": [[["global", "local"], 1]], "window_size": WINDOW},
    "gptj": {"rotary_dim": 8},
    "codegen": {"rotary_dim": 8},
    "gpt_bigcode": {},
    "biogpt": {},
    "xglm": {},
    "mpt": {},
    "persimmon": {},
    "nemotron": {},
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2},
    "granitemoe": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "arcee": {},
    "seed_oss": {},
    "ernie4_5": {},
    # recurrent / hybrid state
    "mamba": {"state_size": 8, "expand": 2},
    "mamba2": {"state_size": 8, "expand": 2, "num_heads": 8, "head_dim": 16, "n_groups": 1},
    "rwkv": {"attention_hidden_size": 64},
    "recurrent_gemma": {
        "lru_width": 64,
        "head_dim": 16,
        "block_types": ["recurrent", "attention"],
        "attention_window_size": WINDOW,
    },
    "jamba": {
        "num_experts": 2,
        "num_experts_per_tok": 1,
        "attn_layer_period": 2,
        "attn_layer_offset": 1,
        "expert_layer_period": 2,
        "expert_layer_offset": 1,
        "mamba_d_state": 8,
        "use_mamba_kernels": False,
    },
    "falcon_h1": {"mamba_d_ssm": 64, "mamba_n_heads": 8, "mamba_d_head": 8, "mamba_d_state": 8, "head_dim": 16},
}


def build(name: str, vocab_size: int, seed: int = 0) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    extra = dict(ARCHS[name])
    model_type = extra.pop("model_type", name)
    config = AutoConfig.for_model(model_type, **{**COMMON, "vocab_size": vocab_size, **extra})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # sharper logits than the default init, so greedy has structure
        model.get_output_embeddings().weight.mul_(8.0)
    return model
