"""The server against hostile pages and careless clients (issue 10): content types, Host and
Origin, body sizes and stalls, idle sockets, checks before the queue, the token cap, 5xx logs."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest

from nb_completion import serve
from nb_completion.engine import registry
from nb_completion.engine.local import LocalBackend
from nb_completion.server.body import MAX_BODY_BYTES, BodyReader
from nb_completion.server.connections import raise_open_file_limit
from nb_completion.server.guard import HostPolicy
from server_support import assert_error_body, sse_events

COMPLETION = "/v1/inference/completion"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tiny_model_id, ids):
    handle = serve(port=0, models=[tiny_model_id, *ids.values()], queue_size=1, max_tokens_cap=200)
    yield handle
    handle.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def body(model_id, **extra):
    return {"model_id": model_id, "content": "The capital of France is", "sampling_params": {"max_tokens": 4}, **extra}


def raw_exchange(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, return what the server answers until it closes (or ``timeout``)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received:
                head, _, rest = received.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
        return received


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def json_of(raw: bytes) -> dict:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


# ---- content type ------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}])
@pytest.mark.parametrize("path", [COMPLETION, "/v1/completions"])
def test_only_json_bodies_are_read(client, tiny_model_id, headers, path):
    payload = body(tiny_model_id) if path == COMPLETION else {"model": tiny_model_id, "prompt": "Hi", "max_tokens": 2}
    response = client.post(path, content=json.dumps(payload), headers=headers)
    assert response.status_code == 415
    assert_error_body(response.json(), 415)
    assert "application/json" in response.json()["detail"]


def test_json_with_a_charset_is_json(client, tiny_model_id):
    response = client.post(
        COMPLETION, content=json.dumps(body(tiny_model_id)), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


# ---- Host and Origin ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8321", "127.0.0.1.evil.example", "localhost.evil.example"])
def test_unknown_host_is_421(client, tiny_model_id, host):
    for method, path in (("POST", COMPLETION), ("GET", "/v1/models"), ("GET", "/v1/health")):
        response = client.request(method, path, json=body(tiny_model_id), headers={"host": host})
        assert response.status_code == 421, (host, path)
        assert_error_body(response.json(), 421)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:9", "127.0.0.1", "127.0.0.2:80", "[::1]:8321", "app.localhost"])
def test_loopback_hosts_are_served(client, tiny_model_id, host):
    assert client.post(COMPLETION, json=body(tiny_model_id), headers={"host": host}).status_code == 200


def test_host_policy():
    local = HostPolicy("127.0.0.1", ["api.example.com", ".corp.example"])
    assert local.host_allowed("api.example.com:443") and local.host_allowed("x.corp.example")
    assert not local.host_allowed("example.com") and not local.host_allowed("10.0.0.5")
    everywhere = HostPolicy("0.0.0.0")
    assert everywhere.host_allowed("10.0.0.5:8321") and everywhere.host_allowed("[fe80::1]")
    assert not everywhere.host_allowed("evil.example")  # a name can be rebound, an address cannot
    named = HostPolicy("gpu-box")
    assert named.host_allowed("gpu-box:8321") and not named.host_allowed("other-box")
    assert HostPolicy("127.0.0.1", ["*"]).host_allowed("anything.example")


def test_cross_origin_requests_are_403_and_get_no_cors_headers(client, tiny_model_id, server):
    response = client.post(COMPLETION, json=body(tiny_model_id), headers={"origin": "http://evil.example"})
    assert response.status_code == 403
    assert_error_body(response.json(), 403)
    assert not any(k.lower().startswith("access-control-") for k in response.headers)
    preflight = client.options(COMPLETION, headers={"origin": "http://evil.example", "access-control-request-method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    own = server.url
    same = client.post(COMPLETION, json=body(tiny_model_id), headers={"origin": own})
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers


def test_configured_cors_origin(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id], cors_origins=["https://app.example"])
    try:
        with httpx.Client(base_url=handle.url, timeout=60) as c:
            preflight = c.options(
                COMPLETION,
                headers={
                    "origin": "https://app.example",
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "content-type,authorization",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            ok = c.post(COMPLETION, json=body(tiny_model_id), headers={"origin": "https://app.example"})
            assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
            assert c.post(COMPLETION, json=body(tiny_model_id), headers={"origin": "https://other.example"}).status_code == 403
    finally:
        handle.stop()


def test_allowed_host_option(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id], allowed_hosts=["models.example"])
    try:
        with httpx.Client(base_url=handle.url, timeout=60) as c:
            assert c.get("/v1/health", headers={"host": "models.example:8321"}).status_code == 200
            assert c.get("/v1/health", headers={"host": "other.example"}).status_code == 421
    finally:
        handle.stop()


# ---- body size and stalls ------------------------------------------------------------------------


def test_declared_length_over_the_limit_is_413_before_reading(server):
    head = (
        f"POST {COMPLETION} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {1024**3}\r\n\r\n"
    ).encode()
    answer = raw_exchange(server.url, head)  # no body sent at all: the answer cannot wait for it
    assert status_of(answer) == 413
    assert_error_body(json_of(answer), 413)


def test_chunked_body_over_the_limit_is_413_while_streaming(client, server):
    sent = 0

    def chunks():
        nonlocal sent
        piece = b" " * 65536
        while sent <= 4 * MAX_BODY_BYTES:  # the server must stop us long before this
            sent += len(piece)
            yield piece

    try:
        response = client.post(COMPLETION, content=chunks(), headers=JSON)
        assert response.status_code == 413
        assert_error_body(response.json(), 413)
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered and closed while we were still writing
    assert sent < 2 * MAX_BODY_BYTES


def test_stalled_body_is_408(tiny_model_id, server):
    bodies = server.app.state.server.bodies
    server.app.state.server.bodies = BodyReader(idle_timeout=0.3)
    try:
        head = (
            f"POST {COMPLETION} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f'Content-Length: 100\r\n\r\n{{"model_id":'
        ).encode()
        answer = raw_exchange(server.url, head)
        assert status_of(answer) == 408
        assert_error_body(json_of(answer), 408)
    finally:
        server.app.state.server.bodies = bodies


def test_bodies_are_parsed_off_the_event_loop(client, tiny_model_id, server, monkeypatch):
    from nb_completion.server import body as body_module

    parsing, release = threading.Event(), threading.Event()
    real_parse = body_module.parse_json

    def slow_parse(raw: bytes):
        parsing.set()
        assert release.wait(30)
        return real_parse(raw)

    monkeypatch.setattr(body_module, "parse_json", slow_parse)
    result: dict = {}
    poster = threading.Thread(
        target=lambda: result.update(r=httpx.post(server.url + COMPLETION, json=body(tiny_model_id), timeout=60))
    )
    poster.start()
    try:
        assert parsing.wait(30)
        assert httpx.get(server.url + "/v1/health", timeout=5).status_code == 200  # the loop is free meanwhile
    finally:
        release.set()
        poster.join(60)
    assert result["r"].status_code == 200


# ---- idle sockets ------------------------------------------------------------------------------


def _closed_by_server(sock: socket.socket, limit: float) -> bool:
    sock.settimeout(limit)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_connections_that_send_no_headers_are_closed(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id], header_timeout=0.5)
    try:
        host, port = handle.url.removeprefix("http://").split(":")
        silent = socket.create_connection((host, int(port)))
        slow = socket.create_connection((host, int(port)))
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
        assert _closed_by_server(silent, 10) and _closed_by_server(slow, 10)
        silent.close(), slow.close()
        assert handle.app.state.connections.status()["timed_out"] >= 2
    finally:
        handle.stop()


def test_a_request_completes_with_2000_idle_connections_open(tiny_model_id):
    raise_open_file_limit()
    handle = serve(port=0, models=[tiny_model_id])
    idle: list[socket.socket] = []
    try:
        host, port = handle.url.removeprefix("http://").split(":")
        for _ in range(2000):
            idle.append(socket.create_connection((host, int(port))))
        response = httpx.post(handle.url + COMPLETION, json=body(tiny_model_id), timeout=30)
        assert response.status_code == 200 and response.json()["stop_reason"] == "out_of_tokens"
        status = handle.app.state.connections.status()
        assert status["open"] <= status["max"] and status["evicted_idle"] >= 2000 - status["max"]
    finally:
        for sock in idle:
            sock.close()
        handle.stop()


# ---- checks before the queue -----------------------------------------------------------------------


def _health(url: str) -> dict:
    return httpx.get(url + "/v1/health").json()["queue"]


def _wait_for(predicate, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"content": "word " * 400}, "content"),
        ({"sampling_params": {"max_tokens": 250}, "content": "word " * 20}, "sampling_params.max_tokens"),
        ({"response_format": {"type": "grammar", "bnf": {"gbnf": "root ::= ("}}}, "response_format.bnf.gbnf"),
        ({"response_format": {"type": "grammar", "bnf": {"regex": "a{1000000}"}}}, "response_format.bnf.regex"),
        ({"content": [{"type": "image", "image": {"url": {"uri": "https://x/y.png"}}}]}, "content"),
    ],
)
def test_tokenizer_400s_never_wait_behind_a_generation_nor_take_a_queue_place(server, tiny_model_id, ids, change, field):
    long_request = {
        "model_id": ids["slow"],
        "content": "Once",
        "stream": True,
        "sampling_params": {"max_tokens": 200},
    }  # 10 s at 50 ms a token
    with httpx.Client(base_url=server.url, timeout=60) as c, c.stream("POST", COMPLETION, json=long_request) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()  # kept: a dropped iterator would close the stream
        assert next(lines).startswith("data: ")  # generating
        for _ in range(4):  # queue_size is 1: had they been queued, the second would have been a 429
            response = c.post(COMPLETION, json={**body(tiny_model_id), **change})
            assert response.status_code == 400, response.text
            assert response.json()["detail"].startswith(field + ":"), response.json()["detail"]
        queue = _health(server.url)
        # still generating, nothing else admitted or waiting
        assert queue["busy"] and queue["running"] == 1 and queue["waiting"] == 0
        valid = c.post(COMPLETION, json=body(tiny_model_id))  # the engine still admits a valid request
        assert valid.status_code == 200


def test_regex_that_blows_up_at_the_first_token_is_400(client, tiny_model_id):
    response = client.post(
        COMPLETION, json=body(tiny_model_id, response_format={"type": "grammar", "bnf": {"regex": "a{1000000}"}}, stream=True)
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("response_format.bnf.regex:")
    fine = client.post(COMPLETION, json=body(tiny_model_id, response_format={"type": "grammar", "bnf": {"regex": "a{1000}"}}))
    assert fine.status_code == 200 and set(fine.json()["content"]) <= {"a"}


# ---- the token cap -------------------------------------------------------------------------------


def test_max_tokens_cap(client, server, tiny_model_id):
    capped = client.post(
        COMPLETION, json={"model_id": tiny_model_id, "content": "Once", "sampling_params": {"max_tokens": 0}}
    ).json()
    metrics = {m["metric"]: m["value"] for m in capped["metrics"]}
    assert capped["stop_reason"] == "out_of_tokens" and metrics["completion_tokens"] == 200  # not the 250 left in the context
    over = client.post(COMPLETION, json=body(tiny_model_id, sampling_params={"max_tokens": 201}))
    assert (
        over.status_code == 400
        and over.json()["detail"].startswith("sampling_params.max_tokens:")
        and "200" in over.json()["detail"]
    )
    openai = client.post("/v1/completions", json={"model": tiny_model_id, "prompt": "Hi", "max_tokens": None, "temperature": 0})
    assert openai.status_code == 200 and openai.json()["usage"]["completion_tokens"] <= 200
    over = client.post("/v1/completions", json={"model": tiny_model_id, "prompt": "Hi", "max_tokens": 201})
    assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"
    models = client.get("/v1/models").json()["data"]
    assert {m["metadata"]["max_tokens_cap"] for m in models} == {200}


def test_cap_leaves_room_for_the_prompt(tiny_model_id, tiny_backend):
    handle = serve(port=0, models=[tiny_model_id])  # the default cap (4096) is over the tiny context (256)
    try:
        response = httpx.post(handle.url + COMPLETION, json=body(tiny_model_id, sampling_params={"max_tokens": 0}), timeout=60)
        assert response.status_code == 200
        metrics = {m["metric"]: m["value"] for m in response.json()["metrics"]}
        assert metrics["prompt_tokens"] + metrics["completion_tokens"] <= tiny_backend.context_length
    finally:
        handle.stop()


# ---- what the server tells -----------------------------------------------------------------------


def test_models_show_no_filesystem_paths(tiny_backend, tmp_path):
    backend = LocalBackend(
        tiny_backend.model,
        tiny_backend.tokenizer,
        "tiny-from-disk",
        source=str(tmp_path / "cache" / "model"),
        dtype="float32",
        device="cpu",
    )
    backend.info.metadata["gguf"] = str(tmp_path / "model.gguf")
    registry.register(backend)
    handle = serve(port=0, models=["tiny-from-disk"])
    try:
        text = httpx.get(handle.url + "/v1/models").text
        assert str(tmp_path) not in text
        entry = json.loads(text)["data"][0]
        assert entry["provider_resource_id"] == "tiny-from-disk" and entry["metadata"]["context_length"] == 256
    finally:
        handle.stop()
        registry.unregister("tiny-from-disk")


def test_echoed_ids_and_paths_are_capped(client):
    response = client.post(COMPLETION, json={"model_id": "m" * 100_000, "content": "x"})
    assert response.status_code == 404 and len(response.content) < 2000
    response = client.get("/v1/" + "p" * 50_000)
    assert response.status_code == 404 and len(response.content) < 2000


def test_every_500_is_logged_with_its_traceback(client, ids, caplog):
    with caplog.at_level(logging.ERROR, logger="nb_completion.server"):
        assert client.post(COMPLETION, json=body(ids["fail-open"])).status_code == 500
        streamed = client.post(COMPLETION, json=body(ids["fail-stream"], stream=True))
        assert json.loads(sse_events(streamed.text)[-1])["error"]["status"] == 500
        assert client.post("/v1/completions", json={"model": ids["fail-stream"], "prompt": "x"}).status_code == 500
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = "\n".join(logging.Formatter().format(r) for r in errors)
    assert len(errors) >= 3
    assert "Traceback" in text and "secret internal state" in text and "boom at /home/user/generate.py" in text
    assert "POST /v1/inference/completion" in text and "POST /v1/completions" in text


def test_warning_when_served_to_the_network_without_a_key(tiny_model_id, caplog):
    with caplog.at_level(logging.WARNING, logger="nb_completion.server"):
        handle = serve(port=0, host="0.0.0.0", models=[tiny_model_id])
        handle.stop()
        keyed = serve(port=0, host="0.0.0.0", models=[tiny_model_id], api_key="k")
        keyed.stop()
        local = serve(port=0, models=[tiny_model_id])
        local.stop()
    warnings = [r.getMessage() for r in caplog.records if "without an API key" in r.getMessage()]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]


# ---- strict JSON over HTTP, and OpenAI's own field names -------------------------------------------


@pytest.mark.parametrize(
    "raw, field",
    [
        ('{"model_id": "%s", "content": "x", "stream": "yes"}', "stream"),
        ('{"model_id": "%s", "content": "x", "sampling_params": {"max_tokens": "10"}}', "sampling_params.max_tokens"),
        ('{"model_id": "%s", "content": "x", "sampling_params": {"max_tokens": true}}', "sampling_params.max_tokens"),
        (
            '{"model_id": "%s", "content": "x", "sampling_params": {"strategy": {"type": "top_p", "temperature": 1e400}}}',
            "sampling_params.strategy.temperature",
        ),
        (
            '{"model_id": "%s", "content": "x", "response_format": {"type": "json_schema", "json_schema": {"maximum": -1e999}}}',
            "response_format.json_schema.maximum",
        ),
        ('{"model_id": "%s", "content": "hi \\ud800"}', "content"),
        ('{"model_id": "%s", "content": [{"type": "text", "text": "\\udc00"}]}', "content[0].text"),
    ],
)
def test_strict_json_over_http(client, tiny_model_id, raw, field):
    response = client.post(COMPLETION, content=(raw % tiny_model_id).encode(), headers=JSON)
    assert response.status_code == 400, response.text
    assert_error_body(response.json(), 400)
    assert response.json()["detail"].startswith(field + ":"), response.json()["detail"]


@pytest.mark.parametrize(
    "change, param",
    [
        ({"guided_json": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}, "guided_json"),
        ({"guided_json": {"type": "string", "maxLength": -1}}, "guided_json"),
        ({"guided_regex": "("}, "guided_regex"),
        ({"guided_regex": "a{1000000}"}, "guided_regex"),
        ({"guided_grammar": "root ::= ("}, "guided_grammar"),
        ({"max_tokens": 300}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"prompt": "word " * 400}, "prompt"),
        ({"prompt": "x\ud800"}, "prompt"),
        ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": 1e-300}, "repetition_penalty"),
        ({"seed": 2**70}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"temperature": 1e400}, "temperature"),
        ({"top_k": 5, "temperature": 0.5}, "top_k"),
    ],
)
def test_openai_errors_name_openai_fields(client, tiny_model_id, change, param):
    request = {"model": tiny_model_id, "prompt": "Hello", "max_tokens": 4, **change}
    raw = json.dumps(request, allow_nan=True).replace("Infinity", "1e999")
    response = client.post("/v1/completions", content=raw.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    result = response.json()
    assert result["detail"].startswith(param), result["detail"]
    assert result["error"]["param"].startswith(param)
    assert "response_format" not in result["detail"] and "sampling_params" not in result["detail"]


def test_openai_tiny_temperature_is_greedy(client, tiny_model_id):
    request = {"model": tiny_model_id, "prompt": "The capital", "max_tokens": 6, "seed": 1}
    greedy = client.post("/v1/completions", json={**request, "temperature": 0}).json()["choices"][0]["text"]
    cold = client.post("/v1/completions", json={**request, "temperature": 1e-40}).json()["choices"][0]["text"]
    assert cold == greedy
