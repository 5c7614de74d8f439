"""HTTP soak: N sequential requests against a server process; its RSS at the start and the end.

Starts ``python -m nb_completion.server`` in a child process, warms it with one request, then
sends ``--requests`` requests one after another, cycling through the llama-stack route (JSON and
SSE, with and without logprobs), the OpenAI route (JSON and SSE) and a malformed request (400),
and prints the server's RSS at the start, every 100 requests and at the end, with latencies.

    python bench/http_load.py [--requests 500] [--max-tokens 16] [--model ID | --tiny]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time

import httpx
import psutil

from serve_process import start_server  # bench/serve_process.py


def start_soak_server(model: str | None, tiny: bool) -> tuple[subprocess.Popen, str]:
    return start_server(["--queue-size", "2", *(["--tiny"] if tiny else ["--model", model] if model else [])])


def requests_cycle(model: str, max_tokens: int):
    llama = {"model_id": model, "content": "The capital of France is", "sampling_params": {"max_tokens": max_tokens}}
    openai = {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0.7, "seed": 3}
    return [
        ("llama-stack json", "/v1/inference/completion", llama, 200),
        ("llama-stack sse + logprobs", "/v1/inference/completion", {**llama, "stream": True, "logprobs": {"top_k": 5}}, 200),
        ("openai json + logprobs", "/v1/completions", {**openai, "logprobs": 3}, 200),
        ("openai sse", "/v1/completions", {**openai, "stream": True}, 200),
        ("malformed", "/v1/inference/completion", {**llama, "sampling_params": {"max_tokens": -1}}, 400),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--model", default=None, help="model id (default: the default model)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random model instead (fast)")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server child
    proc, url = start_soak_server(args.model, args.tiny)
    server = psutil.Process(proc.pid)
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            listed = [m["identifier"] for m in client.get("/v1/models").json()["data"]]
            model = "tiny-llama" if args.tiny else (args.model or listed[0])
            assert model in listed, listed
            cycle = requests_cycle(model, args.max_tokens)
            client.post(cycle[0][1], json=cycle[0][2]).raise_for_status()  # loads the model, warms caches
            rss_start = server.memory_info().rss
            print(f"model {model}; server pid {proc.pid}; RSS at start (after one warm-up request): {rss_start / 2**20:.1f} MiB")
            latencies: dict[str, list[float]] = {name: [] for name, *_ in cycle}
            start = time.perf_counter()
            for i in range(args.requests):
                name, path, body, expected = cycle[i % len(cycle)]
                t = time.perf_counter()
                response = client.post(path, json=body)
                text = response.text
                latencies[name].append(time.perf_counter() - t)
                if response.status_code != expected:
                    raise SystemExit(f"request {i} ({name}): {response.status_code} {text[:300]}")
                if body.get("stream"):
                    assert text.endswith("\n\n") and text.count("data: ") >= 2, text[-200:]
                else:
                    json.loads(text)
                if (i + 1) % 100 == 0:
                    print(
                        f"  after {i + 1:4d} requests: RSS {server.memory_info().rss / 2**20:.1f} MiB, "
                        f"{time.perf_counter() - start:.1f} s"
                    )
            rss_end = server.memory_info().rss
        total = time.perf_counter() - start
        print(
            f"RSS at start {rss_start / 2**20:.1f} MiB, at end {rss_end / 2**20:.1f} MiB "
            f"(change {(rss_end - rss_start) / 2**20:+.1f} MiB) after {args.requests} sequential requests in {total:.1f} s"
        )
        for name, values in latencies.items():
            if values:
                print(
                    f"  {name:28s} n={len(values):4d} median {statistics.median(values) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"
                )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
