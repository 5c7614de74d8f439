"""A small C++ op built with torch's ``load_inline`` once per machine, loaded once per process:
the int8 matmul (``int8_op.py``) and the quantized-block matmul (``block_kernel.py``) share this.

``available()`` builds (or loads the cached build) on first use, under a lock, and remembers the
answer; without a compiler, or when ``EngineConfig`` turns the op off, it is False and the caller
runs its slower exact path. ``built_on_disk()`` says whether loading will be quick (the loader
shows a "building" step otherwise)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from typing import Callable, Optional

log = logging.getLogger("nb_completion.engine")


def find_ninja() -> None:
    """torch builds with ``ninja`` found on PATH; the PyPI wheel (a dependency) puts it in its own
    folder, which is not on PATH unless the virtual environment is activated."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


class InlineOp:
    def __init__(
        self, name: Callable[[], str], enabled: Callable[[], bool], build: Callable[[str], None], what: str, fallback: str
    ):
        self.name, self.enabled, self._build_with = name, enabled, build
        self.what, self.fallback = what, fallback
        self.built: Optional[bool] = None
        self._lock = threading.Lock()

    def tried(self) -> bool:
        """Whether this process has built or loaded the op already (or found it could not)."""
        return self.built is not None

    def available(self) -> bool:
        """Build (once per machine) and load the op; False where that is not possible."""
        with self._lock:
            if self.built is None:
                self.built = self.build()
            return bool(self.built)

    def build(self) -> bool:
        if not self.enabled():
            return False
        try:
            find_ninja()
            log.info("building the %s (once per machine)", self.what)
            self._build_with(self.name())
        except Exception as exc:  # no compiler, no headers: the caller's exact path does the work
            log.warning("%s not built (%s); %s", self.what, exc, self.fallback)
            return False
        return True

    def built_on_disk(self) -> bool:
        """Whether this machine has the op built already (loading it then takes well under a second)."""
        name = self.name()
        try:
            from torch.utils.cpp_extension import _get_build_directory

            return os.path.isfile(os.path.join(_get_build_directory(name, verbose=False), f"{name}.so"))
        except Exception:  # noqa: BLE001 - a private helper of torch's; unknown means "maybe not"
            return False
