"""One forward pass of a Llama-architecture model over the engine's slot cache, without the
model's module tree.

transformers' ``LlamaForCausalLM.forward`` spends most of a one-token step on the CPU in Python:
module calls and hooks, the attention-interface dispatch, the rotary embedding recomputed per
pass, ``rotate_half`` built from slices and a ``cat`` per layer. For a 135M model that is two
thirds of the step. This pass runs the same arithmetic on the same weight objects (nothing is
copied) with fewer, larger operations:

* the rotary ``cos``/``sin`` come from a table built once (``RotaryTable``), looked up by position;
* q and k are rotated together in one expression, ``x * cos + roll(x) * sin_signed``, which is
  ``rotate_half`` written without a ``cat`` (the sign sits in the table; products are the same);
* norms are ``LlamaRMSNorm``'s arithmetic without the module;
* attention is one ``scaled_dot_product_attention`` with GQA;
* the decode pass writes the slot store directly, so ``torch.compile`` traces it whole
  (``compile_decode``).

The engine keeps the model's own ``forward`` as the reference (``Engine(model, lean=False)``);
``tests/test_llama_pass.py`` checks this pass against it and against HF ``generate()``.

Supported: ``model_type`` llama (SmolLM2, Llama 2/3) with a rotary embedding whose frequencies do
not depend on the length, SiLU MLP, every layer full attention. Anything else runs the model's own
forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .block_linear import BlockEmbedding, BlockLinear, fuse
from .kv import ALIGN, SlotStore, decode_mask
from .rowwise_int8 import RowwiseInt8Linear, _Part


# rotary types whose inverse frequencies do not change with the sequence length
STATIC_ROPE = ("default", "linear", "llama3")


def supports(model: Any) -> bool:
    """Whether ``LlamaPass`` can run ``model`` (else the engine calls the model's own forward)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "llama":
        return False
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    return (
        rope_type in STATIC_ROPE
        and getattr(config, "hidden_act", "silu") == "silu"
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "pretraining_tp", 1) == 1
        and hasattr(getattr(model, "model", None), "layers")
    )


def _projection(linears: list[Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> cat([linear(x) for linear in linears], -1)``: one matmul when they are one fused int8
    layer (``rowwise_int8``) or GGUF block layers (``block_linear``), else one matmul each (float
    weights are not copied to fuse them)."""
    if all(isinstance(m, BlockLinear) for m in linears):
        fused = fuse(linears)  # the GGUF's blocks, rows concatenated (the parts become views)
        if fused is not None:
            return fused.forward
    if all(isinstance(m, _Part) for m in linears) and len({id(m._fused) for m in linears}) == 1:
        if [m.index for m in linears] == list(range(len(linears))):
            return linears[0]._fused.linear.forward
    singles = [_single(m) for m in linears]
    return lambda x: torch.cat([f(x) for f in singles], dim=-1)


def _single(linear: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    if type(linear) is torch.nn.Linear:
        weight, bias = linear.weight, linear.bias
        return lambda x: F.linear(x, weight, bias)
    if isinstance(linear, RowwiseInt8Linear):
        return linear.forward
    return linear


class RotaryTable:
    """``cos`` and signed ``sin`` per position, built once with the model's own inverse frequencies."""

    def __init__(self, rotary: Any, max_len: int, device: torch.device, dtype: torch.dtype):
        positions = torch.arange(max_len, device=device, dtype=torch.float32)
        freqs = positions[:, None] * rotary.inv_freq.to(device=device, dtype=torch.float32)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        scaling = float(getattr(rotary, "attention_scaling", 1.0))
        half = emb.shape[-1] // 2
        sin = emb.sin() * scaling
        self.cos = (emb.cos() * scaling).to(dtype)
        # rotate_half(x) * sin == roll(x, half) * [-sin_low, sin_high]
        self.sin_signed = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1).to(dtype)
        self.half = half


def _rms_norm(h: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``LlamaRMSNorm``, op for op (``torch.rms_norm`` takes longer on the CPU): in float32, then back."""
    x = h if h.dtype == torch.float32 else h.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (x if x.dtype == h.dtype else x.to(h.dtype))


@dataclass
class _Layer:
    norm_in: torch.Tensor
    qkv: Callable[[torch.Tensor], torch.Tensor]
    o: Callable[[torch.Tensor], torch.Tensor]
    norm_post: torch.Tensor
    gate_up: Callable[[torch.Tensor], torch.Tensor]
    down: Callable[[torch.Tensor], torch.Tensor]


class LlamaPass:
    """``pass_(ids, positions, mask, view) -> logits [rows, vocab]`` of each row's last position."""

    def __init__(self, model: Any, max_len: int):
        config = model.config
        inner = model.model
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.hidden = int(config.hidden_size)
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        table = inner.embed_tokens
        if isinstance(table, BlockEmbedding):  # the GGUF's blocks, rows dequantized on lookup
            self.embed = table
        else:
            weight = table.weight
            self.embed = lambda ids: F.embedding(ids, weight)
        norm = inner.norm.weight
        self.layers = [
            _Layer(
                norm_in=layer.input_layernorm.weight,
                qkv=_projection([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
                o=_single(layer.self_attn.o_proj),
                norm_post=layer.post_attention_layernorm.weight,
                gate_up=_projection([layer.mlp.gate_proj, layer.mlp.up_proj]),
                down=_single(layer.mlp.down_proj),
            )
            for layer in inner.layers
        ]
        self.norm = inner.norm.weight
        self.lm_head = _single(model.lm_head)
        self.rotary = RotaryTable(inner.rotary_emb, max_len, norm.device, getattr(table, "dtype", None) or table.weight.dtype)

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, mask: Optional[torch.Tensor], view: Any) -> torch.Tensor:
        """Any pass the engine makes, through its cache view (``kv.BatchView``)."""
        return self._run(ids, positions, mask, view.update)

    def decode(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, keys: list, values: list) -> torch.Tensor:
        """A decode pass of the sequences in slots ``[0, rows)``, one token each (``ids [rows, 1]``),
        writing the store's tensors directly: the form ``torch.compile`` traces without a break."""
        rows, kv_len = ids.shape[0], mask.shape[-1]
        row_index = torch.arange(rows, device=ids.device)
        at = positions[:, 0]

        def update(k: torch.Tensor, v: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
            key_store, value_store = keys[index], values[index]
            key_store[row_index, :, at] = k[:, :, 0]
            value_store[row_index, :, at] = v[:, :, 0]
            return key_store[:rows, :, :kv_len], value_store[:rows, :, :kv_len]

        return self._run(ids, positions, mask, update)

    def _run(self, ids: torch.Tensor, positions: torch.Tensor, mask: Optional[torch.Tensor], update: Callable) -> torch.Tensor:
        rows, q_len = ids.shape
        heads, kv_heads, head_dim, eps = self.heads, self.kv_heads, self.head_dim, self.eps
        rotated = heads + kv_heads
        cos = self.rotary.cos[positions][:, :, None]  # [rows, q_len, 1, head_dim]
        sin = self.rotary.sin_signed[positions][:, :, None]
        half = self.rotary.half
        h = self.embed(ids)
        for index, layer in enumerate(self.layers):
            x = _rms_norm(h, layer.norm_in, eps)
            qkv = layer.qkv(x).view(rows, q_len, rotated + kv_heads, head_dim)
            qk = qkv[:, :, :rotated]
            qk = (qk * cos + torch.roll(qk, half, dims=-1) * sin).transpose(1, 2)
            keys, values = update(qk[:, heads:], qkv[:, :, rotated:].transpose(1, 2), index)
            attn = F.scaled_dot_product_attention(
                qk[:, :heads], keys, values, attn_mask=mask, scale=self.scale, enable_gqa=kv_heads != heads
            )
            h = h + layer.o(attn.transpose(1, 2).reshape(rows, q_len, heads * head_dim))
            x = _rms_norm(h, layer.norm_post, eps)
            gate, up = layer.gate_up(x).chunk(2, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        return self.lm_head(_rms_norm(h[:, -1], self.norm, eps))


def compile_decode(decode: Callable) -> Callable:
    """``torch.compile`` of ``LlamaPass.decode`` for any number of rows and cached length.

    Only the row count and the cached length are dynamic (marked on the tensors; the model's sizes
    stay constants), sizes are not "duck-shaped" (a cached length of 64 must not be taken for
    ``head_dim``), and on the CPU inductor emits a C++ wrapper, so a step runs no Python between
    its kernels except the int8 matmuls' op. Two graphs cover every pass: one row, and two or
    more (a size of 1 is always specialized). Once both exist, the guards that only re-check what
    the engine never changes (the store's tensors, the weights) are skipped:
    ``skip_guard_eval_unsafe`` still tells the two graphs apart."""
    import torch.fx.experimental._config as fx_config

    compiled = torch.compile(decode, options={"cpp_wrapper": True})
    built: set[bool] = set()

    def call(ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, *store: Any) -> torch.Tensor:
        if len(built) == 2:
            try:
                with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                    return compiled(ids, positions, mask, *store)
            except RuntimeError as exc:  # raised before anything ran: a shape no graph covers
                if "Recompilation" not in str(exc):
                    raise
                call.eager_fallbacks += 1  # type: ignore[attr-defined]
                return decode(ids, positions, mask, *store)  # eager, rather than compiling mid-step
        single = ids.shape[0] == 1
        if not single:
            for tensor in (ids, positions, mask):
                torch._dynamo.mark_dynamic(tensor, 0)
        torch._dynamo.mark_dynamic(mask, 3)
        with fx_config.patch(use_duck_shape=False):  # read when a new shape is traced
            out = compiled(ids, positions, mask, *store)
        built.add(single)
        return out

    call.eager_fallbacks = 0  # type: ignore[attr-defined]
    return call


def warm_compiled_decode(lean: LlamaPass, store: Any) -> Callable:
    """``compile_decode(lean.decode)`` with both its graphs built, on a scratch store shaped like
    ``store`` (pages never written cost no memory), so the engine can switch to it between steps."""
    decode = compile_decode(lean.decode)
    scratch = SlotStore.like(store)  # made outside inference mode, like the engine's store
    for rows in (1, 2):
        scratch.make_finite(0, rows, ALIGN)
        with torch.inference_mode():  # as the engine thread runs its passes
            positions = torch.full((rows,), ALIGN - 1, dtype=torch.long, device=store.device)
            ids = torch.zeros((rows, 1), dtype=torch.long, device=store.device)
            decode(ids, positions[:, None], decode_mask(positions, ALIGN, store.dtype), scratch.keys, scratch.values)
    return decode
