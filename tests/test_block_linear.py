"""The GGUF block matmul: a GGUF's own Q4_0 / Q4_1 / Q8_0 blocks, float32 in and out.

Blocks are made by ``gguf``'s own quantizer (llama.cpp's reference, in Python), so the weights
are what a real GGUF holds; the oracle is a float32 matmul with ``gguf``'s own dequantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, dequantize, quantize

from nb_completion.engine import block_kernel
from nb_completion.engine.block_linear import BlockEmbedding, BlockLinear, fuse
from nb_completion.engine.gguf_blocks import from_raw

FORMATS = ["Q4_0", "Q4_1", "Q8_0"]


def make_blocks(fmt: str, rows: int, cols: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    qtype = GGMLQuantizationType[fmt]
    raw = quantize(weights, qtype)
    reference = torch.from_numpy(dequantize(raw, qtype).reshape(rows, cols).copy())
    return from_raw(fmt, raw, rows), reference


@pytest.mark.parametrize("fmt", FORMATS)
def test_blocks_dequantize_bit_for_bit_as_gguf_does(fmt):
    blocks, reference = make_blocks(fmt, 24, 96)
    assert blocks.shape == (24, 96)
    assert torch.equal(blocks.dequantize(), reference)


def test_the_op_builds_here():
    # CI's machine has a compiler: the fast path must be the one under test, not the fallback
    assert block_kernel.available()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cols", [32, 96, 576])  # 1, 3 (odd: a trailing single block) and 18 blocks
@pytest.mark.parametrize("rows", [1, 5, 70])
def test_the_op_equals_a_float64_matmul_on_the_dequantized_weights(fmt, cols, rows):
    blocks, weight = make_blocks(fmt, 40, cols, seed=cols)
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows)) * 3
    y = BlockLinear(blocks)(x)
    exact = x.double() @ weight.double().T
    float32 = x @ weight.T
    assert y.dtype == torch.float32 and y.shape == (rows, 40)
    # within a few float32 roundings of the exact product: as close as a float32 matmul is
    scale = (x.double().abs() @ weight.double().abs().T).max().item()
    assert (y.double() - exact).abs().max().item() <= 1e-4 * scale
    assert (float32.double() - exact).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_row_is_computed_the_same_whatever_else_is_in_the_batch(fmt):
    blocks, _ = make_blocks(fmt, 64, 576)
    layer = BlockLinear(blocks)
    x = torch.randn(37, 576, generator=torch.Generator().manual_seed(1))
    x[3] *= 1000  # a row with large activations must not change any other row
    batch = layer(x)
    for i in range(x.shape[0]):
        assert torch.equal(layer(x[i : i + 1])[0], batch[i]), i
    assert torch.equal(layer(x.flip(0)).flip(0), batch)


def test_zero_and_tiny_rows_give_exact_zeros_and_no_nan():
    blocks, weight = make_blocks("Q4_1", 8, 64)
    x = torch.zeros(2, 64)
    x[1, 5] = 1e-30
    y = BlockLinear(blocks)(x)
    assert torch.equal(y[0], torch.zeros(8))
    assert torch.isfinite(y).all()


def test_fused_layers_give_each_part_and_share_its_memory():
    parts = [BlockLinear(make_blocks("Q4_1", n, 96, seed=n)[0]) for n in (16, 8, 8)]
    x = torch.randn(3, 96)
    separate = torch.cat([p(x) for p in parts], dim=-1)
    fused = fuse(parts)
    assert torch.equal(fused(x), separate)
    assert parts[1].qs.untyped_storage().data_ptr() == fused.qs.untyped_storage().data_ptr()
    assert torch.equal(torch.cat([p(x) for p in parts], dim=-1), separate)


def test_without_the_op_the_dequantized_weights_give_the_same_numbers(monkeypatch):
    blocks, weight = make_blocks("Q4_1", 32, 192)
    x = torch.randn(4, 192)
    fast = BlockLinear(blocks)(x)
    monkeypatch.setattr(block_kernel, "available", lambda: False)
    slow = BlockLinear(blocks)
    assert slow._weight is not None and torch.equal(slow._weight, weight)
    assert torch.allclose(slow(x), fast, rtol=1e-4, atol=1e-4)


def q4_k_blocks(rows: int, cols: int, seed: int = 0):
    """Random Q4_K super-blocks (gguf has no Q4_K quantizer): random nibbles and 6-bit scales,
    small float16 ``d`` and ``dmin``."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (rows, cols // 256 * 144), dtype=np.uint8)
    for start in range(0, raw.shape[1], 144):
        for offset, value in ((0, 0.01), (2, 0.002)):
            scales = (rng.random(rows) * value + value / 10).astype(np.float16)
            raw[:, start + offset : start + offset + 2] = np.frombuffer(scales.tobytes(), np.uint8).reshape(rows, 2)
    reference = torch.from_numpy(dequantize(raw, GGMLQuantizationType.Q4_K).reshape(rows, cols).copy())
    return from_raw("Q4_K", raw, rows), reference


def test_q4_k_super_blocks_become_32_value_blocks_bit_for_bit():
    blocks, reference = q4_k_blocks(16, 512)
    assert blocks.shape == (16, 512) and blocks.format == "Q4_K"
    assert torch.equal(blocks.dequantize(), reference)
    x = torch.randn(3, 512)
    exact = x.double() @ reference.double().T
    scale = (x.double().abs() @ reference.double().abs().T).max().item()
    assert (BlockLinear(blocks)(x).double() - exact).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_embedding_in_blocks_looks_up_the_dequantized_rows(fmt):
    blocks, table = make_blocks(fmt, 50, 64)
    ids = torch.tensor([[3, 0, 49], [7, 7, 1]])
    embedding = BlockEmbedding(blocks)
    assert torch.equal(embedding(ids), torch.nn.functional.embedding(ids, table))
    assert torch.equal(embedding.weight, table)
