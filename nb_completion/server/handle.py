"""``serve()``: uvicorn in a background thread, so a notebook keeps running while it serves."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any, Iterable

log = logging.getLogger("nb_completion.server")


def _preload(models: Iterable[str]) -> list[str]:
    """Make sure every requested model is registered, loading local ones now."""
    from ..load import ensure_loaded

    ids = list(dict.fromkeys(models))
    for model_id in ids:
        ensure_loaded(model_id)
    return ids


class ServerHandle:
    """A running server: ``.url``, ``.stop()``; also a context manager."""

    def __init__(self, app: Any, server: Any, thread: threading.Thread, host: str, port: int):
        self.app = app
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running and queued requests, close the server and end its thread."""
        self.app.state.server.engine.stop()
        self._server.should_exit = True
        self._thread.join(timeout)

    def wait(self) -> None:
        """Block until the server stops (the CLI uses this)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<nb_completion server {self.url} {'running' if self.running else 'stopped'}>"


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    port: int = 8321,
    host: str = "127.0.0.1",
    models: Iterable[str] | None = None,
    api_key: str | None = None,
    queue_size: int = 8,
    log_level: str = "warning",
    startup_timeout: float = 30.0,
    *,
    max_tokens_cap: int | None = None,
    allowed_hosts: Iterable[str] = (),
    cors_origins: Iterable[str] = (),
    max_connections: int | None = None,
    header_timeout: float | None = None,
) -> ServerHandle:
    """Serve ``POST /v1/inference/completion``, ``POST /v1/completions``, ``GET /v1/models``,
    ``GET /v1/health`` and ``GET /openapi.json`` in a background thread; returns a handle.

    ``port=0`` picks a free port (see ``handle.url``). ``models``: the ids served, each loaded now
    (default: every registered model; the default model loads on first use). ``api_key``: require
    ``Authorization: Bearer <api_key>``. ``queue_size``: requests that may wait behind the running
    one; more get 429 with ``Retry-After``. The default bind is 127.0.0.1 (this machine only).

    ``max_tokens_cap``: the most tokens one request may generate (default 4096; ``max_tokens`` 0
    means up to it). ``allowed_hosts``: ``Host`` names answered besides loopback and ``host``
    (``*``: any). ``cors_origins``: origins that get CORS headers (default none). ``max_connections``
    and ``header_timeout``: past the cap the longest-idle connection is closed; a connection must
    send a request's headers within the timeout. See ``docs/http.md`` (Security).
    """
    import uvicorn

    from .app import create_app
    from .connections import ConnectionLimits, uvicorn_options
    from .defaults import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_TOKENS_CAP
    from .guard import HostPolicy

    if models is not None:
        models = _preload(models)
    if not is_loopback(host) and not api_key:
        log.warning(
            "serving on %s without an API key: anyone who can reach this address can use the models "
            "(set NB_COMPLETION_API_KEY or --api-key-file)",
            host,
        )
    policy = HostPolicy(host, allowed_hosts, cors_origins)
    limits = ConnectionLimits(max_connections or DEFAULT_MAX_CONNECTIONS, header_timeout or DEFAULT_HEADER_TIMEOUT)
    app = create_app(
        models=models,
        api_key=api_key,
        queue_size=queue_size,
        max_tokens_cap=max_tokens_cap or DEFAULT_MAX_TOKENS_CAP,
        host_policy=policy,
    )
    app.state.connections = limits
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted sockets inherit this: without it a response sent as two writes (headers, body)
    # waits ~40 ms on the client's delayed ACK, on every request after a connection's first
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        app.state.server.engine.stop()
        raise
    sock.set_inheritable(True)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
        ws="none",
        **uvicorn_options(limits),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"nb-completion-server:{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            app.state.server.engine.stop()
            server.should_exit = True
            raise RuntimeError(f"the server did not start on {host}:{bound_port}")
        time.sleep(0.02)
    handle = ServerHandle(app, server, thread, host, bound_port)
    log.info("serving on %s", handle.url)
    return handle
