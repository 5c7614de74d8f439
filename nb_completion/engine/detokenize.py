"""Incremental detokenization that never splits a multi-byte character.

Byte-level BPE tokens can end in the middle of a UTF-8 sequence; decoding such a prefix gives
U+FFFD. We decode a small window of recent tokens and only release text once the window decodes
cleanly (the approach of text-generation-inference and vLLM).
"""

from __future__ import annotations

from typing import Any


class StreamingDetokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: list[int] | None = None):
        self._tokenizer = tokenizer
        # A few prompt tokens as left context, so leading spaces decode as they will in the text.
        context = list(prompt_ids or [])[-4:]
        self._ids: list[int] = context
        self._prefix_offset = 0
        self._read_offset = len(context)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def add_token(self, token_id: int) -> str:
        """Add one token; return the text it completes (may be "" while a character is split)."""
        self._ids.append(int(token_id))
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def finalize(self) -> str:
        """Whatever is still pending (an incomplete character decodes as U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]
