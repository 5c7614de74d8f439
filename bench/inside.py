"""What the inside views cost, against one forward pass of the same text (the issue's budget:
"about one forward pass"), on the default model, in one run on this machine:

- the model's own forward over the text (the baseline);
- ``logit_lens`` over the whole text (each layer keeps its residual stream and reads a position
  when asked), the same with every position of every layer read, and at its last token only
  (the widget's case, with its grid: top 5 and the answer's track at every layer);
- ``attention`` (transformers' eager attention, every layer and head);
- ``futures`` n=5 x 16 tokens (forks of one prefill, stepped together) against n=1.

Medians of ``--repeats``. Generation itself does no extra work for any of them (the views run on
demand); the model lock each engine step takes is uncontended.

    python bench/inside.py [--repeats 5] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import nb_completion as nb
from nb_completion.inside.attention import attention_of_ids
from nb_completion.inside.lens import lens_of_ids

TEXT = (
    "The lighthouse keeper climbed the stairs at dusk, as he had every evening for thirty years, and lit the lamp. "
    "Out on the water a small boat was drifting toward the rocks, its sail torn and its lantern dark. He watched it "
    "for a long time before he understood that nobody was steering it, and that the tide would carry it onto"
)


def timed(fn, repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64, help="tokens of the text the views read")
    args = parser.parse_args()
    backend = nb.load_model()
    ids = backend.encode(TEXT)[: args.tokens]
    print(f"model {backend.info.identifier} ({backend.info.metadata.get('weights', backend.info.metadata.get('dtype'))}), "
          f"{len(ids)} tokens, {torch.get_num_threads()} threads")  # fmt: skip

    def forward() -> None:
        with torch.inference_mode():
            backend.model(input_ids=torch.tensor([ids]), use_cache=False)

    rows = [("forward pass (baseline)", timed(forward, args.repeats))]
    rows.append(("logit lens, whole text (lazy rows)", timed(lambda: lens_of_ids(backend, ids), args.repeats)))
    rows.append(
        (
            "  + every position of every layer read",
            timed(lambda: [layer.logprobs for layer in lens_of_ids(backend, ids).layers], args.repeats),
        )
    )
    last = len(ids) - 1
    rows.append(
        (
            "logit lens, last position + grid (widget)",
            timed(lambda: lens_of_ids(backend, ids, last_only=True).grid(last), args.repeats),
        )
    )
    rows.append(("attention, every layer and head", timed(lambda: attention_of_ids(backend, ids), args.repeats)))
    base = rows[0][1]
    for name, seconds in rows:
        print(f"{name:42s} {1000 * seconds:8.1f} ms  {seconds / base:5.2f}x the forward pass")
    prompt = backend.tokenizer.decode(ids)
    one = timed(lambda: nb.futures(prompt, n=1, max_tokens=16, seed=0), args.repeats)
    five = timed(lambda: nb.futures(prompt, n=5, max_tokens=16, seed=0), args.repeats)
    print(f"{'futures n=1 x 16 tokens':42s} {1000 * one:8.1f} ms")
    print(f"{'futures n=5 x 16 tokens':42s} {1000 * five:8.1f} ms  {five / one:5.2f}x n=1")


if __name__ == "__main__":
    main()
