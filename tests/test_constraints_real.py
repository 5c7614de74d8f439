"""Acceptance: structured output on the real default model (SmolLM2-135M-Instruct).

Every output parses with ``json.loads`` and validates with ``jsonschema``, greedy and top-p at three
seeds, streamed and not; GBNF, Lark and regex outputs match; bad schemas and grammars are 400s.
Strings and arrays are bounded in the schemas so a 135M model cannot ramble inside them.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Annotated

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field

from nb_completion import complete
from nb_completion.api.errors import BadRequest

pytestmark = pytest.mark.real_model


def chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


class Colour(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")  # additionalProperties: false, or a small model invents keys
    city: str = Field(max_length=20)
    country: str = Field(max_length=20)


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)
    favourite_colour: Colour
    hobbies: list[Annotated[str, Field(max_length=16)]] = Field(max_length=3)
    address: Address


# Every string, array and object is bounded, so every output has a bounded length: with MAX_TOKENS
# above that bound, a run can only end with the grammar complete, on any CPU's arithmetic.
CLOSED = {"additionalProperties": False}

SCHEMAS = {
    "string": (
        "What is the capital of France? Answer in JSON.",
        {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"], **CLOSED},
    ),
    "integer": (
        "How many legs does a spider have? Answer in JSON.",
        {
            "type": "object",
            "properties": {"legs": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["legs"],
            **CLOSED,
        },
    ),
    "enum": (
        "What colour is the sky? Answer in JSON.",
        {
            "type": "object",
            "properties": {"colour": {"enum": ["red", "green", "blue", "yellow"]}},
            "required": ["colour"],
            **CLOSED,
        },
    ),
    "array": (
        "Name three fruits in JSON.",
        {
            "type": "object",
            "properties": {
                "fruits": {"type": "array", "items": {"type": "string", "maxLength": 16}, "minItems": 1, "maxItems": 3}
            },
            "required": ["fruits"],
            "additionalProperties": False,
        },
    ),
    "nested": (
        "Describe a book as JSON: its title and its author's name and birth year.",
        {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 30},
                "author": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 24},
                        "born": {"type": "integer", "minimum": 1000, "maximum": 2025},
                    },
                    "required": ["name", "born"],
                    "additionalProperties": False,
                },
            },
            "required": ["title", "author"],
            "additionalProperties": False,
        },
    ),
    "pydantic": ("Invent a person and describe them as JSON.", Person),
}

MODES = {
    "greedy": ({}, None),
    "top_p-seed1": ({"strategy": {"type": "top_p", "temperature": 0.8, "top_p": 0.95}}, 1),
    "top_p-seed2": ({"strategy": {"type": "top_p", "temperature": 0.8, "top_p": 0.95}}, 2),
    "top_p-seed3": ({"strategy": {"type": "top_p", "temperature": 0.8, "top_p": 0.95}}, 3),
}
MAX_TOKENS = 200


def compact(text: str) -> bool:
    return not re.search(r"\s", re.sub(r'"(?:[^"\\]|\\.)*"', '""', text))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_json_schema_outputs_parse_and_validate(real_model_id, name, mode):
    question, schema = SCHEMAS[name]
    params, seed = MODES[mode]
    kw = dict(
        model_id=real_model_id,
        sampling_params={**params, "max_tokens": MAX_TOKENS},
        response_format=schema if isinstance(schema, type) else {"type": "json_schema", "json_schema": schema},
        seed=seed,
    )
    whole = complete(chat(question), **kw)
    chunks = list(complete(chat(question), stream=True, **kw))
    streamed = "".join(c.delta for c in chunks)
    json_schema = schema.model_json_schema() if isinstance(schema, type) else schema
    for text, reason in ((whole.content, whole.stop_reason), (streamed, chunks[-1].stop_reason)):
        assert reason == "end_of_turn", text
        jsonschema.validate(json.loads(text), json_schema)
        assert compact(text), text
    assert streamed == whole.content  # same seed, same tokens
    if isinstance(schema, type):
        schema.model_validate_json(whole.content)


GRAMMARS = {
    "gbnf": (
        "Is water wet? Answer yes or no, then say how sure you are in percent.",
        'root ::= ("yes" | "no") ", " [0-9]{1,2} "%"',
        r"(yes|no), [0-9]{1,2}%",
    ),
    "lark": (
        "Give a date in ISO format.",
        'start: YEAR "-" MONTH "-" DAY\nYEAR: /(19|20)[0-9]{2}/\nMONTH: /0[1-9]|1[0-2]/\nDAY: /0[1-9]|[12][0-9]|3[01]/',
        r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    ),
    "regex": (
        "Give me a US phone number.",
        r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}",
        r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}",
    ),
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("key", list(GRAMMARS))
def test_grammar_outputs_match(real_model_id, key, mode):
    question, grammar, pattern = GRAMMARS[key]
    params, seed = MODES[mode]
    kw = dict(
        model_id=real_model_id,
        sampling_params={**params, "max_tokens": 30},
        response_format={"type": "grammar", "bnf": {key: grammar}},
        seed=seed,
    )
    whole = complete(chat(question), **kw)
    assert re.fullmatch(pattern, whole.content), whole.content
    assert whole.stop_reason == "end_of_turn"
    if mode in ("greedy", "top_p-seed1"):
        streamed = "".join(c.delta for c in complete(chat(question), stream=True, **kw))
        assert streamed == whole.content


def test_forced_tokens_keep_their_raw_logprobs(real_model_id):
    r = complete(
        "The capital of France is",
        model_id=real_model_id,
        sampling_params={"max_tokens": MAX_TOKENS},
        response_format={"type": "json_schema", "json_schema": SCHEMAS["string"][1]},
        logprobs={"top_k": 3},
    )
    jsonschema.validate(json.loads(r.content), SCHEMAS["string"][1])
    first = r.logprobs[0].logprobs_by_token
    # unconstrained, the model would continue the sentence: its top alternatives are not '{'
    assert len(first) == 3 and any(not t.startswith("{") for t in first), first


def test_out_of_tokens_is_reported_and_the_text_is_a_prefix(real_model_id):
    r = complete(
        chat(SCHEMAS["nested"][0]),
        model_id=real_model_id,
        sampling_params={"max_tokens": 6},
        response_format={"type": "json_schema", "json_schema": SCHEMAS["nested"][1]},
    )
    assert r.stop_reason == "out_of_tokens"
    assert r.content.startswith('{"title":')
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)


@pytest.mark.parametrize(
    "fmt, field, needle",
    [
        ({"type": "json_schema", "json_schema": {"type": "objekt"}}, "response_format.json_schema", "objekt"),
        ({"type": "grammar", "bnf": {"gbnf": 'root ::= "a" b'}}, "response_format.bnf.gbnf", "'b' not found"),
        ({"type": "grammar", "bnf": {"lark": 'start: "a" | b'}}, "response_format.bnf.lark", "unknown name"),
        ({"type": "grammar", "bnf": {"regex": "[0-9"}}, "response_format.bnf.regex", "unclosed"),
        ({"type": "grammar", "bnf": {"peg": "x"}}, "response_format.bnf", "'gbnf', 'lark', 'regex'"),
    ],
)
def test_invalid_schema_or_grammar_is_a_400_with_detail(real_model_id, fmt, field, needle):
    with pytest.raises(BadRequest) as info:
        complete("x", model_id=real_model_id, response_format=fmt)
    assert info.value.status == 400
    assert info.value.detail.startswith(field) and needle in info.value.detail, info.value.detail
