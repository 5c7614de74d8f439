"""Structured output through the engine, on the tiny random Llama (fast, no weights): a model that
knows nothing of JSON still produces valid JSON when the grammar mask is on."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from nb_completion import complete
from nb_completion.api.errors import BadRequest, CompletionError
from nb_completion.service import build_request, open_events
from nb_completion.engine.records import Delta, Finished

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "n": {"type": "integer", "minimum": 0, "maximum": 999},
        "kind": {"enum": ["a", "b"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
    },
    "required": ["name", "n", "kind", "tags"],
    "additionalProperties": False,
}
FMT = {"type": "json_schema", "json_schema": SCHEMA}
TOP_P = {"strategy": {"type": "top_p", "temperature": 1.0, "top_p": 0.95}, "max_tokens": 120}


def events(model_id, **kw):
    request = build_request(kw.pop("content", "x"), model_id=model_id, **kw)
    out = list(open_events(request, seed=kw.get("seed")))
    records = [t for e in out if isinstance(e, Delta) for t in e.tokens]
    text = "".join(e.text for e in out if isinstance(e, Delta))
    return text, records, out[-1]


def is_compact(text):
    return not re.search(r"\s", re.sub(r'"(?:[^"\\]|\\.)*"', '""', text))


@pytest.mark.parametrize("sampling", [{"max_tokens": 120}, TOP_P], ids=["greedy", "top_p"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_random_model_gives_valid_compact_json(tiny_model_id, sampling, seed):
    r = complete("Data:", model_id=tiny_model_id, sampling_params=sampling, response_format=FMT, seed=seed)
    assert r.stop_reason == "end_of_turn", r.content
    jsonschema.validate(json.loads(r.content), SCHEMA)
    assert is_compact(r.content), r.content


def test_streamed_output_equals_the_response(tiny_model_id):
    kw = dict(model_id=tiny_model_id, sampling_params=TOP_P, response_format=FMT, seed=7)
    whole = complete("Data:", **kw)
    chunks = list(complete("Data:", stream=True, **kw))
    assert "".join(c.delta for c in chunks) == whole.content
    assert chunks[-1].stop_reason == "end_of_turn"
    jsonschema.validate(json.loads(whole.content), SCHEMA)


def test_forced_tokens_are_marked_and_logprobs_stay_raw(tiny_model_id):
    text, records, finished = events(tiny_model_id, sampling_params={"max_tokens": 120}, response_format=FMT)
    assert isinstance(finished, Finished) and finished.stop_reason == "end_of_turn"
    assert "".join(r.text for r in records) == text
    forced = [r for r in records if r.forced]
    assert forced and records[0].forced  # '{' then '"name":"' are the only choices
    assert not all(r.forced for r in records)
    # the random model does not like JSON: some chosen tokens were not its own first choice,
    # and their logprobs are those of the raw distribution (below the best alternative)
    unlikely = [r for r in records if r.rank > 1]
    assert unlikely
    for r in unlikely:
        assert r.logprob < r.top[0][1]


def test_out_of_tokens_leaves_a_valid_prefix(tiny_model_id):
    r = complete("Data:", model_id=tiny_model_id, sampling_params={"max_tokens": 3}, response_format=FMT)
    assert r.stop_reason == "out_of_tokens"
    assert r.content and ('{"name":"'.startswith(r.content) or r.content.startswith('{"name":"'))
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)


@pytest.mark.parametrize(
    "bnf, pattern",
    [
        ({"gbnf": 'root ::= ("yes" | "no") " " [0-9]{1,2}'}, r"(yes|no) [0-9]{1,2}"),
        ({"lark": 'start: WORD ("-" WORD){0,2}\nWORD: /[a-z]{1,5}/'}, r"[a-z]{1,5}(-[a-z]{1,5}){0,2}"),
        ({"regex": r"[A-Z][a-z]{2,6} [0-9]{4}"}, r"[A-Z][a-z]{2,6} [0-9]{4}"),
    ],
    ids=["gbnf", "lark", "regex"],
)
def test_grammars_hold_on_a_random_model(tiny_model_id, bnf, pattern):
    for seed in (1, 2, 3):
        r = complete(
            "x", model_id=tiny_model_id, sampling_params=TOP_P, response_format={"type": "grammar", "bnf": bnf}, seed=seed
        )
        assert re.fullmatch(pattern, r.content), (bnf, r.content)
        assert r.stop_reason == "end_of_turn"


@pytest.mark.parametrize(
    "fmt, field, needle",
    [
        (
            {"type": "json_schema", "json_schema": {"type": "integer", "minimum": "zero"}},
            "response_format.json_schema",
            "minimum",
        ),
        ({"type": "grammar", "bnf": {"lark": "start: missing_rule"}}, "response_format.bnf.lark", "missing_rule"),
        ({"type": "grammar", "bnf": {"gbnf": "root ::= [a-"}}, "response_format.bnf.gbnf", "GBNF"),
        ({"type": "grammar", "bnf": {"regex": "(a|b"}}, "response_format.bnf.regex", "unclosed group"),
        ({"type": "grammar", "bnf": {"ebnf": "x"}}, "response_format.bnf", "'gbnf', 'lark', 'regex'"),
        ({"type": "grammar", "bnf": {"gbnf": "a", "lark": "b"}}, "response_format.bnf", "exactly one"),
    ],
)
def test_bad_schema_or_grammar_is_a_400_before_streaming(tiny_model_id, fmt, field, needle):
    with pytest.raises(BadRequest) as info:
        complete("x", model_id=tiny_model_id, response_format=fmt, stream=True)
    err = info.value.error
    assert err.status == 400 and err.detail.startswith(field) and needle in err.detail, err.detail
    # the engine keeps working afterwards
    assert complete("x", model_id=tiny_model_id, sampling_params={"max_tokens": 2}).content is not None


def test_http_answers_a_bad_grammar_with_the_error_body(tiny_model_id):
    from starlette.testclient import TestClient

    from nb_completion.server import create_app

    with TestClient(create_app(), base_url="http://localhost") as client:  # the Host guard answers loopback names
        body = {"model_id": tiny_model_id, "content": "x", "response_format": {"type": "grammar", "bnf": {"regex": "[0-"}}}
        for stream in (False, True):
            resp = client.post("/v1/inference/completion", json={**body, "stream": stream})
            assert resp.status_code == 400
            err = resp.json()
            assert err["status"] == 400 and err["title"] == "Bad Request"
            assert err["detail"].startswith("response_format.bnf.regex") and "unclosed character class" in err["detail"]
        ok = client.post(
            "/v1/inference/completion",
            json={**body, "response_format": FMT, "sampling_params": {"max_tokens": 120}},
        )
        assert ok.status_code == 200
        jsonschema.validate(json.loads(ok.json()["content"]), SCHEMA)


def test_a_pydantic_model_class_is_a_schema(tiny_model_id):
    from pydantic import BaseModel, Field

    class Item(BaseModel):
        label: str = Field(max_length=6)
        count: int = Field(ge=0, le=50)

    r = complete("x", model_id=tiny_model_id, sampling_params={"max_tokens": 60}, response_format=Item)
    assert r.stop_reason == "end_of_turn"
    Item.model_validate_json(r.content)
    r = complete(
        "x",
        model_id=tiny_model_id,
        sampling_params={"max_tokens": 60},
        response_format={"type": "json_schema", "json_schema": Item},
    )
    Item.model_validate_json(r.content)


def test_completion_error_is_the_spec_error(tiny_model_id):
    with pytest.raises(CompletionError) as info:
        complete("x", model_id=tiny_model_id, response_format={"type": "json_schema", "json_schema": {"$ref": "#/nowhere"}})
    assert info.value.error.model_dump(exclude_none=True).keys() == {"status", "title", "detail"}


# ---- the CLI flags -------------------------------------------------------------------------


def test_cli_json_schema_file_and_inline(tiny_model_id, tmp_path, capsys):
    from nb_completion.cli import main

    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    for value in (str(path), json.dumps(SCHEMA)):
        assert main(["complete", "Data:", "--model", tiny_model_id, "--json-schema", value, "-n", "120", "--no-stream"]) == 0
        jsonschema.validate(json.loads(capsys.readouterr().out), SCHEMA)


def test_cli_grammar_syntax_from_extension_or_flag(tiny_model_id, tmp_path, capsys):
    from nb_completion.cli import main

    regex = tmp_path / "code.regex"
    regex.write_text(r"[A-Z]{3}-[0-9]{2}")
    assert main(["complete", "x", "--model", tiny_model_id, "--grammar", str(regex), "-n", "20", "--no-stream"]) == 0
    assert re.fullmatch(r"[A-Z]{3}-[0-9]{2}", capsys.readouterr().out.strip())
    gbnf = tmp_path / "answer.txt"
    gbnf.write_text('root ::= "yes" | "no"')
    args = ["complete", "x", "--model", tiny_model_id, "--grammar", str(gbnf), "-n", "20", "--no-stream"]
    assert main(args) == 2  # no extension to go by
    assert "--grammar-syntax" in capsys.readouterr().err
    assert main([*args, "--grammar-syntax", "gbnf"]) == 0
    assert capsys.readouterr().out.strip() in ("yes", "no")


def test_cli_bad_schema_prints_the_error_body(tiny_model_id, capsys):
    from nb_completion.cli import main

    args = ["complete", "x", "--model", tiny_model_id, "--json-schema", '{"type": "objekt"}', "--json"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "400" in captured.err and "response_format.json_schema" in captured.err
    body = json.loads(captured.out)
    assert body["status"] == 400 and "objekt" in body["detail"]


def test_a_grammar_complete_from_the_start_gives_empty_output(tiny_model_id):
    r = complete(
        "x", model_id=tiny_model_id, sampling_params={"max_tokens": 5}, response_format={"type": "grammar", "bnf": {"regex": ""}}
    )
    assert r.content == "" and r.stop_reason == "end_of_turn"


def test_stop_strings_still_cut_constrained_output(tiny_model_id):
    r = complete("x", model_id=tiny_model_id, sampling_params={"max_tokens": 120, "stop": ['"n"']}, response_format=FMT)
    assert r.stop_reason == "end_of_turn"
    assert r.content.startswith('{"name":"') and '"n"' not in r.content
