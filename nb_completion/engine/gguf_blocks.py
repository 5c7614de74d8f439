"""A GGUF checkpoint's quantized tensors, as blocks the block matmul reads.

llama.cpp stores a weight row as 32-value blocks: Q4_0 (a float16 scale ``d`` and 16 bytes of
nibbles, ``w = d (q - 8)``), Q4_1 (``d``, a float16 minimum ``m``, 16 bytes, ``w = d q + m``)
and Q8_0 (``d`` and 32 signed bytes, ``w = d q``). ``read_blocks`` splits each such tensor
into ``qs`` (uint8 ``[rows, blocks, bytes]``), ``d`` and ``m`` (float32 ``[rows, blocks]``;
Q4_0's minimum is ``-8 d``, exact in float32), without dequantizing anything.
Q4_K (256-value super-blocks whose eight 32-value sub-blocks have 6-bit scales and minimums:
``w = (d sc) q - (dmin m)``) maps exactly onto the same form, one block per sub-block, with
``d sc`` and ``-(dmin m)`` (each exact in float32) and its nibbles repacked. ``dequantize`` gives
the float32 weights ``gguf``'s reference code gives (what transformers loads), bit for bit.
Other types (Q5/Q6 K-quants, float16) are not read here: those layers keep the float32 weights
transformers made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .block_kernel import Q4, Q8

BLOCK = 32
# GGML type name -> (kind, bytes of data per block, has a minimum)
READABLE = {"Q4_0": (Q4, 16, False), "Q4_1": (Q4, 16, True), "Q8_0": (Q8, 32, False), "Q4_K": (Q4, 16, True)}


@dataclass
class Blocks:
    """One weight matrix ``[rows, 32 * blocks]`` in its checkpoint's blocks."""

    format: str  # "Q4_0", "Q4_1", "Q8_0"
    kind: int
    qs: torch.Tensor  # uint8 [rows, blocks, 16 or 32]
    d: torch.Tensor  # float32 [rows, blocks]
    m: torch.Tensor  # float32 [rows, blocks] (Q4 kinds), else empty

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.qs.shape[0]), int(self.qs.shape[1]) * BLOCK

    def rows(self, order: torch.Tensor) -> "Blocks":
        """The same matrix with its rows reordered."""
        m = self.m[order] if self.m.numel() else self.m
        return Blocks(self.format, self.kind, self.qs[order].contiguous(), self.d[order].contiguous(), m.contiguous())

    def dequantize(self) -> torch.Tensor:
        """The float32 weights, as ``gguf.quants.dequantize`` computes them."""
        rows, nb, _ = self.qs.shape
        if self.kind == Q4:
            q = torch.cat([self.qs & 0x0F, self.qs >> 4], dim=-1).float()
            w = q * self.d[..., None] + self.m[..., None]
        else:
            w = self.qs.view(torch.int8).float() * self.d[..., None]
        return w.reshape(rows, nb * BLOCK)


def from_raw(type_name: str, raw: np.ndarray, rows: int) -> Blocks:
    """``raw``: the tensor's bytes, ``[rows, bytes per row]`` as GGUF stores them."""
    if type_name == "Q4_K":
        return _from_q4_k(raw, rows)
    kind, data_bytes, has_min = READABLE[type_name]
    head = 4 if has_min else 2
    per_block = head + data_bytes
    blocks = np.ascontiguousarray(raw).reshape(rows, -1, per_block)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) if has_min else None
    qs = np.ascontiguousarray(blocks[..., head:])
    if type_name == "Q4_0":
        m = -8.0 * d  # d (q - 8) == d q + (-8 d), each step exact in float32
    return Blocks(
        type_name,
        kind,
        torch.from_numpy(qs),
        torch.from_numpy(np.ascontiguousarray(d)),
        torch.from_numpy(np.ascontiguousarray(m)) if m is not None else torch.empty(0),
    )


def read_blocks(path: Path) -> tuple[str, dict[str, Blocks]]:
    """The GGUF's architecture name and its tensors of a readable block type, by GGUF name."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch_field = reader.get_field("general.architecture")
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode() if arch_field is not None else ""
    found: dict[str, Blocks] = {}
    for tensor in reader.tensors:
        name = tensor.tensor_type.name
        if name not in READABLE:
            continue
        rows = int(np.prod(tensor.shape[1:])) if len(tensor.shape) > 1 else 1
        found[tensor.name] = from_raw(name, np.asarray(tensor.data), rows)
    return arch, found


def _from_q4_k(raw: np.ndarray, rows: int) -> Blocks:
    """Q4_K super-blocks (d, dmin: float16; 12 bytes of 6-bit scales and minimums; 128 bytes of
    nibbles, each 32 bytes holding one sub-block in the low nibbles and the next in the high) as
    32-value Q4 blocks."""
    from gguf.quants import Q4_K

    blocks = np.ascontiguousarray(raw).reshape(rows, -1, 144)
    supers = blocks.shape[1]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    dmin = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    sc, mn = Q4_K.get_scale_min(np.ascontiguousarray(blocks[..., 4:16]).reshape(-1, 12))
    scale = (d.reshape(-1, 1) * sc.astype(np.float32)).reshape(rows, supers * 8)
    minimum = -(dmin.reshape(-1, 1) * mn.astype(np.float32)).reshape(rows, supers * 8)
    packed = blocks[..., 16:].reshape(rows, supers, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)
    values = (packed & np.uint8(0x0F)).reshape(rows, supers * 8, 32)
    qs = values[..., :16] | (values[..., 16:] << np.uint8(4))
    return Blocks(
        "Q4_K",
        Q4,
        torch.from_numpy(np.ascontiguousarray(qs)),
        torch.from_numpy(np.ascontiguousarray(scale)),
        torch.from_numpy(np.ascontiguousarray(minimum)),
    )
