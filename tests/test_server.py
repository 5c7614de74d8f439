"""HTTP routes over the real tiny engine: shapes, SSE framing, every error status and body."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from nb_completion import serve
from nb_completion.server.openapi import build_openapi
from server_support import (
    CHUNK_SCHEMA,
    PACKAGE_OPERATION,
    RESPONSE_SCHEMA,
    assert_error_body,
    is_compact_json,
    sse_events,
)

COMPLETION = "/v1/inference/completion"


@pytest.fixture(scope="module")
def server(tiny_model_id, ids):
    handle = serve(port=0, models=[tiny_model_id, *ids.values()], queue_size=4)
    yield handle
    handle.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def body(model_id, **extra):
    return {"model_id": model_id, "content": "The capital of France is", "sampling_params": {"max_tokens": 12}, **extra}


# ---- routes ------------------------------------------------------------------------------------


def test_serve_binds_localhost_and_stops(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id])
    assert handle.url.startswith("http://127.0.0.1:")
    assert httpx.get(handle.url + "/v1/health").json()["status"] == "OK"
    handle.stop()
    assert not handle.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "/v1/health", timeout=2)


def test_health(client):
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "OK"


def test_models_lists_served_models_in_llama_stack_shape(client, tiny_model_id, ids):
    data = client.get("/v1/models").json()["data"]
    assert [m["identifier"] for m in data] == [tiny_model_id, *ids.values()]
    for model in data:
        assert {"identifier", "provider_resource_id", "provider_id", "type", "metadata", "model_type"} <= set(model)
        assert model["type"] == "model" and model["model_type"] == "llm"
    tiny = data[0]
    assert tiny["metadata"]["context_length"] == 256
    # what its engine's decode passes run (the tests keep compiling off: conftest)
    assert tiny["metadata"]["decode_pass"] in ("not started", "lean")


def test_openapi_completion_operation_is_the_published_one(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    operation = doc["paths"][COMPLETION]["post"]
    published = json.loads(PACKAGE_OPERATION.read_text())
    for key in ("requestBody", "responses", "parameters", "description", "tags", "security"):
        assert operation[key] == published[key], key
    assert set(operation) <= set(published)
    assert {"/v1/models", "/v1/health", "/v1/completions"} <= set(doc["paths"])
    assert doc == build_openapi()


def test_completion_json_matches_spec_and_stream(client, tiny_model_id):
    response = client.post(COMPLETION, json=body(tiny_model_id, logprobs={"top_k": 3}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    result = response.json()
    jsonschema.validate(result, RESPONSE_SCHEMA)
    assert result["stop_reason"] == "out_of_tokens"
    metrics = {m["metric"]: m["value"] for m in result["metrics"]}
    assert metrics["completion_tokens"] == 12 == len(result["logprobs"])
    assert metrics["total_tokens"] == metrics["prompt_tokens"] + 12
    assert all(1 <= len(lp["logprobs_by_token"]) <= 3 for lp in result["logprobs"])

    streamed = client.post(COMPLETION, json=body(tiny_model_id, stream=True, logprobs={"top_k": 3}))
    chunks = [json.loads(e) for e in sse_events(streamed.text)]
    assert "".join(c["delta"] for c in chunks) == result["content"]  # greedy: same text
    assert [lp for c in chunks for lp in c.get("logprobs", [])] == result["logprobs"]


def test_sse_framing(client, tiny_model_id):
    response = client.post(COMPLETION, json=body(tiny_model_id, stream=True, logprobs={"top_k": 0}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.text
    assert "event:" not in raw and "[DONE]" not in raw
    payloads = sse_events(raw)
    assert all(is_compact_json(p) for p in payloads)
    chunks = [json.loads(p) for p in payloads]
    for chunk in chunks:
        jsonschema.validate(chunk, CHUNK_SCHEMA)
    *middle, last = chunks
    assert last["delta"] == "" and last["stop_reason"] == "out_of_tokens"
    assert {m["metric"] for m in last["metrics"]} >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert all("stop_reason" not in c and "metrics" not in c for c in middle)
    # one TokenLogProbs per generated token, each the chosen token alone (top_k 0)
    entries = [lp for c in middle for lp in c["logprobs"]]
    assert len(entries) == 12 and all(len(e["logprobs_by_token"]) == 1 for e in entries)


def test_stop_string_never_in_output(client, tiny_model_id):
    full = client.post(COMPLETION, json=body(tiny_model_id, sampling_params={"max_tokens": 30})).json()["content"]
    stop = full[5:8]
    assert stop
    for stream in (False, True):
        request = body(tiny_model_id, sampling_params={"max_tokens": 30, "stop": [stop]}, stream=stream)
        response = client.post(COMPLETION, json=request)
        if stream:
            chunks = [json.loads(e) for e in sse_events(response.text)]
            text, reason = "".join(c["delta"] for c in chunks), chunks[-1]["stop_reason"]
        else:
            text, reason = response.json()["content"], response.json()["stop_reason"]
        assert stop not in text and full.startswith(text) and reason == "end_of_turn"


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"{not json", "malformed JSON"),
        (b"", "empty body"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"model_id": "m", "content": "x", "temperature": NaN}', "malformed JSON"),
    ],
)
def test_malformed_body_is_400(client, raw, field):
    response = client.post(COMPLETION, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert_error_body(response.json(), 400)
    assert field in response.json()["detail"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"surprise": 1}, "surprise"),
        ({"sampling_params": {"max_tokens": -1}}, "sampling_params.max_tokens"),
        ({"sampling_params": {"strategy": {"type": "top_p", "temperature": 0}}}, "sampling_params.strategy.temperature"),
        ({"sampling_params": {"stop": ["a", "b", "c", "d", "e"]}}, "sampling_params.stop"),
        ({"logprobs": {"top_k": 21}}, "logprobs.top_k"),
        ({"response_format": {"type": "grammar", "bnf": {"peg": "x"}}}, "response_format.bnf"),
        ({"content": 5}, "content"),
    ],
)
def test_invalid_request_is_400_naming_the_field(client, tiny_model_id, change, field):
    response = client.post(COMPLETION, json={**body(tiny_model_id), **change})
    assert response.status_code == 400
    assert_error_body(response.json(), 400)
    assert field in response.json()["detail"]


def test_prompt_over_context_is_400_before_streaming(client, tiny_model_id):
    request = body(tiny_model_id, content="word " * 400, stream=True)
    response = client.post(COMPLETION, json=request)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert_error_body(response.json(), 400)


def test_unknown_model_is_404_listing_ids(client, tiny_model_id):
    response = client.post(COMPLETION, json=body("no-such-model", stream=True))
    assert response.status_code == 404
    assert_error_body(response.json(), 404)
    assert "no-such-model" in response.json()["detail"] and tiny_model_id in response.json()["detail"]


def test_unknown_route_and_method(client):
    assert_error_body(client.get("/v1/nothing").json(), 404)
    response = client.get(COMPLETION)
    assert response.status_code == 405
    assert_error_body(response.json(), 405)


def test_engine_failure_is_500_without_trace(client, ids):
    response = client.post(COMPLETION, json=body(ids["fail-open"]))
    assert response.status_code == 500
    assert_error_body(response.json(), 500)
    assert "secret" not in response.text and "/home/" not in response.text


def test_failure_mid_stream_is_a_last_error_event(client, ids):
    response = client.post(COMPLETION, json=body(ids["fail-stream"], stream=True))
    assert response.status_code == 200
    first, last = [json.loads(e) for e in sse_events(response.text)]
    assert first == {"delta": "partial"}
    assert set(last) == {"error"}
    assert_error_body(last["error"], 500)
    assert "boom" not in response.text
    # non-streamed, the same failure is a 500 status
    response = client.post(COMPLETION, json=body(ids["fail-stream"]))
    assert response.status_code == 500
    assert_error_body(response.json(), 500)


def test_server_keeps_working_after_errors(client, tiny_model_id):
    for raw in (b"{", b"null", b'{"model_id": 3}'):
        assert client.post(COMPLETION, content=raw, headers={"content-type": "application/json"}).status_code == 400
    assert client.post(COMPLETION, json=body(tiny_model_id)).status_code == 200


def test_api_key_401(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id], api_key="s3cret")
    try:
        with httpx.Client(base_url=handle.url, timeout=60) as c:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                for method, path in (("POST", COMPLETION), ("GET", "/v1/models"), ("POST", "/v1/completions")):
                    response = c.request(method, path, json=body(tiny_model_id), headers=headers)
                    assert response.status_code == 401, (path, headers)
                    assert_error_body(response.json(), 401)
                    assert response.headers["www-authenticate"] == "Bearer"
            ok = c.post(COMPLETION, json=body(tiny_model_id), headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200
            assert c.get("/v1/health").status_code == 200  # health checks need no key
    finally:
        handle.stop()


# ---- OpenAI-compatible route ---------------------------------------------------------------


def test_openai_completions_shapes(client, tiny_model_id):
    greedy = client.post(COMPLETION, json=body(tiny_model_id, logprobs={"top_k": 2})).json()
    response = client.post(
        "/v1/completions",
        json={
            "model": tiny_model_id,
            "prompt": "The capital of France is",
            "max_tokens": 12,
            "temperature": 0,
            "logprobs": 2,
        },
    )
    assert response.status_code == 200
    result = response.json()
    assert result["object"] == "text_completion" and result["model"] == tiny_model_id
    choice = result["choices"][0]
    assert choice["text"] == greedy["content"]  # temperature 0 is greedy
    assert choice["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 12
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 12
    assert [dict(sorted(t.items())) for t in lp["top_logprobs"]] == [
        dict(sorted(g["logprobs_by_token"].items())) for g in greedy["logprobs"]
    ]
    assert all(isinstance(x, float) for x in lp["token_logprobs"])


def test_openai_echo_returns_the_prompt_tokens_logprobs(client, tiny_model_id):
    import nb_completion

    prompt = "The capital of France is"
    scored = nb_completion.score(prompt, model_id=tiny_model_id)
    n = len(scored.tokens)
    only = client.post(
        "/v1/completions", json={"model": tiny_model_id, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2}
    ).json()
    choice = only["choices"][0]
    assert choice["text"] == prompt and only["usage"]["completion_tokens"] == 0
    lp = choice["logprobs"]
    assert lp["tokens"] == [t.text for t in scored.tokens]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx([t.logprob for t in scored.tokens[1:]], abs=1e-6)
    assert lp["text_offset"][:3] == [0, len(scored.tokens[0].text), len(scored.tokens[0].text) + len(scored.tokens[1].text)]
    plain = client.post(
        "/v1/completions", json={"model": tiny_model_id, "prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 1}
    ).json()
    both = client.post(
        "/v1/completions",
        json={
            "model": tiny_model_id,
            "prompt": prompt,
            "max_tokens": 4,
            "temperature": 0,
            "logprobs": 1,
            "echo": True,
        },
    ).json()
    choice = both["choices"][0]
    assert choice["text"] == prompt + plain["choices"][0]["text"]
    assert len(choice["logprobs"]["tokens"]) == n + 4
    assert choice["logprobs"]["token_logprobs"][n:] == plain["choices"][0]["logprobs"]["token_logprobs"]
    assert choice["logprobs"]["text_offset"][n] == len(prompt)
    stream = client.post(
        "/v1/completions",
        json={
            "model": tiny_model_id,
            "prompt": prompt,
            "max_tokens": 4,
            "temperature": 0,
            "echo": True,
            "stream": True,
        },
    )
    chunks = [json.loads(p) for p in sse_events(stream.text)[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]


def test_openai_stream_ends_with_done(client, tiny_model_id):
    response = client.post(
        "/v1/completions",
        json={
            "model": tiny_model_id,
            "prompt": "Once upon",
            "max_tokens": 5,
            "stream": True,
            "temperature": 0,
            "stream_options": {"include_usage": True},
        },
    )
    payloads = sse_events(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "text_completion" for c in chunks)


@pytest.mark.parametrize(
    "change, status, param",
    [
        ({"temperature": -1}, 400, "temperature"),
        ({"top_p": 0}, 400, "top_p"),
        ({"logprobs": 50}, 400, "logprobs"),
        ({"n": 17}, 400, "n"),
        ({"echo": "yes"}, 400, "echo"),
        ({"frobnicate": True}, 400, "frobnicate"),
        ({"model": "nope"}, 404, None),
    ],
)
def test_openai_errors_carry_both_shapes(client, tiny_model_id, change, status, param):
    response = client.post("/v1/completions", json={"model": tiny_model_id, "prompt": "x", **change})
    assert response.status_code == status
    result = response.json()
    assert_error_body(result, status)
    assert result["error"]["message"] == result["detail"]
    if param:
        assert param in result["detail"]


@pytest.mark.slow
def test_serve_from_a_notebook_kernel():
    """``serve()`` in a kernel: the server answers while the kernel keeps executing cells."""
    import nbformat
    from nbclient import NotebookClient

    cells = [
        "from nb_completion.engine.tiny import register_tiny_model\n"
        "import nb_completion, httpx\n"
        "model_id = register_tiny_model().info.identifier\n"
        "server = nb_completion.serve(port=0, models=[model_id])",
        "r = httpx.post(server.url + '/v1/inference/completion', json={'model_id': model_id, 'content': 'Hi', "
        "'sampling_params': {'max_tokens': 4}}, timeout=60)\n"
        "assert r.status_code == 200 and r.json()['stop_reason'] == 'out_of_tokens', r.text\n"
        "print('served', server.url)",
        "server.stop()\nassert not server.running\nprint('stopped')",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=180, kernel_name="python3").execute()
    outputs = ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells]
    assert outputs[1].startswith("served http://127.0.0.1:") and outputs[2].strip() == "stopped"
