"""16 concurrent SSE streams vs one, with the server's and the client's CPU time beside the figure.

``bench/engine.py`` prints the headline ratio (16 streams of 64 tokens, aggregate tok/s over one
stream's). This bench repeats that measurement ``--repeats`` times against one server process
(the single stream and the burst back to back each time), prints the medians and the load
average, and says where the CPU went during each burst:

* **server**: the server process's CPU seconds, split into the engine thread (the busiest thread:
  with the project's thread policy on a small CPU, torch computes on the engine thread itself)
  and the rest (the HTTP side: event loop, job threads), per token streamed;
* **client**: this process's CPU seconds for the clients (``--client threads``: one thread and
  one ``httpx.Client`` per stream, as ``bench/engine.py`` does; ``--client async``: one
  ``httpx.AsyncClient`` and one task per stream, in one thread);
* **engine alone** (``--engine``): the same requests opened in this process on the same model,
  read from one thread, no HTTP: what the batch gives without any server.

``--tiny`` serves the tiny random Llama instead (``serve --tiny``): its steps take well under a
millisecond, so the burst's rate is what the HTTP side can carry, not what the model computes.

    python bench/http_streams.py [--repeats 3] [--streams 16] [--tokens 64] [--client threads|async] [--engine] [--tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import PROMPT  # noqa: E402  (the very request bench/engine.py sends)
from serve_process import start_server  # noqa: E402

from nb_completion.engine.registry import DEFAULT_MODEL_ID  # noqa: E402
from nb_completion.engine.tiny import TINY_MODEL_ID  # noqa: E402

MODEL = {"id": DEFAULT_MODEL_ID}


def body(index: int, tokens: int) -> dict:
    return {
        "model_id": MODEL["id"],
        "content": f"{PROMPT} ({index})",
        "stream": True,
        "sampling_params": {"max_tokens": tokens, "strategy": {"type": "top_p", "temperature": 0.8}},
        "logprobs": {"top_k": 5},
    }


def stream_once(url: str, index: int, tokens: int) -> tuple[int, int, float]:
    """One stream, read line by line (as ``bench/engine.py``'s client does)."""
    start = time.perf_counter()
    with (
        httpx.Client(timeout=600) as client,
        client.stream("POST", url + "/v1/inference/completion", json=body(index, tokens)) as response,
    ):
        if response.status_code != 200:
            return response.status_code, 0, time.perf_counter() - start
        count = 0
        for line in response.iter_lines():
            if line.startswith("data: "):
                for metric in json.loads(line[6:]).get("metrics") or []:
                    if metric["metric"] == "completion_tokens":
                        count = int(metric["value"])
    return 200, count, time.perf_counter() - start


def burst_threads(url: str, streams: int, tokens: int) -> list[tuple[int, int, float]]:
    results: list = [None] * streams
    workers = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, stream_once(url, i + 1, tokens))) for i in range(streams)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


async def _stream_async(client: httpx.AsyncClient, url: str, index: int, tokens: int) -> tuple[int, int, float]:
    start = time.perf_counter()
    async with client.stream("POST", url + "/v1/inference/completion", json=body(index, tokens)) as response:
        if response.status_code != 200:
            return response.status_code, 0, time.perf_counter() - start
        count = 0
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                for metric in json.loads(line[6:]).get("metrics") or []:
                    if metric["metric"] == "completion_tokens":
                        count = int(metric["value"])
    return 200, count, time.perf_counter() - start


def burst_async(url: str, streams: int, tokens: int) -> list[tuple[int, int, float]]:
    async def run() -> list:
        limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            return await asyncio.gather(*(_stream_async(client, url, i + 1, tokens) for i in range(streams)))

    return asyncio.run(run())


def thread_cpu(process: psutil.Process) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in process.threads()}


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"


def start_bench_server(tiny: bool) -> tuple[subprocess.Popen, str]:
    # `serve --tiny` loads no model through the thread policy: without OMP_NUM_THREADS=1, torch's
    # idle OpenMP workers spin on the second core and the tiny model runs several times slower
    return start_server(["--tiny"] if tiny else [], env={"OMP_NUM_THREADS": "1"} if tiny else None)


def engine_alone(streams: int, tokens: int, repeats: int) -> None:
    """The same requests on the engine in this process, read from one thread (no HTTP)."""
    from nb_completion.engine.loading import ensure_loaded
    from nb_completion.service import build_request

    if MODEL["id"] == TINY_MODEL_ID:
        from nb_completion.engine.tiny import register_tiny_model

        register_tiny_model()
    backend = ensure_loaded(MODEL["id"])

    def run(count: int, n: int) -> float:
        start = time.perf_counter()
        opened = []
        for i in range(count):
            b = body(i + 1, n)
            request = build_request(
                b["content"], model_id=MODEL["id"], sampling_params=b["sampling_params"], logprobs=5, stream=True
            )
            opened.append(backend.open(request))
        total = sum(len(event.tokens) for events in opened for event in events if hasattr(event, "tokens"))
        return total / (time.perf_counter() - start)

    run(1, 4)
    ratios = []
    for _ in range(repeats):
        one, many = run(1, tokens), run(streams, tokens)
        ratios.append(many / one)
        print(f"engine alone: one {one:.1f} tok/s, {streams} streams {many:.1f} tok/s = {many / one:.2f}x   ({load()})")
    print(f"engine alone, median: {statistics.median(ratios):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--client", choices=("threads", "async"), default="threads")
    parser.add_argument("--engine", action="store_true", help="also measure the engine alone in this process")
    parser.add_argument("--tiny", action="store_true", help="serve the tiny random model (the HTTP side's own ceiling)")
    args = parser.parse_args()
    if args.tiny:
        MODEL["id"] = TINY_MODEL_ID
    burst = burst_threads if args.client == "threads" else burst_async
    server, url = start_bench_server(args.tiny)
    me, proc = psutil.Process(), psutil.Process(server.pid)
    ratios, server_us, client_s = [], [], []
    try:
        stream_once(url, -1, 4)  # loads the model
        burst(url, args.streams, 4)  # warms the batch
        for _ in range(args.repeats):
            status, count, seconds = stream_once(url, 0, args.tokens)
            if status != 200 or not count:
                raise SystemExit(f"the server answered {status} with {count} tokens")
            single = count / seconds
            before, client_before, start = thread_cpu(proc), me.cpu_times(), time.perf_counter()
            results = burst(url, args.streams, args.tokens)
            wall = time.perf_counter() - start
            after, client_after = thread_cpu(proc), me.cpu_times()
            spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
            engine_cpu = max(spent.values())
            http_cpu = sum(spent.values()) - engine_cpu
            client_cpu = (client_after.user - client_before.user) + (client_after.system - client_before.system)
            statuses = [r[0] for r in results]
            total = sum(r[1] for r in results)
            ratios.append(total / wall / single)
            server_us.append(http_cpu / max(total, 1) * 1e6)
            client_s.append(client_cpu)
            print(
                f"one {single:.1f} tok/s; {args.streams} streams {total / wall:.1f} tok/s = {ratios[-1]:.2f}x; "
                f"{statuses.count(200)}x200 {statuses.count(429)}x429; burst {wall:.2f} s: server CPU engine thread "
                f"{engine_cpu:.2f} s + HTTP side {http_cpu:.2f} s ({server_us[-1]:.0f} us/token; "
                f"all threads {(engine_cpu + http_cpu) / max(total, 1) * 1e6:.0f} us/token), "
                f"client ({args.client}) {client_cpu:.2f} s   ({load()})"
            )
        print(
            f"median: {statistics.median(ratios):.2f}x one stream; HTTP side {statistics.median(server_us):.0f} us/token; "
            f"client CPU {statistics.median(client_s):.2f} s per burst"
        )
    finally:
        server.terminate()
        server.wait(30)
    if args.engine:
        engine_alone(args.streams, args.tokens, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
