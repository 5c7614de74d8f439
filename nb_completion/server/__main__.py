"""``python -m nb_completion.server`` (and ``nb-completion serve``): serve until Ctrl-C.

    python -m nb_completion.server [--host 127.0.0.1] [--port 8321] [--model ID ...]
                                   [--api-key KEY] [--queue-size N] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys

from .remote_option import add_remote_arguments


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8321, help="port (default 8321; 0 picks a free one)")
    parser.add_argument("--model", action="append", dest="models", metavar="ID",
                        help="a model to serve, loaded at start (repeatable; default: the default model, loaded on first use)")
    parser.add_argument("--api-key", default=os.environ.get("NB_COMPLETION_API_KEY"),
                        help="require 'Authorization: Bearer KEY' (default: $NB_COMPLETION_API_KEY, else no key)")
    parser.add_argument("--queue-size", type=int, default=8, help="requests that may wait behind the running one (default 8)")
    parser.add_argument("--tiny", action="store_true", help="also serve the tiny random in-process model 'tiny-llama' (for trying things out)")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    add_remote_arguments(parser)  # --remote URL (issue 11)
    return parser


def run(args: argparse.Namespace) -> int:
    from . import serve

    models = list(args.models) if args.models else None
    if args.tiny:
        from ..engine.tiny import register_tiny_model

        tiny = register_tiny_model().info.identifier
        if models is not None:  # without --model every registered model is served, tiny included
            models.append(tiny)
    if args.queue_size < 0:
        print("error: --queue-size must be >= 0", file=sys.stderr)
        return 2
    if args.remote:  # --remote URL (issue 11): serve the remote's models, plus --model ones if given
        from ..api.errors import CompletionError
        from .remote_option import register_remotes

        try:
            models = (models or []) + register_remotes(args)
        except CompletionError as exc:
            print(f"error: --remote: {exc.error.status} {exc.error.title}: {exc.error.detail}", file=sys.stderr)
            return 1
    try:
        handle = serve(port=args.port, host=args.host, models=models, api_key=args.api_key,
                       queue_size=args.queue_size, log_level=args.log_level)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"nb-completion: serving on {handle.url}  (POST /v1/inference/completion, POST /v1/completions, "
          f"GET /v1/models, GET /v1/health, GET /openapi.json); Ctrl-C stops", flush=True)
    handle.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="nb-completion serve", description="Serve the llama-stack completion API over HTTP."))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
