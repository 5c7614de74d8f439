"""``%%complete`` options: parsing, ``{name}`` interpolation, and the ``CompletionRequest`` they mean.

Everything the user typed becomes either a validated request (through ``service.build_request``,
like every other frontend) or a ``BadRequest`` whose detail names the option or field.
"""

from __future__ import annotations

import argparse
import re
import shlex
import string
from dataclasses import dataclass
from typing import Any, Mapping

from ..api.bounds import DEFAULT_MAX_TOKENS
from ..api.errors import BadRequest
from ..api.types import CompletionRequest
from ..api.shorthand import STRATEGIES, request_parts, response_format_from

__all__ = ["PARSER", "HelpRequested", "MagicOptions", "parse_line", "interpolate", "build_magic_request", "DEFAULT_MAX_TOKENS"]

_REF = re.compile(r"^\{([A-Za-z_][\w.\[\]'\"]*)\}$")  # an option value that is exactly {name}


class HelpRequested(Exception):
    """``--help`` was given; the message is the help text."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # never sys.exit inside a kernel
        raise BadRequest("options", f"{message} (see %%complete --help)")

    def exit(self, status: int = 0, message: str | None = None):
        raise HelpRequested(self.format_help())

    def print_help(self, file=None):
        raise HelpRequested(self.format_help())


def _make_parser() -> _Parser:
    p = _Parser(
        prog="%%complete",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Complete the cell's text with a language model, streaming the output into the cell.\n"
            "{name} in the cell is filled from the notebook's variables ({{ and }} for literal braces).\n"
            "The completion text is the cell's result (`_`); -o NAME keeps the whole response.\n"
            "Option values may also be {name}: --json-schema {MyModel}, -t {temperature}."
        ),
        epilog=(
            "examples:\n"
            "  %%complete -n 40 -t 0.8 --seed 1 --heatmap\n"
            "  %%complete --chat\n"
            "  %%complete --model ./my-model-folder  (or a .gguf path)\n"
            "  %%complete --json-schema {Person} -o reply\n"
            "  %%complete --grammar '[0-9]{4}' --grammar-syntax regex\n"
            "  %complete -n 10 The capital of France is\n"
            "  %%complete --score   (the cell's text scored: surprisal per token, perplexity)\n"
            "  %complete --models"
        ),
        add_help=True,
    )
    p.add_argument(
        "-m",
        "--model",
        metavar="ID",
        help="model id, local model folder, .gguf path or cached hub id (loaded on first use; default: the default model; see --models)",
    )
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="sampling strategy (inferred from the options below when absent; greedy without any)",
    )
    p.add_argument("-t", "--temperature", metavar="T", help="temperature (> 0) for top_p sampling; 0 means greedy")
    p.add_argument("--top-p", metavar="P", help="nucleus sampling: keep the most likely tokens up to mass P, in (0, 1]")
    p.add_argument("--top-k", metavar="K", help="sample among the K most likely tokens")
    p.add_argument(
        "-n", "--max-tokens", metavar="N", help=f"at most N new tokens (default {DEFAULT_MAX_TOKENS}; 0: until the model stops)"
    )
    p.add_argument("--repetition-penalty", metavar="R", help="multiplicative penalty (> 0; 1 is off, > 1 discourages repeats)")
    p.add_argument("--stop", action="append", metavar="TEXT", help=r"stop string, repeatable (up to 4; \n and \t are understood)")
    p.add_argument("--logprobs", metavar="K", help="return the K most likely alternatives per token (0..20) in the response (-o)")
    p.add_argument(
        "--json-schema",
        metavar="SCHEMA",
        help="constrain the output to JSON matching SCHEMA: inline JSON, or {var} holding a dict or pydantic model (it parses when the run ends by itself; one cut by --max-tokens is marked incomplete)",
    )
    p.add_argument("--grammar", metavar="GRAMMAR", help="constrain the output to a grammar: inline text or {var}")
    p.add_argument(
        "--grammar-syntax", choices=("gbnf", "lark", "regex"), default="gbnf", help="syntax of --grammar (default gbnf)"
    )
    p.add_argument(
        "--chat",
        action="store_true",
        help="wrap the cell in the model's chat template as one user turn (Instruct models answer instead of continuing the text); the templated prompt is shown above the answer",
    )
    p.add_argument("--seed", metavar="S", help="random seed, for reproducible sampling")
    p.add_argument("--no-stream", action="store_true", help="show the text only when it is complete")
    p.add_argument(
        "--heatmap",
        nargs="?",
        const="probability",
        choices=("probability", "entropy"),
        help="show the tokens coloured by probability (or entropy) under the text",
    )
    p.add_argument("-o", "--out", metavar="NAME", help="store the CompletionResponse in the variable NAME")
    p.add_argument("--models", action="store_true", help="list the registered models and exit")
    p.add_argument(
        "--score",
        action="store_true",
        help="score the cell's text instead of continuing it: each token coloured by its surprisal, its rank and the expected alternatives on hover, and the perplexity (-o stores the Scored result)",
    )
    p.add_argument("prompt", nargs="*", help=argparse.SUPPRESS)
    return p


PARSER = _make_parser()


@dataclass
class MagicOptions:
    model: str | None = None
    strategy: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    repetition_penalty: float | None = None
    stop: list[str] | None = None
    logprobs: int | None = None
    json_schema: Any = None
    grammar: str | None = None
    grammar_syntax: str = "gbnf"
    seed: int | None = None
    chat: bool = False
    stream: bool = True
    heatmap: str | None = None
    out: str | None = None
    models: bool = False
    score: bool = False
    prompt: str = ""


# ---- {name} interpolation --------------------------------------------------------------------


class _Unknown(Exception):
    def __init__(self, name: str):
        self.name = name


class _NamespaceFormatter(string.Formatter):
    def __init__(self, namespace: Mapping[str, Any]):
        self.namespace = namespace

    def get_value(self, key, args, kwargs):
        if isinstance(key, int):
            raise ValueError("'{}' needs a variable name inside the braces")
        if key in self.namespace:
            return self.namespace[key]
        raise _Unknown(key)


def _braces_hint() -> str:
    return "write {{ and }} for literal braces"


def lookup(expr: str, namespace: Mapping[str, Any], field: str) -> Any:
    """The value of ``name`` / ``name.attr`` / ``name[key]`` in the user's namespace."""
    try:
        value, _ = _NamespaceFormatter(namespace).get_field(expr, (), {})
        return value
    except _Unknown as exc:
        raise BadRequest(field, f"{{{exc.name}}}: no variable named {exc.name!r} in the notebook") from None
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise BadRequest(field, f"{{{expr}}}: {type(exc).__name__}: {exc}") from None


def interpolate(template: str, namespace: Mapping[str, Any], field: str = "content") -> str:
    """``template`` with ``{name}`` (also ``{name.attr}``, ``{name[0]}``, ``{x:.2f}``) filled in."""
    try:
        return _NamespaceFormatter(namespace).vformat(template, (), {})
    except _Unknown as exc:
        raise BadRequest(field, f"{{{exc.name}}}: no variable named {exc.name!r} in the notebook ({_braces_hint()})") from None
    except (ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
        raise BadRequest(field, f"cannot fill in the braces: {exc} ({_braces_hint()})") from None


# ---- the option line -------------------------------------------------------------------------


def _unescape(text: str) -> str:
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def _value(raw: str | None, namespace: Mapping[str, Any], option: str) -> Any:
    """``{name}`` becomes the variable's value; anything else stays the typed text."""
    if raw is None:
        return None
    match = _REF.match(raw.strip())
    return lookup(match.group(1), namespace, option) if match else raw


def _number(raw: str | None, namespace: Mapping[str, Any], option: str, kind: type) -> Any:
    value = _value(raw, namespace, option)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and kind is float):
        return value
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        number = kind(value) if not isinstance(value, str) else kind(value.strip())
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise BadRequest(option, f"expected {what}, got {value!r}") from None
    return number


def parse_line(line: str, namespace: Mapping[str, Any]) -> MagicOptions:
    """Parse the magic's option line (``HelpRequested`` for ``--help``; ``BadRequest`` otherwise)."""
    try:
        argv = shlex.split(line, posix=True)
    except ValueError as exc:
        raise BadRequest("options", f"{exc} (quote option values with ' or \")") from None
    ns = PARSER.parse_args(argv)
    opts = MagicOptions(
        model=_value(ns.model, namespace, "--model"),
        strategy=ns.strategy,
        temperature=_number(ns.temperature, namespace, "--temperature", float),
        top_p=_number(ns.top_p, namespace, "--top-p", float),
        top_k=_number(ns.top_k, namespace, "--top-k", int),
        repetition_penalty=_number(ns.repetition_penalty, namespace, "--repetition-penalty", float),
        logprobs=_number(ns.logprobs, namespace, "--logprobs", int),
        seed=_number(ns.seed, namespace, "--seed", int),
        chat=ns.chat,
        json_schema=_value(ns.json_schema, namespace, "--json-schema"),
        grammar=_value(ns.grammar, namespace, "--grammar"),
        grammar_syntax=ns.grammar_syntax,
        stream=not ns.no_stream,
        heatmap=ns.heatmap,
        out=ns.out,
        models=ns.models,
        score=ns.score,
        prompt=" ".join(ns.prompt),
    )
    max_tokens = _number(ns.max_tokens, namespace, "--max-tokens", int)
    if max_tokens is not None:
        opts.max_tokens = max_tokens
    if ns.stop:
        stops = []
        for raw in ns.stop:
            value = _value(raw, namespace, "--stop")
            if value is raw:
                stops.append(_unescape(raw))
            elif isinstance(value, str):
                stops.append(value)
            elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                stops.extend(value)
            else:
                raise BadRequest("--stop", f"expected text or a list of texts, got {type(value).__name__}")
        opts.stop = stops
    if opts.model is not None and not isinstance(opts.model, str):
        raise BadRequest("--model", f"expected a model id, got {type(opts.model).__name__}")
    if opts.out is not None and not opts.out.isidentifier():
        raise BadRequest("--out", f"{opts.out!r} is not a valid Python variable name")
    return opts


def build_magic_request(opts: MagicOptions, content: str) -> CompletionRequest:
    """The validated request these options mean (same path as ``complete()``)."""
    from ..service import build_request

    fmt = response_format_from(opts.json_schema, opts.grammar, opts.grammar_syntax, names=("--json-schema", "--grammar"))
    parts = request_parts(
        strategy=opts.strategy,
        temperature=opts.temperature,
        top_p=opts.top_p,
        top_k=opts.top_k,
        max_tokens=opts.max_tokens,
        repetition_penalty=opts.repetition_penalty,
        stop=opts.stop,
        response_format=fmt,
        logprobs=opts.logprobs,  # the engine records a few alternatives per token for the heatmap anyway
    )
    return build_request(content, model_id=opts.model, **parts)
