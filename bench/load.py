"""Model load to first token, once the default model is cached (a fresh process each time).

python bench/load.py [--dtype auto] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = r"""
import time
t0 = time.perf_counter()
import nb_completion as nb
import torch, transformers  # what any torch notebook has imported already
from transformers import AutoModelForCausalLM, AutoTokenizer
t_import = time.perf_counter()
nb.load_model(dtype={dtype!r})
t_load = time.perf_counter()
for chunk in nb.complete("The capital of France is", stream=True, sampling_params={{"max_tokens": 1}}):
    break
t_first = time.perf_counter()
print(f"{{t_import - t0:.3f}} {{t_load - t_import:.3f}} {{t_first - t_load:.3f}} {{t_first - t0:.3f}}")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-c", CHILD.format(dtype=args.dtype)], check=True, capture_output=True)  # warm cache
    rows = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", CHILD.format(dtype=args.dtype)], check=True, capture_output=True, text=True)
        rows.append([float(x) for x in out.stdout.split()])
    med = [statistics.median(col) for col in zip(*rows)]
    print(
        f"dtype {args.dtype}: import torch+transformers {med[0]:.2f} s, load_model {med[1]:.2f} s, first token {med[2]:.2f} s, "
        f"process start to first token {med[3]:.2f} s (median of {args.repeats}); load_model to first token {med[1] + med[2]:.2f} s (target <= 3 s)"
    )


if __name__ == "__main__":
    main()
