"""Token records as the browser sees them, and the records of a branch."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

from ..engine.backend import is_local
from ..engine.records import TokenRecord
from ..engine.token_text import PARTIAL_BYTES


def _finite(x: float, floor: float = -1e4) -> float:
    """JSON has no -inf/NaN: clamp to a very unlikely but finite value."""
    return x if math.isfinite(x) else floor


def token_dict(record: TokenRecord, branch: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": record.index,
        "token_id": record.token_id,
        "text": record.text,
        "logprob": round(_finite(record.logprob), 5),
        "rank": record.rank,
        "top": [[text, round(_finite(lp), 5)] for text, lp in record.top],
        "entropy": round(_finite(record.entropy, 0.0), 4),
        "forced": record.forced,
    }
    if record.piece:
        out["piece"] = record.piece  # part of a character: its bytes, ‹E3 81›, are what it shows
    if branch:
        out["branch"] = True
    return out


def reindex(records: Sequence[TokenRecord], offset: int) -> list[TokenRecord]:
    """Records of a continuation placed after ``offset`` shown tokens."""
    return [dataclasses.replace(r, index=offset + r.index) for r in records]


def branch_record(parent: TokenRecord, text: str) -> TokenRecord:
    """The alternative ``text`` picked at ``parent``'s step, measured by ``parent``'s distribution;
    its token id when the parent knows its alternatives' ids (a local model), else -1 (the branch
    then runs on the re-tokenized text)."""
    if PARTIAL_BYTES.search(text or ""):
        raise ValueError(f"{text!r} is part of a multi-byte character; a text prompt cannot end in part of a character")
    for rank, (alt, logprob) in enumerate(parent.top, 1):
        if alt == text:
            token_id = parent.top_ids[rank - 1] if len(parent.top_ids) >= rank else -1
            return dataclasses.replace(parent, token_id=token_id, text=text, piece=text, logprob=logprob, rank=rank, forced=False)
    if text == parent.text:
        return parent
    raise ValueError(f"{text!r} is not among the alternatives of token #{parent.index}")


def branch_ids(backend: Any, prompt: str, prefix: Sequence[TokenRecord]) -> Optional[list[int]]:
    """The exact token ids a branch continues: the prompt's, as the engine encoded it, then the
    kept tokens' and the chosen alternative's ids, so no re-tokenization of the text can move the
    fork point (the engine reuses the cached prefix and feeds only the new token). None when an id
    is unknown (a remote model's records) or the backend does not take ids: then the branch runs
    on the text."""
    if not is_local(backend) or any(r.token_id < 0 for r in prefix):
        return None
    return list(backend.encode(prompt)) + [r.token_id for r in prefix]


def live_metrics(records: Sequence[TokenRecord]) -> dict[str, Any]:
    """Tokens so far, time to first token, and the decode rate after the first token."""
    n = len(records)
    ttft = records[0].elapsed if n else None
    tps = None
    if n > 1 and records[-1].elapsed > records[0].elapsed:
        tps = (n - 1) / (records[-1].elapsed - records[0].elapsed)
    return {
        "tokens": n,
        "time_to_first_token": None if ttft is None else round(ttft, 4),
        "tokens_per_second": None if tps is None else round(tps, 2),
    }
