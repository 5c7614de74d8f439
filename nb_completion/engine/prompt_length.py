"""A prompt's length checked before it is tokenized whole.

Tokenizing costs time and memory in proportion to the text: a 14 MiB prompt took 13-18 s and
+3.3 GiB before its 400, only to learn it exceeds a context of 8,192 tokens. Two cheaper checks
come first, and only a prompt that passes both is tokenized whole:

1. **Bytes.** No token covers more bytes than the longest one in the vocabulary, so a text of
   more than ``context_length × longest`` UTF-8 bytes cannot fit (``longest_token_bytes``:
   162 bytes for SmolLM2, so about 1.3 MB for its 8,192 tokens). No tokenization at all.
2. **Counting in pieces.** The text is tokenized in pieces of about ``PIECE_BYTES`` (32 KiB; four
   characters per token of context when that is less) cut before a
   space that starts a word (where byte-level pre-tokenizers cut anyway), counting as it goes,
   and stops as soon as the count passes the context by more than a margin per cut
   (``MARGIN_PER_CUT`` tokens: what merges across a cut could save). Memory is one piece's.

``over_context(...)`` returns the count that proves the prompt too long, or None when it may fit;
the engine then tokenizes it whole and checks the exact count as before.

    >>> class Chars:  # a tokenizer with one token per character
    ...     def __call__(self, text, add_special_tokens=False):
    ...         return {"input_ids": list(range(len(text)))}
    >>> over_context(Chars(), "ab " * 100_000, context_length=1000, longest_token_bytes=4)  # bytes alone
    1001
    >>> over_context(Chars(), "ab " * 20_000, context_length=50_000, longest_token_bytes=4)  # counted
    59936
    >>> over_context(Chars(), "ab " * 10_000, context_length=50_000, longest_token_bytes=4) is None
    True
"""

from __future__ import annotations

from typing import Any

__all__ = ["over_context", "longest_token_bytes", "PIECE_BYTES", "MARGIN_PER_CUT"]

PIECE_BYTES = 32 * 1024
MARGIN_PER_CUT = 64


def longest_token_bytes(tokenizer: Any) -> int:
    """An upper bound on the bytes one token covers: the longest vocabulary entry in UTF-8 (a
    byte-level entry like ``Ġ`` is 2 UTF-8 bytes for 1 byte of text, so this only overestimates)."""
    vocab = tokenizer.get_vocab()
    added = getattr(tokenizer, "added_tokens_encoder", {}) or {}
    longest = max((len(t.encode("utf-8", "surrogatepass")) for t in (*vocab, *added)), default=1)
    return max(1, longest)


def over_context(tokenizer: Any, text: str, context_length: int, longest_token_bytes: int) -> int | None:
    """A lower bound on the prompt's token count when it is certainly over ``context_length``
    (the count made so far, or for the byte check ``context_length + 1``); None when it may fit."""
    size = len(text)  # characters: at most the bytes, and a character is at least one byte
    if size <= context_length:
        return None  # short: tokenized whole at once
    if (
        size > context_length * longest_token_bytes
        or len(text.encode("utf-8", "surrogatepass")) > context_length * longest_token_bytes
    ):
        return context_length + 1
    piece = max(1024, min(PIECE_BYTES, 4 * context_length))
    if size <= piece:
        return None  # small enough to tokenize whole
    counted = cuts = start = 0
    while start < size:
        end = _cut(text, start + piece)
        counted += len(tokenizer(text[start:end], add_special_tokens=False)["input_ids"])
        cuts += end < size
        start = end
        if counted > context_length + MARGIN_PER_CUT * cuts:
            return counted - MARGIN_PER_CUT * cuts
    return None


def _cut(text: str, near: int) -> int:
    """A cut at or after ``near``: before a space followed by a word, within the next 1,024
    characters; else at ``near`` itself."""
    if near >= len(text):
        return len(text)
    window = text[near : near + 1024]
    for i, char in enumerate(window[:-1]):
        if char == " " and not window[i + 1].isspace() and (near + i == 0 or not text[near + i - 1].isspace()):
            return near + i
    return near
