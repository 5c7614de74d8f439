"""A remote that is down, silent, or drops mid-stream: a clear 502 within the timeout, and the
widget and the magic keep working. ``nb-completion serve --remote`` fronting a llama.cpp server."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from nb_completion import complete, register_remote
from nb_completion.api.errors import CompletionError
from nb_completion.engine import registry
from nb_completion.engine.records import Delta
from nb_completion.service import build_request, open_events
from remote_stub import ReplayServer, load_exchanges
from server_support import assert_error_body

LLAMA_MODEL = "SmolLM2-135M-Instruct-Q4_1"
ASK = {"sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 6}, "logprobs": 3}
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_remote_that_is_down_is_a_502():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(CompletionError) as at_registration:
        register_remote(url, LLAMA_MODEL, api="openai")
    assert at_registration.value.status == 502 and url in at_registration.value.detail
    register_remote(url, LLAMA_MODEL, api="llama.cpp", name="down", check=False)
    try:
        with pytest.raises(CompletionError) as at_request:
            complete("x", model_id="down")
        assert at_request.value.status == 502 and at_request.value.title == "Bad Gateway"
        assert "could not reach the remote" in at_request.value.detail
    finally:
        registry.unregister("down")
    undetected = register_remote(url, LLAMA_MODEL, api="openai", name="down-openai", check=False)
    try:
        with pytest.raises(CompletionError) as probing:
            complete("x", model_id="down-openai")  # the dialect is probed first: unreachable, a 502
        assert probing.value.status == 502 and undetected.dialect is None  # no guess kept for later
    finally:
        registry.unregister("down-openai")


def test_a_silent_remote_is_a_502_once_the_timeout_passes():
    with ReplayServer([], hang=True) as stub:
        register_remote(stub.url, LLAMA_MODEL, api="llama.cpp", name="silent", check=False, timeout=1.0)
        try:
            with pytest.raises(CompletionError) as failed:
                complete("x", model_id="silent")
            assert failed.value.status == 502
            assert "did not answer within 1 s" in failed.value.detail
        finally:
            registry.unregister("silent")


def test_a_remote_that_drops_mid_stream_is_a_502_after_the_text_so_far():
    with ReplayServer(load_exchanges("llama_cpp_server"), drop_after=2) as stub:
        register_remote(stub.url, api="openai", name="dropping")
        try:
            events = open_events(build_request("The capital of France is", model_id="dropping", **ASK))
            first, second = next(events), next(events)
            assert isinstance(first, Delta) and (first.text, second.text) == (" Paris", ".")
            with pytest.raises(CompletionError) as failed:
                list(events)
            assert failed.value.status == 502 and "without a finish reason" in failed.value.detail
        finally:
            registry.unregister("dropping")


def test_widget_and_magic_keep_working_after_a_remote_fails():
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    from nb_completion import CompletionWidget
    from nb_completion.notebook.magic import MagicError

    with (
        ReplayServer(load_exchanges("llama_cpp_server"), drop_after=2) as broken,
        ReplayServer(load_exchanges("llama_cpp_server")) as healthy,
    ):
        register_remote(broken.url, api="openai", name="broken")
        register_remote(healthy.url, api="openai", name="healthy")
        try:
            widget = CompletionWidget("The capital of France is", model_id="broken", max_tokens=6, logprobs_top_k=3)
            widget.send = lambda content, buffers=None: None
            widget.generate(wait=True, timeout=60)
            assert widget.status == "error" and widget.error["status"] == 502
            widget.model_name = "healthy"  # the model picker, as the user switches it
            result = widget.generate(wait=True, timeout=60)
            assert widget.status == "done", widget.error
            assert result.content == widget.text == " Paris.\n\nThe United"
            assert [t["rank"] for t in widget.tokens] == [1] * 6

            ip = InteractiveShell.instance()
            ip.run_cell("%load_ext nb_completion")
            previous, ip.display_pub = ip.display_pub, CapturingDisplayPublisher()
            try:
                failed = ip.run_cell("%%complete --model broken -n 6 --logprobs 3\nThe capital of France is\n")
                ok = ip.run_cell("%%complete --model healthy -n 6 --logprobs 3 -o reply\nThe capital of France is\n")
            finally:
                ip.display_pub = previous
            assert isinstance(failed.error_in_exec, MagicError) and failed.error_in_exec.status == 502
            assert ok.error_in_exec is None
            assert ip.user_ns["reply"].content == " Paris.\n\nThe United"
        finally:
            registry.unregister("broken")
            registry.unregister("healthy")


# ---- nb-completion serve --remote ------------------------------------------------------------------


def _lines(stream, into: "queue.Queue[str]") -> None:
    for line in stream:
        into.put(line)


def test_serve_remote_fronts_a_llama_cpp_server_with_the_llama_stack_route():
    with ReplayServer(load_exchanges("llama_cpp_server")) as stub:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "nb_completion.server", "--port", "0", "--remote", stub.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        try:
            deadline, url, seen = time.monotonic() + 120, None, []
            while url is None and time.monotonic() < deadline and proc.poll() is None:
                try:
                    line = lines.get(timeout=0.5)
                except queue.Empty:
                    continue
                seen.append(line)
                if "serving on " in line:
                    url = line.split("serving on ", 1)[1].split()[0]
            assert url, "".join(seen)
            listed = httpx.get(url + "/v1/models", timeout=30).json()["data"]
            assert [m["identifier"] for m in listed] == [LLAMA_MODEL]
            assert listed[0]["metadata"]["dialect"] == "llama.cpp"
            body = {
                "model_id": LLAMA_MODEL,
                "content": "The capital of France is",
                "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 6},
                "logprobs": {"top_k": 3},
            }
            answer = httpx.post(url + "/v1/inference/completion", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.json()["content"] == " Paris.\n\nThe United"
            assert list(answer.json()["logprobs"][0]["logprobs_by_token"]) == [" Paris", " the", " London"]
            bad = {
                "model_id": LLAMA_MODEL,
                "content": "x",
                "sampling_params": {"max_tokens": 4},
                "response_format": {"type": "grammar", "bnf": {"gbnf": 'root ::= "unclosed'}},
            }
            refused = httpx.post(url + "/v1/inference/completion", json=bad, timeout=60)
            assert_error_body(refused.json(), 400)
            assert refused.json()["detail"] == "Failed to initialize samplers: failed to parse grammar"
            assert json.loads(json.dumps(stub.posted()[-1]))["grammar"] == 'root ::= "unclosed'
        finally:
            proc.terminate()
            proc.wait(30)


def test_both_serve_entry_points_take_the_remote_option(capsys):
    from nb_completion.cli import build_parser
    from nb_completion.server.options import build_parser as module_parser

    cli = build_parser().parse_args(["serve", "--remote", "http://a:1", "--remote-api", "llama.cpp"])
    module = module_parser("python -m nb_completion.server").parse_args(["--remote", "http://a:1", "--remote", "http://b:2"])
    assert (cli.remote, cli.remote_api) == (["http://a:1"], "llama.cpp")
    assert (module.remote, module.remote_api) == (["http://a:1", "http://b:2"], "openai")
    with pytest.raises(SystemExit) as exit_info:  # the remote's key never goes on the command line
        module_parser().parse_args(["--remote", "http://a:1", "--remote-api-key", "secret"])
    assert exit_info.value.code == 2 and "NB_COMPLETION_REMOTE_API_KEY" in capsys.readouterr().err
