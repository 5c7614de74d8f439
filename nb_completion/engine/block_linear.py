"""Linear layers that compute with a GGUF checkpoint's own quantized blocks.

``use_gguf_weights(model, gguf_path)`` replaces each ``nn.Linear`` whose weight the GGUF holds
in a block type ``block_kernel`` reads (Q4_0, Q4_1, Q4_K, Q8_0) by a ``BlockLinear`` holding those
blocks, as they are: nothing is dequantized and re-quantized. Each layer is matched to its GGUF
tensor by name (``gguf``'s own name map) and accepted only if its blocks dequantize to exactly
the float32 weight transformers loaded from the same file (rows permuted back where transformers
permutes them, as it does for Llama's q and k); a layer that does not match keeps its float32
weights. So the model computes on the checkpoint's weights, with activations in float32.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from . import block_kernel
from .gguf_blocks import Blocks, read_blocks

log = logging.getLogger("nb_completion.engine")

# Rows from which a pass dequantizes the layer for one float32 GEMM instead of the block op:
# above any decode batch (16 rows), so decode steps always take the op, row for row the same.
LONG_PREFILL = 128


class BlockLinear(torch.nn.Module):
    """``y = x @ W.T + b`` with ``W`` in quantized blocks (float32 in, float32 out)."""

    def __init__(self, blocks: Blocks, bias: Optional[torch.Tensor] = None):
        super().__init__()
        self.format, self.kind = blocks.format, blocks.kind
        self.out_features, self.in_features = blocks.shape
        self.register_buffer("qs", blocks.qs, persistent=False)
        self.register_buffer("d", blocks.d, persistent=False)
        self.register_buffer("m", blocks.m, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone(), persistent=False)
        self._native = block_kernel.available()
        self._weight: Optional[torch.Tensor] = None if self._native else self.blocks().dequantize()

    def blocks(self) -> Blocks:
        return Blocks(self.format, self.kind, self.qs, self.d, self.m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != torch.float32:
            rows = rows.float()
        if self._weight is not None:  # no compiler: the dequantized weights, same numbers to rounding
            y = torch.nn.functional.linear(rows, self._weight)
        elif rows.shape[0] >= LONG_PREFILL and not torch.compiler.is_compiling():
            # a long prompt: float32 GEMM on weights dequantized for this call, several times faster
            # than the block op for this many rows, float32 on the same weights all the same
            y = torch.nn.functional.linear(rows, self.blocks().dequantize())
        else:
            y = block_kernel.block_linear(rows, self.qs, self.d, self.m, self.kind)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.format} blocks"


class BlockEmbedding(torch.nn.Module):
    """An embedding table kept in its GGUF blocks (for a tied model, the output layer's own):
    the rows a pass looks up are dequantized, the same float32 values as the full table."""

    dtype = torch.float32

    def __init__(self, blocks: Blocks):
        super().__init__()
        self.format, self.kind = blocks.format, blocks.kind
        self.num_embeddings, self.embedding_dim = blocks.shape
        self.register_buffer("qs", blocks.qs, persistent=False)
        self.register_buffer("d", blocks.d, persistent=False)
        self.register_buffer("m", blocks.m, persistent=False)

    def blocks(self) -> Blocks:
        return Blocks(self.format, self.kind, self.qs, self.d, self.m)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.blocks().rows(ids.reshape(-1)).dequantize().reshape(*ids.shape, self.embedding_dim)

    @property
    def weight(self) -> torch.Tensor:
        """The whole table in float32 (allocated on each call: for code that reads it, rarely)."""
        return self.blocks().dequantize()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.format} blocks"


def fuse(linears: Sequence[BlockLinear]) -> Optional[BlockLinear]:
    """One layer computing ``cat([l(x) for l in linears], -1)``, or None when they differ in
    format. The parts' tensors become views of the fused ones, so nothing is held twice."""
    first = linears[0]
    if any(lin.format != first.format or lin.in_features != first.in_features for lin in linears):
        return None
    biases = [lin.bias for lin in linears]
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat([b if b is not None else torch.zeros(lin.out_features) for b, lin in zip(biases, linears)])
    m = torch.cat([lin.m for lin in linears]) if first.m.numel() else first.m
    fused = BlockLinear(
        Blocks(first.format, first.kind, torch.cat([lin.qs for lin in linears]), torch.cat([lin.d for lin in linears]), m),
        bias,
    )
    start = 0
    for lin in linears:
        end = start + lin.out_features
        lin.qs, lin.d = fused.qs[start:end], fused.d[start:end]
        if m.numel():
            lin.m = fused.m[start:end]
        if lin._weight is not None:
            lin._weight = fused._weight[start:end]
        start = end
    return fused


def _llama_row_order(rows: int, heads: int) -> torch.Tensor:
    """The row order transformers applies to a Llama GGUF's q / k (``_reverse_permute_weights``)."""
    dim = rows // heads // 2
    return torch.arange(rows).reshape(heads, dim, 2).transpose(1, 2).reshape(rows)


def _candidates(blocks: Blocks, config: Any, gguf_name: str) -> list[Blocks]:
    found = [blocks]
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(config, "num_key_value_heads", 0) or heads)
    for suffix, n in (("attn_q.weight", heads), ("attn_k.weight", kv_heads)):
        if gguf_name.endswith(suffix) and n and blocks.shape[0] % (2 * n) == 0:
            found.append(blocks.rows(_llama_row_order(blocks.shape[0], n)))
    return found


def use_gguf_weights(model: Any, gguf_path: Path) -> str:
    """Swap ``model``'s Linear layers for ``BlockLinear`` on the GGUF's blocks (in place); returns
    a description of what runs, such as ``"Q4_1 weights (Q8_0 output), float32 activations"``."""
    import gguf

    arch, tensors = read_blocks(Path(gguf_path))
    config = model.config
    arch_ids = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in arch_ids or not tensors:
        return "float32 weights (dequantized from the GGUF), float32 activations"
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    names = gguf.get_tensor_name_map(arch_ids[arch], layers)
    used: Counter = Counter()
    kept_float = 0
    output_format = None
    for module_name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            full = f"{module_name}.{child_name}" if module_name else child_name
            gguf_name = names.get_name(f"{full}.weight", try_suffixes=(".weight",))
            if gguf_name not in tensors and child_name == "lm_head" and getattr(config, "tie_word_embeddings", False):
                gguf_name = "token_embd.weight"
            blocks = tensors.get(gguf_name or "")
            match = None
            if blocks is not None and tuple(blocks.shape) == tuple(child.weight.shape):
                weight = child.weight.detach().float()
                match = next((b for b in _candidates(blocks, config, gguf_name) if torch.equal(b.dequantize(), weight)), None)
            if match is None:
                kept_float += 1
                continue
            setattr(module, child_name, BlockLinear(match, child.bias))
            if child_name == "lm_head":
                output_format = match.format
            else:
                used[match.format] += 1
    if not used:
        return "float32 weights (dequantized from the GGUF), float32 activations"
    _use_block_embedding(model, tensors.get("token_embd.weight"))
    main = used.most_common(1)[0][0]
    extras = [f"{fmt} ×{n}" for fmt, n in used.items() if fmt != main]
    if kept_float:
        extras.append(f"float32 ×{kept_float}")
        log.info("%d linear layers keep float32 weights (no readable GGUF blocks matched them)", kept_float)
    if output_format and output_format != main:
        extras.append(f"{output_format} output")
    detail = f" ({', '.join(extras)})" if extras else ""
    return f"{main} weights{detail}, float32 activations"


def _use_block_embedding(model: Any, blocks: Optional[Blocks]) -> None:
    """The input embedding from its GGUF blocks when they dequantize to exactly the table
    transformers loaded (sharing the output layer's blocks when tied): ~113 MB less on the default
    model."""
    table = model.get_input_embeddings()
    if blocks is None or type(table) is not torch.nn.Embedding or tuple(blocks.shape) != tuple(table.weight.shape):
        return
    head = model.get_output_embeddings()
    if isinstance(head, BlockLinear) and head.format == blocks.format and torch.equal(head.qs, blocks.qs):
        blocks = head.blocks()  # the same tensors, held once
    if not torch.equal(blocks.dequantize(), table.weight.detach().float()):
        return
    model.set_input_embeddings(BlockEmbedding(blocks))
