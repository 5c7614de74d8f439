"""``python -m nb_completion.server``: the same as ``nb-completion serve`` (one parser, in
``options.py``); serves until Ctrl-C. ``--help`` lists the options."""

from __future__ import annotations

import sys

from .options import build_parser, run_serve


def main(argv: list[str] | None = None) -> int:
    return run_serve(build_parser("python -m nb_completion.server").parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
