"""Serve the llama-stack completion route (and OpenAI's ``/v1/completions``) over HTTP.

From a notebook, on the models already loaded in the kernel::

    >>> server = nb_completion.serve(port=8321)          # doctest: +SKIP
    >>> server.url                                        # doctest: +SKIP
    'http://127.0.0.1:8321'
    >>> server.stop()                                     # doctest: +SKIP

From a shell: ``nb-completion serve --port 8321``. Starlette and uvicorn load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from .handle import ServerHandle, serve

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette


def create_app(
    models: Iterable[str] | None = None, api_key: str | None = None, queue_size: int = 8, **options: Any
) -> "Starlette":
    """The ASGI app (for another ASGI server); ``options``: ``max_tokens_cap``, ``host_policy``."""
    from .app import create_app as _create

    return _create(models=models, api_key=api_key, queue_size=queue_size, **options)


__all__ = ["serve", "ServerHandle", "create_app"]
