"""A matmul over a GGUF checkpoint's own quantized blocks, with float32 activations.

``block_linear(x, qs, d, m, kind)`` computes ``x @ W.T`` where ``W`` is stored as llama.cpp
stores it: rows of 32-value blocks, each with its own scale ``d`` (and minimum ``m``). For each
block, ``d * sum(q_j x_j) + m * sum(x_j)``: the block's small integers are converted to float32
and multiplied with the float32 activations, so it is float32 arithmetic on the checkpoint's own
weights, nothing re-quantized (``tests/test_block_linear.py``: within float32 rounding of a
float64 product with ``gguf``'s dequantized weights). Activations are not quantized: an earlier
version rounded them to 16-bit integers per block (10 % faster here), and the rounding's steps
moved one token's logprob by 1.5e-4 between two paths that differ only in float rounding.

Each output ``y[r, n]`` is summed in one fixed order whatever the number of rows, their
position in the batch or the threads: a token gets the same logits bit for bit in a prefill, a
decode step or a batch of 16.

Kinds: ``Q4`` (16 bytes of nibbles a block; Q4_0 is stored with ``m = -8 d``) and ``Q8`` (32
signed bytes a block, ``m`` unused). The op is built once per machine with
``torch.utils.cpp_extension.load_inline`` (AVX2 + FMA where the processor has them, plain loops
elsewhere); where it cannot be built, ``block_linear.BlockLinear`` multiplies by the dequantized
float32 weights instead: the same numbers to float32 rounding, slower, more memory.
"""

from __future__ import annotations

import hashlib
import logging
import platform

import torch

from .config import engine_config
from .cpp_op import InlineOp

log = logging.getLogger("nb_completion.engine")

Q4, Q8 = 0, 1

_SOURCE = r"""
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NBC_AVX2 1
#endif

namespace {

constexpr int BLOCK = 32;

// Each 32-value block of each row of x summed (for the Q4 minimum term), in one order.
std::vector<float> block_sums(const float* x, int64_t M, int64_t K) {
  const int64_t nb = K / BLOCK;
  std::vector<float> sums(static_cast<size_t>(M * nb));
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + r * K + b * BLOCK;
      float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int j = 0; j < BLOCK; ++j) part[j % 8] += xb[j];
      sums[r * nb + b] = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    }
  }
  return sums;
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

// sum_b m[b] * xsum[b] in one order: eight lanes of blocks, then the tail (not one serial chain
// of multiply-adds, whose latency cost ~4 cycles a block).
inline float minimum_term(const float* m, const float* xsum, int64_t nb) {
  int64_t b = 0;
  float t = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  if (nb >= 8) {
    __m256 acc = _mm256_setzero_ps();
    for (; b + 8 <= nb; b += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(m + b), _mm256_loadu_ps(xsum + b), acc);
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    t = _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
#endif
  for (; b < nb; ++b) t = std::fma(m[b], xsum[b], t);
  return t;
}

#ifdef NBC_AVX2
inline float lanes(__m256 s) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}

// The 32 weights of one block as four float32 vectors of its integers (q for Q4, signed bytes for Q8).
template <int KIND>
inline void expand(const uint8_t* q, __m256 w[4]) {
  if (KIND == 0) {
    // A nibble's float32 value has zero low bytes: its top two bytes come from two 16-entry tables
    // (one in-lane shuffle each), and two unpacks place them. Lanes end up in the order
    // permute_for_q4 gives x: w[0] = values 0-3 and 16-19, w[1] = 4-7 and 20-23, ...
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask), _mm_and_si128(bytes, mask));
    const __m256i top = _mm256_setr_epi8(0, 63, 64, 64, 64, 64, 64, 64, 65, 65, 65, 65, 65, 65, 65, 65,
                                         0, 63, 64, 64, 64, 64, 64, 64, 65, 65, 65, 65, 65, 65, 65, 65);
    const __m256i second = _mm256_setr_epi8(0, -128, 0, 64, -128, -96, -64, -32, 0, 16, 32, 48, 64, 80, 96, 112,
                                            0, -128, 0, 64, -128, -96, -64, -32, 0, 16, 32, 48, 64, 80, 96, 112);
    const __m256i h = _mm256_shuffle_epi8(top, v), l = _mm256_shuffle_epi8(second, v);
    const __m256i a = _mm256_unpacklo_epi8(l, h), b = _mm256_unpackhi_epi8(l, h);
    const __m256i z = _mm256_setzero_si256();
    w[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, a));
    w[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, a));
    w[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, b));
    w[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, b));
  } else {
    for (int j = 0; j < 4; ++j)
      w[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * j))));
  }
}

// x with each block's values in the lane order expand<0> gives the weights: 0-3 16-19 4-7 20-23
// 8-11 24-27 12-15 28-31 (a copy per call; a permutation changes no value).
std::vector<float> permute_for_q4(const float* x, int64_t M, int64_t K) {
  std::vector<float> out(static_cast<size_t>(M * K));
  for (int64_t i = 0; i < M * K; i += BLOCK) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    const __m256 c = _mm256_loadu_ps(x + i + 16), d = _mm256_loadu_ps(x + i + 24);
    _mm256_storeu_ps(out.data() + i, _mm256_permute2f128_ps(a, c, 0x20));
    _mm256_storeu_ps(out.data() + i + 8, _mm256_permute2f128_ps(a, c, 0x31));
    _mm256_storeu_ps(out.data() + i + 16, _mm256_permute2f128_ps(b, d, 0x20));
    _mm256_storeu_ps(out.data() + i + 24, _mm256_permute2f128_ps(b, d, 0x31));
  }
  return out;
}

// sum_j q_j x_j over one block, eight lanes, in one order.
inline __m256 block_dot(const __m256 w[4], const float* x) {
  const __m256 t = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), _mm256_mul_ps(w[0], _mm256_loadu_ps(x)));
  return _mm256_add_ps(t, _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), _mm256_mul_ps(w[2], _mm256_loadu_ps(x + 16))));
}

// y[r, n] for rows [r0, r1) of x and one weight row. Block b goes to sum b % 4 of its row; each
// row gets the same operations on the same values whatever the other rows: a block's weights
// are expanded once and used for every row.
template <int KIND>
void dot_rows(const uint8_t* q, int64_t qbytes, const float* d, const float* m, const float* x, int64_t K,
              const float* xsum, int64_t nb, int64_t r0, int64_t r1, float* y, int64_t N, int64_t n, __m256* acc) {
  const int64_t rows = r1 - r0;
  for (int64_t i = 0; i < rows * 4; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256 w[4];
    expand<KIND>(q + b * qbytes, w);
    const __m256 db = _mm256_set1_ps(d[b]);
    const int j = static_cast<int>(b % 4);
    for (int64_t r = 0; r < rows; ++r) {
      acc[r * 4 + j] = _mm256_fmadd_ps(block_dot(w, x + (r0 + r) * K + b * BLOCK), db, acc[r * 4 + j]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const __m256* a = acc + r * 4;
    const float v = lanes(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
    y[(r0 + r) * N + n] = m ? v + minimum_term(m, xsum + (r0 + r) * nb, nb) : v;
  }
}

// dot_rows for one row, its sums in registers: the same operations in the same order.
template <int KIND>
float dot_one(const uint8_t* q, int64_t qbytes, const float* d, const float* m, const float* x, const float* xsum,
              int64_t nb) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    for (int j = 0; j < 4; ++j) {
      __m256 w[4];
      expand<KIND>(q + (b + j) * qbytes, w);
      acc[j] = _mm256_fmadd_ps(block_dot(w, x + (b + j) * BLOCK), _mm256_set1_ps(d[b + j]), acc[j]);
    }
  }
  for (int j = 0; b < nb; ++b, ++j) {
    __m256 w[4];
    expand<KIND>(q + b * qbytes, w);
    acc[j] = _mm256_fmadd_ps(block_dot(w, x + b * BLOCK), _mm256_set1_ps(d[b]), acc[j]);
  }
  const float v = lanes(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  return m ? v + minimum_term(m, xsum, nb) : v;
}

constexpr int64_t ROW_TILE = 16;

void tile(int kind, const uint8_t* qs, int64_t qbytes, const float* d, const float* m, const float* x, int64_t K,
          const float* xsum, int64_t nb, int64_t M, float* y, int64_t N, int64_t n0, int64_t n1) {
  __m256 acc[ROW_TILE * 4];
  for (int64_t r0 = 0; r0 < M; r0 += ROW_TILE) {
    const int64_t r1 = std::min(M, r0 + ROW_TILE);
    for (int64_t n = n0; n < n1; ++n) {
      const float* mn = m ? m + n * nb : nullptr;
      if (r1 - r0 == 1) {
        const uint8_t* qn = qs + n * nb * qbytes;
        const float* xs = xsum ? xsum + r0 * nb : nullptr;
        y[r0 * N + n] = kind == 0 ? dot_one<0>(qn, qbytes, d + n * nb, mn, x + r0 * K, xs, nb)
                                  : dot_one<1>(qn, qbytes, d + n * nb, mn, x + r0 * K, xs, nb);
        continue;
      }
      if (kind == 0) dot_rows<0>(qs + n * nb * qbytes, qbytes, d + n * nb, mn, x, K, xsum, nb, r0, r1, y, N, n, acc);
      else dot_rows<1>(qs + n * nb * qbytes, qbytes, d + n * nb, mn, x, K, xsum, nb, r0, r1, y, N, n, acc);
    }
  }
}
#else
void tile(int kind, const uint8_t* qs, int64_t qbytes, const float* d, const float* m, const float* x, int64_t K,
          const float* xsum, int64_t nb, int64_t M, float* y, int64_t N, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* q = qs + n * nb * qbytes;
    for (int64_t r = 0; r < M; ++r) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* qb = q + b * qbytes;
        const float* xb = x + r * K + b * BLOCK;
        float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        for (int j = 0; j < BLOCK; ++j) {
          const int w = kind == 0 ? (j < 16 ? (qb[j] & 0x0F) : (qb[j - 16] >> 4)) : static_cast<int8_t>(qb[j]);
          part[j % 8] = std::fma(static_cast<float>(w), xb[j], part[j % 8]);
        }
        const float t = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        acc[b % 4] = std::fma(t, d[n * nb + b], acc[b % 4]);
      }
      const float v = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      y[r * N + n] = m ? v + minimum_term(m + n * nb, xsum + r * nb, nb) : v;
    }
  }
}
#endif

at::Tensor block_linear(const at::Tensor& x, const at::Tensor& qs, const at::Tensor& d, const at::Tensor& m, int64_t kind) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "block_linear: x must be [rows, K] float32");
  TORCH_CHECK(qs.dim() == 3 && qs.scalar_type() == at::kByte && qs.is_contiguous(), "block_linear: qs must be uint8 [N, K/32, bytes]");
  const auto xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = qs.size(0), nb = qs.size(1), qbytes = qs.size(2);
  TORCH_CHECK(nb * BLOCK == K, "block_linear: K=", K, " does not match ", nb, " blocks of 32");
  TORCH_CHECK(qbytes == (kind == 0 ? 16 : 32), "block_linear: wrong block size for kind ", kind);
  TORCH_CHECK(d.is_contiguous() && d.scalar_type() == at::kFloat && d.numel() == N * nb, "block_linear: bad scales");
  const bool has_m = kind == 0;
  TORCH_CHECK(!has_m || (m.is_contiguous() && m.scalar_type() == at::kFloat && m.numel() == N * nb), "block_linear: bad minimums");
  auto y = at::empty({M, N}, xc.options());
  if (M == 0 || N == 0) return y;
  const float* xp = xc.data_ptr<float>();
  const std::vector<float> sums = has_m ? block_sums(xp, M, K) : std::vector<float>();
#ifdef NBC_AVX2
  const std::vector<float> permuted = kind == 0 ? permute_for_q4(xp, M, K) : std::vector<float>();
  if (kind == 0) xp = permuted.data();
#endif
  const uint8_t* qp = qs.data_ptr<uint8_t>();
  const float* dp = d.data_ptr<float>();
  const float* mp = has_m ? m.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int k = static_cast<int>(kind);
  // Each (row, output) pair gets the same operations whatever the tiles: the split changes no sum.
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    tile(k, qp, qbytes, dp, mp, xp, K, has_m ? sums.data() : nullptr, nb, M, yp, N, n0, n1);
  });
  return y;
}
}  // namespace

TORCH_LIBRARY(nb_completion_blocks, lib) {
  lib.def("block_linear(Tensor x, Tensor qs, Tensor d, Tensor m, int kind) -> Tensor");
  lib.impl("block_linear", c10::DispatchKey::CPU, TORCH_FN(block_linear));
}
"""


def _name() -> str:
    return f"nb_completion_blocks_{_machine_tag()}"


def _machine_tag() -> str:
    """The op is compiled for this processor (``-march=native``): a cache shared with another
    machine must not hand it a build for other instructions."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        pass
    return hashlib.sha1(f"{platform.machine()} {flags}".encode()).hexdigest()[:10]


def _build(name: str) -> None:
    from torch.utils.cpp_extension import load_inline

    load_inline(name=name, cpp_sources=_SOURCE, is_python_module=False, extra_cflags=["-O3", "-march=native"])
    torch.library.register_fake("nb_completion_blocks::block_linear")(_fake)


OP = InlineOp(
    name=_name,
    enabled=lambda: engine_config().block_op,
    build=_build,
    what="quantized-block matmul op",
    fallback="BlockLinear uses dequantized float32 weights",
)
tried, available, built_on_disk = OP.tried, OP.available, OP.built_on_disk


def _fake(x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor, kind: int) -> torch.Tensor:
    return x.new_empty(x.shape[0], qs.shape[0])


def block_linear(x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor, kind: int) -> torch.Tensor:
    return torch.ops.nb_completion_blocks.block_linear(x, qs, d, m, kind)
