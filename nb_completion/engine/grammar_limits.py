"""Grammars and JSON Schemas measured before llguidance compiles them.

llguidance's compiler recurses natively along chains of rules: a Lark grammar whose rules chain
3,000 deep (``r0: r1 "x"`` ... ``r3000: "y"``), a GBNF chain of 5,000 or 5,000 chained ``$defs``
overflow an 8 MiB thread stack and kill the process (a segfault, not an exception). Its own
``ParserLimits`` bound the parser's work per step and the grammar's total size, not this depth,
and llama.cpp's GBNF converter shipped with llguidance is quadratic in the number of rules
(5,000 rules: 8 s). So every grammar and schema is measured here first, in pure Python and without
recursion, and refused with a ``GrammarTooLarge`` (a ``ValueError``; the caller turns it into a
400 naming the field) beyond these documented limits (docs/limits.md):

=====================  ===========  ==========================================================
measure                limit        what it counts
=====================  ===========  ==========================================================
``MAX_GRAMMAR_BYTES``  128 KiB      the grammar text (GBNF, Lark or regex), UTF-8
``MAX_RULES``          1,000        rule and terminal definitions (``name:`` / ``name ::=``)
``MAX_RULE_DEPTH``     500          the longest chain of rules referring to rules, from any rule
``MAX_NESTING``        100          brackets nested inside one rule (``(``, ``[``, ``{``)
``MAX_SCHEMA_BYTES``   256 KiB      the JSON Schema serialised as compact JSON
``MAX_SCHEMA_NESTING`` 128         objects and arrays nested in the schema document
``MAX_SCHEMA_DEPTH``   500          the longest path through nested subschemas and ``$ref`` hops
=====================  ===========  ==========================================================

Recursion through a cycle (``value: list | "x"``, ``list: "[" value "]"``; a ``$ref`` back to an
enclosing schema) is legitimate and counted once: a back edge ends the path. The measures are a
first line; compilation still runs on a thread with a large stack (``deep_stack.run``) in case
some other shape recurses.

    >>> measure_grammar("lark", 'start: a a\\na: "x" | "y"\\n')
    GrammarSize(rules=2, depth=2, nesting=0)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GrammarTooLarge",
    "GrammarSize",
    "measure_grammar",
    "measure_schema",
    "MAX_GRAMMAR_BYTES",
    "MAX_RULES",
    "MAX_RULE_DEPTH",
    "MAX_NESTING",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_NESTING",
    "MAX_SCHEMA_DEPTH",
]

MAX_GRAMMAR_BYTES = 128 * 1024
MAX_RULES = 1_000
MAX_RULE_DEPTH = 500
MAX_NESTING = 100
MAX_SCHEMA_BYTES = 256 * 1024
MAX_SCHEMA_NESTING = 128
MAX_SCHEMA_DEPTH = 500


class GrammarTooLarge(ValueError):
    """A grammar or schema beyond a documented limit; the message says which and by how much."""


@dataclass(frozen=True)
class GrammarSize:
    rules: int
    depth: int
    nesting: int


# Tokens of a rule body: quoted strings and regexes are skipped whole (their brackets are text).
_LARK_TOKENS = re.compile(
    r"""
    (?P<skip>"(?:\\.|[^"\\\n])*"i?|/(?:\\.|[^/\\\n])+/[imslux]*|//[^\n]*|\#[^\n]*|%[a-z]+)
    |(?P<name>[?!]?[A-Za-z_][A-Za-z0-9_]*)(?:\.-?[0-9]+)?(?P<define>[ \t]*:(?!:))?
    |(?P<open>[(\[{])|(?P<close>[)\]}])
    """,
    re.VERBOSE,
)
_GBNF_TOKENS = re.compile(
    r"""
    (?P<skip>"(?:\\.|[^"\\\n])*"|\[(?:\\.|[^\]\\\n])*\]|\#[^\n]*|\{[0-9, ]*\})
    |(?P<name>[A-Za-z_][A-Za-z0-9_-]*)(?P<define>[ \t]*::=)?
    |(?P<open>\()|(?P<close>\))
    """,
    re.VERBOSE,
)


def measure_grammar(key: str, text: str) -> GrammarSize:
    """Size, rule-chain depth and nesting of a ``gbnf`` / ``lark`` / ``regex`` grammar, or
    ``GrammarTooLarge``. A regex has no rules; its nesting is bounded by the regex compiler."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_GRAMMAR_BYTES:
        raise GrammarTooLarge(f"the grammar is {size:,} bytes; the limit is {MAX_GRAMMAR_BYTES:,}")
    if key == "regex":
        return GrammarSize(0, 0, 0)
    tokens = _GBNF_TOKENS if key == "gbnf" else _LARK_TOKENS
    refs: dict[str, set[str]] = {}
    current: set[str] | None = None
    depth = nesting = 0
    for match in tokens.finditer(text):
        if match.group("skip"):
            if match.group("skip").startswith("%"):  # a directive (%import, %ignore) ends a rule
                current, depth = None, 0
            continue
        name = match.group("name")
        if name is not None:
            name = name.lstrip("?!")
            if match.group("define"):
                current = refs.setdefault(name, set())
                depth = 0
                if len(refs) > MAX_RULES:
                    raise GrammarTooLarge(f"the grammar defines more than {MAX_RULES:,} rules")
            elif current is not None:
                current.add(name)
        elif match.group("open"):
            depth += 1
            if depth > nesting:
                nesting = depth
                if nesting > MAX_NESTING:
                    raise GrammarTooLarge(f"brackets nest more than {MAX_NESTING} deep in one rule")
        elif match.group("close"):
            depth = max(0, depth - 1)
    chain = _longest_chain({name: [r for r in targets if r in refs] for name, targets in refs.items()})
    if chain > MAX_RULE_DEPTH:
        raise GrammarTooLarge(f"rules refer to rules {chain:,} deep; the limit is {MAX_RULE_DEPTH}")
    return GrammarSize(len(refs), chain, nesting)


def _longest_chain(graph: dict[Any, list[Any]]) -> int:
    """The most nodes on one path through ``graph`` (a back edge ends a path), without recursion."""
    longest: dict[Any, int] = {}
    on_path: set[Any] = set()
    for root in graph:
        if root in longest:
            continue
        stack: list[tuple[Any, int]] = [(root, 0)]
        on_path.add(root)
        while stack:
            node, i = stack[-1]
            children = graph.get(node, ())
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if child not in longest and child not in on_path:
                    on_path.add(child)
                    stack.append((child, 0))
                continue
            stack.pop()
            on_path.discard(node)
            longest[node] = 1 + max((longest.get(c, 0) for c in children if c not in on_path), default=0)
    return max(longest.values(), default=0)


def measure_schema(schema: Any) -> int:
    """The depth of a JSON Schema (nested subschemas plus ``$ref`` hops along one path), after
    its nesting and serialised size are checked; or ``GrammarTooLarge``."""
    nodes: dict[int, Any] = {}
    graph: dict[int, list[int]] = {}
    pending: list[tuple[Any, int]] = [(schema, 1)]
    while pending:
        value, level = pending.pop()
        if level > MAX_SCHEMA_NESTING:
            raise GrammarTooLarge(f"the schema nests objects and arrays more than {MAX_SCHEMA_NESTING} deep")
        if id(value) in nodes:
            continue
        nodes[id(value)] = value
        children = list(value.values()) if isinstance(value, dict) else list(value)
        children = [c for c in children if isinstance(c, (dict, list))]
        graph[id(value)] = [id(c) for c in children]
        pending.extend((c, level + 1) for c in children)
    size = len(json.dumps(schema, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if size > MAX_SCHEMA_BYTES:
        raise GrammarTooLarge(f"the schema is {size:,} bytes as JSON; the limit is {MAX_SCHEMA_BYTES:,}")
    for key, value in nodes.items():
        ref = value.get("$ref") if isinstance(value, dict) else None
        target = _resolve(schema, ref) if isinstance(ref, str) else None
        if isinstance(target, (dict, list)) and id(target) in graph:
            graph[key].append(id(target))
    depth = _longest_chain(graph)
    if depth > MAX_SCHEMA_DEPTH:
        raise GrammarTooLarge(f"subschemas and $ref hops chain {depth:,} deep; the limit is {MAX_SCHEMA_DEPTH}")
    return depth


def _resolve(root: Any, ref: str) -> Any:
    """The target of a local ``$ref`` (``#/$defs/x``, ``#/definitions/x``), or None."""
    if not ref.startswith("#/"):
        return None
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node
