"""Structured output: a ``response_format`` enforced token by token with llguidance.

``compile_constraint(response_format, tokenizer, vocab_size)`` turns a JSON Schema or a grammar
(GBNF, Lark or a regular expression) into a ``Constraint``: one more processor in the sampling
chain. Per step the engine calls ``mask(logits)`` (disallowed tokens become ``-inf`` in place and
the number of allowed tokens comes back, 1 meaning the grammar forced the token), then
``advance(token_id)`` with the chosen token, and stops with ``end_of_turn`` once ``is_finished()``.

The end-of-sequence token is allowed only where the grammar accepts. Constrained JSON is compact:
no whitespace outside strings (a small model given free whitespace can wander in it).

The mask is applied with plain numpy on CPU logits (llguidance's ``torch.compile``d helper costs
~20 s on its first call on CPU, and torch's intra-op threads stall for milliseconds on a busy
machine), with ``masked_fill_`` elsewhere. Compiling llguidance's view of a tokenizer takes ~0.3 s,
so it is cached per tokenizer object.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import weakref
from typing import Any

import numpy as np
import torch

from ..api.errors import BadRequest
from ..api.types import GrammarResponseFormat, JsonSchemaResponseFormat
from ..api.validation import grammar_key
from . import deep_stack
from .grammar_limits import measure_grammar, measure_schema
from .grammar_syntax import grammar_text

__all__ = ["Constraint", "compile_constraint", "llg_tokenizer", "JSON_OPTIONS"]

# Applied after the schema's own "x-guidance" options: constrained JSON is always compact.
JSON_OPTIONS = {
    "whitespace_flexible": False,
    "whitespace_pattern": None,
    "item_separator": ",",
    "key_separator": ":",
}

_lock = threading.Lock()
_tokenizers: dict[int, tuple[weakref.ref, Any]] = {}


def _import_llguidance():
    import llguidance
    import llguidance.hf

    return llguidance


def llg_tokenizer(tokenizer) -> Any:
    """llguidance's ``LLTokenizer`` for an HF fast tokenizer, built once per tokenizer object."""
    key = id(tokenizer)
    with _lock:
        hit = _tokenizers.get(key)
        if hit is not None and hit[0]() is tokenizer:
            return hit[1]
    llguidance = _import_llguidance()
    try:
        llt = llguidance.hf.from_tokenizer(tokenizer)
    except ValueError as exc:  # a slow (pure Python) tokenizer
        raise BadRequest("response_format", f"structured output needs a fast tokenizer: {exc}") from None
    with _lock:
        try:
            ref = weakref.ref(tokenizer, lambda _r, key=key: _tokenizers.pop(key, None))
        except TypeError:  # not weak-referenceable: keep it alive with the cache entry
            ref = (lambda t: lambda: t)(tokenizer)
        _tokenizers[key] = (ref, llt)
    return llt


def _grammar(response_format) -> tuple[str, str]:
    """(llguidance grammar, field that names it in errors) for a validated response_format."""
    from llguidance import LLMatcher

    if isinstance(response_format, dict):
        kind = response_format.get("type")
        response_format = (JsonSchemaResponseFormat if kind == "json_schema" else GrammarResponseFormat).model_validate(
            response_format
        )
    if isinstance(response_format, JsonSchemaResponseFormat):
        field = "response_format.json_schema"
        try:
            measure_schema(response_format.json_schema)
        except ValueError as exc:
            raise BadRequest(field, str(exc)) from None
        try:
            return LLMatcher.grammar_from_json_schema(json.dumps(response_format.json_schema), overrides=JSON_OPTIONS), field
        except (ValueError, TypeError) as exc:
            raise BadRequest(field, f"invalid JSON Schema: {exc}") from None
    if isinstance(response_format, GrammarResponseFormat):
        key = grammar_key(response_format)
        field = f"response_format.bnf.{key}"
        text = response_format.bnf[key]
        try:
            measure_grammar(key, text)
            lark = grammar_text(key, text)
        except ValueError as exc:
            raise BadRequest(field, str(exc)) from None
        if key == "regex":
            return LLMatcher.grammar_from_regex(lark), field
        return LLMatcher.grammar_from_lark(lark), field
    raise BadRequest("response_format", f"unsupported response_format {type(response_format).__name__}")


def compile_constraint(response_format, tokenizer, vocab_size: int) -> "Constraint":
    """A fresh ``Constraint`` for one request.

    ``response_format``: a ``JsonSchemaResponseFormat`` or ``GrammarResponseFormat`` (or the same
    as a dict). ``tokenizer``: the model's HF fast tokenizer. ``vocab_size``: the width of the
    model's logits (may exceed the tokenizer's vocabulary; the extra ids are never allowed).
    Raises ``BadRequest`` naming ``response_format.json_schema`` or ``response_format.bnf.<key>``
    with the compiler's message when the schema or grammar is invalid, or when it is beyond the
    limits of ``grammar_limits`` (measured before anything is compiled). Compilation runs on a
    thread with a large stack (``deep_stack``): llguidance recurses natively.
    """
    llt = llg_tokenizer(tokenizer)
    return deep_stack.run(_compile, response_format, llt, vocab_size)


def _compile(response_format, llt, vocab_size: int) -> "Constraint":
    from llguidance import LLMatcher

    grammar, field = _grammar(response_format)
    matcher = LLMatcher(llt, grammar, log_level=0)
    if matcher.is_error():
        raise BadRequest(field, _tidy(matcher.get_error()))
    constraint = Constraint(matcher, llt, vocab_size)
    if not constraint.can_start():
        raise BadRequest(field, f"no text can satisfy this {_kind(field)} (its language is empty)")
    return constraint


def _kind(field: str) -> str:
    return "schema" if field.endswith("json_schema") else "grammar"


def _tidy(message: str) -> str:
    message = message.strip()
    return message if message else "the grammar does not compile"


class Constraint:
    """One request's grammar state. Not thread-safe: one generation loop drives it."""

    def __init__(self, matcher, llg_tok, vocab_size: int):
        self._matcher = matcher
        self._n_tok = int(llg_tok.vocab_size)
        self._eos = tuple(int(t) for t in llg_tok.eos_tokens)
        self.vocab_size = int(vocab_size)
        self._words = np.zeros((self._n_tok + 31) // 32, dtype=np.int32)
        self._allowed: np.ndarray | None = None  # bool [min(vocab, tokenizer)] of the last mask
        self._blocked = np.ones(self.vocab_size, dtype=np.bool_)  # ids past the tokenizer stay blocked
        self.steps = 0
        self.seconds = 0.0  # time spent in mask + advance (the grammar's share of decoding)
        self._only_eos_at = -1
        self._only_eos = False

    # -- the engine's three calls ------------------------------------------------------------

    def mask(self, logits: torch.Tensor) -> int:
        """Set the tokens the grammar forbids to ``-inf`` in place; return how many are allowed."""
        if logits.dim() != 1 or logits.shape[0] != self.vocab_size:
            raise ValueError(f"expected logits of shape [{self.vocab_size}], got {list(logits.shape)}")
        started = time.perf_counter()
        self._check()
        words = self._words
        self._matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        self._check()
        n = min(self.vocab_size, self._n_tok)
        allowed = np.unpackbits(words.view(np.uint8), bitorder="little")[:n].view(np.bool_)
        count = int(np.count_nonzero(allowed))
        if count == 0:
            raise RuntimeError("the grammar allows no token here (the tokenizer cannot spell what it needs)")
        self._allowed = allowed
        np.logical_not(allowed, out=self._blocked[:n])
        if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64) and logits.is_contiguous():
            # numpy, single-threaded: torch's intra-op threads can stall for a scheduler slice
            # (milliseconds) on a busy CPU, for work that takes microseconds.
            np.copyto(logits.numpy(), -np.inf, where=self._blocked)
        else:
            logits.masked_fill_(torch.from_numpy(self._blocked).to(logits.device, non_blocking=True), float("-inf"))
        self.seconds += time.perf_counter() - started
        return count

    def advance(self, token_id: int) -> None:
        """Consume the chosen token (it must be one the last mask allowed)."""
        started = time.perf_counter()
        token_id = int(token_id)
        if not self._matcher.consume_token(token_id):
            raise RuntimeError(f"the grammar rejected token {token_id}: {self._matcher.get_error()}")
        self.steps += 1
        self.seconds += time.perf_counter() - started

    def is_finished(self) -> bool:
        """The grammar has accepted and can take nothing more (only the end token)."""
        m = self._matcher
        if m.is_error():
            return False
        if m.is_stopped():
            return True
        if not m.is_accepting():
            return False
        if self._only_eos_at != self.steps:  # llguidance reports "stopped" only after a token
            words = self._words
            m.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
            bits = np.unpackbits(words.view(np.uint8), bitorder="little")
            allowed = set(np.flatnonzero(bits[: self._n_tok]).tolist()[:8])
            self._only_eos = bool(allowed) and allowed <= set(self._eos)
            self._only_eos_at = self.steps
        return self._only_eos

    # -- helpers -----------------------------------------------------------------------------

    def fork(self) -> "Constraint":
        """An independent constraint in this one's state: llguidance's ``deep_copy`` clones the
        matcher's parser state (nothing is compiled again); from here each advances alone. For a
        trial step that must leave the original untouched (the server's precheck) and for a
        sequence forked mid-generation."""
        twin = copy.copy(self)
        twin._matcher = self._matcher.deep_copy()
        twin._words = self._words.copy()
        twin._allowed = None if self._allowed is None else self._allowed.copy()
        twin._blocked = self._blocked.copy()
        twin.seconds = 0.0
        return twin

    def can_start(self) -> bool:
        """Some token (or the end token) is allowed now: False for a grammar whose language is empty."""
        m = self._matcher
        if m.is_stopped() and not m.is_error():
            return True
        words = self._words
        m.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        return not m.is_error() and bool(words.any())

    def is_accepting(self) -> bool:
        """The output so far is a complete match (the end token is allowed now)."""
        return bool(self._matcher.is_accepting())

    def allowed_ids(self) -> list[int]:
        """Ids the last ``mask`` allowed (for tests and debugging)."""
        if self._allowed is None:
            return []
        return np.flatnonzero(self._allowed).tolist()

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    def _check(self) -> None:
        if self._matcher.is_error():
            raise RuntimeError(f"grammar matcher error: {self._matcher.get_error()}")
