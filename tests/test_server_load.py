"""The server under pressure: generated malformed requests, a full queue, dropped clients."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nb_completion import serve
from nb_completion.engine import registry
from server_support import assert_error_body, sse_events

COMPLETION = "/v1/inference/completion"


# ---- generated malformed requests -------------------------------------------------------------

_KNOWN = {"model_id", "content", "sampling_params", "response_format", "stream", "logprobs",
          "strategy", "max_tokens", "repetition_penalty", "stop", "type", "temperature", "top_p", "top_k"}
_not_str = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                     st.lists(st.integers(), max_size=2), st.none())
_not_int = st.one_of(st.text(alphabet="abcxyz", min_size=1), st.floats(allow_nan=False).filter(lambda f: f != int(f) if f == f and abs(f) < 1e15 else True),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_not_bool = st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                      st.text(alphabet="xyz", min_size=2), st.floats(min_value=2, max_value=1e6))
_not_obj = st.one_of(st.integers(), st.text(), st.lists(st.integers(), max_size=3), st.booleans())
_unknown_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(lambda n: n not in _KNOWN)


def _mutations(model_id: str):
    base = {"model_id": model_id, "content": "Hello", "sampling_params": {"max_tokens": 2}}

    def with_(**kw):
        return {**base, **kw}

    def params(**kw):
        return with_(sampling_params={"max_tokens": 2, **kw})

    return st.one_of(
        st.sampled_from(["model_id", "content"]).map(lambda k: {x: v for x, v in base.items() if x != k}),
        st.tuples(_unknown_name, st.integers()).map(lambda kv: with_(**{kv[0]: kv[1]})),
        st.tuples(_unknown_name, st.integers()).map(lambda kv: params(**{kv[0]: kv[1]})),
        st.tuples(_unknown_name, st.integers()).map(lambda kv: with_(logprobs={"top_k": 1, kv[0]: kv[1]})),
        _not_str.map(lambda v: with_(model_id=v)),
        st.one_of(st.integers(), st.booleans(), st.dictionaries(st.sampled_from(["kind", "txt"]), st.text(max_size=3), min_size=1),
                  st.lists(st.integers(), min_size=1, max_size=3)).map(lambda v: with_(content=v)),
        _not_bool.map(lambda v: with_(stream=v)),
        _not_obj.map(lambda v: with_(sampling_params=v)),
        _not_obj.map(lambda v: with_(logprobs=v)),
        _not_int.map(lambda v: params(max_tokens=v)),
        st.integers(max_value=-1).map(lambda v: params(max_tokens=v)),
        st.one_of(st.integers(max_value=-1), st.integers(min_value=21)).map(lambda v: with_(logprobs={"top_k": v})),
        st.floats(max_value=0, allow_nan=False, allow_infinity=False).map(lambda t: params(strategy={"type": "top_p", "temperature": t})),
        st.one_of(st.floats(max_value=0, allow_nan=False, allow_infinity=False), st.floats(min_value=1.0001, max_value=1e9))
        .map(lambda p: params(strategy={"type": "top_p", "top_p": p})),
        st.integers(max_value=0).map(lambda k: params(strategy={"type": "top_k", "top_k": k})),
        st.text(alphabet="abcdefgh_", min_size=1, max_size=10).filter(lambda t: t not in {"greedy", "top_p", "top_k"})
        .map(lambda t: params(strategy={"type": t})),
        st.floats(max_value=0, allow_nan=False, allow_infinity=False).map(lambda r: params(repetition_penalty=r)),
        st.lists(st.text(min_size=1, max_size=3), min_size=5, max_size=8).map(lambda s: params(stop=s)),
        st.text(alphabet="abcdefgh", min_size=1, max_size=8).map(lambda t: with_(response_format={"type": t, "json_schema": {}})),
        st.dictionaries(st.sampled_from(["peg", "ebnf", "gbnf", "regex"]), st.just("x"), min_size=2, max_size=3)
        .map(lambda b: with_(response_format={"type": "grammar", "bnf": b})),
        st.text(alphabet="abcxyz-", min_size=1, max_size=10).map(lambda m: with_(model_id="unknown-" + m)),
    ).map(lambda b: json.dumps(b).encode())


_broken_json = st.one_of(
    st.just(b"{"), st.just(b'{"model_id": }'), st.just(b"\xff\xfe\x00"),
    st.text(max_size=20).map(lambda t: ("{" + t).encode()),
    st.binary(min_size=1, max_size=20).filter(lambda b: not _parses(b)),
    st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3), st.none()).map(lambda v: json.dumps(v).encode()),
)


def _parses(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


def test_generated_malformed_requests_all_get_an_error_body(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id], queue_size=2)
    seen: list[int] = []
    try:
        with httpx.Client(base_url=handle.url, timeout=30) as client:

            @settings(max_examples=260, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
            @given(raw=st.one_of(_mutations(tiny_model_id), _broken_json))
            def check(raw: bytes) -> None:
                response = client.post(COMPLETION, content=raw, headers={"content-type": "application/json"})
                assert 400 <= response.status_code < 500, (raw, response.status_code, response.text)
                assert_error_body(response.json(), response.status_code)
                seen.append(response.status_code)

            check()
            assert len(seen) >= 200
            assert set(seen) <= {400, 404}
            good = client.post(COMPLETION, json={"model_id": tiny_model_id, "content": "Hi", "sampling_params": {"max_tokens": 3}})
            assert good.status_code == 200 and good.json()["stop_reason"] == "out_of_tokens"
    finally:
        handle.stop()


# ---- a full queue -------------------------------------------------------------------------------


def test_16_concurrent_streams_complete_or_get_429(ids):
    queue_size = 2
    handle = serve(port=0, models=[ids["slow"]], queue_size=queue_size)
    request = {"model_id": ids["slow"], "content": "Once upon a time", "stream": True, "sampling_params": {"max_tokens": 12}}

    def one(_: int) -> tuple[int, object]:
        with httpx.Client(base_url=handle.url, timeout=httpx.Timeout(60)) as client:
            response = client.post(COMPLETION, json=request)
            if response.status_code == 200:
                chunks = [json.loads(e) for e in sse_events(response.text)]
                return 200, chunks[-1]
            return response.status_code, (response.headers.get("retry-after"), response.json())

    try:
        start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(16)))
        assert time.monotonic() - start < 60
        statuses = [s for s, _ in results]
        assert len(results) == 16 and set(statuses) <= {200, 429}
        completed = [r for s, r in results if s == 200]
        assert len(completed) >= queue_size + 1 and statuses.count(429) >= 1
        for last in completed:
            assert last["stop_reason"] == "out_of_tokens"
            assert {m["metric"]: m["value"] for m in last["metrics"]}["completion_tokens"] == 12
        for status, (retry_after, error) in ((s, r) for s, r in results if s == 429):
            assert int(retry_after) >= 1
            assert_error_body(error, 429)
        health = httpx.get(handle.url + "/v1/health").json()["queue"]
        assert health["busy"] is False and health["waiting"] == 0
    finally:
        handle.stop()


# ---- dropped clients --------------------------------------------------------------------------


def _drop_mid_stream(url: str, request: dict) -> None:
    """Open a stream, read its first event, then close the socket without reading more."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(request).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST {COMPLETION} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
    )
    received = b""
    while b"data: " not in received:
        received += sock.recv(4096)
    assert b" 200 " in received.split(b"\r\n", 1)[0]
    sock.close()


def _wait_idle(url: str, limit: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit + 2:
        queue = httpx.get(url + "/v1/health").json()["queue"]
        if not queue["busy"] and queue["waiting"] == 0:
            return time.monotonic() - start
        time.sleep(0.02)
    return float("inf")


def test_dropped_client_frees_the_engine_within_a_second(tiny_backend, ids):
    slow = registry.get(ids["slow"])
    handle = serve(port=0, models=[ids["slow"]], queue_size=2)
    try:
        long_request = {"model_id": ids["slow"], "content": "Once", "stream": True, "sampling_params": {"max_tokens": 200}}
        cancelled_before = slow.cancelled
        _drop_mid_stream(handle.url, long_request)  # 200 tokens x 50 ms would hold the engine 10 s
        freed_after = _wait_idle(handle.url, 1.0)
        assert freed_after < 1.0, freed_after
        assert slow.cancelled == cancelled_before + 1  # the engine ended it through its cancel event
        start = time.monotonic()
        response = httpx.post(handle.url + COMPLETION, json={**long_request, "stream": False, "sampling_params": {"max_tokens": 3}}, timeout=30)
        assert response.status_code == 200 and time.monotonic() - start < 3
    finally:
        handle.stop()


def test_client_that_leaves_while_queued_is_skipped(ids):
    slow = registry.get(ids["slow"])
    handle = serve(port=0, models=[ids["slow"]], queue_size=2)
    try:
        opened = slow.opened
        first = threading.Thread(target=httpx.post, args=(handle.url + COMPLETION,),
                                 kwargs={"json": {"model_id": ids["slow"], "content": "A", "sampling_params": {"max_tokens": 10}}, "timeout": 30})
        first.start()
        time.sleep(0.2)
        with pytest.raises(httpx.ReadTimeout):  # waits behind the first, then gives up
            httpx.post(handle.url + COMPLETION, json={"model_id": ids["slow"], "content": "B", "sampling_params": {"max_tokens": 10}}, timeout=0.1)
        first.join(30)
        assert _wait_idle(handle.url, 1.0) < 1.0
        assert slow.opened == opened + 1  # the one that left never reached the engine
    finally:
        handle.stop()
