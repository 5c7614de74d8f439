"""The model runner: one forward pass over the slots the scheduler chose, and which pass that is.

``prefill(slot, ids, start)`` caches a chunk of one prompt; ``decode(tokens, positions)`` feeds
each decoding row's newest token in one pass ``[rows, 1]`` (row ``i`` in slot ``i``) and returns
the logits of every row. For Llama-architecture models the pass is the lean one (``llama_pass.py``),
else the model's own forward, which stays the reference (``lean=False``). With ``compile`` the lean
decode pass is compiled on a thread of its own while the eager one serves; the runner switches to
it when the engine says no sequence is decoding (``switch_when_idle``), so a sequence runs on one
pass from its first token to its last. Without the lean pass, the model's forward is compiled in
place (its first passes wait for it). See docs/engine.md.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

import torch

from . import llama_pass
from .kv import SlotStore, aligned, cache_kwarg, decode_mask, prefill_mask
from .model_lock import model_lock
from .llama_pass import LlamaPass

log = logging.getLogger("nb_completion.engine")


class ModelRunner:
    def __init__(
        self,
        model: Any,
        store: SlotStore,
        *,
        lean: bool = True,
        compile: bool = False,
    ):
        self.model, self.store = model, store
        self.device = store.device
        self.dtype = store.dtype
        self.cache_name = cache_kwarg(model)
        self.lock = model_lock(model)  # the inside views switch the model's attention and hook its layers
        self.lean = LlamaPass(model, store.max_len) if lean and llama_pass.supports(model) else None
        self._prefill_call = self.lean or self._model_pass
        self._decode_call = self._lean_decode if self.lean is not None else self._model_pass
        self._lean_decode_call = self.lean.decode if self.lean is not None else None
        self.compiled = threading.Event()
        self._compiling = bool(compile)
        self._built_decode: Optional[Callable] = None  # compiled, waiting for the engine to be idle
        self.on_compiled: Callable[[], None] = lambda: None  # the engine's: switch now if idle
        if compile and self.lean is None:
            self._decode_call = torch.compile(self._model_pass, dynamic=True)
            self.compiled.set()
        if compile and self.lean is not None:
            threading.Thread(target=self._compile_lean_decode, name="nb-completion-compile", daemon=True).start()

    # ---- the passes ----------------------------------------------------------------------------

    def forward(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, view: Any, decode: bool = False
    ) -> torch.Tensor:
        """Logits ``[rows, vocab]`` of each row's last position."""
        with self.lock:
            return (self._decode_call if decode else self._prefill_call)(ids, positions, mask, view)

    def prefill(self, slot: int, ids: list[int], start: int) -> None:
        """Cache ``ids`` at positions ``start, start + 1, ...`` of ``slot``."""
        n = len(ids)
        positions = torch.arange(start, start + n, device=self.device)
        kv_len = aligned(start + n, self.store.max_len)
        view = self.store.view(slot, 1, positions[:1], n, kv_len, start)
        mask = prefill_mask(start, n, kv_len, self.dtype, self.device)
        self.forward(torch.tensor([ids], device=self.device), positions[None], mask, view)

    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """Row ``i`` (slot ``i``) feeds ``tokens[i]`` at ``positions[i]``: the logits ``[rows, vocab]``."""
        at = torch.tensor(positions, device=self.device)
        ids = torch.tensor(tokens, device=self.device)[:, None]
        kv_len = aligned(max(positions) + 1, self.store.max_len)
        view = self.store.view(0, len(tokens), at, 1, kv_len)
        return self.forward(ids, at[:, None], decode_mask(at, kv_len, self.dtype), view, decode=True)

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

    # ---- compilation ---------------------------------------------------------------------------

    @property
    def decode_pass(self) -> str:
        """ "lean" or "model forward", then ", compiling" or ", compiled" where it compiles."""
        name = "lean" if self.lean is not None else "model forward"
        if self.compiled.is_set():
            return f"{name}, compiled"
        return f"{name}, compiling" if self._compiling else name

    @property
    def switch_pending(self) -> bool:
        """A compiled pass is built and waits for the engine to be idle."""
        return self._built_decode is not None

    def _compile_lean_decode(self) -> None:
        try:
            built = llama_pass.warm_compiled_decode(self.lean, self.store)
        except Exception as exc:  # the eager pass goes on serving
            log.warning("compiling the decode pass failed (%s); staying eager", exc)
            log.debug("compile failure", exc_info=True)
            self._compiling = False
            return
        self._built_decode = built
        self.on_compiled()

    def switch_when_idle(self, idle: bool) -> None:
        """Start using the compiled decode pass once no sequence is decoding (``idle``): it rounds
        a few last bits differently from the eager pass, so a sequence runs on one pass from its
        first token to its last."""
        if self._built_decode is None or not idle:
            return
        self._lean_decode_call, self._built_decode = self._built_decode, None
        log.info("the compiled decode pass is in use")
        self.compiled.set()
