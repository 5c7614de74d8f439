"""How one token is shown on its own (top-k alternatives, the heatmap): its text, or, for a token
that holds only part of a multi-byte UTF-8 character, its bytes as ``‹E3 81›``.

Decoding such a token alone gives U+FFFD, so different partial tokens (the first two bytes of
"こ" and of "に") all read "�" and collapse into one ``logprobs_by_token`` entry. Their bytes keep
them apart and say what they are. Valid text around the partial bytes stays text: ``"a‹E3›"``.

    >>> show_bytes("東".encode()[:2]), show_bytes(b"a\\xe3"), show_bytes("🙂".encode())
    ('‹E6 9D›', 'a‹E3›', '🙂')
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["token_display_text", "token_bytes", "show_bytes", "PARTIAL_BYTES"]

PARTIAL_BYTES = re.compile(r"‹[0-9A-F]{2}(?: [0-9A-F]{2})*›")  # what show_bytes() writes for bytes
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece byte-fallback tokens


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), reversed. Written out
    here because transformers moved its copy between major versions."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def show_bytes(raw: bytes) -> str:
    """UTF-8 ``raw`` as text, with the bytes that do not form a whole character as ``‹HH HH›``."""
    out: list[str] = []
    run: list[str] = []
    for ch in raw.decode("utf-8", errors="surrogateescape"):
        if "\udc80" <= ch <= "\udcff":  # an undecodable byte, escaped by surrogateescape
            run.append(f"{ord(ch) - 0xDC00:02X}")
            continue
        if run:
            out.append("‹" + " ".join(run) + "›")
            run = []
        out.append(ch)
    if run:
        out.append("‹" + " ".join(run) + "›")
    return "".join(out)


def token_bytes(tokenizer: Any, token_id: int) -> bytes | None:
    """The raw bytes of a token of a byte-level BPE or byte-fallback tokenizer, else ``None``."""
    token = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(token, str):
        return None
    fallback = _BYTE_FALLBACK.match(token)
    if fallback:
        return bytes.fromhex(fallback.group(1))
    decoder = _byte_decoder()
    if token and all(ch in decoder for ch in token):
        return bytes(decoder[ch] for ch in token)
    return None


def token_display_text(tokenizer: Any, token_id: int) -> str:
    """The token's text decoded alone; where that is broken (U+FFFD), its bytes shown as ``‹HH›``."""
    text = tokenizer.decode([int(token_id)], skip_special_tokens=False)
    if "\ufffd" not in text:
        return text
    raw = token_bytes(tokenizer, token_id)
    return text if raw is None else show_bytes(raw)
