"""Option parsing, ``{name}`` interpolation and the request the options mean (no model needed)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from nb_completion.api.bounds import TOP_P
from nb_completion.api.errors import BadRequest
from nb_completion.api.shorthand import describe, flat_options, from_settings, response_format_from, sampling_params_from
from nb_completion.api.validation import parse_request
from nb_completion.notebook.magic_options import DEFAULT_MAX_TOKENS, HelpRequested, build_magic_request, interpolate, parse_line


class Person(BaseModel):
    name: str
    age: int


def request_for(line: str, namespace=None, content="Hi"):
    return build_magic_request(parse_line(line, namespace or {}), content)


def test_short_and_long_forms_build_the_contract_request():
    r = request_for("-m some/model -t 0.7 --top-p 0.9 -n 20 --repetition-penalty 1.2 --stop '\\n' --stop END --logprobs 3")
    assert r.model_id == "some/model"
    p = r.sampling_params
    assert p.strategy.type == "top_p" and p.strategy.temperature == 0.7 and p.strategy.top_p == 0.9
    assert p.max_tokens == 20 and p.repetition_penalty == 1.2 and p.stop == ["\n", "END"]
    assert r.logprobs.top_k == 3 and r.response_format is None


@pytest.mark.parametrize(
    "line, strategy",
    [
        ("", "greedy"),
        ("-t 0", "greedy"),
        ("-t 1.2", "top_p"),
        ("--top-p 0.5", "top_p"),
        ("--top-k 4", "top_k"),
        ("--strategy top_p", "top_p"),
    ],
)
def test_strategy_is_inferred_from_what_was_given(line, strategy):
    assert request_for(line).sampling_params.strategy.type == strategy


def test_defaults_cap_the_length_and_leave_optional_fields_out():
    r = request_for("")
    assert r.sampling_params.max_tokens == DEFAULT_MAX_TOKENS and r.logprobs is None and r.model_id
    assert request_for("-n 0").sampling_params.max_tokens == 0  # the contract's "until it stops"
    assert parse_line("--heatmap", {}).heatmap == "probability" and parse_line("--heatmap entropy", {}).heatmap == "entropy"
    assert parse_line("--no-stream", {}).stream is False


def test_option_values_can_come_from_variables():
    ns = {"t": 0.4, "k": 7, "seed": 3, "stops": ["\n\n", "###"], "model": "m/x", "n": 12}
    opts = parse_line("-t {t} -n {n} --seed {seed} --stop {stops} --model {model}", ns)
    assert (opts.temperature, opts.max_tokens, opts.seed, opts.stop, opts.model) == (0.4, 12, 3, ["\n\n", "###"], "m/x")
    assert parse_line("--top-k {k}", ns).top_k == 7


def test_json_schema_inline_dict_variable_and_pydantic_model():
    inline = request_for("""--json-schema '{"type": "object", "properties": {"a": {"type": "integer"}}}'""")
    assert inline.response_format.json_schema["properties"]["a"]["type"] == "integer"
    ns = {"schema": {"type": "array", "items": {"type": "string"}}, "Person": Person}
    assert request_for("--json-schema {schema}", ns).response_format.json_schema["type"] == "array"
    from_model = request_for("--json-schema {Person}", ns).response_format.json_schema
    assert set(from_model["properties"]) == {"name", "age"} and from_model["required"] == ["name", "age"]


def test_grammar_inline_or_variable_with_a_syntax():
    r = request_for("""--grammar 'root ::= "yes" | "no"'""")
    assert r.response_format.bnf == {"gbnf": 'root ::= "yes" | "no"'}
    r = request_for("--grammar {g} --grammar-syntax regex", {"g": "[0-9]{3}"})
    assert r.response_format.bnf == {"regex": "[0-9]{3}"}


@pytest.mark.parametrize(
    "line, ns, field",
    [
        ("-t hot", {}, "--temperature"),
        ("-n 2.5", {}, "--max-tokens"),
        ("--top-k {k}", {"k": "many"}, "--top-k"),
        ("-t {missing}", {}, "--temperature"),
        ("--strategy nucleus", {}, "options"),
        ("--stop 'unterminated", {}, "options"),
        ("--json-schema {x}", {"x": 3}, "response_format.json_schema"),
        ("--json-schema '{}' --grammar 'root ::= \"a\"'", {}, "response_format"),
        ("--grammar {g}", {"g": 42}, "--grammar"),
        ("--grammar x --grammar-syntax ebnf", {}, "options"),
        ("--strategy greedy -t 0.5", {}, "sampling_params.strategy.temperature"),
        ("--top-k 3 --top-p 0.5", {}, "sampling_params.strategy.top_p"),
        ("--top-k 0", {}, "sampling_params.strategy.top_k"),
        ("-o 'not valid'", {}, "--out"),
        ("--stop {s}", {"s": 5}, "--stop"),
    ],
)
def test_bad_options_name_the_option_or_field(line, ns, field):
    with pytest.raises(BadRequest) as info:
        request_for(line, ns)
    assert info.value.status == 400 and info.value.detail.startswith(field + ":"), info.value.detail


def test_help_is_requested_not_exited():
    with pytest.raises(HelpRequested, match="--temperature"):
        parse_line("--help", {})


def test_interpolation():
    ns = {"city": "Paris", "x": 3.14159, "d": {"k": [1, 2]}, "obj": Person(name="Ada", age=36)}
    assert interpolate("{city} {x:.2f} {d[k][1]} {obj.name} {{raw}} }}{{", ns) == "Paris 3.14 2 Ada {raw} }{"
    assert interpolate("no braces at all", {}) == "no braces at all"


@pytest.mark.parametrize(
    "template, needle",
    [
        ("Hi {nobody}", "'nobody'"),
        ("a { b", "{{"),
        ("a } b", "{{"),
        ("{}", "variable name"),
        ("{0}", "variable name"),
        ("{city.nope}", "nope"),
    ],
)
def test_interpolation_errors_are_clear(template, needle):
    with pytest.raises(BadRequest) as info:
        interpolate(template, {"city": "Paris"})
    assert info.value.detail.startswith("content:") and needle in info.value.detail


def test_friendly_settings_and_titles():
    assert sampling_params_from(temperature=0.7) == {"strategy": {"type": "top_p", "temperature": 0.7}}
    assert sampling_params_from(top_k=5, stop="\n") == {"strategy": {"type": "top_k", "top_k": 5}, "stop": ["\n"]}
    params, label = from_settings({"label": "cold", "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 9}})
    assert label == "cold" and params["max_tokens"] == 9
    assert (
        describe({"strategy": {"type": "top_p", "top_p": 0.9, "temperature": 1.5}, "repetition_penalty": 1.3})
        == "top-p 0.9 · T 1.5 · rep. penalty 1.3"
    )
    assert describe(None) == "greedy"
    with pytest.raises(BadRequest, match=r"settings\[2\]\.temprature"):
        from_settings({"temprature": 1}, "settings[2]")


@pytest.mark.parametrize(
    "flat",
    [
        {"strategy": "greedy"},
        {"strategy": "top_p", "temperature": 0.7},
        {"strategy": "top_p", "top_p": 0.5, "max_tokens": 9, "stop": ["\n"]},
        {"strategy": "top_k", "top_k": 40, "repetition_penalty": 1.3},
    ],
)
def test_shorthand_round_trips_through_the_contract(flat):
    params = sampling_params_from(**flat)
    assert flat_options(params) == flat
    assert flat_options(parse_request({"model_id": "m", "content": "x", "sampling_params": params}).sampling_params) == {
        **flat,
        **({"top_p": TOP_P} if flat["strategy"] == "top_p" and "top_p" not in flat else {}),
        **({"repetition_penalty": 1.0} if "repetition_penalty" not in flat else {}),
        **({"max_tokens": 0} if "max_tokens" not in flat else {}),
    }


def test_one_response_format_from_shorthand():
    class Person(BaseModel):
        name: str

    schema = Person.model_json_schema()
    for given in (Person, Person(name="x"), schema, json.dumps(schema)):
        assert response_format_from(json_schema=given) == {"type": "json_schema", "json_schema": schema}
    assert response_format_from(grammar="[0-9]+", syntax="regex") == {"type": "grammar", "bnf": {"regex": "[0-9]+"}}
    assert response_format_from() is None
    with pytest.raises(BadRequest, match="give --json-schema or --grammar, not both"):
        response_format_from(schema, "x", names=("--json-schema", "--grammar"))
