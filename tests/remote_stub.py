"""A stand-in remote engine for the tests: a real HTTP server on 127.0.0.1 (in a thread) that
replays recorded exchanges byte for byte, so ``RemoteBackend`` is tested over a socket against
what llama.cpp's and vLLM's servers actually answer, not against this project's own server.

An exchange is ``{"request": {method, path, body}, "response": {status, content_type, body}}``
(the format of ``fixtures/*/``). A POST is answered by the recorded exchange whose request body
is contained in the one received (every recorded field present with the same value; ``stream``
aside), preferring the same ``stream`` and then the most specific; a streamed body is written
event by event. Nothing matching is a 418 whose message shows the body, so a test fails saying
what was sent. ``requests`` keeps every request received.

Failure modes, for the outage tests: ``drop_after=N`` (on a streamed answer: write N events, then
close the connection), ``hang`` (accept, then answer nothing until ``close()``).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_exchanges(folder: str) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((FIXTURES / folder).glob("*.json"))]


def _contains(received: Any, recorded: Any) -> bool:
    if isinstance(recorded, dict):
        return isinstance(received, dict) and all(k in received and _contains(received[k], v) for k, v in recorded.items())
    return received == recorded


class ReplayServer:
    def __init__(self, exchanges: list[dict], drop_after: int | None = None, hang: bool = False):
        self.exchanges = exchanges
        self.drop_after = drop_after
        self.hang = hang
        self.requests: list[dict] = []
        self.released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="replay-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def posted(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == "POST"]

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> "ReplayServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def match(self, method: str, path: str, body: Any) -> dict | None:
        candidates = []
        for exchange in self.exchanges:
            request = exchange["request"]
            if request["method"] != method or request["path"] != path:
                continue
            if method == "GET":
                return exchange
            recorded = {k: v for k, v in (request.get("body") or {}).items() if k != "stream"}
            if _contains(body, recorded):
                same_stream = bool(request["body"].get("stream")) == bool((body or {}).get("stream"))
                candidates.append((same_stream, len(json.dumps(recorded)), exchange))
        if not candidates:
            return None
        return max(candidates, key=lambda c: c[:2])[2]

    def _handler(self) -> type:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one exchange per connection; a stream ends when it closes

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                stub.requests.append({"method": method, "path": self.path, "body": body, "headers": dict(self.headers.items())})
                if stub.hang:
                    stub.released.wait(60)
                    return
                exchange = stub.match(method, self.path, body)
                if exchange is None:
                    message = f"no recorded exchange for {method} {self.path} {json.dumps(body)[:2000]}"
                    self._send(418, "application/json", json.dumps({"error": {"code": 418, "message": message}}))
                    return
                response = exchange["response"]
                self._send(response["status"], response["content_type"], response["body"])

            def _send(self, status: int, content_type: str, text: str) -> None:
                data = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                streamed = content_type.startswith("text/event-stream")
                if not streamed:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not streamed:
                    self.wfile.write(data)
                    return
                events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
                for n, event in enumerate(events):
                    if stub.drop_after is not None and n == stub.drop_after:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(event)
                    self.wfile.flush()

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        return Handler
