"""``register_remote``: a model behind our own server (started here) used like a local one."""

from __future__ import annotations

import math
import threading
import time

import httpx
import pytest

from nb_completion import complete, register_remote, serve
from nb_completion.api.errors import CompletionError
from nb_completion.engine import registry
from nb_completion.engine.records import Delta, Finished
from nb_completion.remote.records import entropy_lower_bound, make_record, split_delta
from nb_completion.service import build_request, open_events, token_logprobs

APIS = ["llama-stack", "openai"]


@pytest.fixture(scope="module")
def server(tiny_model_id, ids):
    handle = serve(port=0, models=[tiny_model_id, *ids.values()], queue_size=1, api_key="k3y")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def remotes(server, tiny_model_id):
    names = {}
    for api in APIS:
        names[api] = register_remote(server.url, tiny_model_id, api=api, api_key="k3y", name=f"remote-{api}").info.identifier
    yield names
    for name in names.values():
        registry.unregister(name)


def queue_of(server) -> dict:
    return httpx.get(server.url + "/v1/health").json()["queue"]


def wait_for(condition, message: str = "condition not met", timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.01)


def _ask(model_id, **kw):
    return complete("The capital of France is", model_id=model_id, sampling_params={"max_tokens": 16}, **kw)


# ---- used like a local model ----------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("top_k", [None, 0, 4])
def test_remote_matches_local_greedy_with_logprobs(remotes, tiny_model_id, api, top_k):
    local = _ask(tiny_model_id, logprobs=top_k)
    remote = _ask(remotes[api], logprobs=top_k)
    assert remote.content == local.content
    assert remote.stop_reason == local.stop_reason
    assert remote.logprobs == local.logprobs  # same texts, same values, same order of tokens
    local_m = {m.metric: m.value for m in local.metrics}
    remote_m = {m.metric: m.value for m in remote.metrics}
    assert remote_m["completion_tokens"] == local_m["completion_tokens"] == 16
    assert remote_m["prompt_tokens"] == local_m["prompt_tokens"]


@pytest.mark.parametrize("api", APIS)
def test_remote_streams_token_records(remotes, tiny_model_id, api):
    request = build_request("Once upon a time", model_id=remotes[api], sampling_params={"max_tokens": 10}, logprobs=3)
    local_request = request.model_copy(update={"model_id": tiny_model_id})
    remote_events = list(open_events(request))
    local_events = list(open_events(local_request))
    remote_tokens = [t for e in remote_events if isinstance(e, Delta) for t in e.tokens]
    local_tokens = [t for e in local_events if isinstance(e, Delta) for t in e.tokens]
    assert len(remote_tokens) == len(local_tokens) == 10
    for r, mine in zip(remote_tokens, local_tokens):
        assert r.text == mine.text  # a token's share of the output, "" while a character is incomplete
        assert r.piece == mine.piece  # the token's own text, found among the reported alternatives
        assert r.logprob == pytest.approx(mine.logprob)
        assert r.rank == mine.rank  # greedy: rank 1, found among the reported top-3
        assert dict(r.top) == token_logprobs(mine, 3).logprobs_by_token  # same texts merged, as the spec says
        assert 0 <= r.entropy <= mine.entropy + 1e-6  # a lower bound of the true entropy
        assert r.token_id == -1
    assert [r.index for r in remote_tokens] == list(range(10))
    assert isinstance(remote_events[-1], Finished) and remote_events[-1].completion_tokens == 10
    chunks = list(complete("Once upon a time", model_id=remotes[api], sampling_params={"max_tokens": 10}, stream=True))
    assert chunks[-1].stop_reason == "out_of_tokens" and chunks[-1].delta == ""
    assert (
        "".join(c.delta for c in chunks)
        == complete("Once upon a time", model_id=tiny_model_id, sampling_params={"max_tokens": 10}).content
    )


def test_openai_remote_sends_the_seed(remotes, tiny_model_id):
    params = {"max_tokens": 12, "strategy": {"type": "top_p", "temperature": 1.5, "top_p": 1.0}}
    local = complete("Hello", model_id=tiny_model_id, sampling_params=params, seed=7)
    remote = complete("Hello", model_id=remotes["openai"], sampling_params=params, seed=7)
    assert remote.content == local.content


@pytest.mark.parametrize("api", APIS)
def test_remote_stop_strings_and_max_tokens(remotes, tiny_model_id, api):
    full = _ask(tiny_model_id).content
    stop = full[4:7]
    local = complete("The capital of France is", model_id=tiny_model_id, sampling_params={"max_tokens": 16, "stop": [stop]})
    remote = complete("The capital of France is", model_id=remotes[api], sampling_params={"max_tokens": 16, "stop": [stop]})
    assert remote.content == local.content and stop not in remote.content
    assert remote.stop_reason == local.stop_reason == "end_of_turn"


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_remote_error_keeps_status_title_detail(remotes, tiny_model_id, api):
    long_prompt = "word " * 400
    with pytest.raises(CompletionError) as local:
        complete(long_prompt, model_id=tiny_model_id)
    with pytest.raises(CompletionError) as remote:
        complete(long_prompt, model_id=remotes[api])
    assert remote.value.status == local.value.status == 400
    assert remote.value.title == local.value.title
    # an OpenAI server names its own request's fields: `prompt` where llama-stack says `content`
    expected = local.value.detail.replace("content:", "prompt:", 1) if api == "openai" else local.value.detail
    assert remote.value.detail == expected


@pytest.mark.parametrize("api", APIS)
def test_remote_failure_mid_stream_raises(server, ids, api):
    backend = register_remote(server.url, ids["fail-stream"], api=api, api_key="k3y", name=f"remote-fail-{api}")
    try:
        events = open_events(build_request("x", model_id=backend.info.identifier))
        first = next(events)
        assert first.text == "partial"
        with pytest.raises(CompletionError) as failure:
            list(events)
        assert failure.value.status == 500 and "boom" not in failure.value.detail
    finally:
        registry.unregister(backend.info.identifier)


def test_wrong_key_unknown_model_unreachable(server, tiny_model_id):
    with pytest.raises(CompletionError) as wrong_key:
        register_remote(server.url, tiny_model_id, api_key="nope")
    assert wrong_key.value.status == 401
    with pytest.raises(CompletionError) as unknown:
        register_remote(server.url, "no-such-model", api_key="k3y")
    assert unknown.value.status == 404 and tiny_model_id in unknown.value.detail
    sock_port = httpx.URL(server.url).port + 1 if httpx.URL(server.url).port < 65535 else 1
    with pytest.raises(CompletionError) as unreachable:
        register_remote(f"http://127.0.0.1:{sock_port}", tiny_model_id)
    assert unreachable.value.status == 502
    backend = register_remote(f"http://127.0.0.1:{sock_port}", tiny_model_id, check=False, name="remote-nowhere")
    try:
        with pytest.raises(CompletionError) as later:
            complete("x", model_id="remote-nowhere")
        assert later.value.status == 502
    finally:
        registry.unregister(backend.info.identifier)


def test_remote_queue_full_is_429(server, ids):
    """The server holds one running and one waiting request; a third remote call gets its 429."""
    register_remote(server.url, ids["slow"], api_key="k3y", name="remote-slow")
    try:
        long = {"max_tokens": 40}
        threads = [
            threading.Thread(target=complete, args=("A",), kwargs={"model_id": "remote-slow", "sampling_params": long})
            for _ in range(2)
        ]
        for held, t in enumerate(threads, start=1):
            t.start()
            wait_for(lambda held=held: queue_of(server)["running"] + queue_of(server)["waiting"] >= held)
        with pytest.raises(CompletionError) as full:
            complete("B", model_id="remote-slow", sampling_params={"max_tokens": 2})
        assert full.value.status == 429
        for t in threads:
            t.join(30)
    finally:
        registry.unregister("remote-slow")


# ---- cancellation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_cancel_closes_the_remote_stream_and_frees_its_engine(server, ids, api):
    slow = registry.get(ids["slow"])
    backend = register_remote(server.url, ids["slow"], api=api, api_key="k3y", name=f"remote-slow-{api}")
    try:
        cancel = threading.Event()
        cancelled_before = slow.cancelled
        events = open_events(
            build_request("Once", model_id=backend.info.identifier, sampling_params={"max_tokens": 200}), cancel=cancel
        )
        assert isinstance(next(events), Delta)
        cancel.set()
        rest = list(events)
        assert isinstance(rest[-1], Finished) and rest[-1].cancelled
        assert rest[-1].completion_tokens < 200  # stopped by the cancel, long before max_tokens
        wait_for(lambda: not queue_of(server)["busy"], "the remote engine is still generating")
        assert slow.cancelled == cancelled_before + 1
    finally:
        registry.unregister(backend.info.identifier)


def test_cancel_while_the_remote_is_busy_returns_at_once(server, ids):
    """The remote is generating for someone else, so ours waits in its queue: Stop still works
    at once here, and the remote drops our request as soon as it reaches it."""
    slow = registry.get(ids["slow"])
    backend = register_remote(server.url, ids["slow"], api_key="k3y", name="remote-slow-queued")
    busy = threading.Thread(
        target=httpx.post,
        args=(server.url + "/v1/inference/completion",),
        kwargs={
            "json": {"model_id": ids["slow"], "content": "A", "sampling_params": {"max_tokens": 30}},
            "headers": {"Authorization": "Bearer k3y"},
            "timeout": 60,
        },
    )
    try:
        opened_before, cancelled_before = slow.opened, slow.cancelled
        busy.start()
        wait_for(lambda: slow.opened == opened_before + 1)  # the remote is generating for someone else
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        events = list(
            open_events(
                build_request("Once", model_id=backend.info.identifier, sampling_params={"max_tokens": 100}), cancel=cancel
            )
        )
        assert busy.is_alive()  # ours ended on Stop while the remote was still busy with the other request
        assert len(events) == 1 and events[0].cancelled and events[0].completion_tokens == 0
        busy.join(60)
        wait_for(lambda: slow.cancelled != cancelled_before)
        # ours reached the remote engine only to be cancelled at its first token
        assert slow.cancelled == cancelled_before + 1 and slow.opened == opened_before + 2
    finally:
        registry.unregister(backend.info.identifier)


# ---- records from reported log-probabilities -----------------------------------------------------


def test_split_delta_finds_the_chosen_texts():
    reported = [{" the": -0.1, " t": -2.0}, {"he": -0.5, " cat": -1.0}]
    assert split_delta(" the cat", [{" the": -0.1, " t": -2.0}, {" cat": -0.3, "he": -1.0}]) == [
        (" the", " the"),
        (" cat", " cat"),
    ]
    assert split_delta(" the", reported) == [(" t", " t"), ("he", "he")]  # only this split joins to the delta
    # a character split across two tokens: the first adds nothing, the second brings it whole
    seam = [{"\ufffd": -0.2, "a": -2.0}, {"\ufffd": -0.1, "b": -3.0}]
    assert split_delta("\U0001f642", seam) == [("", "\ufffd"), ("\U0001f642", "\ufffd")]
    assert split_delta("\ufffd\ufffdex", [{"\ufffd": -1.0}, {"ex": -1.0, "W": -2.0}]) == [
        ("", "\ufffd"),
        ("\ufffd\ufffdex", "ex"),
    ]
    assert split_delta("xyz", [{"a": -1.0}, {"b": -1.0}]) == [("", None), ("xyz", None)]


def test_make_record_rank_and_bounds():
    record = make_record(0, " b", " b", {" a": -0.5, " b": -1.5, " c": -2.0}, 3, 0.0)
    assert record.rank == 2 and record.logprob == -1.5 and record.top[0] == (" a", -0.5)
    outside = make_record(1, " q", None, {" a": -0.5, " b": -1.5}, 2, 0.0)
    assert outside.rank == 3 and outside.logprob == -1.5  # below the reported top-k: an upper bound
    assert outside.text == " q"
    alone = make_record(2, " z", " z", {" z": -0.2}, 0, 0.0)
    assert alone.rank == 0 and alone.logprob == -0.2 and alone.top == ()
    p = math.exp(-0.2)
    assert alone.entropy == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    assert entropy_lower_bound([math.log(0.5), math.log(0.5)]) == pytest.approx(math.log(2))


# ---- the other frontends ------------------------------------------------------------------------


def test_widget_and_magic_use_a_remote_model_like_a_local_one(remotes, tiny_model_id):
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    from nb_completion import CompletionWidget

    local = complete("def add(a, b):", model_id=tiny_model_id, sampling_params={"max_tokens": 10}, logprobs=3)
    widget = CompletionWidget("def add(a, b):", model_id=remotes["llama-stack"], max_tokens=10, logprobs_top_k=3)
    widget.send = lambda content, buffers=None: None
    result = widget.generate(wait=True, timeout=60)
    assert widget.status == "done", widget.error
    assert result.content == widget.text == local.content
    assert result.logprobs == local.logprobs
    assert all(token["rank"] >= 1 for token in widget.tokens)

    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext nb_completion")
    previous, ip.display_pub = ip.display_pub, CapturingDisplayPublisher()
    try:
        ip.run_cell(f"%%complete --model {remotes['openai']} -n 10 -o reply --logprobs 3\ndef add(a, b):\n", store_history=True)
        reply = ip.user_ns["reply"]
    finally:
        ip.display_pub = previous
    assert reply.content == local.content and reply.logprobs == local.logprobs
