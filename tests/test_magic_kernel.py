"""``%%complete`` in a real ipykernel: one display updated in place, no second copy of the result,
and the kernel's interrupt (SIGINT, the notebook's stop button) ends generation cleanly."""

from __future__ import annotations

import queue
import time

import pytest

pytestmark = pytest.mark.slow  # starts a kernel (about 10 s)

SETUP = "from nb_completion.engine.tiny import register_tiny_model\nregister_tiny_model()\n%load_ext nb_completion"


@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=120)
    try:
        reply, _ = run(kc, SETUP)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code: str, on_message=None, timeout: float = 120.0):
    """Execute ``code``; return (reply, iopub messages of this execution)."""
    msg_id = kc.execute(code)
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no idle status within {timeout}s; got {[m['msg_type'] for m in messages]}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if on_message is not None:
            on_message(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=timeout)
    return reply, messages


def of_type(messages, *types):
    return [m for m in messages if m["msg_type"] in types]


def test_streams_into_one_display_and_sets_underscore_without_printing_twice(kernel):
    _, kc = kernel
    reply, messages = run(kc, "%%complete --model tiny-llama -n 40 --heatmap\nOnce upon a time")
    assert reply["content"]["status"] == "ok"
    shown = of_type(messages, "display_data", "update_display_data")
    assert shown[0]["msg_type"] == "display_data" and all(m["msg_type"] == "update_display_data" for m in shown[1:])
    assert len({m["content"]["transient"]["display_id"] for m in shown}) == 1
    assert of_type(messages, "execute_result") == []  # the text is not printed a second time
    final = shown[-1]["content"]["data"]
    assert final["text/html"].count("data-token-index=") == 40
    reply, messages = run(kc, "print(type(_).__name__, len(_.tokens), _ == %r)" % final["text/plain"])
    assert "".join(m["content"]["text"] for m in of_type(messages, "stream")).strip() == "CompletionText 40 True"
    reply, messages = run(kc, "_")  # shown again later, it renders
    assert of_type(messages, "display_data")[0]["content"]["data"]["text/plain"] == final["text/plain"]


def test_kernel_interrupt_keeps_partial_text_and_the_kernel_ready(kernel):
    km, kc = kernel
    pressed = []

    def stop_on_first_text(msg):
        if not pressed and msg["msg_type"] == "update_display_data" and msg["content"]["data"]["text/plain"]:
            pressed.append(time.monotonic())
            km.interrupt_kernel()  # the notebook's stop button

    reply, messages = run(kc, "%%complete --model tiny-llama -n 0 -t 1.0 --seed 3 -o part\nOnce", on_message=stop_on_first_text)
    assert pressed, "generation ended before the interrupt could be sent"
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "GenerationInterrupted"
    (error,) = of_type(messages, "error")
    assert len(error["content"]["traceback"]) == 1 and "partial text" in error["content"]["traceback"][0]
    final = of_type(messages, "update_display_data")[-1]["content"]["data"]
    assert "interrupted" in final["text/html"]
    assert time.monotonic() - pressed[0] < 5
    reply, messages = run(kc, "print(part.stop_reason.value, part.content == _, 0 < len(_.tokens) < 240)")
    assert "".join(m["content"]["text"] for m in of_type(messages, "stream")).strip() == "out_of_tokens True True"
    reply, _ = run(kc, "%%complete --model tiny-llama -n 3\nOnce")  # ready for more
    assert reply["content"]["status"] == "ok"


def test_errors_are_one_line_with_title_and_detail(kernel):
    _, kc = kernel
    reply, messages = run(kc, "%%complete --model tiny-llama --top-p 2\nHi")
    assert reply["content"]["status"] == "error"
    (error,) = of_type(messages, "error")
    assert error["content"]["traceback"] == [
        "\x1b[1;31m400 Bad Request\x1b[0m: sampling_params.strategy.top_p: must be in (0, 1], got 2.0"
    ]
    assert of_type(messages, "display_data") == []
