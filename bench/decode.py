"""Decode speed: our engine (streaming, top-5 logprobs) vs Hugging Face ``generate()``.

One run, same machine, same threads: HF ``generate`` in float32 (the baseline) and in each dtype
we measure, our engine in the same dtypes; prompts of ~20 and ~500 tokens, 128 new tokens, the
median of ``--repeats`` runs. Prints decode tok/s, time to first token, RSS and the ratios.

    python bench/decode.py [--repeats 3] [--new-tokens 128] [--dtypes gguf,float32,bfloat16,int8] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psutil
import torch
from transformers.generation.streamers import BaseStreamer

from nb_completion import load_model
from nb_completion.service import build_request

SHORT = "Write a short story about a lighthouse keeper who finds a message in a bottle. It begins:"
LONG_SEED = (
    "The history of the lighthouse begins in antiquity, when fires were lit on hilltops to guide ships. "
    "Over centuries these became towers of stone with lamps of oil, then of gas and electricity. "
)


class _Clock(BaseStreamer):
    """Records when ``generate`` emits each new token (the first ``put`` is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self.seen_prompt = False

    def put(self, value):
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def prompt_of(tokenizer, tokens: int) -> str:
    if tokens <= 40:
        return SHORT
    text = LONG_SEED
    while len(tokenizer(text)["input_ids"]) < tokens:
        text += LONG_SEED
    ids = tokenizer(text)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def run_hf(backend, prompt: str, new_tokens: int) -> tuple[float, float]:
    ids = torch.tensor([backend.encode(prompt)], device=backend.device)
    clock = _Clock()
    start = time.perf_counter()
    with torch.inference_mode():
        backend.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            streamer=clock,
            pad_token_id=backend.tokenizer.eos_token_id,
        )
    t = clock.times
    return t[0] - start, (len(t) - 1) / (t[-1] - t[0])


def run_ours(backend, prompt: str, new_tokens: int) -> tuple[float, float, int]:
    request = build_request(
        prompt, model_id=backend.info.identifier, sampling_params={"max_tokens": new_tokens}, logprobs=5, stream=True
    )
    finished = None
    for event in backend.open(request):
        finished = event
    return finished.time_to_first_token, finished.tokens_per_second, finished.completion_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", default="20,500")
    parser.add_argument("--dtypes", default="gguf,float32,bfloat16,int8")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both engines (default: the engine's policy)")
    args = parser.parse_args()
    if args.threads:
        os.environ["NB_COMPLETION_THREADS"] = str(args.threads)
    from nb_completion.engine.loading import cpu_threads

    print(
        f"torch {torch.__version__}, threads {cpu_threads()} (same for HF and ours), cpus {os.cpu_count()}, "
        f"cuda {torch.cuda.is_available() and torch.cuda.get_device_name(0)}"
    )
    rows = []
    baseline: dict[int, float] = {}
    for dtype in args.dtypes.split(","):
        t0 = time.perf_counter()
        backend = load_model(dtype=dtype, device=args.device, name=f"bench-{dtype}")
        load_s = time.perf_counter() - t0
        for n_prompt in [int(x) for x in args.prompt_tokens.split(",")]:
            prompt = prompt_of(backend.tokenizer, n_prompt)
            run_ours(backend, prompt, 4)  # warm-up
            hf = [run_hf(backend, prompt, args.new_tokens) for _ in range(args.repeats)]
            ours = [run_ours(backend, prompt, args.new_tokens) for _ in range(args.repeats)]
            hf_tps = statistics.median(r[1] for r in hf)
            if dtype == "float32":
                baseline[n_prompt] = hf_tps
            rows.append(
                dict(
                    dtype=dtype,
                    prompt=len(backend.encode(prompt)),
                    load_s=load_s,
                    hf_tps=hf_tps,
                    hf_ttft=statistics.median(r[0] for r in hf),
                    ours_tps=statistics.median(r[1] for r in ours),
                    ours_ttft=statistics.median(r[0] for r in ours),
                    ours_tokens=min(r[2] for r in ours),
                    rss=rss_mb(),
                )
            )
            r = rows[-1]
            print(
                f"{dtype:>9} prompt {r['prompt']:>4}: HF generate {r['hf_tps']:6.1f} tok/s (ttft {r['hf_ttft'] * 1000:5.0f} ms) | "
                f"ours {r['ours_tps']:6.1f} tok/s (ttft {r['ours_ttft'] * 1000:5.0f} ms, {r['ours_tokens']} tok) | "
                f"ours/HF same dtype {r['ours_tps'] / r['hf_tps']:.2f}x | ours/HF float32 {r['ours_tps'] / baseline.get(n_prompt, float('nan')):.2f}x | "
                f"RSS {r['rss']:.0f} MB | load {load_s:.1f} s",
                flush=True,
            )
    print("\nratio target: ours (dtype auto) >= 2x HF generate float32, logprobs on")


if __name__ == "__main__":
    sys.exit(main())
