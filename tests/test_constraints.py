"""The grammar mask on its own: the real default model's tokenizer, no weights, no engine."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

from nb_completion.api.errors import BadRequest
from nb_completion.api.types import GrammarResponseFormat, JsonSchemaResponseFormat
from nb_completion.engine.constraints import compile_constraint, llg_tokenizer
from nb_completion.cli_formats import response_format_from_flags, syntax_of

VOCAB = 49152
EOS = 2  # <|im_end|>

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tok():
    """The tiny model's byte-level BPE tokenizer, built in-process: every text is encodable, and the
    fast tests never read the default model's 100 MB GGUF."""
    from nb_completion.engine.tiny import build_tokenizer

    return build_tokenizer()


def schema_fmt(schema):
    return JsonSchemaResponseFormat(json_schema=schema)


def grammar_fmt(key, text):
    return GrammarResponseFormat(bnf={key: text})


def feed(c, tok, text):
    """Advance ``c`` through ``text``'s tokens, checking each was allowed; returns the last mask count."""
    count = None
    for tid in tok.encode(text, add_special_tokens=False):
        count = c.mask(torch.zeros(VOCAB))
        assert tid in c.allowed_ids(), (text, tok.decode([tid]))
        assert EOS not in c.allowed_ids() or c.is_accepting()
        c.advance(tid)
    return count


def walk(c, seed, max_steps=400):
    """Pick the highest random logit under the mask until the grammar finishes; the token ids."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(max_steps):
        if c.is_finished():
            return out
        logits = torch.randn(VOCAB, generator=g)
        c.mask(logits)
        tid = int(logits.argmax())
        c.advance(tid)
        if tid == EOS:
            return out
        out.append(tid)
    raise AssertionError("the grammar did not finish")


def no_whitespace_outside_strings(text):
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    return not re.search(r"\s", outside)


def test_forced_opening_is_one_token_and_everything_else_is_minus_inf(tok):
    c = compile_constraint(schema_fmt(PERSON), tok, VOCAB)
    logits = torch.randn(VOCAB)
    n = c.mask(logits)
    assert n == 1
    (tid,) = c.allowed_ids()
    assert tok.decode([tid]) == '{"'
    assert torch.isfinite(logits).sum() == 1 and torch.isfinite(logits[tid])


def test_mask_is_in_place_and_keeps_allowed_values(tok):
    c = compile_constraint(grammar_fmt("regex", "[0-9]+"), tok, VOCAB)
    logits = torch.randn(VOCAB)
    before = logits.clone()
    n = c.mask(logits)
    allowed = c.allowed_ids()
    assert n == len(allowed) > 1
    assert all(tok.decode([t]).isdigit() for t in allowed)
    assert torch.equal(logits[allowed], before[allowed])
    assert torch.isinf(logits).sum() == VOCAB - n


def test_end_token_only_where_the_grammar_accepts(tok):
    c = compile_constraint(grammar_fmt("regex", "[0-9]+"), tok, VOCAB)
    c.mask(torch.zeros(VOCAB))
    assert EOS not in c.allowed_ids() and not c.is_accepting()
    feed(c, tok, "12")
    c.mask(torch.zeros(VOCAB))
    assert EOS in c.allowed_ids() and c.is_accepting() and not c.is_finished()
    c.advance(EOS)
    assert c.is_finished()


def test_valid_json_walk_allows_eos_never_and_finishes_after_closing_brace(tok):
    c = compile_constraint(schema_fmt(PERSON), tok, VOCAB)
    feed(c, tok, '{"name":"Ada","age":36')
    assert not c.is_finished()
    assert c.mask(torch.zeros(VOCAB)) == 1  # only "}" can follow
    c.advance(tok.encode("}", add_special_tokens=False)[0])
    assert c.is_finished()


def test_json_is_compact(tok):
    c = compile_constraint(schema_fmt(PERSON), tok, VOCAB)
    feed(c, tok, '{"name":"A"')
    c.mask(torch.zeros(VOCAB))
    texts = [tok.decode([t]) for t in c.allowed_ids()]
    assert texts and all(not t[:1].isspace() for t in texts), texts


@pytest.mark.parametrize(
    "options",
    [{"whitespace_flexible": True}, {"whitespace_pattern": "[ ]+"}, {"item_separator": ", ", "key_separator": ": "}],
)
def test_schema_x_guidance_cannot_turn_whitespace_back_on(tok, options):
    schema = {**PERSON, "x-guidance": options}
    c = compile_constraint(schema_fmt(schema), tok, VOCAB)
    c.mask(torch.zeros(VOCAB))
    assert [tok.decode([t]) for t in c.allowed_ids()] == ['{"']
    feed(c, tok, '{"name":"A"')
    c.mask(torch.zeros(VOCAB))
    assert all(not tok.decode([t])[:1].isspace() for t in c.allowed_ids())


@pytest.mark.parametrize("seed", range(6))
def test_random_logits_under_the_mask_give_valid_json(tok, seed):
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": -5, "maximum": 5000},
            "kind": {"enum": ["cat", "dog", "bird"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
            "owner": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"}},
                "required": ["name", "ok"],
                "additionalProperties": False,
            },
        },
        "required": ["id", "kind", "tags", "owner"],
        "additionalProperties": False,
    }
    c = compile_constraint(schema_fmt(schema), tok, VOCAB)
    text = tok.decode(walk(c, seed))
    jsonschema.validate(json.loads(text), schema)
    assert no_whitespace_outside_strings(text), text


@pytest.mark.parametrize("seed", range(3))
def test_random_walks_match_gbnf_lark_and_regex(tok, seed):
    gbnf = 'root ::= "ans: " ("yes" | "no") " (" [0-9]{1,3} ")"'
    lark = 'start: "[" ITEM ("," ITEM)* "]"\nITEM: /[a-z]{1,4}/'
    regex = r"(0|[1-9][0-9]{0,3})\.[0-9]{2}"
    for key, text, pattern in [
        ("gbnf", gbnf, r"ans: (yes|no) \([0-9]{1,3}\)"),
        ("lark", lark, r"\[[a-z]{1,4}(,[a-z]{1,4})*\]"),
        ("regex", regex, regex),
    ]:
        c = compile_constraint(grammar_fmt(key, text), tok, VOCAB)
        out = tok.decode(walk(c, seed, max_steps=60 if key != "lark" else 400))
        assert re.fullmatch(pattern, out), (key, out)


def test_logits_wider_than_the_tokenizer_never_allow_the_padding_ids(tok):
    c = compile_constraint(grammar_fmt("regex", "[a-z ]+"), tok, VOCAB + 64)
    logits = torch.zeros(VOCAB + 64)
    c.mask(logits)
    assert torch.isinf(logits[VOCAB:]).all()
    with pytest.raises(ValueError):
        c.mask(torch.zeros(VOCAB))


def test_a_grammar_that_is_already_complete_is_finished_at_once(tok):
    c = compile_constraint(grammar_fmt("lark", 'start: ""'), tok, VOCAB)
    assert c.is_finished()


def test_a_token_outside_the_mask_is_refused(tok):
    c = compile_constraint(grammar_fmt("regex", "[0-9]+"), tok, VOCAB)
    c.mask(torch.zeros(VOCAB))
    with pytest.raises(RuntimeError, match="rejected"):
        c.advance(tok.encode("hello", add_special_tokens=False)[0])


def test_the_llguidance_tokenizer_is_built_once_per_tokenizer(tok):
    assert llg_tokenizer(tok) is llg_tokenizer(tok)


def test_dict_formats_are_accepted(tok):
    c = compile_constraint({"type": "grammar", "bnf": {"regex": "a+"}}, tok, VOCAB)
    assert c.mask(torch.zeros(VOCAB)) >= 1


# ---- compile errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, field, needle",
    [
        (schema_fmt({"type": "nope"}), "response_format.json_schema", "nope"),
        (schema_fmt({"properties": {"a": {"$ref": "#/defs/x"}}}), "response_format.json_schema", "/defs/x"),
        (schema_fmt({"type": "string", "pattern": "(("}), "response_format.json_schema", "unclosed group"),
        (schema_fmt({"type": "string", "minLength": "x"}), "response_format.json_schema", "minLength"),
        (grammar_fmt("regex", "[0-9"), "response_format.bnf.regex", "unclosed character class"),
        (grammar_fmt("lark", "start: foo"), "response_format.bnf.lark", "unknown name"),
        (grammar_fmt("lark", "start: ("), "response_format.bnf.lark", "1"),
        (grammar_fmt("gbnf", "root ::= foo"), "response_format.bnf.gbnf", "Rule 'foo' not found"),
        (grammar_fmt("gbnf", 'root := "a"'), "response_format.bnf.gbnf", "Expected ::="),
        (grammar_fmt("gbnf", 'ab ::= "a"'), "response_format.bnf.gbnf", "root"),
        (grammar_fmt("lark", 'start: x\nx: x "a"'), "response_format.bnf.lark", "no text can satisfy"),
        (grammar_fmt("regex", r"[^\x00-\x{10FFFF}]"), "response_format.bnf.regex", "no text can satisfy"),
        (schema_fmt({"type": "string", "minLength": 5, "maxLength": 2}), "response_format.json_schema", "Unsatisfiable"),
        (schema_fmt({"not": {"type": "string"}}), "response_format.json_schema", "Unimplemented"),
    ],
)
def test_invalid_schema_or_grammar_is_a_400_with_the_compiler_message(tok, fmt, field, needle):
    with pytest.raises(BadRequest) as info:
        compile_constraint(fmt, tok, VOCAB)
    err = info.value.error
    assert err.status == 400 and err.title == "Bad Request"
    assert err.detail.startswith(field + ": ") and needle in err.detail, err.detail


def test_unknown_bnf_key_names_the_accepted_ones(tok):
    with pytest.raises(BadRequest) as info:
        compile_constraint(grammar_fmt("ebnf", "x"), tok, VOCAB)
    assert info.value.status == 400
    assert all(k in info.value.detail for k in ("gbnf", "lark", "regex"))


# ---- CLI flags -----------------------------------------------------------------------------


def test_grammar_syntax_from_extension_or_flag(tmp_path):
    assert syntax_of("a.gbnf") == "gbnf" and syntax_of("a.lark") == "lark" and syntax_of("a.regex") == "regex"
    assert syntax_of("a.txt", "lark") == "lark"
    with pytest.raises(BadRequest, match="--grammar-syntax"):
        syntax_of("a.txt")
    with pytest.raises(BadRequest, match="--grammar-syntax"):
        syntax_of("a.txt", "ebnf")


def test_response_format_from_flags(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps(PERSON))
    assert response_format_from_flags(json_schema=str(f)) == {"type": "json_schema", "json_schema": PERSON}
    assert response_format_from_flags(json_schema=json.dumps(PERSON))["json_schema"] == PERSON
    g = tmp_path / "g.txt"
    g.write_text('root ::= "a"')
    assert response_format_from_flags(grammar=str(g), grammar_syntax="gbnf") == {
        "type": "grammar",
        "bnf": {"gbnf": 'root ::= "a"'},
    }
    assert response_format_from_flags() is None
    with pytest.raises(BadRequest, match="--json-schema"):
        response_format_from_flags(json_schema="{not json")
    with pytest.raises(BadRequest, match="no such file"):
        response_format_from_flags(grammar=str(tmp_path / "missing.lark"))


# ---- property: any schema built from the supported pieces, any logits -> valid compact JSON ----

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_leaf = st.one_of(
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 12)),
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span}, st.integers(-50, 50), st.integers(0, 500)
    ),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.text("abcxyz -", min_size=1, max_size=5), min_size=1, max_size=4, unique=True).map(lambda v: {"enum": v}),
)


def _object(children):
    return st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), children, min_size=1, max_size=3).map(
        lambda props: {"type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}
    )


_schemas = st.recursive(
    _leaf,
    lambda children: st.one_of(
        _object(children),
        st.builds(lambda item, n: {"type": "array", "items": item, "maxItems": n}, children, st.integers(0, 3)),
        st.lists(children, min_size=2, max_size=2).map(lambda alts: {"anyOf": alts}),
    ),
    max_leaves=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=_schemas, seed=st.integers(0, 2**16))
def test_any_schema_and_any_logits_give_valid_compact_json(tok, schema, seed):
    c = compile_constraint(schema_fmt(schema), tok, VOCAB)
    text = tok.decode(walk(c, seed, max_steps=600))
    jsonschema.validate(json.loads(text), schema)
    assert no_whitespace_outside_strings(text), text


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_mask_works_for_every_logits_dtype(tok, dtype):
    c = compile_constraint(grammar_fmt("regex", "[0-9]+"), tok, VOCAB)
    logits = torch.randn(VOCAB).to(dtype)
    n = c.mask(logits)
    assert logits.dtype == dtype and int(torch.isfinite(logits).sum()) == n > 1
    assert all(tok.decode([t]).isdigit() for t in torch.nonzero(torch.isfinite(logits)).flatten().tolist())


def test_mask_works_on_a_strided_view(tok):
    c = compile_constraint(grammar_fmt("regex", "[0-9]+"), tok, VOCAB)
    wide = torch.randn(VOCAB, 2)
    view = wide[:, 0]  # not contiguous: takes the torch path
    n = c.mask(view)
    assert int(torch.isfinite(wide[:, 0]).sum()) == n and torch.isfinite(wide[:, 1]).all()


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["object", "string", "integer", "array", "#/x", "a+"]),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(["type", "properties", "items", "required", "enum", "$ref", "anyOf", "pattern", "minLength", "x"]),
            kids,
            max_size=3,
        )
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.one_of(
        st.dictionaries(st.sampled_from(["type", "properties", "items", "enum", "x"]), _json, max_size=3).map(schema_fmt),
        st.tuples(st.sampled_from(["gbnf", "lark", "regex"]), st.text(alphabet='ab:=|()[]{}*+?"/ \n-^\\rotsu0', max_size=30)).map(
            lambda kv: grammar_fmt(*kv)
        ),
    )
)
def test_arbitrary_formats_compile_or_are_a_400_never_a_crash(tok, fmt):
    try:
        c = compile_constraint(fmt, tok, VOCAB)
    except BadRequest as exc:
        assert exc.status == 400 and exc.detail.startswith("response_format")
    else:  # a grammar that compiles can always take a first step
        if not c.is_finished():
            assert c.mask(torch.zeros(VOCAB)) >= 1


def test_a_fork_continues_from_the_same_state_and_then_advances_alone(tok):
    c = compile_constraint(
        schema_fmt({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}), tok, VOCAB
    )
    feed(c, tok, '{"a":1')
    before = c.mask(torch.zeros(VOCAB)), c.allowed_ids()
    twin = c.fork()
    assert twin is not c
    assert (twin.mask(torch.zeros(VOCAB)), twin.allowed_ids()) == before  # the same state
    feed(twin, tok, "}")  # the fork closes the object ...
    assert twin.is_finished() and twin.steps == c.steps + 1
    assert not c.is_finished()  # ... the original has not moved
    assert (c.mask(torch.zeros(VOCAB)), c.allowed_ids()) == before
    feed(c, tok, "23}")  # and goes its own way
    assert c.is_finished()


def test_a_fork_of_a_fresh_constraint_leaves_it_at_its_start(tok):
    c = compile_constraint(grammar_fmt("regex", "(ab|ba){3,8}"), tok, VOCAB)
    start = c.mask(torch.zeros(VOCAB)), c.allowed_ids()
    walk(c.fork(), seed=1)
    assert (c.mask(torch.zeros(VOCAB)), c.allowed_ids()) == start and c.steps == 0
