"""The server under pressure: generated malformed requests, a full queue, dropped clients."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
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

_KNOWN = {
    "model_id",
    "content",
    "sampling_params",
    "response_format",
    "stream",
    "logprobs",
    "strategy",
    "max_tokens",
    "repetition_penalty",
    "stop",
    "type",
    "temperature",
    "top_p",
    "top_k",
}
_not_str = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.lists(st.integers(), max_size=2), st.none()
)
_not_int = st.one_of(
    st.text(alphabet="abcxyz", min_size=1),
    st.floats(allow_nan=False).filter(lambda f: f != int(f) if f == f and abs(f) < 1e15 else True),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_not_bool = st.one_of(
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.text(alphabet="xyz", min_size=2),
    st.floats(min_value=2, max_value=1e6),
)
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
        st.one_of(
            st.integers(),
            st.booleans(),
            st.dictionaries(st.sampled_from(["kind", "txt"]), st.text(max_size=3), min_size=1),
            st.lists(st.integers(), min_size=1, max_size=3),
        ).map(lambda v: with_(content=v)),
        _not_bool.map(lambda v: with_(stream=v)),
        _not_obj.map(lambda v: with_(sampling_params=v)),
        _not_obj.map(lambda v: with_(logprobs=v)),
        _not_int.map(lambda v: params(max_tokens=v)),
        st.integers(max_value=-1).map(lambda v: params(max_tokens=v)),
        st.one_of(st.integers(max_value=-1), st.integers(min_value=21)).map(lambda v: with_(logprobs={"top_k": v})),
        st.floats(max_value=0, allow_nan=False, allow_infinity=False).map(
            lambda t: params(strategy={"type": "top_p", "temperature": t})
        ),
        st.one_of(st.floats(max_value=0, allow_nan=False, allow_infinity=False), st.floats(min_value=1.0001, max_value=1e9)).map(
            lambda p: params(strategy={"type": "top_p", "top_p": p})
        ),
        st.integers(max_value=0).map(lambda k: params(strategy={"type": "top_k", "top_k": k})),
        st.text(alphabet="abcdefgh_", min_size=1, max_size=10)
        .filter(lambda t: t not in {"greedy", "top_p", "top_k"})
        .map(lambda t: params(strategy={"type": t})),
        st.floats(max_value=0, allow_nan=False, allow_infinity=False).map(lambda r: params(repetition_penalty=r)),
        st.lists(st.text(min_size=1, max_size=3), min_size=5, max_size=8).map(lambda s: params(stop=s)),
        st.text(alphabet="abcdefgh", min_size=1, max_size=8).map(lambda t: with_(response_format={"type": t, "json_schema": {}})),
        st.dictionaries(st.sampled_from(["peg", "ebnf", "gbnf", "regex"]), st.just("x"), min_size=2, max_size=3).map(
            lambda b: with_(response_format={"type": "grammar", "bnf": b})
        ),
        st.text(alphabet="abcxyz-", min_size=1, max_size=10).map(lambda m: with_(model_id="unknown-" + m)),
    ).map(lambda b: json.dumps(b).encode())


_broken_json = st.one_of(
    st.just(b"{"),
    st.just(b'{"model_id": }'),
    st.just(b"\xff\xfe\x00"),
    st.text(max_size=20).map(lambda t: ("{" + t).encode()),
    st.binary(min_size=1, max_size=20).filter(lambda b: not _parses(b)),
    st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3), st.none()).map(
        lambda v: json.dumps(v).encode()
    ),
)


def _parses(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


def _strict_and_extreme(model_id: str):
    """Bodies that parse and fit the schema's shape but not its types or ranges (issue 10)."""
    base = {"model_id": model_id, "content": "Hello", "sampling_params": {"max_tokens": 2}}
    bad_numbers = st.one_of(st.text(alphabet="0123456789.", min_size=1, max_size=4), st.booleans())
    return st.one_of(
        bad_numbers.map(lambda v: {**base, "sampling_params": {"max_tokens": v}}),
        bad_numbers.map(lambda v: {**base, "sampling_params": {"strategy": {"type": "top_p", "temperature": v}}}),
        bad_numbers.map(lambda v: {**base, "logprobs": {"top_k": v}}),
        st.sampled_from(["yes", "true", 1, 0]).map(lambda v: {**base, "stream": v}),
        st.floats(min_value=1e-300, max_value=9e-7).map(
            lambda t: {**base, "sampling_params": {"strategy": {"type": "top_p", "temperature": t}}}
        ),
        st.one_of(st.floats(min_value=1e-300, max_value=9e-7), st.floats(min_value=1.1e6, max_value=1e300)).map(
            lambda r: {**base, "sampling_params": {"strategy": {"type": "top_p"}, "repetition_penalty": r}}
        ),
        st.sampled_from(["\ud800", "a\udfffb", "\udbff"]).map(
            lambda c: {**base, "content": c}
        ),  # json.dumps sends them as \\uXXXX escapes
        st.integers(min_value=257, max_value=10**6).map(lambda n: {**base, "sampling_params": {"max_tokens": n}}),
        st.sampled_from(["(", "a{1000000}", "[z-a]"]).map(
            lambda r: {**base, "response_format": {"type": "grammar", "bnf": {"regex": r}}}
        ),
    ).map(lambda b: json.dumps(b).encode())


def _openai_mutations(model_id: str):
    base = {"model": model_id, "prompt": "Hello", "max_tokens": 2}
    not_number = st.one_of(
        st.text(alphabet="0123456789.", min_size=1, max_size=4), st.booleans(), st.lists(st.integers(), max_size=2)
    )
    not_int = st.one_of(not_number, st.floats(min_value=0.1, max_value=0.9))

    def with_(**kw):
        return {**base, **kw}

    return st.one_of(
        st.sampled_from(["model", "prompt"]).map(lambda k: {x: v for x, v in base.items() if x != k}),
        st.tuples(
            _unknown_name.filter(
                lambda n: n not in {"n", "best_of", "echo", "suffix", "user", "seed", "stop", "logprobs", "model", "prompt"}
            ),
            st.integers(),
        ).map(lambda kv: with_(**{kv[0]: kv[1]})),
        _not_str.map(lambda v: with_(model=v)),
        st.one_of(
            st.integers(),
            st.lists(st.integers(max_value=-1), min_size=1, max_size=3),  # token ids are >= 0
            st.lists(st.one_of(st.none(), st.floats(), st.booleans()), min_size=1, max_size=3),
            st.just([]),
            st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
        ).map(lambda v: with_(prompt=v)),
        st.one_of(not_int, st.integers(max_value=-1), st.integers(min_value=300, max_value=10**9)).map(
            lambda v: with_(max_tokens=v)
        ),
        st.one_of(not_number, st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False)).map(
            lambda v: with_(temperature=v)
        ),
        st.one_of(
            not_number, st.floats(max_value=0, allow_nan=False, allow_infinity=False), st.floats(min_value=1.001, max_value=1e9)
        ).map(lambda v: with_(top_p=v)),
        st.one_of(not_int, st.integers(max_value=-2)).map(lambda v: with_(top_k=v)),
        st.integers(min_value=1, max_value=50).map(lambda k: with_(top_k=k, temperature=0.5)),
        st.one_of(
            st.integers(),
            st.lists(st.integers(), min_size=1, max_size=2),
            st.lists(st.text(min_size=1, max_size=2), min_size=17, max_size=18),  # 16 are taken here
            st.just([""]),
        ).map(lambda v: with_(stop=v)),
        st.one_of(  # a boolean is llama-stack 0.2's client's way of saying 1 or none
            not_int.filter(lambda v: not isinstance(v, bool)), st.integers(max_value=-1), st.integers(min_value=21)
        ).map(lambda v: with_(logprobs=v)),
        st.one_of(st.text(min_size=1, max_size=3), st.integers(min_value=2)).map(lambda v: with_(stream=v)),
        st.one_of(
            st.integers(), st.text(max_size=3), st.dictionaries(st.sampled_from(["x", "usage"]), st.booleans(), min_size=1)
        ).map(lambda v: with_(stream_options=v)),
        st.one_of(not_int, st.integers(min_value=2**64), st.integers(max_value=-(2**63) - 1)).map(lambda v: with_(seed=v)),
        st.sampled_from(
            [
                ("n", 17),  # 1-16 are supported
                ("best_of", 17),
                ("echo", "yes"),  # echo itself is supported (prompt logprobs); a non-boolean is not
                ("suffix", "x"),
                ("logit_bias", {"1": 101}),  # bias, penalties: OpenAI's ranges, beyond them a 400
                ("logit_bias", {"x": 1}),
                ("frequency_penalty", 2.5),
                ("presence_penalty", -3),
            ]
        ).map(lambda kv: with_(**{kv[0]: kv[1]})),
        st.one_of(not_number, st.floats(max_value=0, allow_nan=False, allow_infinity=False), st.just(1e-300), st.just(1e300)).map(
            lambda v: with_(repetition_penalty=v)
        ),
        st.sampled_from(
            [
                {"guided_json": {"type": "nonsense"}},
                {"guided_json": 5},
                {"guided_regex": "("},
                {"guided_regex": 3},
                {"guided_grammar": "root ::= ("},
                {"guided_regex": "a", "guided_grammar": 'root ::= "a"'},
            ]
        ).map(lambda g: with_(**g)),
        st.text(alphabet="abcxyz-", min_size=1, max_size=10).map(lambda m: with_(model="unknown-" + m)),
    ).map(lambda b: json.dumps(b).encode())


def _non_finite(model_id: str):
    """Numbers that overflow to infinity, where the schema wants a finite one."""
    return st.sampled_from(
        [
            (
                COMPLETION,
                '{"model_id": "%s", "content": "x", "sampling_params": {"strategy": {"type": "top_p", "temperature": 1e999}}}',
            ),
            (COMPLETION, '{"model_id": "%s", "content": "x", "sampling_params": {"repetition_penalty": -1e400}}'),
            (
                COMPLETION,
                '{"model_id": "%s", "content": "x", "response_format": {"type": "json_schema", "json_schema": {"maximum": 1e999}}}',
            ),
            (OPENAI, '{"model": "%s", "prompt": "x", "temperature": 1e999}'),
            (OPENAI, '{"model": "%s", "prompt": "x", "top_p": -1e999}'),
        ]
    ).map(lambda pr: (pr[0], (pr[1] % model_id).encode()))


OPENAI = "/v1/completions"
FUZZ_EXAMPLES = 520


def test_generated_malformed_requests_all_get_an_error_body(tiny_model_id):
    """Both routes, >= 500 generated malformed requests: each a 4xx with the Error body, no 5xx."""
    handle = serve(port=0, models=[tiny_model_id], queue_size=2)
    seen: list[tuple[str, int]] = []
    try:
        with httpx.Client(base_url=handle.url, timeout=30) as client:

            @settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )
            @given(
                case=st.one_of(
                    st.tuples(
                        st.just(COMPLETION),
                        st.one_of(_mutations(tiny_model_id), _strict_and_extreme(tiny_model_id), _broken_json),
                    ),
                    st.tuples(st.just(OPENAI), st.one_of(_openai_mutations(tiny_model_id), _broken_json)),
                    _non_finite(tiny_model_id),
                )
            )
            def check(case: tuple[str, bytes]) -> None:
                path, raw = case
                response = client.post(path, content=raw, headers={"content-type": "application/json"})
                assert 400 <= response.status_code < 500, (path, raw, response.status_code, response.text)
                assert_error_body(response.json(), response.status_code)
                if path == OPENAI:
                    assert response.json()["error"]["message"] == response.json()["detail"]
                seen.append((path, response.status_code))

            check()
            statuses = [status for _, status in seen]
            assert len(seen) >= 500 and sum(1 for path, _ in seen if path == OPENAI) >= 150
            assert set(statuses) <= {400, 404}
            print(
                f"\nfuzz: {len(seen)} malformed requests, {sum(s >= 500 for s in statuses)} answered 5xx, "
                f"statuses {dict(sorted(Counter(statuses).items()))}"
            )
            good = client.post(
                COMPLETION, json={"model_id": tiny_model_id, "content": "Hi", "sampling_params": {"max_tokens": 3}}
            )
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
        for retry_after, error in (r for s, r in results if s == 429):
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
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
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
        response = httpx.post(
            handle.url + COMPLETION, json={**long_request, "stream": False, "sampling_params": {"max_tokens": 3}}, timeout=30
        )
        assert response.status_code == 200 and time.monotonic() - start < 3
    finally:
        handle.stop()


def test_client_that_leaves_while_queued_is_skipped(ids):
    slow = registry.get(ids["slow"])
    handle = serve(port=0, models=[ids["slow"]], queue_size=2)
    try:
        opened = slow.opened
        first = threading.Thread(
            target=httpx.post,
            args=(handle.url + COMPLETION,),
            kwargs={"json": {"model_id": ids["slow"], "content": "A", "sampling_params": {"max_tokens": 10}}, "timeout": 30},
        )
        first.start()
        time.sleep(0.2)
        with pytest.raises(httpx.ReadTimeout):  # waits behind the first, then gives up
            httpx.post(
                handle.url + COMPLETION,
                json={"model_id": ids["slow"], "content": "B", "sampling_params": {"max_tokens": 10}},
                timeout=0.1,
            )
        first.join(30)
        assert _wait_idle(handle.url, 1.0) < 1.0
        assert slow.opened == opened + 1  # the one that left never reached the engine
    finally:
        handle.stop()
