"""fbgemm's dynamic int8 matmul behind an op that takes a plain integer key instead of the packed
weights object.

Two reasons, both measured on the default model (121 int8 matmuls a step):

* ``torch.ops.quantized.linear_dynamic(x, packed, False)`` called from Python spends ~10 us
  converting the packed-weights ``ScriptObject`` before fbgemm starts; ``int8_linear(x, key)``
  costs ~5 us in all. That is ~1.2 ms of a ~13 ms step.
* ``torch.compile`` cannot trace a ``ScriptObject``; an op taking ``(Tensor, int)`` it keeps in
  the graph as an opaque call, which inductor's C++ wrapper makes without going through Python.

The op is a few lines of C++ built once per machine with ``torch.utils.cpp_extension.load_inline``
(~25 s; cached under ``~/.cache/torch_extensions``; ninja comes from PyPI). Where it cannot be
built (no C++ compiler, or ``NB_COMPLETION_INT8_OP=0``) ``available()`` is False and
``rowwise_int8`` calls fbgemm from Python and, under compilation, through a Python-registered op:
the same numbers, a little slower.
"""

from __future__ import annotations

import logging

import torch

from .config import engine_config
from .cpp_op import InlineOp

log = logging.getLogger("nb_completion.engine")

_SOURCE = r"""
#include <torch/library.h>
#include <ATen/native/quantized/PackedParams.h>
#include <mutex>
#include <vector>

namespace {
std::mutex table_lock;
std::vector<c10::intrusive_ptr<LinearPackedParamsBase>> table;

int64_t add(c10::intrusive_ptr<LinearPackedParamsBase> packed) {
  std::lock_guard<std::mutex> guard(table_lock);
  table.push_back(std::move(packed));
  return static_cast<int64_t>(table.size()) - 1;
}

void drop(int64_t key) {
  std::lock_guard<std::mutex> guard(table_lock);
  table.at(key).reset();
}

c10::intrusive_ptr<LinearPackedParamsBase> lookup(int64_t key) {
  std::lock_guard<std::mutex> guard(table_lock);
  auto packed = table.at(key);
  TORCH_CHECK(packed, "int8 layer ", key, " was dropped");
  return packed;
}

at::Tensor int8_linear(const at::Tensor& rows, int64_t key) {
  return lookup(key)->apply_dynamic(rows, /*reduce_range=*/REDUCE_RANGE);
}

// rowwise_int8.RowwiseInt8Linear's eager arithmetic, op for op (so bit for bit), without a trip
// through Python between the ops: each row divided by its max-abs, the anchor row appended, the
// int8 matmul, the anchor's row dropped, each row multiplied back.
at::Tensor rowwise_linear(const at::Tensor& rows, int64_t key, const at::Tensor& anchor) {
  auto scale = rows.abs().amax({1}, /*keepdim=*/true).clamp_min(1e-12);
  auto y = lookup(key)->apply_dynamic(at::cat({rows / scale, anchor}), /*reduce_range=*/REDUCE_RANGE);
  return y.slice(0, 0, rows.size(0)) * scale;
}
}  // namespace

TORCH_LIBRARY(nb_completion_int8, m) {
  m.def("add", add);
  m.def("drop", drop);
  m.def("int8_linear(Tensor rows, int key) -> Tensor");
  m.impl("int8_linear", c10::DispatchKey::CPU, TORCH_FN(int8_linear));
  m.def("rowwise_linear(Tensor rows, int key, Tensor anchor) -> Tensor");
  m.impl("rowwise_linear", c10::DispatchKey::CPU, TORCH_FN(rowwise_linear));
}
"""

# fbgemm's AVX2 kernels multiply unsigned by signed bytes into saturating 16-bit pairs, so 8-bit
# activations overflow there (measured: 16x the error of 7 bits on a random layer, and the
# default model's top token matched float32 83 % of the time); its AVX-512 kernels do not. 7-bit
# activations where the CPU lacks AVX-512, as torch's own x86 default does.
REDUCE_RANGE = torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX")

_out_features: dict[int, int] = {}  # key -> the layer's output width, for the op's fake (shape) rule


def _build(name: str) -> None:
    from torch.utils.cpp_extension import load_inline

    load_inline(
        name=name,
        cpp_sources=_SOURCE.replace("REDUCE_RANGE", "true" if REDUCE_RANGE else "false"),
        is_python_module=False,
        extra_cflags=["-O2"],
    )
    torch.library.register_fake("nb_completion_int8::int8_linear")(_fake)
    torch.library.register_fake("nb_completion_int8::rowwise_linear")(_fake_rowwise)


OP = InlineOp(
    name=lambda: "nb_completion_int8",
    enabled=lambda: engine_config().int8_op,
    build=_build,
    what="int8 matmul op",
    fallback="calling fbgemm from Python",
)
tried, available, built_on_disk = OP.tried, OP.available, OP.built_on_disk


def _fake(rows: torch.Tensor, key: int) -> torch.Tensor:
    return rows.new_empty(rows.shape[0], _out_features[key])


def _fake_rowwise(rows: torch.Tensor, key: int, anchor: torch.Tensor) -> torch.Tensor:
    return rows.new_empty(rows.shape[0], _out_features[key])


def register(packed: torch.ScriptObject, out_features: int) -> int:
    """The key the op finds ``packed`` by. Keys count up from 0 in each process, so a model loaded
    the same way gets the same keys, and inductor's on-disk cache of compiled graphs is reused."""
    key = int(torch.ops.nb_completion_int8.add(packed))
    _out_features[key] = out_features
    return key


def drop(key: int) -> None:
    """Let go of the packed weights behind ``key`` (its layer was freed)."""
    _out_features.pop(key, None)
    try:
        torch.ops.nb_completion_int8.drop(key)
    except Exception:  # interpreter shutdown
        pass
