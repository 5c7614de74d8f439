"""``EngineConfig``: every engine setting, built in one place from arguments, the CLI and the
environment, then passed down. No other module reads ``os.environ`` for an engine setting, and
no CLI writes it: ``nb-completion serve --compile`` calls ``configure(compile=True)``.

| setting | environment | default |
|---|---|---|
| ``compile``: compile the decode pass on its own thread (docs/engine.md) | ``NB_COMPLETION_COMPILE=1`` | off |
| ``lean``: the lean Llama pass; off runs the model's own forward (the reference) | ``NB_COMPLETION_LEAN=0`` | on |
| ``threads``: CPU threads for generation | ``NB_COMPLETION_THREADS`` | all cores but one |
| ``cache_dir``: converted GGUFs and built ops | ``NB_COMPLETION_CACHE`` | ``$XDG_CACHE_HOME/nb_completion`` |
| ``block_op``: the quantized-block matmul op (``block_kernel.py``) | ``NB_COMPLETION_BLOCK_OP=0`` | on |
| ``int8_op``: the int8 matmul op (``int8_op.py``) | ``NB_COMPLETION_INT8_OP=0`` | on |

The environment is read at each ``engine_config()`` call (a test's ``monkeypatch.setenv`` is
seen); what ``configure`` set wins over it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class EngineConfig:
    compile: bool = False
    lean: bool = True
    threads: Optional[int] = None
    cache_dir: Optional[Path] = None
    block_op: bool = True
    int8_op: bool = True

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "EngineConfig":
        threads = environ.get("NB_COMPLETION_THREADS")
        cache = environ.get("NB_COMPLETION_CACHE")
        return cls(
            compile=environ.get("NB_COMPLETION_COMPILE") == "1",
            lean=environ.get("NB_COMPLETION_LEAN", "1") != "0",
            threads=max(1, int(threads)) if threads else None,
            cache_dir=Path(cache) if cache else Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nb_completion",
            block_op=environ.get("NB_COMPLETION_BLOCK_OP", "1") != "0",
            int8_op=environ.get("NB_COMPLETION_INT8_OP", "1") != "0",
        )

    def cpu_threads(self) -> int:
        """``threads``, else all cores but one.

        A notebook's kernel shares the machine with JupyterLab, the browser and often a second
        kernel; torch's OpenMP threads spin while they wait, and measured on 2 busy cores here two
        threads decoded up to 10x slower than one (bench/decode.py --threads)."""
        return self.threads or max(1, (os.cpu_count() or 2) - 1)


_overrides: dict[str, Any] = {}


def engine_config() -> EngineConfig:
    """The settings in force: the environment, overlaid with what ``configure`` set."""
    return dataclasses.replace(EngineConfig.from_environ(os.environ), **_overrides)


def configure(**settings: Any) -> EngineConfig:
    """Set engine settings for this process (the CLI's flags, ``nb.configure(...)``)."""
    unknown = set(settings) - {f.name for f in dataclasses.fields(EngineConfig)}
    if unknown:
        raise TypeError(f"unknown engine settings: {', '.join(sorted(unknown))}")
    _overrides.update(settings)
    return engine_config()
