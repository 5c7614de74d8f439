"""Decode speed with and without a JSON-schema constraint, same model, same prompt, same run.

    .venv/bin/python bench/structured.py [--model MODEL_ID] [--tokens 120] [--rounds 5]

Runs greedy generation unconstrained and under two JSON schemas (alternating, ``--rounds`` times
each) and prints the median decode tok/s of each and the overhead in percent. Because the machine may be
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
from nb_completion.engine import constraints  # noqa: E402
from nb_completion.engine.constraints import compile_constraint  # noqa: E402
from nb_completion.engine.records import Delta, Finished  # noqa: E402
from nb_completion.service import build_request, open_events  # noqa: E402

PROMPT = "Here is a JSON object that lists one hundred different animals:\n"


def schema(n_items: int, max_length: int | None) -> dict:
    # minItems keeps the constrained output from ending before the unconstrained one would.
    item = {"type": "string"} if max_length is None else {"type": "string", "maxLength": max_length}
    return {
        "type": "object",
        "properties": {"animals": {"type": "array", "items": item, "minItems": n_items}},
        "required": ["animals"],
        "additionalProperties": False,
    }


# llguidance precomputes masks ("slices") for unbounded strings and maxLength 10 / 30; another
# bound (here 16) makes it walk the vocabulary inside strings: its slow path, measured too.
SCHEMAS = {"json_schema (strings)": None, "json_schema (maxLength 16)": 16}


BUILT: list = []  # every Constraint the engine compiles, to read its own timing (.seconds/.steps)


def _recording(response_format, tokenizer, vocab_size):
    constraint = compile_constraint(response_format, tokenizer, vocab_size)
    BUILT.append(constraint)
    return constraint


constraints.compile_constraint = _recording  # the engine imports it from the module at request time


def run(model_id: str, tokens: int, response_format=None) -> tuple[float, list[int], int]:
    request = build_request(PROMPT, model_id=model_id, sampling_params={"max_tokens": tokens}, response_format=response_format)
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


def grammar_cost(backend, fmt: dict, ids: list[int], repeats: int = 3) -> tuple[float, float, float]:
    """Seconds per token of (copying the logits, mask, advance), replaying ``ids`` through fresh
    constraints; the best of ``repeats``. The copy is the engine's too: it masks a copy so that
    logprobs stay those of the raw distribution."""
    logits = torch.randn(backend.vocab_size)
    request_format = build_request("x", model_id=backend.info.identifier, response_format=fmt).response_format
    best = (float("inf"),) * 3
    for _ in range(repeats):
        c = compile_constraint(request_format, backend.tokenizer, backend.vocab_size)
        spent = [0.0, 0.0, 0.0]
        for tid in ids:
            t0 = time.perf_counter()
            work = logits.clone()
            t1 = time.perf_counter()
            c.mask(work)
            t2 = time.perf_counter()
            c.advance(tid)
            t3 = time.perf_counter()
            spent[0] += t1 - t0
            spent[1] += t2 - t1
            spent[2] += t3 - t2
        per = tuple(x / max(len(ids), 1) for x in spent)
        if sum(per) < sum(best):
            best = per
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
    formats = {name: {"type": "json_schema", "json_schema": schema(args.tokens, n)} for name, n in SCHEMAS.items()}
    run(model_id, 8)  # warm-up
    for fmt in formats.values():
        run(model_id, 8, fmt)

    free: list[float] = []
    rates: dict[str, list[float]] = {name: [] for name in formats}
    in_engine: dict[str, list[float]] = {name: [] for name in formats}  # grammar seconds per token
    outputs: dict[str, tuple[list[int], int]] = {}
    for _ in range(args.rounds):  # alternate, so drifting machine load hits every kind alike
        free.append(run(model_id, args.tokens)[0])
        for name, fmt in formats.items():
            rate, ids, forced = run(model_id, args.tokens, fmt)
            rates[name].append(rate)
            in_engine[name].append(BUILT[-1].seconds / max(BUILT[-1].steps, 1))
            outputs[name] = (ids, forced)

    backend = registry.get(model_id)
    f = statistics.median(free)
    step = 1 / f
    print(f"prompt: {PROMPT!r}; {args.tokens} tokens x {args.rounds} rounds, greedy, same run")
    print(f"{'unconstrained':28}: {f:6.1f} tok/s median, {max(free):6.1f} best  (runs: {', '.join(f'{r:.1f}' for r in free)})")
    for name, fmt in formats.items():
        c = statistics.median(rates[name])
        ids, forced = outputs[name]
        copy, mask, advance = grammar_cost(backend, fmt, ids)
        per_token = copy + mask + advance
        engine_cost = statistics.median(in_engine[name])
        best = max(rates[name])
        print(f"{name:28}: {c:6.1f} tok/s median, {best:6.1f} best  (runs: {', '.join(f'{r:.1f}' for r in rates[name])})")
        print(
            f"{'':28}  end-to-end overhead {(f / c - 1) * 100:+.1f}% median, {(max(free) / best - 1) * 100:+.1f}% best "
            f"(target < 5%)"
        )
        print(
            f"{'':28}  grammar time inside the engine (mask + advance): {engine_cost * 1e6:.0f} us/token = "
            f"{engine_cost / step * 100:.2f}% of a {step * 1e3:.1f} ms step; {forced}/{len(ids)} tokens forced"
        )
        print(
            f"{'':28}  replayed alone, warm caches: copy {copy * 1e6:.0f} + mask {mask * 1e6:.0f} + advance "
            f"{advance * 1e6:.0f} us = {per_token / step * 100:.2f}%"
        )
    ids, _ = outputs[next(iter(formats))]
    print(f"sample constrained output: {backend.tokenizer.decode(ids)[:120]!r}")


if __name__ == "__main__":
    main()
