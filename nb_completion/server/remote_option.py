"""``nb-completion serve --remote URL``: serve a remote engine's models behind this server's routes,
so one llama-stack ``/v1/inference/completion`` (and ``/v1/completions``) can sit before a vLLM or
llama.cpp server. Part of the one serve parser (``server/options.py``).
The remote's key, like the server's own, never goes on the command line (``ps`` shows it):
``$NB_COMPLETION_REMOTE_API_KEY``.

    nb-completion serve --remote http://gpu-box:8000                      # vLLM: dialect detected
    nb-completion serve --remote http://localhost:8080 --remote-api llama.cpp
"""

from __future__ import annotations

import argparse
import os

REMOTE_APIS = ("openai", "llama.cpp", "vllm", "llama-stack")


def _refuse_key(_: str) -> str:
    raise argparse.ArgumentTypeError("a key on the command line is visible to every user in ps; set NB_COMPLETION_REMOTE_API_KEY")


def add_remote_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("fronting a remote engine")
    group.add_argument(
        "--remote",
        action="append",
        default=None,
        metavar="URL",
        help="serve the models of the engine at URL (repeatable); without --model, only those",
    )
    group.add_argument(
        "--remote-model",
        action="append",
        default=None,
        metavar="ID",
        help="the remote's model to serve (repeatable; default: every model it lists)",
    )
    group.add_argument(
        "--remote-api",
        default="openai",
        choices=REMOTE_APIS,
        help="the remote's API: 'openai' (default; vLLM or llama.cpp detected), 'llama.cpp', 'vllm', 'llama-stack'",
    )
    group.add_argument("--remote-api-key", type=_refuse_key, default=None, help=argparse.SUPPRESS)
    group.add_argument(
        "--remote-timeout",
        type=float,
        default=300.0,
        help="seconds the remote may stay silent before a request fails with 502 (default 300)",
    )
    return parser


def _remote_key() -> str | None:
    return os.environ.get("NB_COMPLETION_REMOTE_API_KEY") or None


def register_remotes(args: argparse.Namespace) -> list[str]:
    """Register the ``--remote`` engines' models; the ids to serve. Raises ``CompletionError``
    (502 unreachable, 401, 404 unknown model) so the command fails at start, not per request."""
    from ..remote import register_remote, remote_models

    ids: list[str] = []
    for url in getattr(args, "remote", None) or []:
        wanted = args.remote_model or [m["identifier"] for m in remote_models(url, _remote_key())]
        for model_id in wanted:
            backend = register_remote(url, model_id, api=args.remote_api, api_key=_remote_key(), timeout=args.remote_timeout)
            ids.append(backend.info.identifier)
    return ids
