"""Helpers for the HTTP tests: SSE parsing, spec schemas, and backends that wrap the real tiny
engine to make it slow (for queue and disconnect tests) or to fail on purpose (500 paths)."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from nb_completion.engine import registry
from nb_completion.engine.records import Delta, Finished
from nb_completion.engine.backend import BackendKind
from nb_completion.engine.plan import TakesText

PACKAGE_OPERATION = Path(__file__).resolve().parents[1] / "nb_completion" / "server" / "spec" / "completion-operation.json"
OPERATION = json.loads(PACKAGE_OPERATION.read_text())


def _any_of_numbers(schema: Any) -> Any:
    """The published ``oneOf: [integer, number]`` rejects every integer (it matches both); a
    validator has to read it as ``anyOf``."""
    if isinstance(schema, dict):
        one_of = schema.get("oneOf")
        if one_of == [{"type": "integer"}, {"type": "number"}]:
            return {**{k: v for k, v in schema.items() if k != "oneOf"}, "anyOf": one_of}
        return {k: _any_of_numbers(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_any_of_numbers(v) for v in schema]
    return schema


RESPONSE_SCHEMA = _any_of_numbers(OPERATION["responses"]["200"]["content"]["application/json"]["schema"])
CHUNK_SCHEMA = _any_of_numbers(OPERATION["responses"]["200"]["content"]["text/event-stream"]["schema"])
ERROR_SCHEMA = OPERATION["responses"]["400"]["content"]["application/json"]["schema"]
ERROR_KEYS = {"status", "title", "detail", "instance"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def is_compact_json(text: str) -> bool:
    """No whitespace outside strings."""
    return not re.search(r"\s", _STRING.sub('""', text))


def sse_events(raw: str) -> list[str]:
    """Split a raw SSE body into its events, asserting our framing: one ``data:`` line each."""
    assert raw.endswith("\n\n"), repr(raw[-50:])
    events = raw[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: "), repr(event)
        assert "\n" not in event, repr(event)
    return [e[len("data: ") :] for e in events]


def assert_error_body(body: Any, status: int) -> None:
    import jsonschema

    assert isinstance(body, dict), body
    spec_part = {k: v for k, v in body.items() if k in ERROR_KEYS}
    jsonschema.validate(spec_part, ERROR_SCHEMA)
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in body["detail"] and 'File "' not in body["detail"]


class SlowBackend(TakesText):
    kind = BackendKind.REMOTE  # a wrapper: text in, events out
    """The real tiny engine, with a pause after each event (so requests overlap)."""

    def __init__(self, inner: Any, model_id: str, delay: float):
        self.inner = inner
        self.delay = delay
        self.info = replace(inner.info, identifier=model_id)
        self.opened = 0
        self.cancelled = 0

    def open(self, request: Any, *, seed: int | None = None, cancel: threading.Event | None = None) -> Iterator[Any]:
        request = request.model_copy(update={"model_id": self.inner.info.identifier})
        events = self.inner.open(request, seed=seed, cancel=cancel)
        self.opened += 1

        def paced() -> Iterator[Any]:
            for event in events:
                if isinstance(event, Finished) and event.cancelled:
                    self.cancelled += 1
                yield event
                if isinstance(event, Delta):
                    time.sleep(self.delay)

        return paced()


class FailingBackend(TakesText):
    kind = BackendKind.REMOTE
    """Fails on purpose: ``when='open'`` raises before streaming, ``'stream'`` after one delta."""

    def __init__(self, model_id: str, when: str):
        from nb_completion.engine.records import ModelInfo

        self.info = ModelInfo(identifier=model_id, loaded=True)
        self.when = when

    def open(self, request: Any, *, seed: int | None = None, cancel: Any = None) -> Iterator[Any]:
        if self.when == "open":
            raise RuntimeError("secret internal state /home/user/model.py line 42")

        def events() -> Iterator[Any]:
            yield Delta("partial")
            raise RuntimeError("boom at /home/user/generate.py")

        return events()


def register_helpers(tiny_backend: Any) -> dict[str, str]:
    ids = {"slow": "tiny-slow", "fail-open": "fail-open", "fail-stream": "fail-stream"}
    registry.register(SlowBackend(tiny_backend, ids["slow"], 0.05))
    registry.register(FailingBackend(ids["fail-open"], "open"))
    registry.register(FailingBackend(ids["fail-stream"], "stream"))
    return ids
