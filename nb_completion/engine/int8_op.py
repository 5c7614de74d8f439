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
import os
import shutil
import threading
from typing import Optional

import torch

from .config import engine_config

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

_lock = threading.Lock()
_state: dict[str, Optional[bool]] = {"built": None}
_out_features: dict[int, int] = {}  # key -> the layer's output width, for the op's fake (shape) rule


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
    from .block_kernel import _built_on_disk

    return _built_on_disk("nb_completion_int8")


def _build() -> bool:
    if not engine_config().int8_op:
        return False
    try:
        from torch.utils.cpp_extension import load_inline

        _find_ninja()
        log.info("building the int8 matmul op (once per machine, about half a minute)")
        load_inline(
            name="nb_completion_int8",
            cpp_sources=_SOURCE.replace("REDUCE_RANGE", "true" if REDUCE_RANGE else "false"),
            is_python_module=False,
            extra_cflags=["-O2"],
        )
        torch.library.register_fake("nb_completion_int8::int8_linear")(_fake)
        torch.library.register_fake("nb_completion_int8::rowwise_linear")(_fake_rowwise)
    except Exception as exc:  # no compiler, no headers: the Python path does the same work
        log.warning("int8 matmul op not built (%s); calling fbgemm from Python", exc)
        return False
    return True


def _fake(rows: torch.Tensor, key: int) -> torch.Tensor:
    return rows.new_empty(rows.shape[0], _out_features[key])


def _fake_rowwise(rows: torch.Tensor, key: int, anchor: torch.Tensor) -> torch.Tensor:
    return rows.new_empty(rows.shape[0], _out_features[key])


def _find_ninja() -> None:
    """torch builds with ``ninja`` found on PATH; the PyPI wheel (a dependency) puts it in its own
    folder, which is not on PATH unless the virtual environment is activated."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


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
