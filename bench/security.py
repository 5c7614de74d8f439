"""Hardening figures against a server process (issue 10):

1. how fast a 400 that needs only the tokenizer (prompt over the context, a grammar that does not
   compile, image content) arrives while a long generation runs;
2. whether a valid request completes while 2,000 idle connections are open;
3. issue 21's probes (``bench/hostile_probes.py``): deep grammars and schemas, a 14 MiB prompt,
   echo scoring of ~4,800 tokens alone and 8 at once (peak RSS growth), request smuggling,
   clients leaving mid-body, slow chunked uploads, strict seeds; with totals: probes tried and
   held, deaths, 5xx.

Starts ``python -m nb_completion.server`` in a child process (the default model, or ``--tiny``).
The RSS over 1,000 mixed requests is ``bench/http_load.py --requests 1000``.

    python bench/security.py [--tiny] [--idle 2000] [--samples 30] [--only-probes]
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

import hostile_probes  # bench/hostile_probes.py
from serve_process import start_server  # bench/serve_process.py

COMPLETION = "/v1/inference/completion"


def start_guarded_server(tiny: bool) -> tuple[subprocess.Popen, str]:
    return start_server(["--queue-size", "1", *(["--tiny"] if tiny else [])])


def busy(url: str) -> bool:
    return httpx.get(url + "/v1/health").json()["queue"]["busy"]


def fast_400s(url: str, model: str, context: int, samples: int) -> None:
    long_generation = {"model_id": model, "content": "Once upon a time", "stream": True, "sampling_params": {"max_tokens": 0}}
    bad = [
        ("prompt over the context", {"model_id": model, "content": "word " * (context + 10)}),
        (
            "grammar that does not compile",
            {"model_id": model, "content": "x", "response_format": {"type": "grammar", "bnf": {"gbnf": "root ::= ("}}},
        ),
        ("image content", {"model_id": model, "content": [{"type": "image", "image": {"url": {"uri": "https://x/y.png"}}}]}),
    ]
    with httpx.Client(base_url=url, timeout=600) as client, client.stream("POST", COMPLETION, json=long_generation) as stream:
        lines = stream.iter_lines()
        next(lines)
        for name, request in bad:
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                response = client.post(COMPLETION, json=request)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 400, response.text
            running = busy(url)
            print(
                f"  {name:32s} 400 in median {statistics.median(times):6.1f} ms, max {max(times):6.1f} ms "
                f"({samples} requests; generation still running: {running})"
            )
        waiting = httpx.get(url + "/v1/health").json()["queue"]["waiting"]
        print(f"  queue places taken by the {3 * samples} 400s: {waiting}")


def idle_connections(url: str, model: str, count: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    refused = 0
    start = time.perf_counter()
    for _ in range(count):
        try:
            sockets.append(socket.create_connection((host, int(port)), timeout=10))
        except OSError:
            refused += 1
    opened = time.perf_counter() - start
    start = time.perf_counter()
    response = httpx.post(
        url + COMPLETION, json={"model_id": model, "content": "Hello", "sampling_params": {"max_tokens": 8}}, timeout=120
    )
    elapsed = time.perf_counter() - start
    closed = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        sock.close()
    print(
        f"  {len(sockets)} idle connections opened in {opened:.1f} s ({refused} refused); a valid request: "
        f"{response.status_code} {response.json().get('stop_reason')} in {elapsed * 1000:.0f} ms; "
        f"{closed} idle ones closed by the server (the connection cap evicts the longest idle)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny random model instead of the default model")
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--only-probes", action="store_true", help="issue 21's probes only")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    proc, url = start_guarded_server(args.tiny)
    try:
        models = httpx.get(url + "/v1/models").json()["data"]
        model = "tiny-llama" if args.tiny else models[0]["identifier"]
        httpx.post(
            url + COMPLETION, json={"model_id": model, "content": "warm up", "sampling_params": {"max_tokens": 2}}, timeout=600
        )
        entry = next(m for m in httpx.get(url + "/v1/models").json()["data"] if m["identifier"] == model)
        context = entry["metadata"]["context_length"]
        print(f"model {model} (context {context}, max_tokens cap {entry['metadata']['max_tokens_cap']})")
        if not args.only_probes:
            print("400s while a generation runs:")
            fast_400s(url, model, context, args.samples)
            print("idle connections:")
            idle_connections(url, model, args.idle)
        print("issue 21 probes:")
        servers = [proc]

        def restart() -> tuple[str, int, object]:
            fresh, fresh_url = start_guarded_server(args.tiny)
            servers.append(fresh)
            return fresh_url, fresh.pid, lambda: fresh.poll() is None

        target = hostile_probes.Target(url, proc.pid, lambda: proc.poll() is None, restart)
        totals = hostile_probes.run(target, model, context)
        for key, value in totals.items():
            print(f"  {key}: {value}")
        print(json.dumps({"health": httpx.get(target.url + "/v1/health").json()}))
        for extra in servers[1:]:
            extra.terminate()
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    main()
