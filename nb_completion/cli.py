"""``nb-completion``: complete text, list models, preload the default model, serve HTTP.

nb-completion complete "The capital of France is" --max-tokens 8 --logprobs 3
nb-completion models
nb-completion load            # convert and cache the default model once
nb-completion serve --port 8321
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, Sequence

from .api.errors import CompletionError


def _add_complete(sub: Any) -> None:
    p = sub.add_parser(
        "complete", help="complete TEXT (streams to the terminal)", description="Complete TEXT with a local model."
    )
    p.add_argument("text", help="the prompt ('-' reads standard input)")
    p.add_argument(
        "--model", "--model-id", dest="model", default=None, help="model id, local folder, .gguf path or cached hub id"
    )
    p.add_argument(
        "--strategy",
        choices=["greedy", "top_p", "top_k"],
        default=None,
        help="sampling strategy (default: inferred, else greedy)",
    )
    p.add_argument("-t", "--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("-n", "--max-tokens", type=int, default=None, help="0: until the end token or the context is full")
    p.add_argument("--repetition-penalty", type=float, default=None, help="multiplicative; 1.0 is off")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable, at most 4)")
    p.add_argument("--logprobs", type=int, default=None, metavar="K", help="show each token with its top-K alternatives")
    p.add_argument("--json-schema", default=None, help="constrain output to a JSON Schema (a file or inline JSON)")
    p.add_argument("--grammar", default=None, help="constrain output to a grammar file (.gbnf, .lark or .regex)")
    p.add_argument("--grammar-syntax", choices=["gbnf", "lark", "regex"], default=None)
    p.add_argument("--seed", type=int, default=None, help="seed for sampling strategies")
    p.add_argument(
        "--chat",
        action="store_true",
        help="wrap TEXT in the model's chat template as one user turn (the templated prompt goes to stderr)",
    )
    p.add_argument("--json", action="store_true", help="print the raw CompletionResponse JSON")
    p.add_argument("--no-stream", action="store_true", help="print the text once it is complete")
    p.add_argument("--dtype", default="auto", choices=["auto", "gguf", "float32", "bfloat16", "float16", "int8"])
    p.add_argument("--device", default="auto")


def _request(args: argparse.Namespace):
    from .api.shorthand import request_parts
    from .cli_formats import response_format_from_flags
    from .service import build_request

    text = sys.stdin.read() if args.text == "-" else args.text
    parts = request_parts(
        strategy=args.strategy, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_tokens=args.max_tokens, repetition_penalty=args.repetition_penalty, stop=args.stop,
        response_format=response_format_from_flags(args.json_schema, args.grammar, args.grammar_syntax),
        logprobs=args.logprobs,
    )  # fmt: skip
    return build_request(text, model_id=args.model, **parts)


def _ensure_model(args: argparse.Namespace) -> None:
    from .load import ensure_loaded

    ensure_loaded(args.model, dtype=args.dtype, device=args.device)


def _dim(text: str, stream: Any) -> str:
    return f"\x1b[2m{text}\x1b[0m" if getattr(stream, "isatty", lambda: False)() else text


def _token_line(record: Any, k: int) -> str:
    prob = math.exp(record.logprob)
    alts = "  ".join(f"{text!r} {math.exp(lp):.1%}" for text, lp in record.top[:k])
    forced = " forced" if record.forced else ""
    return f"  {record.text!r:<18} p={prob:6.1%} rank {record.rank:<3}{forced} | {alts}"


def cmd_complete(args: argparse.Namespace) -> int:
    from .engine.fold import INCOMPLETE_NOTE, Folded, fold, incomplete, summary
    from .engine.records import Delta
    from .service import apply_chat, open_events, to_response

    request = _request(args)
    _ensure_model(args)
    out, err = sys.stdout, sys.stderr
    if args.chat:
        request = apply_chat(request)
        print(_dim(request.content, err), file=err, flush=True)
    constrained = request.response_format is not None
    top_k = None if args.logprobs is None else args.logprobs
    events = open_events(request, seed=args.seed)
    if args.json or args.no_stream:
        run = fold(events)
        response = to_response(run, top_k)
        print(response.model_dump_json(indent=2, exclude_none=True) if args.json else response.content)
        if incomplete(run.finished, constrained):
            print(f"[{INCOMPLETE_NOTE}]", file=err)
        return 0
    run = Folded()
    for event in events:
        run.add(event)
        if isinstance(event, Delta):
            if top_k is not None:
                for record in event.tokens:
                    print(_token_line(record, max(top_k, 1)), file=out, flush=True)
            else:
                out.write(event.text)
                out.flush()
    if top_k is not None:
        print("\n" + run.text, file=out)
    else:
        out.write("\n")
    if run.finished is not None:
        note = f" · {INCOMPLETE_NOTE}" if incomplete(run.finished, constrained) else ""
        print(f"[{summary(run.finished)}{note}]", file=err)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .engine.registry import list_models

    for info in list_models():
        state = "loaded" if info.loaded else "loads on first use"
        print(f"{info.identifier}\t{state}\t{info.provider_resource_id or ''}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    if args.if_needed:
        from .engine.loading import conversion_cached

        folder = conversion_cached(args.model)
        if folder is not None:
            print(f"{args.model or 'the default model'}: converted and cached in {folder}; nothing to do")
            return 0
    from .load import load_model

    start = time.perf_counter()
    backend = load_model(args.model, dtype=args.dtype, device=args.device)
    meta = backend.info.metadata
    what = meta.get("weights") or meta.get("dtype")
    print(f"{backend.info.identifier}: ready ({what}, {meta.get('device')}) in {time.perf_counter() - start:.1f} s")
    return 0


def _add_serve(sub: Any) -> None:
    from .server.options import add_serve_arguments

    add_serve_arguments(
        sub.add_parser(
            "serve",
            help="serve the llama-stack completion route over HTTP",
            description="Serve the llama-stack completion API over HTTP.",
        )
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.options import run_serve

    return run_serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nb-completion", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from .server.options import OneLineParser

    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_complete(sub)
    sub.add_parser("models", help="list the registered models")
    load = sub.add_parser("load", help="load (and on first use convert and cache) a model")
    load.add_argument("model", nargs="?", default=None)
    load.add_argument(
        "--if-needed", action="store_true", help="only when a GGUF's conversion is not cached yet (checks without loading)"
    )
    load.add_argument("--dtype", default="auto", choices=["auto", "gguf", "float32", "bfloat16", "float16", "int8"])
    load.add_argument("--device", default="auto")
    _add_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"complete": cmd_complete, "models": cmd_models, "load": cmd_load, "serve": cmd_serve}[args.command]
    try:
        return handler(args)
    except CompletionError as exc:
        body = exc.error
        print(f"error {body.status} {body.title}: {body.detail}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps(body.model_dump(exclude_none=True)))
        return 2
    except KeyboardInterrupt:
        print("\n[stopped]", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
