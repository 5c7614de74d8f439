"""The engine's figures from one run: single stream vs HF generate vs llama.cpp, 16 concurrent HTTP
streams vs one, compare() of 4 settings vs one run, and the server's RSS.

    python bench/engine.py [--repeats 3] [--skip-http] [--skip-llama] [--compile]

Same machine, same thread count for every engine (the project's policy, ``NB_COMPLETION_THREADS``
or all cores but one); llama.cpp's ``llama-bench`` runs on the very GGUF the default model is
converted from (built once by ``bench/llama_cpp.py``). Runs are interleaved (ours, HF, llama.cpp,
ours, ...) so a noisy neighbour hits all of them alike; medians are printed, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode import run_hf  # noqa: E402  (bench/decode.py: HF generate with a token clock)
from llama_cpp import bench_tg  # noqa: E402

from nb_completion import compare, load_model  # noqa: E402
from eager_loop import DecodeConfig, Outcome, generate_steps  # noqa: E402
from nb_completion.engine.loading import cpu_threads, default_gguf_path  # noqa: E402
from nb_completion.engine.registry import DEFAULT_MODEL_ID  # noqa: E402
from nb_completion.service import build_request  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle. It begins:"
SETTINGS = [{"temperature": 0}, {"temperature": 0.7}, {"top_k": 20}, {"temperature": 1.0, "top_p": 0.9}]


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"


def ours(backend, new_tokens: int) -> float:
    request = build_request(
        PROMPT, model_id=backend.info.identifier, sampling_params={"max_tokens": new_tokens}, logprobs=5, stream=True
    )
    finished = None
    for event in backend.open(request):
        finished = event
    return finished.tokens_per_second


def reference_loop(backend, new_tokens: int) -> float:
    """The one-sequence reference loop (transformers' growing DynamicCache), top-5 logprobs."""
    ids = torch.tensor(backend.encode(PROMPT), device=backend.device)
    config = DecodeConfig(max_new_tokens=new_tokens, top_logprobs=5)
    times = [step.time for step in generate_steps(backend.model, ids, config, Outcome())]
    return (len(times) - 1) / (times[-1] - times[0])


def rungs(base, compile: bool) -> dict:
    """The CPU ladder, one backend per rung on the same model (the default dtype): the engine with the model's own
    forward (the reference), with the lean pass (the default), and with the lean decode compiled."""
    from nb_completion.engine.local import LocalBackend

    def variant(name: str, **options) -> LocalBackend:
        backend = LocalBackend(base.model, base.tokenizer, name, dtype=base.info.metadata["dtype"], device="cpu")
        backend.engine_options.update(options)
        return backend

    ladder = {"engine, model's forward": variant("bench-model-forward", lean=False), "engine, lean pass": base}
    if compile:
        compiled = variant("bench-compiled", compile=True)
        start = time.perf_counter()
        if not compiled.engine.compiled.wait(900):  # compiles on its own thread
            raise SystemExit("the decode pass did not compile in 15 minutes")
        print(f"compiled rung: decode pass compiled in {time.perf_counter() - start:.0f} s ({compiled.decode_pass()})")
        ladder["engine, lean + compiled"] = compiled
    return ladder


def single_stream(backend, repeats: int, skip_llama: bool, compile: bool) -> None:
    threads = cpu_threads()
    ladder = rungs(backend, compile)
    print(f"\n== single stream, 128 new tokens, top-5 logprobs, {threads} thread(s) ==")
    for rung in ladder.values():
        ours(rung, 8)
    results: dict[str, list[float]] = {name: [] for name in ladder}
    results.update({"reference loop": [], "HF generate": [], "llama-bench tg128": []})
    for _ in range(repeats):
        for name, rung in ladder.items():
            results[name].append(ours(rung, 128))
        results["reference loop"].append(reference_loop(backend, 128))
        results["HF generate"].append(run_hf(backend, PROMPT, 128)[1])
        if not skip_llama:
            results["llama-bench tg128"].append(bench_tg(default_gguf_path(), threads, 128, repetitions=1))
    median = {k: statistics.median(v) for k, v in results.items() if v}
    for name, value in median.items():
        runs = ", ".join(f"{x:.1f}" for x in results[name])
        print(f"{name:>26}: {value:7.1f} tok/s   (runs: {runs})")
    for name in ladder:
        line = f"{name} / HF generate: {median[name] / median['HF generate']:.2f}x"
        if "llama-bench tg128" in median:
            line += f",  / llama.cpp: {median[name] / median['llama-bench tg128']:.2f}x"
        print(line)
    print(f"({load()})")


def compare_vs_one(backend) -> None:
    print("\n== compare() of 4 settings vs one run, 64 tokens ==")
    from nb_completion import complete

    complete(PROMPT, model_id=backend.info.identifier, sampling_params={"max_tokens": 4})
    start = time.perf_counter()
    complete(PROMPT + " One", model_id=backend.info.identifier, sampling_params={"max_tokens": 64}, logprobs=5)
    one = time.perf_counter() - start
    start = time.perf_counter()
    compare(PROMPT + " Two", SETTINGS, model_id=backend.info.identifier, max_tokens=64, live=False)
    four = time.perf_counter() - start
    print(f"one run {one:.2f} s, compare() of 4 {four:.2f} s: {four / one:.2f}x   ({load()})")


def http(streams: int, tokens: int, compile: bool) -> None:
    """``nb-completion serve`` (the CLI, its own process): one stream, then ``streams`` at once from
    one asyncio client (``bench/http_streams.py``), on the eager engine or once its compiled decode
    pass is in use (``decode_pass`` in ``GET /v1/models``)."""
    from http_streams import burst_async, stream_once  # imports this module's PROMPT: not at the top
    from serve_process import start_server

    rung = "compiled decode" if compile else "eager decode"
    print(f"\n== `nb-completion serve` ({rung}): {streams} concurrent streams of {tokens} tokens vs one ==")
    server, url = start_server(env={"NB_COMPLETION_COMPILE": "1" if compile else "0"})
    try:
        deadline = time.monotonic() + 900
        stream_once(url, -1, 4)  # loads the model, starts the engine
        rss_loaded = psutil.Process(server.pid).memory_info().rss / 2**20
        if compile:
            started = time.monotonic()
            while decode_pass(url) != "lean, compiled" and time.monotonic() < deadline:
                time.sleep(1)
            print(f"compiled decode pass in use after {time.monotonic() - started:.0f} s ({decode_pass(url)})")
        status, count, seconds = stream_once(url, 0, tokens)
        if status != 200 or not count:
            raise SystemExit(f"the server answered {status} with {count} tokens")
        single = count / seconds
        start = time.perf_counter()
        results = burst_async(url, streams, tokens)
        wall = time.perf_counter() - start
        statuses = [r[0] for r in results]
        total = sum(r[1] for r in results)
        rss_after = psutil.Process(server.pid).memory_info().rss / 2**20
        print(f"one stream: {single:.1f} tok/s (request wall time, prompt included)")
        print(
            f"{streams} streams: {total / wall:.1f} tok/s aggregate = {total / wall / single:.2f}x one; "
            f"{statuses.count(200)} answered 200, {statuses.count(429)} answered 429   ({load()})"
        )
        print(f"server RSS: {rss_loaded:.0f} MB after loading, {rss_after:.0f} MB after the burst")
    finally:
        server.terminate()
        server.wait(30)


def decode_pass(url: str) -> str:
    models = httpx.get(url + "/v1/models", timeout=5).json()["data"]
    return next(m["metadata"].get("decode_pass", "") for m in models if m["identifier"] == DEFAULT_MODEL_ID)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also measure the compiled rung (minutes of compiling first)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {cpu_threads()}, {load()}")
    backend = load_model()
    single_stream(backend, args.repeats, args.skip_llama, args.compile)
    compare_vs_one(backend)
    if not args.skip_http:
        http(args.streams, 64, compile=False)
        if args.compile:
            http(args.streams, 64, compile=True)


if __name__ == "__main__":
    sys.exit(main())
