"""The batched engine on the tiny random Llama (float32): many sequences in one forward pass per
step, each equal to Hugging Face ``generate()`` alone; forks; chunked prefill; streams that are
dropped half-read."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import torch

from nb_completion import compare, complete
from nb_completion.engine.batch_sampling import RowParams
from nb_completion.engine.records import Delta, Finished
from nb_completion.engine.batch_engine import Engine
from nb_completion.engine.sequence import Work
from nb_completion.service import build_request, open_events

from engine_sink import Collect
from hf_oracle import hf_generate

PROMPTS = [
    "The capital of",
    "Once upon a time there was a small model that liked",
    "def add(a, b):\n    return",
    "Café, naïve, jalapeño, 東京, 🙂 and other multi-byte text. The capital of France is Paris.",
    "x",
]


def hf(backend, ids, n, **kwargs):
    """HF generate() alone on token ids: (tokens up to and with an end token, raw logits per step),
    as the engine's sink sees them (the end token is its last record)."""
    tokens, logits = hf_generate(backend, ids, n, eos_token_id=None, **kwargs)
    cut = next((i + 1 for i, t in enumerate(tokens) if t in backend.stop_token_ids), len(tokens))
    return tokens[:cut], logits[:cut]


def run_engine(engine, backend, ids_list, n, **params):
    sinks = [Collect() for _ in ids_list]
    for ids, sink in zip(ids_list, sinks):
        sink.engine = engine
        engine.submit(Work(ids=list(ids), params=RowParams(**params), max_new=n, sink=sink, stop_ids=backend.stop_token_ids))
    for sink in sinks:
        assert sink.end.wait(60), "the engine did not finish"
    return sinks


@pytest.fixture()
def engine(tiny_backend):
    engine = Engine(tiny_backend.model, max_batch=8, parked=2, chunk=7)
    yield engine
    engine.close()


def test_every_row_of_a_mixed_batch_equals_hf_generate_alone(tiny_backend, engine):
    ids_list = [tiny_backend.encode(p) for p in PROMPTS]
    assert len({len(i) for i in ids_list}) == len(ids_list)  # mixed prompt lengths
    sinks = run_engine(engine, tiny_backend, ids_list, 20)
    assert engine.stats.max_rows == len(PROMPTS)  # they really ran side by side
    for ids, sink in zip(ids_list, sinks):
        expected, logits = hf(tiny_backend, ids, 20)
        assert [c.token_id for c in sink.tokens] == expected
        for chosen, step in zip(sink.tokens, logits):
            reference = torch.log_softmax(step.float(), -1)
            assert chosen.logprob == pytest.approx(float(reference[chosen.token_id]), abs=1e-4)
            assert list(chosen.top_logprobs) == pytest.approx(torch.topk(reference, 5).values.tolist(), abs=1e-4)
            assert chosen.rank == int((reference > reference[chosen.token_id]).sum()) + 1


def test_repetition_penalty_rows_equal_hf_generate_alone(tiny_backend, engine):
    ids_list = [tiny_backend.encode(p) for p in PROMPTS[:3]]
    sinks = run_engine(engine, tiny_backend, ids_list, 16, repetition_penalty=1.3)
    for ids, sink in zip(ids_list, sinks):
        assert [c.token_id for c in sink.tokens] == hf(tiny_backend, ids, 16, repetition_penalty=1.3)[0]


def test_a_fork_reuses_the_cached_prefix_and_equals_a_fresh_run(tiny_backend, engine):
    prompt = tiny_backend.encode(PROMPTS[3])
    (first,) = run_engine(engine, tiny_backend, [prompt], 12)
    generated = [c.token_id for c in first.tokens]
    # branch at generated token 6: take the model's second choice there instead
    alternative = next(i for i in first.tokens[6].top_ids if i != generated[6])
    branch = prompt + generated[:6] + [alternative]
    reused_before, prefilled_before = engine.stats.reused_tokens, engine.stats.prefill_tokens
    (forked,) = run_engine(engine, tiny_backend, [branch], 12)
    assert engine.stats.reused_tokens - reused_before == len(prompt) + 6  # the whole shared prefix
    assert engine.stats.prefill_tokens == prefilled_before  # nothing re-run
    assert [c.token_id for c in forked.tokens] == hf(tiny_backend, branch, 12)[0]


def test_chunked_prefill_equals_hf_and_does_not_stall_decoding(tiny_backend, engine):
    long_ids = tiny_backend.encode(" ".join(PROMPTS) * 2)
    assert len(long_ids) > 5 * engine.chunk
    short, long_ = run_engine(engine, tiny_backend, [tiny_backend.encode("Once"), long_ids], 24)
    assert [c.token_id for c in long_.tokens] == hf(tiny_backend, long_ids, 24)[0]
    # the short one decoded while the long prompt was still prefilling, chunk by chunk
    assert engine.stats.prefill_passes >= 5
    assert short.first_token_step < long_.first_token_step - 4


def test_a_cancelled_long_prefill_stops_between_chunks(tiny_backend, engine):
    long_ids = tiny_backend.encode(" ".join(PROMPTS) * 2)
    sink = Collect()
    work = Work(ids=long_ids, params=RowParams(), max_new=10, sink=sink)
    work.cancel.set()
    engine.submit(work)
    assert sink.end.wait(30) and sink.reason == "cancelled" and not sink.tokens


def test_sixteen_concurrent_greedy_requests_equal_their_solo_runs(tiny_backend, tiny_model_id):
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} {i}" for i in range(16)]
    solo = [
        [
            t.token_id
            for e in open_events(build_request(p, model_id=tiny_model_id, sampling_params={"max_tokens": 16}))
            if isinstance(e, Delta)
            for t in e.tokens
        ]
        for p in prompts
    ]
    streams = [open_events(build_request(p, model_id=tiny_model_id, sampling_params={"max_tokens": 16})) for p in prompts]
    together = [[t.token_id for e in s if isinstance(e, Delta) for t in e.tokens] for s in streams]
    equal = sum(a == b for a, b in zip(solo, together))
    assert equal == 16, f"{equal} of 16 equal their solo runs"
    assert tiny_backend.engine.stats.max_rows > 1


def test_seeded_sampling_does_not_depend_on_the_batch(tiny_model_id):
    params = {"max_tokens": 16, "strategy": {"type": "top_p", "temperature": 1.2, "top_p": 0.9}}
    request = build_request("Once upon", model_id=tiny_model_id, sampling_params=params)
    alone = [t.token_id for e in open_events(request, seed=5) if isinstance(e, Delta) for t in e.tokens]
    crowd = [open_events(build_request(p, model_id=tiny_model_id, sampling_params=params), seed=i) for i, p in enumerate(PROMPTS)]
    mine = open_events(request, seed=5)
    together = [t.token_id for e in mine if isinstance(e, Delta) for t in e.tokens]
    for stream in crowd:
        list(stream)
    assert together == alone


def test_a_second_complete_runs_while_a_stream_is_open_in_the_same_thread(tiny_model_id):
    import faulthandler

    stream = complete("Once upon a time", model_id=tiny_model_id, stream=True, sampling_params={"max_tokens": 40})
    next(stream)
    # before the engine owned sequences, this call waited forever for the open stream's lock:
    # a deadline turns that hang into a failure with the stacks printed
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        response = complete("The capital of", model_id=tiny_model_id, sampling_params={"max_tokens": 5})
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert response.stop_reason is not None
    rest = list(stream)
    assert rest[-1].stop_reason is not None


def _wait_until_idle(engine, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if engine.active == 0:
            return True
        time.sleep(0.01)
    return False


def test_a_dropped_half_read_stream_releases_the_engine(tiny_backend, tiny_model_id):
    stream = complete("Once upon a time", model_id=tiny_model_id, stream=True, sampling_params={"max_tokens": 200})
    next(stream)
    del stream
    gc.collect()
    assert _wait_until_idle(tiny_backend.engine, 10)


def test_closing_an_event_stream_cancels_its_sequence(tiny_backend, tiny_model_id):
    events = open_events(build_request("Once", model_id=tiny_model_id, sampling_params={"max_tokens": 200}))
    next(events)
    events.close()
    assert _wait_until_idle(tiny_backend.engine, 10)
    with pytest.raises(StopIteration):
        next(events)


def test_compare_prefills_the_prompt_once(tiny_backend, tiny_model_id):
    prompt = "Once upon a time there was a small model that liked to generate text. It"
    engine = tiny_backend.engine
    before, reused = engine.stats.prefill_tokens, engine.stats.reused_tokens
    settings = [{"temperature": 0}, {"temperature": 1.0}, {"top_k": 5}, {"temperature": 0.7, "top_p": 0.9}]
    result = compare(prompt, settings, model_id=tiny_model_id, max_tokens=12, live=False)
    assert len(result) == 4 and all(run.tokens for run in result)
    n = len(tiny_backend.encode(prompt))
    assert engine.stats.prefill_tokens - before <= n - 1  # at most one prefill (less where a parked run shares a prefix)
    assert engine.stats.reused_tokens - reused >= 3 * (n - 1)  # the other three forked from it
    solo = complete(prompt, model_id=tiny_model_id, sampling_params={"max_tokens": 12})
    assert result[0].text == solo.content


def test_a_branch_from_text_reuses_the_finished_run(tiny_backend, tiny_model_id):
    """What a widget branch sends: the prompt plus the shown tokens' text plus the alternative."""
    prompt = "def add(a, b):\n    return a + b\n\nThe capital of Italy is"
    first = complete(prompt, model_id=tiny_model_id, sampling_params={"max_tokens": 12}, logprobs=3)
    pieces = [next(iter(lp.logprobs_by_token)) for lp in first.logprobs]
    engine = tiny_backend.engine
    reused, prefilled = engine.stats.reused_tokens, engine.stats.prefill_tokens
    branch = prompt + "".join(pieces[:5]) + " Rome"
    response = complete(branch, model_id=tiny_model_id, sampling_params={"max_tokens": 8})
    assert response.stop_reason is not None
    assert engine.stats.reused_tokens - reused >= len(tiny_backend.encode(prompt)) - 1
    assert engine.stats.prefill_tokens - prefilled <= len(tiny_backend.encode(branch)) - len(tiny_backend.encode(prompt)) + 1


@pytest.mark.slow
def test_the_compiled_decode_pass_equals_eager_alone_and_batched(tiny_backend):
    """Compiled on its own thread (both graphs: one row, several rows), then used for one row, a
    batch and one row again, with the guards that cannot tell the graphs apart skipped."""
    ids_list = [tiny_backend.encode(p) for p in PROMPTS]
    eager, compiled = Engine(tiny_backend.model, max_batch=8), Engine(tiny_backend.model, max_batch=8, compile=True)
    try:
        assert compiled.compiled.wait(300), "the decode pass did not compile"
        expected = [[c.token_id for c in s.tokens] for s in run_engine(eager, tiny_backend, ids_list, 24)]
        alone = [c.token_id for c in run_engine(compiled, tiny_backend, ids_list[:1], 24)[0].tokens]
        batched = [[c.token_id for c in s.tokens] for s in run_engine(compiled, tiny_backend, ids_list, 24)]
        again = [c.token_id for c in run_engine(compiled, tiny_backend, ids_list[:1], 24)[0].tokens]
    finally:
        eager.close()
        compiled.close()
    assert compiled.stats.max_rows == len(PROMPTS)
    assert compiled.stats.compiled_passes == compiled.stats.decode_passes > 0
    assert compiled.runner._lean_decode_call.eager_fallbacks == 0  # every pass ran a compiled graph
    assert batched == expected
    assert alone == again == expected[0]


def test_a_failing_forward_pass_ends_its_sequences_with_an_error_and_the_engine_goes_on(tiny_backend):
    from nb_completion.api.errors import EngineFailure
    from nb_completion.engine import registry
    from nb_completion.engine.local import LocalBackend
    from nb_completion.engine.tiny import build_model

    model = build_model(len(tiny_backend.tokenizer))
    backend = LocalBackend(model, tiny_backend.tokenizer, "tiny-failing-once")
    runner = backend.engine.runner  # the lean pass or the model's own forward: both go through forward
    real_forward, calls = runner.forward, []

    def forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return real_forward(*args, **kwargs)

    runner.forward = forward
    registry.register(backend)  # errors become the spec's Error once, at service.open_events
    try:
        request = build_request("Once upon a time", model_id="tiny-failing-once", sampling_params={"max_tokens": 10})
        with pytest.raises(EngineFailure):
            list(open_events(request))
        events = list(open_events(request))
        assert isinstance(events[-1], Finished) and events[-1].completion_tokens == 10
    finally:
        registry.unregister("tiny-failing-once")
        backend.engine.close()


def test_closing_a_backend_ends_its_engine_thread_and_a_new_open_starts_another(tiny_backend):
    from nb_completion.engine.local import LocalBackend

    backend = LocalBackend(tiny_backend.model, tiny_backend.tokenizer, "tiny-closing")
    request = build_request("Once", model_id="tiny-llama", sampling_params={"max_tokens": 3})
    list(backend.open(request))
    thread = backend.engine._thread
    backend.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(list(backend.open(request))[-1], Finished)
    backend.close()


def test_a_script_that_used_the_engine_exits_cleanly():
    """The engine thread is ended at exit: frozen inside torch it aborted the process (about 2 runs in 5)."""
    import subprocess
    import sys

    script = (
        "from nb_completion import complete\n"
        "from nb_completion.engine.tiny import register_tiny_model\n"
        "model = register_tiny_model().info.identifier\n"
        "print(complete('hello', model_id=model, sampling_params={'max_tokens': 5}).content)\n"
    )
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]


def test_a_request_whose_admission_fails_gets_the_error_and_the_engine_serves_on(tiny_model_id, monkeypatch):
    """A failure while admitting a sequence (here its row parameters) reaches that request as an
    error; before, the sequence was in no list and its caller waited forever."""
    from nb_completion.api.errors import CompletionError
    from nb_completion.engine.batch_sampling import RowTable

    original = RowTable.set
    calls = {"n": 0}

    def failing_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("row parameters refused")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RowTable, "set", failing_once)
    outcome: dict = {}

    def run() -> None:
        try:
            complete("Hello there", model_id=tiny_model_id, sampling_params={"max_tokens": 3})
        except CompletionError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive() and outcome["error"].status == 500
    after = complete("Hello there", model_id=tiny_model_id, sampling_params={"max_tokens": 3})
    assert {m.metric: m.value for m in after.metrics}["completion_tokens"] == 3


def test_an_engine_serves_eagerly_while_it_compiles_and_switches_only_when_idle(tiny_backend, monkeypatch):
    """A sequence runs on one pass from its first token to its last: the compiled pass, built
    while this one decodes, is used from the next sequence on."""
    from nb_completion.engine import llama_pass

    release, started = threading.Event(), threading.Event()

    def slow_compile(lean, store):  # built only once the running sequence has made 3 tokens
        started.set()
        assert release.wait(60)
        return lean.decode

    class ReleaseAtThree(Collect):
        seen_compiled: list = []

        def on_token(self, chosen, now):
            if len(self.tokens) == 3:
                release.set()
            self.seen_compiled.append(self.engine.compiled.is_set())
            return super().on_token(chosen, now)

    monkeypatch.setattr(llama_pass, "warm_compiled_decode", slow_compile)
    engine = Engine(tiny_backend.model, max_batch=4, compile=True)
    try:
        assert started.wait(30)
        assert engine.decode_pass == "lean, compiling"
        sink = ReleaseAtThree()
        sink.engine = engine
        ids = tiny_backend.encode(PROMPTS[0])
        engine.submit(Work(ids=list(ids), params=RowParams(), max_new=30, sink=sink, stop_ids=()))
        assert sink.end.wait(60)
        assert release.is_set() and len(sink.tokens) == 30
        assert not any(sink.seen_compiled) and engine.stats.compiled_passes == 0
        assert engine.compiled.wait(30)  # switched once the engine was idle
        assert engine.decode_pass == "lean, compiled"
        again = run_engine(engine, tiny_backend, [ids], 30)[0].tokens
        assert engine.stats.compiled_passes > 0
        assert [c.token_id for c in again] == [c.token_id for c in sink.tokens]
    finally:
        release.set()
        engine.close()


def test_compiling_is_asked_for(monkeypatch):
    from nb_completion.engine import local
    from nb_completion.server.options import build_parser

    monkeypatch.delenv("NB_COMPLETION_COMPILE")
    assert not local.compile_by_default()  # the default: every run of a prompt on one pass
    monkeypatch.setenv("NB_COMPLETION_COMPILE", "1")
    assert local.compile_by_default()
    assert build_parser("serve").parse_args(["--compile"]).compile
    assert not build_parser("serve").parse_args([]).compile
