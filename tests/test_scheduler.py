"""The engine's scheduling without a model, as vLLM's scheduler tests do: a fake KV store that
records what each slot holds, and a fake runner whose "logits" are a function of the cache it reads.

The runner's next token for a row is ``next_token(cached ids + fed token)``: a sequence's output is
right only if every fork, move and park kept its cache intact, whatever ran beside it. Steps are
driven by hand (``engine.step()``), so each test sees exactly who ran in which step."""

from __future__ import annotations

import random
import threading

import pytest
import torch

from engine_sink import Collect
from nb_completion.engine.batch_engine import Engine
from nb_completion.engine.batch_sampling import RowParams
from nb_completion.engine.sequence import Sequence, Work

VOCAB = 97
END = 0  # a stop token the reference can produce


def next_token(ids: list[int]) -> int:
    """The fake model: a deterministic function of the whole context."""
    return (sum((i + 1) * t for i, t in enumerate(ids)) * 31 + 7) % VOCAB


def reference(ids: list[int], max_new: int, stop: frozenset[int] = frozenset()) -> list[int]:
    out, ids = [], list(ids)
    for _ in range(max_new):
        token = next_token(ids)
        out.append(token)
        ids.append(token)
        if token in stop:
            break
    return out


class FakeStore:
    """What each slot's cache holds: ``rows[slot][position]`` is the token cached there (None: never written)."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, slots: int, max_len: int = 512):
        self.max_len, self.slots = max_len, slots
        self.rows: list[list] = [[None] * max_len for _ in range(slots)]
        self.copies: list[tuple[int, int, int]] = []
        self.released: list[int] = []

    def copy(self, source: int, target: int, length: int) -> None:
        self.copies.append((source, target, length))
        self.rows[target][:length] = self.rows[source][:length]
        self.rows[target][length:] = [None] * (self.max_len - length)

    def release(self, slot: int, keep: int | None = None) -> int:
        self.released.append(slot)
        return 0

    def release_range(self, first: int, end: int, keep: int | None = None) -> int:
        return 0


class FakeRunner:
    """Writes what a pass would cache into the fake store; decode answers from the cache it reads."""

    lean = None
    compiled = threading.Event()
    decode_pass = "fake"
    switch_pending = False

    def __init__(self, store: FakeStore):
        self.store = store
        self.prefills: list[tuple[int, int, int]] = []  # (slot, start, n)
        self.decodes: list[int] = []  # rows per decode pass

    def switch_when_idle(self, idle: bool) -> None:
        pass

    def prefill(self, slot: int, ids: list[int], start: int) -> None:
        row = self.store.rows[slot]
        assert all(t is not None for t in row[:start]), "prefill past a hole in the cache"
        row[start : start + len(ids)] = ids
        self.prefills.append((slot, start, len(ids)))

    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        self.decodes.append(len(tokens))
        logits = torch.zeros(len(tokens), VOCAB)
        for slot, (token, at) in enumerate(zip(tokens, positions)):
            row = self.store.rows[slot]
            context = row[:at] + [token]
            assert None not in context, f"slot {slot} lost its cache"
            row[at] = token
            logits[slot, next_token(context)] = 10.0
        return logits


def make_engine(max_batch: int = 4, parked: int = 2, chunk: int = 8) -> Engine:
    store = FakeStore(max_batch + parked)
    return Engine.from_parts(FakeRunner(store), store, VOCAB, max_batch=max_batch, parked=parked, chunk=chunk)


def add(engine: Engine, ids: list[int], max_new: int = 6, stop: frozenset[int] = frozenset()) -> tuple[Sequence, Collect]:
    sink = Collect()
    sink.engine = engine
    seq = Sequence(Work(ids=list(ids), params=RowParams(top_logprobs=1), max_new=max_new, sink=sink, stop_ids=stop))
    engine.scheduler.add([seq])
    return seq, sink


def run_until_idle(engine: Engine, limit: int = 500) -> None:
    for _ in range(limit):
        if not engine.scheduler.busy:
            return
        engine.step()
    raise AssertionError("the engine did not finish")


def tokens(sink: Collect) -> list[int]:
    return [c.token_id for c in sink.tokens]


def test_admission_fills_the_batch_and_the_rest_wait_in_order():
    engine = make_engine(max_batch=2)
    sinks = [add(engine, [i + 1, i + 2], max_new=3)[1] for i in range(3)]
    engine.step()
    assert len(engine.scheduler.decoding) == 2 and len(engine.scheduler.waiting) == 1
    assert engine.runner.decodes == [2]
    run_until_idle(engine)
    for i, sink in enumerate(sinks):
        assert tokens(sink) == reference([i + 1, i + 2], 3) and sink.reason == "out_of_tokens"
    assert sinks[2].first_token_step > sinks[0].first_token_step  # the third waited for a free row


def test_a_long_prompt_prefills_in_chunks_while_the_others_keep_decoding():
    engine = make_engine(chunk=4)
    _, short = add(engine, [3, 4], max_new=8)
    engine.step()  # the short one decodes from its first step
    long_ids = list(range(10, 21))  # 11 tokens: 10 prefilled in chunks of 4, the last fed by decode
    _, long = add(engine, long_ids, max_new=3)
    for _ in range(3):
        engine.step()
    assert [(start, n) for _, start, n in engine.runner.prefills if n != 1][-3:] == [(0, 4), (4, 4), (8, 2)]
    assert engine.runner.decodes == [1, 1, 1, 2]  # the short one never waited for the long prompt
    run_until_idle(engine)
    assert tokens(short) == reference([3, 4], 8) and tokens(long) == reference(long_ids, 3)


def test_prompts_prefill_one_at_a_time_in_arrival_order_within_the_step_budget():
    engine = make_engine(chunk=8)
    first, second = list(range(1, 6)), list(range(40, 46))
    add(engine, first, max_new=2)
    add(engine, second, max_new=2)
    engine.step()
    # 4 tokens of the first (its last token is left for decode), then 4 of the second's 5
    assert [(start, n) for _, start, n in engine.runner.prefills] == [(0, 4), (0, 4)]
    assert engine.scheduler.prefilling is not None and engine.scheduler.prefilling.ids == second
    run_until_idle(engine)


def test_a_sequence_sharing_a_live_prefix_forks_it_by_copy_and_prefills_only_the_rest():
    engine = make_engine(chunk=64)
    prompt = list(range(1, 21))
    add(engine, prompt, max_new=10)
    engine.step()
    engine.step()
    running = engine.scheduler.decoding[0]
    branch = running.ids[: running.cached] + [55]
    prefilled = sum(n for *_, n in engine.runner.prefills)
    _, forked = add(engine, branch, max_new=4)
    engine.step()
    assert engine.stats.reused_tokens == len(branch) - 1  # the whole cached prefix, by copy
    assert engine.store.copies[-1] == (running.slot, 1, len(branch) - 1)
    assert sum(n for *_, n in engine.runner.prefills) == prefilled  # nothing recomputed
    run_until_idle(engine)
    assert tokens(forked) == reference(branch, 4)


def test_a_finished_sequence_is_parked_and_a_later_run_forks_from_it():
    engine = make_engine(chunk=64)
    prompt = list(range(5, 30))
    _, first = add(engine, prompt, max_new=4)
    run_until_idle(engine)
    assert len(engine.parked) == 1
    prefilled = sum(n for *_, n in engine.runner.prefills)
    _, again = add(engine, prompt + tokens(first)[:2], max_new=3)
    run_until_idle(engine)
    assert sum(n for *_, n in engine.runner.prefills) == prefilled  # all of it came from the parked slot
    assert tokens(again) == reference(prompt + tokens(first)[:2], 3)


def test_parking_more_than_the_parked_slots_evicts_the_oldest():
    engine = make_engine(max_batch=2, parked=2)
    for i in range(3):
        add(engine, [70 + i, 1, 2], max_new=1)
        run_until_idle(engine)
    assert len(engine.parked) == 2
    assert sorted(p.ids[0] for p in engine.parked.values()) == [71, 72]


def test_cancel_ends_a_waiting_sequence_before_it_starts_and_a_decoding_one_at_once():
    engine = make_engine(max_batch=2)
    a, sink_a = add(engine, [1, 2], max_new=20)
    b, sink_b = add(engine, [3, 4], max_new=20)
    c, sink_c = add(engine, list(range(50, 60)), max_new=20)
    engine.step()
    c.work.cancel.set()
    a.work.cancel.set()
    prefilled = list(engine.runner.prefills)
    engine.step()
    assert sink_a.reason == "cancelled" and sink_c.reason == "cancelled"
    assert engine.runner.prefills == prefilled  # the waiting one never ran
    assert b.slot == 0 and engine.scheduler.decoding == [b]  # the last row moved into the hole
    run_until_idle(engine)
    assert tokens(sink_b) == reference([3, 4], 20)


def test_stop_tokens_and_max_new_end_sequences_and_free_their_rows_for_the_waiting():
    engine = make_engine(max_batch=1)
    prompt = [9, 9, 9]
    stop = frozenset(reference(prompt, 5)[2:3])
    _, stopped = add(engine, prompt, max_new=10, stop=stop)
    _, after = add(engine, [8], max_new=2)
    run_until_idle(engine)
    assert stopped.reason == "stop_token" and tokens(stopped) == reference(prompt, 10, stop)
    assert after.reason == "out_of_tokens" and tokens(after) == reference([8], 2)


@pytest.mark.parametrize("seed", range(5))
def test_any_arrival_order_gives_each_sequence_its_solo_output(seed):
    """Fairness and isolation: sequences arriving at random steps, sharing random prefixes, some
    cancelled, each get exactly the tokens they would alone, and every one ends."""
    rng = random.Random(seed)
    engine = make_engine(max_batch=3, parked=2, chunk=rng.choice([2, 5, 16]))
    base = [rng.randrange(1, VOCAB) for _ in range(12)]
    pending = []
    for _ in range(10):
        ids = base[: rng.randrange(1, 12)] + [rng.randrange(1, VOCAB) for _ in range(rng.randrange(0, 6))]
        pending.append((rng.randrange(0, 15), ids or [1], rng.randrange(1, 8), rng.random() < 0.2))
    sinks = []
    for step in range(400):
        for _, ids, max_new, cancel in [p for p in pending if p[0] == step]:
            seq, sink = add(engine, ids, max_new)
            sinks.append((seq, sink, ids, max_new, cancel))
        for seq, sink, *_, cancel in sinks:
            if cancel and len(sink.tokens) >= 1:
                seq.work.cancel.set()
        if step > 15 and not engine.scheduler.busy:
            break
        engine.step()
    assert len(sinks) == len(pending)
    for _, sink, ids, max_new, _ in sinks:
        assert sink.end.is_set()
        expected = reference(ids, max_new)
        if sink.reason == "cancelled":
            assert tokens(sink) == expected[: len(sink.tokens)]
        else:
            assert sink.reason == "out_of_tokens" and tokens(sink) == expected
    assert engine.stats.max_rows <= 3
