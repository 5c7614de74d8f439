"""Our pydantic types against the contract (the spec files vendored in nb_completion/server/spec):
same properties, required fields, enums and defaults."""

import json
from pathlib import Path

import pytest

from nb_completion.api import types

SPEC = Path(types.__file__).resolve().parents[1] / "server" / "spec"  # in the repo, with its provenance

# Where the spec README deliberately loosens the published schema.
ALLOWED_REQUIRED_DIFFERENCES = {("SamplingParams", "strategy")}


def load(name):
    return json.loads((SPEC / name).read_text())


def resolve(schema, defs):
    while "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    if "anyOf" in schema:  # Optional[X] -> X
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(resolve(branches[0], defs))
            return merged
    return schema


def union_branches(schema):
    return schema.get("oneOf") or schema.get("anyOf") or []


def compare(ours, spec, defs, path, problems):
    ours = resolve(ours, defs)
    if union_branches(spec):
        spec_titles = sorted(b.get("title", b.get("type", "?")) for b in union_branches(spec))
        our_branches = [resolve(b, defs) for b in union_branches(ours)]
        our_titles = sorted(b.get("title", b.get("type", "?")) for b in our_branches)
        if spec_titles != our_titles:
            problems.append(f"{path}: union {our_titles} != {spec_titles}")
            return
        for sb in union_branches(spec):
            title = sb.get("title", sb.get("type"))
            ob = next(b for b in our_branches if b.get("title", b.get("type")) == title)
            compare(ob, sb, defs, f"{path}<{title}>", problems)
        return
    if "properties" in spec:
        theirs, mine = spec["properties"], ours.get("properties", {})
        if set(theirs) != set(mine):
            problems.append(f"{path}: properties {sorted(mine)} != {sorted(theirs)}")
        title = spec.get("title", path)
        for name in set(spec.get("required", [])) ^ set(ours.get("required", [])):
            if (title, name) not in ALLOWED_REQUIRED_DIFFERENCES:
                problems.append(f"{path}: required differs on {name!r}")
        if spec.get("additionalProperties") is False and ours.get("additionalProperties") is not False:
            problems.append(f"{path}: must forbid additional properties")
        for name in set(theirs) & set(mine):
            compare(mine[name], theirs[name], defs, f"{path}.{name}", problems)
        return
    for key in ("enum", "const", "default"):
        if key in spec:
            value = ours.get(key)
            if key == "enum" and value is None and "const" in ours:
                continue
            if value != spec[key]:
                problems.append(f"{path}: {key} {value!r} != {spec[key]!r}")
    if spec.get("type") == "array" and "items" in spec:
        compare(ours.get("items", {}), spec["items"], defs, f"{path}[]", problems)


def check(model, spec_schema):
    ours = model.model_json_schema(ref_template="#/$defs/{model}")
    problems: list[str] = []
    compare(ours, spec_schema, ours.get("$defs", {}), model.__name__, problems)
    assert not problems, "\n".join(problems)


def test_request_matches_spec():
    check(types.CompletionRequest, load("completion-request.schema.json"))


def response_schema(status, media="application/json"):
    return load("completion-responses.json")[status]["content"][media]["schema"]


def test_response_matches_spec():
    check(types.CompletionResponse, response_schema("200"))


def test_stream_chunk_matches_spec():
    check(types.CompletionResponseStreamChunk, response_schema("200", "text/event-stream"))


@pytest.mark.parametrize("status", ["400", "429", "500", "default"])
def test_error_matches_spec(status):
    check(types.Error, response_schema(status))


def test_operation_request_body_is_the_request_schema():
    op = load("completion-operation.json")
    assert op["requestBody"]["content"]["application/json"]["schema"] == load("completion-request.schema.json")
    assert op["responses"] == load("completion-responses.json")


def test_spec_files_are_vendored_with_their_provenance():
    names = {p.name for p in SPEC.iterdir()}
    assert {"completion-operation.json", "completion-request.schema.json", "completion-responses.json", "README.md"} <= names
    assert "Provenance" in (SPEC / "README.md").read_text()


def test_stop_reason_enum():
    assert [r.value for r in types.StopReason] == response_schema("200")["properties"]["stop_reason"]["enum"]


def test_strategy_defaults_to_greedy_when_absent():
    params = types.SamplingParams.model_validate({"max_tokens": 60})
    assert params.strategy.type == "greedy"
