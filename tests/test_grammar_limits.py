"""Grammars and schemas measured before llguidance compiles them (issue 21, finding 1).

A Lark rule chain 3,000 deep, a GBNF chain 5,000 deep and 5,000 chained ``$defs`` overflowed the
native stack in llguidance's compiler: the server and ``nb.complete()`` (so the kernel) died with
a segfault. The attacks run in a subprocess here, so that a regression fails a test instead of
killing pytest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nb_completion.engine import grammar_limits
from nb_completion.engine.grammar_limits import GrammarTooLarge, measure_grammar, measure_schema

ROOT = Path(__file__).resolve().parents[1]


def lark_chain(n: int) -> str:
    return "start: r0\n" + "".join(f'r{i}: r{i + 1} "x"\n' for i in range(n)) + f'r{n}: "y"\n'


def gbnf_chain(n: int) -> str:
    return "root ::= r0\n" + "".join(f'r{i} ::= r{i + 1} "x"\n' for i in range(n)) + f'r{n} ::= "y"\n'


def defs_chain(n: int) -> dict:
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(n)}
    defs[f"d{n}"] = {"type": "string"}
    return {"$ref": "#/$defs/d0", "$defs": defs}


def run_isolated(code: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter importing this checkout; a segfault is its return code."""
    prelude = f"import sys, json\nsys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# ---- the measures ------------------------------------------------------------------------------


def test_a_lark_chain_is_measured_by_its_depth():
    assert measure_grammar("lark", lark_chain(10)).depth == 12  # start, r0 .. r10
    with pytest.raises(GrammarTooLarge, match="500"):
        measure_grammar("lark", lark_chain(600))


def test_a_gbnf_chain_is_measured_and_char_classes_are_text():
    size = measure_grammar("gbnf", 'root ::= item+\nitem ::= [(\\[] "(" | digit\ndigit ::= [0-9]\n')
    assert (size.rules, size.depth, size.nesting) == (3, 3, 0)
    with pytest.raises(GrammarTooLarge, match="rules"):
        measure_grammar("gbnf", gbnf_chain(5000))


def test_recursion_through_a_cycle_counts_once():
    grammar = 'start: value\nvalue: list | NUMBER\nlist: "[" value ("," value)* "]"\nNUMBER: /[0-9]+/\n'
    assert measure_grammar("lark", grammar) == grammar_limits.GrammarSize(rules=4, depth=3, nesting=1)
    tree = {"$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}}
    assert measure_schema({**tree, "$ref": "#/$defs/node"}) < 20


def test_size_and_nesting_limits():
    with pytest.raises(GrammarTooLarge, match="bytes"):
        measure_grammar("regex", "a" * (grammar_limits.MAX_GRAMMAR_BYTES + 1))
    with pytest.raises(GrammarTooLarge, match="nest"):
        measure_grammar("lark", "start: " + "(" * 101 + '"x"' + ")" * 101 + "\n")
    nested: dict = {"type": "string"}
    for _ in range(200):
        nested = {"type": "object", "properties": {"a": nested}}
    with pytest.raises(GrammarTooLarge, match="nests"):
        measure_schema(nested)
    with pytest.raises(GrammarTooLarge, match=r"\$ref"):
        measure_schema(defs_chain(5000))


# ---- the attacks, each in its own process ------------------------------------------------------

ATTACKS = """
import httpx
import nb_completion as nb
from nb_completion.api.errors import BadRequest
from nb_completion.engine.tiny import register_tiny_model
from test_grammar_limits import lark_chain, gbnf_chain, defs_chain

model = register_tiny_model().info.identifier
formats = {
    "lark": {"type": "grammar", "bnf": {"lark": lark_chain(3000)}},
    "gbnf": {"type": "grammar", "bnf": {"gbnf": gbnf_chain(5000)}},
    "json": {"type": "json_schema", "json_schema": defs_chain(5000)},
}
out = {}
for name, fmt in formats.items():
    try:
        nb.complete("x", model_id=model, response_format=fmt, sampling_params={"max_tokens": 2})
        out["python_" + name] = "200"
    except BadRequest as exc:
        out["python_" + name] = exc.field
handle = nb.serve(port=0, models=[model])
with httpx.Client(base_url=handle.url, timeout=120) as client:
    for name, fmt in formats.items():
        r = client.post("/v1/inference/completion", json={"model_id": model, "content": "x", "response_format": fmt})
        out["http_" + name] = [r.status_code, r.json().get("detail", "")[:200]]
    r = client.post("/v1/completions", json={"model": model, "prompt": "x", "guided_grammar": gbnf_chain(5000)})
    out["openai_gbnf"] = [r.status_code, r.json()["error"].get("param")]
    out["health"] = client.get("/v1/health").status_code
handle.stop()
print(json.dumps(out))
"""


def test_deep_grammars_and_schemas_are_400s_and_nothing_dies():
    result = run_isolated(ATTACKS)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["python_lark"] == "response_format.bnf.lark"
    assert out["python_gbnf"] == "response_format.bnf.gbnf"
    assert out["python_json"] == "response_format.json_schema"
    assert out["http_lark"][0] == 400 and out["http_lark"][1].startswith("response_format.bnf.lark")
    assert out["http_gbnf"][0] == 400 and out["http_gbnf"][1].startswith("response_format.bnf.gbnf")
    assert out["http_json"][0] == 400 and out["http_json"][1].startswith("response_format.json_schema")
    assert out["openai_gbnf"] == [400, "guided_grammar"]
    assert out["health"] == 200


def test_compilation_survives_a_chain_deeper_than_a_thread_stack_holds():
    """With the measures lifted, the 3,000-deep chain that overflowed an 8 MiB stack compiles:
    llguidance runs on a thread with a large stack (``deep_stack``)."""
    result = run_isolated(
        """
        from nb_completion.engine import grammar_limits
        grammar_limits.MAX_RULES = grammar_limits.MAX_RULE_DEPTH = 10**6
        grammar_limits.MAX_GRAMMAR_BYTES = 10**7
        from nb_completion.engine.constraints import compile_constraint
        from nb_completion.engine.tiny import build_tokenizer
        from test_grammar_limits import lark_chain
        constraint = compile_constraint({"type": "grammar", "bnf": {"lark": lark_chain(3000)}}, build_tokenizer(), 384)
        print(json.dumps(constraint.can_start()))
        """
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert result.stdout.strip().splitlines()[-1] == "true"


def test_grammars_within_the_limits_still_compile():
    from nb_completion.engine.constraints import compile_constraint
    from nb_completion.engine.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    for fmt in (
        {"type": "grammar", "bnf": {"lark": lark_chain(400)}},
        {"type": "grammar", "bnf": {"gbnf": gbnf_chain(400)}},
        {"type": "json_schema", "json_schema": defs_chain(400)},
    ):
        assert compile_constraint(fmt, tokenizer, 384).can_start()
