"""A matmul over a GGUF checkpoint's own quantized blocks, with float32 activations.

``block_linear(x, qs, d, m, kind)`` computes ``x @ W.T`` where ``W`` is stored as llama.cpp
stores it: rows of 32-value blocks, each with its own scale ``d`` (and minimum ``m``). Each
block is expanded to float32 exactly as ``gguf``'s reference dequantization does (``d*q + m`` is
one rounding, the same in a fused multiply-add since ``d*q`` is exact), then multiplied with the
float32 activations. Nothing is re-quantized, so the numbers are float32's on the checkpoint's
weights (``tests/test_block_linear.py``).

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
import os
import platform
import threading
from typing import Optional

import torch

from .int8_op import _find_ninja

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

// One row of activations as 16-bit integers per 32-value block, x ~ xq * scale, and each
// block's scaled sum (for the Q4 minimum term). Depends on that row alone. For Q4 a pair of
// blocks (b, c) is stored interleaved by eights, b0-7 c0-7 b8-15 c8-15 ..., the order the
// kernel unpacks two blocks of nibbles in; integer sums do not depend on the order.
struct Activations {
  std::vector<int16_t> q;
  std::vector<float> scale, sum;
};

void quantize_rows(const float* x, int64_t M, int64_t K, bool pairs, Activations& a) {
  const int64_t nb = K / BLOCK;
  a.q.resize(static_cast<size_t>(M * K));
  a.scale.resize(static_cast<size_t>(M * nb));
  a.sum.resize(static_cast<size_t>(M * nb));
  for (int64_t r = 0; r < M; ++r) {
    int16_t* qr = a.q.data() + r * K;
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + r * K + b * BLOCK;
      const bool paired = pairs && (b | 1) < nb;
      const int64_t base = paired ? (b & ~int64_t(1)) * BLOCK + (b & 1) * 8 : b * BLOCK;
      const int64_t stride = paired ? 16 : 8;  // where each group of 8 values goes
#ifdef NBC_AVX2
      const __m256 sign = _mm256_set1_ps(-0.f);
      __m256 v[4];
      __m256 mx = _mm256_setzero_ps();
      for (int g = 0; g < 4; ++g) {
        v[g] = _mm256_loadu_ps(xb + 8 * g);
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[g]));
      }
      __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
      h = _mm_max_ps(h, _mm_movehl_ps(h, h));
      const float amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
#else
      float amax = 0.f;
      for (int j = 0; j < BLOCK; ++j) amax = std::max(amax, std::fabs(xb[j]));
#endif
      const float scale = amax / 32767.f;
      const float inv = amax > 0.f ? 32767.f / amax : 0.f;
      int32_t total = 0;
#ifdef NBC_AVX2
      const __m256 iv = _mm256_set1_ps(inv);
      __m256i t = _mm256_setzero_si256();
      for (int g = 0; g < 4; ++g) {
        const __m256i n = _mm256_cvtps_epi32(_mm256_mul_ps(v[g], iv));  // nearest, ties to even
        t = _mm256_add_epi32(t, n);
        const __m128i packed = _mm_packs_epi32(_mm256_castsi256_si128(n), _mm256_extracti128_si256(n, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + base + g * stride), packed);
      }
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
      total = _mm_cvtsi128_si32(s4);
#else
      for (int j = 0; j < BLOCK; ++j) {
        const int16_t q = static_cast<int16_t>(std::nearbyint(xb[j] * inv));
        qr[base + (j / 8) * stride + (j % 8)] = q;
        total += q;
      }
#endif
      a.scale[r * nb + b] = scale;
      a.sum[r * nb + b] = scale * static_cast<float>(total);
    }
  }
}

inline float minimum_term(const float* m, const float* xsum, int64_t nb) {
  float t = 0.f;
  for (int64_t b = 0; b < nb; ++b) t = std::fma(m[b], xsum[b], t);
  return t;
}

#ifdef NBC_AVX2
inline float lanes(__m256 s) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}

inline __m256i load16(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// One block in natural order: its 32 weights widened to two vectors of 16-bit integers.
inline __m256i single_block(int kind, const uint8_t* q, const int16_t* xb) {
  __m256i w0, w1;
  if (kind == 0) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i mask = _mm_set1_epi8(0x0F);
    w0 = _mm256_cvtepu8_epi16(_mm_and_si128(bytes, mask));
    w1 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask));
  } else {
    w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
    w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16)));
  }
  return _mm256_add_epi32(_mm256_madd_epi16(w0, load16(xb)), _mm256_madd_epi16(w1, load16(xb + 16)));
}

// y[r, n] for one weight row: the same instructions for every row of x, in one order.
float dot(int kind, const uint8_t* q, int64_t qbytes, const float* d, const float* m, const int16_t* xq,
          const float* xs, const float* xsum, int64_t nb) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t b = 0;
  if (kind == 0) {
    const __m256i mask = _mm256_set1_epi8(0x0F);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    auto pair = [&](int64_t at) -> __m256 {
      // blocks at and at+1: 32 bytes, lane 0 the first block's nibbles, lane 1 the second's
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + at * 16));
      const __m256i lo = _mm256_and_si256(bytes, mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
      const int16_t* xb = xq + at * BLOCK;
      const __m256i p = _mm256_add_epi32(
          _mm256_add_epi32(_mm256_madd_epi16(_mm256_unpacklo_epi8(lo, zero), load16(xb)),
                           _mm256_madd_epi16(_mm256_unpackhi_epi8(lo, zero), load16(xb + 16))),
          _mm256_add_epi32(_mm256_madd_epi16(_mm256_unpacklo_epi8(hi, zero), load16(xb + 32)),
                           _mm256_madd_epi16(_mm256_unpackhi_epi8(hi, zero), load16(xb + 48))));
      // lanes 0-3 hold block at, 4-7 block at+1: their scales d*s, spread the same way
      const __m256 ds = _mm256_mul_ps(
          _mm256_castpd_ps(_mm256_castpd128_pd256(_mm_load_sd(reinterpret_cast<const double*>(d + at)))),
          _mm256_castpd_ps(_mm256_castpd128_pd256(_mm_load_sd(reinterpret_cast<const double*>(xs + at)))));
      return _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_permutevar8x32_ps(ds, spread));
    };
    for (; b + 4 <= nb; b += 4) {
      acc0 = _mm256_add_ps(acc0, pair(b));
      acc1 = _mm256_add_ps(acc1, pair(b + 2));
    }
    if (b + 2 <= nb) {
      acc0 = _mm256_add_ps(acc0, pair(b));
      b += 2;
    }
  }
  for (; b < nb; ++b) {
    const __m256 f = _mm256_set1_ps(d[b] * xs[b]);
    const __m256i p = single_block(kind, q + b * qbytes, xq + b * BLOCK);
    if (b & 1) acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc1);
    else acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc0);
  }
  float y = lanes(_mm256_add_ps(acc0, acc1));
  return m ? y + minimum_term(m, xsum, nb) : y;
}
#else
float dot(int kind, const uint8_t* q, int64_t qbytes, const float* d, const float* m, const int16_t* xq,
          const float* xs, const float* xsum, int64_t nb) {
  float acc[2] = {0.f, 0.f};
  const bool pairs = kind == 0;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* qb = q + b * qbytes;
    const bool paired = pairs && (b | 1) < nb;
    const int16_t* xr = xq + (paired ? (b & ~int64_t(1)) * BLOCK : b * BLOCK);
    const int half = static_cast<int>(b & 1);
    int32_t p = 0;
    for (int j = 0; j < BLOCK; ++j) {
      const int32_t w = kind == 0 ? (j < 16 ? (qb[j] & 0x0F) : (qb[j - 16] >> 4)) : static_cast<int8_t>(qb[j]);
      const int16_t x = paired ? xr[(j / 8) * 16 + half * 8 + (j % 8)] : xr[j];
      p += w * x;
    }
    acc[(pairs ? (b >> 1) : b) & 1] = std::fma(static_cast<float>(p), d[b] * xs[b], acc[(pairs ? (b >> 1) : b) & 1]);
  }
  const float y = acc[0] + acc[1];
  return m ? y + minimum_term(m, xsum, nb) : y;
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
  Activations a;
  quantize_rows(xc.data_ptr<float>(), M, K, kind == 0, a);
  const uint8_t* qp = qs.data_ptr<uint8_t>();
  const float* dp = d.data_ptr<float>();
  const float* mp = has_m ? m.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int k = static_cast<int>(kind);
  // Every (row, output) pair is one call of dot(): how the work is split changes no sum.
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* qn = qp + n * nb * qbytes;
      for (int64_t r = 0; r < M; ++r) {
        yp[r * N + n] = dot(k, qn, qbytes, dp + n * nb, mp ? mp + n * nb : nullptr, a.q.data() + r * K,
                            a.scale.data() + r * nb, a.sum.data() + r * nb, nb);
      }
    }
  });
  return y;
}
}  // namespace

TORCH_LIBRARY(nb_completion_blocks, lib) {
  lib.def("block_linear(Tensor x, Tensor qs, Tensor d, Tensor m, int kind) -> Tensor");
  lib.impl("block_linear", c10::DispatchKey::CPU, TORCH_FN(block_linear));
}
"""

_lock = threading.Lock()
_state: dict[str, Optional[bool]] = {"built": None}


def tried() -> bool:
    """Whether this process has built or loaded the op already (or found it could not)."""
    return _state["built"] is not None


def available() -> bool:
    """Build (once per machine) and load the op; False where that is not possible."""
    with _lock:
        if _state["built"] is None:
            _state["built"] = _build()
        return bool(_state["built"])


def built_on_disk() -> bool:
    """Whether this machine has the op built already (loading it then takes well under a second)."""
    return _built_on_disk(_name())


def _built_on_disk(name: str) -> bool:
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return os.path.isfile(os.path.join(_get_build_directory(name, verbose=False), f"{name}.so"))
    except Exception:  # noqa: BLE001 - a private helper of torch's; unknown means "maybe not"
        return False


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


def _build() -> bool:
    if os.environ.get("NB_COMPLETION_BLOCK_OP", "1") == "0":
        return False
    try:
        from torch.utils.cpp_extension import load_inline

        _find_ninja()
        log.info("building the quantized-block matmul op (once per machine)")
        load_inline(
            name=_name(),
            cpp_sources=_SOURCE,
            is_python_module=False,
            extra_cflags=["-O3", "-march=native"],
        )
        torch.library.register_fake("nb_completion_blocks::block_linear")(_fake)
    except Exception as exc:  # no compiler, no headers: BlockLinear uses dequantized weights
        log.warning("quantized-block matmul op not built (%s); using dequantized float32 weights", exc)
        return False
    return True


def _fake(x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor, kind: int) -> torch.Tensor:
    return x.new_empty(x.shape[0], qs.shape[0])


def block_linear(x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor, kind: int) -> torch.Tensor:
    return torch.ops.nb_completion_blocks.block_linear(x, qs, d, m, kind)
