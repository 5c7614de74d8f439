"""The engine: it owns the sequences and steps all of them with one forward pass per step.

A ``Sequence`` holds its token ids, how many of them are in its KV slot (``cached``), and its own
decode state (``Work``: sampling parameters and seed generator, repetition penalty, grammar,
``max_new`` tokens, stop tokens, and the ``sink`` that turns tokens into events). One thread runs
``step()`` in a loop:

1. **Admit** waiting sequences (step boundaries only). Each takes the longest prefix of its ids
   already cached by a live or recently finished sequence (a fork: the rows are copied, never
   recomputed). A sequence with one uncached token left joins the decode batch at once; one with
   more is prefilled, one at a time, in chunks of ``chunk`` tokens.
2. **Cancel**: sequences whose cancel event is set end now (waiting ones never start).
3. **Prefill** at most ``chunk`` prompt tokens per step: a chunk of a long prompt, or several
   short prompts one after another (the last prompt token is left for the decode pass, which
   yields the first token). A long prompt therefore costs the others one chunk of latency per
   step, and its cancel is honoured between chunks.
4. **Decode**: every decoding sequence feeds its newest token in ONE forward pass ``[rows, 1]``
   with per-row positions; ``batch_sampling.choose_batch`` picks and measures all rows and reads
   back once. Finished sequences retire; the last decoding row moves into the hole, so the batch
   stays the contiguous slots ``[0, rows)``, and the finished one is parked (its KV kept) in one
   of ``parked`` extra slots for a later fork (a widget branch, a re-run) until evicted.
"""

from __future__ import annotations

import atexit
import collections
import logging
import weakref
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch

from .batch_sampling import Chosen, RowParams, RowTable, choose_batch
from .generate import _cache_kwarg
from . import llama_pass
from .kv import SlotStore, aligned, decode_mask, parked_over_budget, prefill_mask
from .llama_pass import LlamaPass, warm_compiled_decode

log = logging.getLogger("nb_completion.engine")

DEFAULT_MAX_BATCH = 16  # sequences stepped together on the CPU
DEFAULT_MAX_BATCH_CUDA = 64


def default_max_batch(device: torch.device) -> int:
    return DEFAULT_MAX_BATCH_CUDA if device.type == "cuda" else DEFAULT_MAX_BATCH


class Sink(Protocol):
    def on_token(self, chosen: Chosen, now: float) -> bool:
        """A new token; return True to stop the sequence here (a stop string)."""

    def on_end(self, reason: str, stop_token_id: Optional[int], steps: int) -> None:
        """The sequence ended: stop_token | grammar_complete | out_of_tokens | stop_string | cancelled."""

    def on_error(self, exc: BaseException) -> None: ...


@dataclass
class Work:
    ids: list[int]
    params: RowParams
    max_new: int
    sink: Sink
    stop_ids: frozenset[int] = frozenset()
    constraint: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)


class Sequence:
    def __init__(self, work: Work):
        self.work = work
        self.ids = list(work.ids)
        self.prompt_len = len(self.ids)
        self.cached = 0  # ids[:cached] have their keys and values in the slot
        self.reused = 0  # of which taken from another sequence's slot
        self.slot: Optional[int] = None
        self.steps = 0
        self.done = False


@dataclass
class _Parked:
    ids: list[int]  # the ids whose KV the slot holds
    tick: int


@dataclass
class Stats:
    steps: int = 0
    decode_passes: int = 0
    decode_rows: int = 0
    max_rows: int = 0  # the widest decode pass so far
    prefill_passes: int = 0
    prefill_tokens: int = 0
    reused_tokens: int = 0
    compiled_passes: int = 0  # decode passes made by the compiled pass


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b):
        if n >= limit or x != y:
            break
        n += 1
    return n


_live_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()


@atexit.register
def _close_live_engines() -> None:
    """End every engine thread before the interpreter freezes daemon threads: one frozen inside
    torch while its thread pools are torn down aborts the process ("terminate called without an
    active exception")."""
    for engine in list(_live_engines):
        engine.close(timeout=2.0)


class Engine:
    """Continuous batching over one model. ``submit`` from any thread; the engine thread does the rest."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch: Optional[int] = None,
        parked: int = 4,
        chunk: int = 128,
        max_len: Optional[int] = None,
        compile: bool = False,
        lean: bool = True,
    ):
        self.model = model
        self.device = next(model.parameters()).device
        max_batch = max_batch or default_max_batch(self.device)
        table = model.get_input_embeddings()
        dtype = getattr(table, "dtype", None) or table.weight.dtype  # a GGUF block table says its own
        context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        self.max_batch, self.parked_slots, self.chunk = max_batch, parked, chunk
        self.store = SlotStore(model, max_batch + parked, max_len or context, self.device, dtype)
        # The lean pass (llama_pass.py) for Llama-architecture models, else the model's own forward,
        # which stays the reference (``lean=False``). With ``compile`` the lean decode pass is
        # compiled on a thread of its own while the eager one serves; the engine switches to it once
        # it is built and no sequence is decoding (``compiled`` is set). Without the lean pass, the
        # model's forward is compiled in place (its first passes wait for it). See docs/engine.md.
        self.lean = LlamaPass(model, self.store.max_len) if lean and llama_pass.supports(model) else None
        self._prefill_call = self.lean or self._model_pass
        self._decode_call = self._lean_decode if self.lean is not None else self._model_pass
        self._lean_decode_call = self.lean.decode if self.lean is not None else None
        self.compiled = threading.Event()
        self._compiling = bool(compile)
        self._built_decode: Optional[Callable] = None  # compiled, waiting for the engine to be idle
        if compile and self.lean is None:
            self._decode_call = torch.compile(self._model_pass, dynamic=True)
            self.compiled.set()
        self.table = RowTable(max_batch + parked, int(model.config.vocab_size), self.device)
        self.cache_name = _cache_kwarg(model)
        self.dtype = dtype
        self.decoding: list[Sequence] = []  # decoding[i].slot == i
        self.prefilling: Optional[Sequence] = None  # at slot len(decoding)
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.parked: dict[int, _Parked] = {}
        self.stats = Stats()
        self._tick = 0
        self._inbox: list[Sequence] = []
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._admitting: Optional[Sequence] = None
        _live_engines.add(self)
        if compile and self.lean is not None:
            threading.Thread(target=self._compile_lean_decode, name="nb-completion-compile", daemon=True).start()

    # ---- any thread ----------------------------------------------------------------------------

    def submit(self, work: Work) -> Sequence:
        if len(work.ids) > self.store.max_len - 1 or len(work.ids) + work.max_new > self.store.max_len:
            raise ValueError("the sequence does not fit in the engine's cache")
        seq = Sequence(work)
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._inbox.append(seq)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nb_completion-engine", daemon=True)
                self._thread.start()
            self._cond.notify()
        return seq

    def wake(self) -> None:
        """Make the engine look at cancel events now (it also does at every step)."""
        with self._cond:
            self._cond.notify()

    @property
    def active(self) -> int:
        return len(self.decoding) + (self.prefilling is not None) + len(self.waiting) + len(self._inbox)

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._inbox and not self._busy() and self._built_decode is None:
                        self._cond.wait()
                    if self._closed:
                        break
                    self.waiting.extend(self._inbox)
                    self._inbox.clear()
                self._switch_when_idle()
                if not self._busy():
                    continue
                try:
                    self.step()
                except Exception as exc:  # a bug or a failed pass: end everyone, keep serving
                    log.exception("engine step failed")
                    self._fail_all(exc)
        self._fail_all(RuntimeError("the engine was closed"))

    def _busy(self) -> bool:
        return bool(self.decoding or self.prefilling or self.waiting)

    def step(self) -> None:
        self._switch_when_idle()
        self.stats.steps += 1
        self._drop_cancelled()
        self._admit()
        budget = self.chunk  # prompt tokens per step, over as many short prompts as fit
        while self.prefilling is not None and budget > 0:
            budget -= self._prefill_chunk(self.prefilling, budget)
            if self.prefilling is None:
                self._admit()
        if self.decoding:
            self._decode()

    # ---- admission and slots -------------------------------------------------------------------

    def _donor(self, ids: list[int]) -> tuple[Any, int]:
        """(sequence or parked slot, length) with the longest cached prefix of ``ids`` (at most len-1)."""
        limit = len(ids) - 1
        best: Any = None
        best_len = 0
        candidates: list[tuple[Any, list[int]]] = [(s, s.ids[: s.cached]) for s in self.decoding]
        if self.prefilling is not None:
            candidates.append((self.prefilling, self.prefilling.ids[: self.prefilling.cached]))
        candidates += [(slot, p.ids) for slot, p in self.parked.items()]
        for owner, cached in candidates:
            n = _common_prefix(cached, ids, limit)
            if n > best_len:
                best, best_len = owner, n
        return best, best_len

    def _admit(self) -> None:
        while self.waiting and len(self.decoding) + (self.prefilling is not None) < self.max_batch:
            seq = self.waiting[0]
            donor, reuse = self._donor(seq.ids)
            direct = len(seq.ids) - reuse == 1
            if not direct and self.prefilling is not None:
                break  # one prompt prefills at a time, in order
            self.waiting.popleft()
            self._admitting = seq  # failed by _fail_all if admission itself raises
            target = len(self.decoding)
            if direct and self.prefilling is not None:
                self._move(self.prefilling, target + 1)
            if donor is not None:
                source = donor if isinstance(donor, int) else donor.slot
                self.store.copy(source, target, reuse)
                if isinstance(donor, int):
                    self.parked[donor].tick = self._next_tick()
            seq.cached = seq.reused = reuse
            self.stats.reused_tokens += reuse
            seq.slot = target
            self.table.set(target, seq.work.params, seq.ids)
            if direct:
                self.decoding.append(seq)
            else:
                self.prefilling = seq
            self._admitting = None

    def _move(self, seq: Sequence, target: int) -> None:
        self.store.copy(seq.slot, target, seq.cached)
        self.table.move(seq.slot, target)
        seq.slot = target

    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick

    def _park(self, seq: Sequence) -> None:
        """Keep a finished sequence's KV in a parked slot for later forks (evicting the oldest)."""
        if self.parked_slots == 0 or seq.cached == 0:
            return
        free = [s for s in range(self.max_batch, self.max_batch + self.parked_slots) if s not in self.parked]
        slot = free[0] if free else min(self.parked, key=lambda s: self.parked[s].tick)
        self.store.copy(seq.slot, slot, seq.cached)
        self.parked[slot] = _Parked(seq.ids[: seq.cached], self._next_tick())
        lengths = {s: len(p.ids) for s, p in self.parked.items()}
        for evicted in parked_over_budget(lengths, {s: p.tick for s, p in self.parked.items()}):  # kv.py's policy
            del self.parked[evicted]
            self.store.release(evicted, keep=0)

    def _retire(
        self, seq: Sequence, reason: str, stop_token_id: Optional[int] = None, error: BaseException | None = None
    ) -> None:
        if seq.done:
            return
        seq.done = True
        if seq is self.prefilling:
            self.prefilling = None
        elif seq in self.decoding:
            if error is None:
                self._park(seq)
            hole = seq.slot
            last = self.decoding.pop()
            if last is not seq:
                self._move(last, hole)
                self.decoding[hole] = last
            if self.prefilling is not None:
                self._move(self.prefilling, len(self.decoding))
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.store.release_range(len(self.decoding) + (self.prefilling is not None), self.max_batch)  # kv.py's policy
        try:
            if error is not None:
                seq.work.sink.on_error(error)
            else:
                seq.work.sink.on_end(reason, stop_token_id, seq.steps)
        except Exception:  # pragma: no cover - a sink must not take the engine down
            log.exception("a sequence's sink failed")

    def _drop_cancelled(self) -> None:
        for seq in [s for s in (*self.waiting, *self.decoding, self.prefilling) if s is not None and s.work.cancel.is_set()]:
            self._retire(seq, "cancelled")

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            self.waiting.extend(self._inbox)
            self._inbox.clear()
        admitting, self._admitting = self._admitting, None
        for seq in [
            *self.waiting,
            *self.decoding,
            *([self.prefilling] if self.prefilling else []),
            *([admitting] if admitting else []),
        ]:
            seq.done = True
            try:
                seq.work.sink.on_error(exc)
            except Exception:  # pragma: no cover
                log.exception("a sequence's sink failed")
        self.waiting.clear()
        self.decoding.clear()
        self.prefilling = None

    # ---- the passes ----------------------------------------------------------------------------

    def _forward(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, view: Any, decode: bool = False
    ) -> torch.Tensor:
        """Logits ``[rows, vocab]`` of each row's last position."""
        return (self._decode_call if decode else self._prefill_call)(ids, positions, mask, view)

    @property
    def decode_pass(self) -> str:
        """ "lean" or "model forward", then ", compiling" or ", compiled" where it compiles."""
        name = "lean" if self.lean is not None else "model forward"
        if self.compiled.is_set():
            return f"{name}, compiled"
        return f"{name}, compiling" if self._compiling else name

    def _compile_lean_decode(self) -> None:
        try:
            built = warm_compiled_decode(self.lean, self.store)
        except Exception as exc:  # the eager pass goes on serving
            log.warning("compiling the decode pass failed (%s); staying eager", exc)
            log.debug("compile failure", exc_info=True)
            self._compiling = False
            return
        with self._cond:
            self._built_decode = built
            if self._thread is None:  # nothing has run yet: nothing to wait for
                self._switch_when_idle()
            self._cond.notify()

    def _switch_when_idle(self) -> None:
        """Start using the compiled decode pass once no sequence is decoding: it rounds a few last
        bits differently from the eager pass (int8 greedy text can part after some tokens), so a
        sequence runs on one pass from its first token to its last."""
        if self._built_decode is None or self.decoding or self.prefilling is not None:
            return
        self._lean_decode_call, self._built_decode = self._built_decode, None
        log.info("the compiled decode pass is in use")
        self.compiled.set()

    def _lean_decode(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, view: Any) -> torch.Tensor:
        return self._lean_decode_call(ids, positions, mask, self.store.keys, self.store.values)

    def _model_pass(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, view: Any) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_name: view},
        )
        return out.logits[:, -1]

    def _prefill_chunk(self, seq: Sequence, budget: int) -> int:
        """Prefill up to ``budget`` more prompt tokens of ``seq``; return how many (at least 1)."""
        start = seq.cached
        n = min(budget, len(seq.ids) - 1 - start)
        if n > 0:
            ids = torch.tensor([seq.ids[start : start + n]], device=self.device)
            positions = torch.arange(start, start + n, device=self.device)
            kv_len = aligned(start + n, self.store.max_len)
            view = self.store.view(seq.slot, 1, positions[:1], n, kv_len, start)
            try:
                self._forward(ids, positions[None], prefill_mask(start, n, kv_len, self.dtype, self.device), view)
            except Exception as exc:
                log.exception("prefill failed")
                self._retire(seq, "error", error=exc)
                return max(n, 1)
            seq.cached += n
            self.stats.prefill_passes += 1
            self.stats.prefill_tokens += n
        if len(seq.ids) - seq.cached == 1:
            self.prefilling = None
            self.decoding.append(seq)
        return max(n, 1)

    def _decode(self) -> None:
        rows = self.decoding
        positions = torch.tensor([s.cached for s in rows], device=self.device)
        ids = torch.tensor([[s.ids[s.cached]] for s in rows], device=self.device)
        kv_len = aligned(max(s.cached for s in rows) + 1, self.store.max_len)
        view = self.store.view(0, len(rows), positions, 1, kv_len)
        logits = self._forward(ids, positions[:, None], decode_mask(positions, kv_len, self.dtype), view, decode=True)
        if self.compiled.is_set():
            self.stats.compiled_passes += 1
        top_n = max(max(s.work.params.top_logprobs for s in rows), 1)
        chosen = choose_batch(logits, self.table, 0, [s.work.constraint for s in rows], top_n)
        now = time.perf_counter()
        self.stats.decode_passes += 1
        self.stats.decode_rows += len(rows)
        self.stats.max_rows = max(self.stats.max_rows, len(rows))
        ending: list[tuple[Sequence, str, Optional[int], Optional[BaseException]]] = []
        for seq, pick in zip(list(rows), chosen):
            seq.cached += 1
            if pick.error is not None:
                ending.append((seq, "error", None, pick.error))
                continue
            token = pick.token_id
            seq.ids.append(token)
            seq.steps += 1
            work = seq.work
            try:
                if work.constraint is not None:
                    work.constraint.advance(token)
                stop = work.sink.on_token(pick, now)
            except Exception as exc:
                ending.append((seq, "error", None, exc))
                continue
            if stop:
                ending.append((seq, "stop_string", None, None))
            elif token in work.stop_ids:
                ending.append((seq, "stop_token", token, None))
            elif work.constraint is not None and work.constraint.is_finished():
                ending.append((seq, "grammar_complete", None, None))
            elif seq.steps >= work.max_new:
                ending.append((seq, "out_of_tokens", None, None))
        for seq, reason, stop_token_id, error in ending:
            self._retire(seq, reason, stop_token_id, error)
