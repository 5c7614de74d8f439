"""``nb-completion serve`` in its own process for the benchmarks: a free port, the server started
with the given arguments, and its ``/v1/health`` waited for (with a deadline)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    arguments: Sequence[str] = (), env: Optional[dict] = None, deadline_s: float = 600
) -> tuple[subprocess.Popen, str]:
    """``(process, url)`` once the server answers its health check; ``env`` is added to this
    process's environment. Exits the benchmark if the server ends or never answers."""
    port = free_port()
    command = [sys.executable, "-m", "nb_completion.server", "--port", str(port), *arguments]
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a long run's log never blocks the server
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=environment)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited: {log.read()}")
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")
