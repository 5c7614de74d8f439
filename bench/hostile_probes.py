"""Issue 21's probes against a server process, for ``bench/security.py``: each probe sends what
killed or swamped the server in the second audit and checks the answer it must get. Totals:
probes tried and held, deaths (the process gone), 5xx answers; the peak RSS growth of one
~4,800-token echo and of 8 at once; the time to the 400 for a 14 MiB prompt.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

COMPLETION = "/v1/inference/completion"


@dataclass
class Tally:
    tried: int = 0
    held: int = 0
    five_xx: int = 0
    deaths: int = 0
    failures: list[str] = field(default_factory=list)

    def record(self, name: str, ok: bool, status: int | None, alive: bool) -> None:
        self.tried += 1
        self.held += bool(ok and alive)
        self.five_xx += status is not None and status >= 500
        self.deaths += not alive
        if not (ok and alive):
            self.failures.append(f"{name} (status {status}, alive {alive})")


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # the process is gone
        pass
    return 0


class Target:
    """The server under test; ``restart`` (returning ``(url, pid, alive)``) brings a dead one back."""

    def __init__(self, url: str, pid: int, alive: Callable[[], bool], restart: Callable[[], tuple[str, int, Callable[[], bool]]]):
        self.url, self.pid, self.alive = url, pid, alive
        self._restart = restart

    def ensure(self) -> None:
        if not self.alive():
            self.url, self.pid, self.alive = self._restart()


class PeakRss:
    """The largest RSS of ``pid`` seen while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int):
        self.pid, self.base, self.peak = pid, rss_bytes(pid), 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRss":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth_mib(self) -> float:
        return max(0, self.peak - self.base) / 2**20


def lark_chain(n: int) -> str:
    return "start: r0\n" + "".join(f'r{i}: r{i + 1} "x"\n' for i in range(n)) + f'r{n}: "y"\n'


def gbnf_chain(n: int) -> str:
    return "root ::= r0\n" + "".join(f'r{i} ::= r{i + 1} "x"\n' for i in range(n)) + f'r{n} ::= "y"\n'


def defs_chain(n: int) -> dict:
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(n)}
    defs[f"d{n}"] = {"type": "string"}
    return {"$ref": "#/$defs/d0", "$defs": defs}


def raw(url: str, data: bytes, timeout: float = 30) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                part = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return received
            if not part:
                return received
            received += part


def run(target: Target, model: str, context: int) -> dict:
    tally = Tally()
    figures: dict = {}
    alive = lambda: target.alive()  # noqa: E731

    def post(name: str, path: str, body: dict, expect: set[int]) -> httpx.Response | None:
        target.ensure()
        try:
            response = httpx.post(target.url + path, json=body, timeout=900)
        except httpx.HTTPError as exc:
            time.sleep(0.5)  # a dying process: let it go before asking whether it lives
            tally.record(f"{name}: {type(exc).__name__}", False, None, alive())
            return None
        tally.record(name, response.status_code in expect, response.status_code, alive())
        return response

    # 1. grammars and schemas that overflowed llguidance's native stack
    for name, fmt in [
        ("lark chain 3,000", {"type": "grammar", "bnf": {"lark": lark_chain(3000)}}),
        ("gbnf chain 5,000", {"type": "grammar", "bnf": {"gbnf": gbnf_chain(5000)}}),
        ("$defs chain 5,000", {"type": "json_schema", "json_schema": defs_chain(5000)}),
        ("lark nesting 20,000", {"type": "grammar", "bnf": {"lark": "start: " + "(" * 20000 + '"x"' + ")" * 20000}}),
    ]:
        post(
            name,
            COMPLETION,
            {"model_id": model, "content": "x", "response_format": fmt, "sampling_params": {"max_tokens": 2}},
            {400},
        )
    post(
        "guided_grammar chain 5,000",
        "/v1/completions",
        {"model": model, "prompt": "x", "guided_grammar": gbnf_chain(5000)},
        {400},
    )
    post(
        "lark chain 400 (within limits)",
        COMPLETION,
        {
            "model_id": model,
            "content": "x",
            "response_format": {"type": "grammar", "bnf": {"lark": lark_chain(400)}},
            "sampling_params": {"max_tokens": 2},
        },
        {200},
    )

    # 2. a 14 MiB prompt
    big = "The quick brown fox jumps over the lazy dog. " * (14 * 2**20 // 45)
    target.ensure()
    with PeakRss(target.pid) as peak:
        start = time.perf_counter()
        post("14 MiB prompt", COMPLETION, {"model_id": model, "content": big}, {400})
        figures["14MiB_prompt_400_s"] = round(time.perf_counter() - start, 3)
    figures["14MiB_prompt_rss_growth_mib"] = round(peak.growth_mib, 1)

    # 3. echo scoring: one ~4,800-token prompt, then 8 at once
    prompt = "The quick brown fox jumps over the lazy dog. " * (480 if context >= 8192 else max(1, context // 64))
    echo = {"model": model, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 0}
    target.ensure()
    with PeakRss(target.pid) as peak:
        start = time.perf_counter()
        post("echo of ~4,800 tokens", "/v1/completions", echo, {200})
        figures["echo_one_s"] = round(time.perf_counter() - start, 1)
    figures["echo_one_rss_growth_mib"] = round(peak.growth_mib, 1)
    statuses: list[int] = []
    target.ensure()
    with PeakRss(target.pid) as peak:
        threads = [
            threading.Thread(
                target=lambda: statuses.append(getattr(post("echo x8", "/v1/completions", echo, {200, 429}), "status_code", 0))
            )
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    figures["echo_eight_rss_growth_mib"] = round(peak.growth_mib, 1)
    figures["echo_eight_statuses"] = sorted(statuses)

    # 4. Content-Length with Transfer-Encoding: a smuggled request must not be answered
    body = json.dumps({"model_id": model, "content": "Hi", "sampling_params": {"max_tokens": 1}}).encode()
    smuggle = (
        (
            f"POST {COMPLETION} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body) + 5}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    target.ensure()
    answer = raw(target.url, smuggle)
    tally.record("CL + TE smuggling", answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1 ") == 1, 400, alive())

    # 5. clients leaving mid-body
    target.ensure()
    for _ in range(20):
        host, port = target.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"POST {COMPLETION} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n".encode()
                + b'{"model_id": "'
            )
            time.sleep(0.05)
    ok = httpx.get(target.url + "/v1/health").status_code == 200
    tally.record("20 clients leaving mid-body", ok, 200, alive())

    # 6. three slow chunked uploads (more than the 2 big-body slots), then a small chunked request
    target.ensure()
    host, port = target.url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(3)]
    head = (
        "POST " + COMPLETION + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    )
    for sock in slow:
        sock.sendall(head.encode() + b'\r\n5\r\n{"mod\r\n')
    start = time.perf_counter()
    small = head.encode() + b"Connection: close\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer = raw(target.url, small, timeout=60)
    figures["small_chunked_behind_slow_uploads_s"] = round(time.perf_counter() - start, 2)
    tally.record("small chunked request behind slow uploads", answer.startswith(b"HTTP/1.1 200"), 200, alive())
    for sock in slow:
        sock.close()

    # 7. the OpenAI route's seed is strict
    for seed in ["1", 1.5, True, 2**70]:
        response = post(
            f"seed {seed!r}", "/v1/completions", {"model": model, "prompt": "x", "max_tokens": 1, "seed": seed}, {400}
        )
        if response is not None and response.status_code == 400:
            param = response.json().get("error", {}).get("param")
            if param != "seed":
                tally.failures.append(f"seed {seed!r} named {param}")
    return {
        "probes_tried": tally.tried,
        "probes_held": tally.held,
        "deaths": tally.deaths,
        "5xx": tally.five_xx,
        "failures": tally.failures,
        **figures,
    }
