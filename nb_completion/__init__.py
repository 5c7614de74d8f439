"""nb_completion: run a language model inside the Jupyter kernel and watch it generate.

    >>> import nb_completion
    >>> nb_completion.complete("The capital of France is", sampling_params={"max_tokens": 8})  # doctest: +SKIP

Ways in: ``complete()`` (this module), ``%load_ext nb_completion`` then ``%%complete``,
``CompletionWidget()``, ``serve()`` (the llama-stack HTTP route), ``nb-completion`` on the shell.
Heavy modules (torch, transformers, the widget, the server) load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .api.errors import BadRequest, CompletionError, EngineFailure, ModelNotFound
from .api.types import CompletionRequest, CompletionResponse, CompletionResponseStreamChunk
from .engine.registry import DEFAULT_MODEL_ID, list_models
from .service import complete

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("nb_completion.load", "load_model"),
    "ensure_loaded": ("nb_completion.load", "ensure_loaded"),
    "CompletionWidget": ("nb_completion.widget", "CompletionWidget"),
    "serve": ("nb_completion.server", "serve"),
    "register_remote": ("nb_completion.remote", "register_remote"),
    "configure": ("nb_completion.engine.config", "configure"),
    "engine_config": ("nb_completion.engine.config", "engine_config"),
    "models": ("nb_completion.engine.loaded", "models"),
    "unload_model": ("nb_completion.engine.loaded", "unload_model"),
    "compare": ("nb_completion.notebook.comparison", "compare"),
    "heatmap_html": ("nb_completion.notebook.render", "heatmap_html"),
    "score": ("nb_completion.scoring", "score"),
    "next_token_distribution": ("nb_completion.notebook.teaching", "next_token_distribution"),
    "logit_lens": ("nb_completion.inside", "logit_lens"),
    "attention": ("nb_completion.inside", "attention"),
    "futures": ("nb_completion.inside", "futures"),
}

__all__ = [
    "complete",
    "list_models",
    "DEFAULT_MODEL_ID",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionResponseStreamChunk",
    "CompletionError",
    "BadRequest",
    "ModelNotFound",
    "EngineFailure",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'nb_completion' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nb_completion`` registers ``%%complete`` / ``%complete``."""
    from .notebook.magic import load_ipython_extension as _load

    _load(ipython)
