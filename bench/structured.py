"""Decode speed with and without a JSON-schema constraint, same model, same prompt, same run.

    .venv/bin/python bench/structured.py [--model MODEL_ID] [--tokens 120] [--rounds 5]

Runs greedy generation unconstrained and constrained (alternating, ``--rounds`` times each) and
prints the median decode tok/s of each and the overhead in percent. Because the machine may be
shared, it also replays the constrained output's tokens through a fresh constraint and times the
grammar work alone (mask + advance per token), as a share of one decode step: the direct figure.
Target: overhead under 5% per token.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import nb_completion  # noqa: E402
from nb_completion.engine import registry  # noqa: E402
from nb_completion.engine.constraints import compile_constraint  # noqa: E402
from nb_completion.engine.records import Delta, Finished  # noqa: E402
from nb_completion.service import build_request, open_events  # noqa: E402

PROMPT = "Here is a JSON object that lists one hundred different animals:\n"


def schema(n_items: int) -> dict:
    # minItems keeps the constrained output from ending before the unconstrained one would.
    return {
        "type": "object",
        "properties": {"animals": {"type": "array", "items": {"type": "string", "maxLength": 16}, "minItems": n_items}},
        "required": ["animals"],
        "additionalProperties": False,
    }


def run(model_id: str, tokens: int, response_format=None) -> tuple[float, list[int], int]:
    request = build_request(
        PROMPT, model_id=model_id, sampling_params={"max_tokens": tokens}, response_format=response_format
    )
    ids: list[int] = []
    forced = 0
    finished = None
    for event in open_events(request):
        if isinstance(event, Delta):
            ids.extend(t.token_id for t in event.tokens)
            forced += sum(t.forced for t in event.tokens)
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None and finished.tokens_per_second, "no decode rate measured"
    return finished.tokens_per_second, ids, forced


def grammar_cost(backend, fmt: dict, ids: list[int], repeats: int = 3) -> float:
    """Seconds per token of mask + advance, replaying ``ids`` through fresh constraints."""
    logits = torch.randn(backend.vocab_size)
    best = float("inf")
    for _ in range(repeats):
        c = compile_constraint(build_request("x", model_id=backend.info.identifier, response_format=fmt).response_format,
                               backend.tokenizer, backend.vocab_size)
        started = time.perf_counter()
        for tid in ids:
            work = logits.clone()
            c.mask(work)
            c.advance(tid)
        best = min(best, (time.perf_counter() - started) / max(len(ids), 1))
    # the clone is the engine's too (it masks a copy); subtract nothing
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id (default: the default model)")
    parser.add_argument("--tokens", type=int, default=120, help="max_tokens per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each kind (alternating)")
    args = parser.parse_args()

    model_id = args.model or registry.DEFAULT_MODEL_ID
    t0 = time.perf_counter()
    nb_completion.load_model(model_id)
    print(f"model {model_id} loaded in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}")
    fmt = {"type": "json_schema", "json_schema": schema(args.tokens)}
    run(model_id, 8)  # warm-up
    run(model_id, 8, fmt)

    free, constrained = [], []
    ids: list[int] = []
    forced = 0
    for _ in range(args.rounds):
        rate, _, _ = run(model_id, args.tokens)
        free.append(rate)
        rate, ids, forced = run(model_id, args.tokens, fmt)
        constrained.append(rate)
    f, c = statistics.median(free), statistics.median(constrained)
    overhead = (f / c - 1) * 100

    backend = registry.get(model_id)
    per_token = grammar_cost(backend, fmt, ids)
    step = 1 / f
    print(f"prompt: {PROMPT!r}; {args.tokens} tokens x {args.rounds} rounds, greedy")
    print(f"unconstrained   : {f:8.1f} tok/s  (runs: {', '.join(f'{r:.1f}' for r in free)})")
    print(f"json_schema     : {c:8.1f} tok/s  (runs: {', '.join(f'{r:.1f}' for r in constrained)})")
    print(f"end-to-end overhead: {overhead:+.1f}%  (target < 5%)")
    print(
        f"grammar work alone : {per_token * 1e6:.0f} us/token = {per_token / step * 100:.2f}% of a "
        f"{step * 1e3:.1f} ms decode step; {forced}/{len(ids)} tokens forced"
    )
    print(f"sample constrained output: {backend.tokenizer.decode(ids)[:160]!r}")


if __name__ == "__main__":
    main()
