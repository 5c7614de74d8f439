"""Connection rules that hold under attack (issue 21, findings 3, 4 and 9): a total deadline for
a body, slow uploads evicted at the connection cap, fair slots for chunked bodies, a client that
leaves mid-body logged as one line, and Content-Length with Transfer-Encoding refused."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from nb_completion import serve
from nb_completion.server.body import BIG_BODY_SLOTS, BodyReader

COMPLETION = "/v1/inference/completion"


@pytest.fixture(scope="module")
def server(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id])
    yield handle
    handle.stop()


def connect(url: str, timeout: float = 20.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def request_body(model_id: str) -> bytes:
    return json.dumps({"model_id": model_id, "content": "Hello", "sampling_params": {"max_tokens": 1}}).encode()


def head(length: int | None = None, chunked: bool = False, path: str = COMPLETION) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout is an error)."""
    received = b""
    while True:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not part:
            return received
        received += part


def read_response(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one response with a Content-Length."""
    received = b""
    while b"\r\n\r\n" not in received:
        part = sock.recv(65536)
        assert part, received
        received += part
    top, _, rest = received.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in top.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        part = sock.recv(65536)
        assert part
        rest += part
    return int(top.split(b" ", 2)[1]), top, rest[:length]


def test_a_trickling_body_is_408_at_its_total_deadline(server, tiny_model_id):
    state = server.app.state.server
    saved, state.bodies = state.bodies, BodyReader(idle_timeout=5.0, total_timeout=1.0)
    try:
        with connect(server.url) as sock:
            sock.sendall(head(length=200))
            answered = threading.Event()

            def trickle() -> None:  # one byte every 50 ms: never idle for the 5 s idle timeout
                for _ in range(200):
                    if answered.wait(0.05):
                        return
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        return

            sender = threading.Thread(target=trickle)
            sender.start()
            status, _, body = read_response(sock)
            answered.set()
            sender.join(10)
        assert status == 408
        assert "within 1 s" in json.loads(body)["detail"]
    finally:
        state.bodies = saved


def test_content_length_with_transfer_encoding_is_400_and_the_connection_closes(server, tiny_model_id):
    smuggled = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    payload = request_body(tiny_model_id)
    lines = head(length=len(payload), chunked=True)
    with connect(server.url, timeout=10) as sock:
        sock.sendall(lines + chunk(payload) + b"0\r\n\r\n" + smuggled)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # the smuggled request was never answered
    assert b"connection: close" in answer.lower()
    assert b"Transfer-Encoding" in answer


def test_a_client_leaving_mid_body_is_one_quiet_line(server, caplog):
    caplog.set_level(logging.INFO)
    with connect(server.url) as sock:
        sock.sendall(head(length=1000) + b'{"model_id": "x", "content": "')
        time.sleep(0.2)  # let the server start reading the body before the client leaves
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any("disconnected mid-body" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    lines = [r for r in caplog.records if "disconnected mid-body" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_small_chunked_request_does_not_wait_behind_slow_chunked_uploads(server, tiny_model_id):
    slow = [connect(server.url) for _ in range(BIG_BODY_SLOTS + 1)]
    try:
        for sock in slow:
            sock.sendall(head(chunked=True) + chunk(b'{"model_id": "'))
        with connect(server.url) as sock:
            sock.sendall(head(chunked=True) + chunk(request_body(tiny_model_id)) + b"0\r\n\r\n")
            received = sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
    finally:
        for sock in slow:
            sock.close()


def test_uploading_connections_are_evicted_at_the_cap(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id], max_connections=8)
    limits = handle._server.config.http.limits  # the ConnectionLimits the protocol class carries
    uploading = []
    try:
        for _ in range(limits.max_connections):
            sock = connect(handle.url)
            sock.sendall(head(length=500) + b'{"model_id": ')
            uploading.append(sock)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(p.receiving_body() for p in list(limits.open)) < len(uploading):
            time.sleep(0.02)
        assert sum(p.receiving_body() for p in list(limits.open)) == len(uploading) == limits.max_connections
        payload = request_body(tiny_model_id)
        with connect(handle.url) as sock:
            sock.sendall(head(length=len(payload)) + payload)
            status, _, _ = read_response(sock)
        assert status == 200
        assert limits.evicted_uploading == 1 and limits.refused == 0
        uploading[0].settimeout(10)
        assert read_until_closed(uploading[0]) == b""  # the oldest upload was the one closed
    finally:
        for sock in uploading:
            sock.close()
        handle.stop()
