"""The one argument parser of ``nb-completion serve`` and ``python -m nb_completion.server``.

``add_serve_arguments(parser)`` adds the options to any parser (a subcommand's or a program's);
``run_serve(args)`` serves until Ctrl-C. To add an option, add it to ``add_serve_arguments`` and
read it in ``serve_kwargs`` (or in ``run_serve`` when it changes what is served). Every argument
error is one line (``OneLineParser``), and so is every start-up failure.

The API key never goes on the command line, where ``ps`` shows it to every user of the machine:
it comes from ``$NB_COMPLETION_API_KEY`` or from ``--api-key-file``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Any, NoReturn

from ..api.errors import CompletionError
from ..engine.config import configure
from .remote_option import add_remote_arguments
from .defaults import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_TOKENS_CAP

API_KEY_ENV = "NB_COMPLETION_API_KEY"
DTYPES = ["auto", "gguf", "float32", "bfloat16", "float16", "int8"]


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (``prog: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low} ({what}), got {value}")
        return value

    return parse


def _port(text: str) -> int:
    value = _int_at_least(0, "0 picks a free port")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got '{text}'") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got '{text}'")
    return value


def _refuse_key_on_command_line(_: str) -> str:
    raise argparse.ArgumentTypeError(
        f"a key on the command line is visible to every user in ps; set {API_KEY_ENV} or use --api-key-file FILE"
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    add("--port", type=_port, default=8321, help="port (default 8321; 0 picks a free one)")
    add(
        "--model",
        action="append",
        dest="models",
        metavar="ID",
        help="a model to serve, loaded at start (repeatable; default: the default model, loaded on first use)",
    )
    add("--tiny", action="store_true", help="also serve the tiny random in-process model 'tiny-llama' (for trying things out)")
    add("--dtype", default="auto", choices=DTYPES, help="dtype for the models loaded at start")
    add("--device", default="auto", help="device for the models loaded at start")
    add(
        "--compile",
        action="store_true",
        help="compile the decode pass on a thread of its own and switch to it when idle "
        "(~1.5x faster on a CPU; NB_COMPLETION_COMPILE=1)",
    )
    add(
        "--api-key-file",
        metavar="FILE",
        default=None,
        help=f"require 'Authorization: Bearer KEY' with KEY read from FILE (default: ${API_KEY_ENV}, else no key)",
    )
    add("--api-key", type=_refuse_key_on_command_line, default=None, help=argparse.SUPPRESS)
    add(
        "--queue-size",
        type=_int_at_least(0, "requests waiting behind the running one"),
        default=8,
        help="requests that may wait behind the running one before 429 (default 8)",
    )
    add(
        "--max-tokens-cap",
        type=_int_at_least(1, "tokens"),
        default=DEFAULT_MAX_TOKENS_CAP,
        help=f"the most tokens one request may generate; max_tokens 0 means up to it (default {DEFAULT_MAX_TOKENS_CAP})",
    )
    add(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        default=[],
        metavar="NAME",
        help="a Host name to answer besides localhost, loopback addresses and --host (repeatable; "
        "'.example.com' matches subdomains; '*' any)",
    )
    add(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        default=[],
        metavar="ORIGIN",
        help="a web origin (https://app.example.com) allowed to call the server from a browser (repeatable; default none)",
    )
    add(
        "--max-connections",
        type=_int_at_least(1, "connections"),
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"open connections before the longest-idle one is closed (default {DEFAULT_MAX_CONNECTIONS}, "
        "kept under the open-file limit)",
    )
    add(
        "--header-timeout",
        type=_positive_seconds,
        default=DEFAULT_HEADER_TIMEOUT,
        help=f"seconds a connection has to send a request's headers (default {DEFAULT_HEADER_TIMEOUT:g})",
    )
    add("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    add_remote_arguments(parser)  # --remote URL: front a vLLM / llama.cpp / llama-stack engine
    return parser


def build_parser(prog: str = "nb-completion serve") -> OneLineParser:
    return add_serve_arguments(OneLineParser(prog=prog, description="Serve the llama-stack completion API over HTTP."))  # type: ignore[return-value]


def api_key(args: argparse.Namespace) -> str | None:
    """The key from ``--api-key-file``, else ``$NB_COMPLETION_API_KEY``, else ``None``."""
    if args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                key = f.read().strip()
        except OSError as exc:
            raise ValueError(f"--api-key-file: cannot read {args.api_key_file}: {exc.strerror or exc}") from None
        if not key:
            raise ValueError(f"--api-key-file: {args.api_key_file} is empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def serve_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``serve()``'s keyword arguments from parsed options (models aside)."""
    return {
        "host": args.host,
        "port": args.port,
        "api_key": api_key(args),
        "queue_size": args.queue_size,
        "log_level": args.log_level,
        "max_tokens_cap": args.max_tokens_cap,
        "allowed_hosts": args.allowed_hosts,
        "cors_origins": args.cors_origins,
        "max_connections": args.max_connections,
        "header_timeout": args.header_timeout,
    }


def _served_models(args: argparse.Namespace) -> list[str] | None:
    from ..engine import registry
    from ..load import ensure_loaded
    from .remote_option import register_remotes

    models = list(args.models) if args.models else None
    for model_id in models or ([registry.DEFAULT_MODEL_ID] if args.dtype != "auto" or args.device != "auto" else []):
        ensure_loaded(model_id, dtype=args.dtype, device=args.device)
    if args.remote:  # the remote's models are served, plus the --model ones if given
        models = (models or []) + register_remotes(args)
    if args.tiny:
        from ..engine.tiny import register_tiny_model

        tiny = register_tiny_model().info.identifier
        if models is not None:  # without --model every registered model is served, tiny included
            models.append(tiny)
    return models


def _log_to_stderr(level: str) -> None:
    """The server's own log (5xx tracebacks, warnings) on stderr, once per process."""
    logger = logging.getLogger("nb_completion")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


def run_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; start-up failures are one line on stderr (status 1 or 2)."""
    from .connections import raise_open_file_limit
    from .handle import serve

    if args.compile:  # read when each model's backend is made (engine/local.py)
        configure(compile=True)
    _log_to_stderr(args.log_level)
    raise_open_file_limit()
    try:
        kwargs = serve_kwargs(args)
        handle = serve(models=_served_models(args), **kwargs)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (ValueError, CompletionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"nb-completion: serving on {handle.url}  (POST /v1/inference/completion, POST /v1/completions, "
        f"GET /v1/models, GET /v1/health, GET /openapi.json); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    handle.wait()
    return 0
