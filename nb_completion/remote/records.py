"""What a remote server reports, turned into the engine's records: server-sent event parsing,
and a ``TokenRecord`` per token from the log-probabilities a remote sends.

What a remote cannot tell us, and what the ``TokenRecord``s hold instead:

- ``token_id`` is -1 (remotes send token texts, not ids).
- Log-probabilities: the remote is asked for the ``logprobs.top_k`` the request asked for, or 0
  (the chosen token alone, exact) when it asked none, so every token still gets a record.
  With ``top_k`` >= 1 the remote reports only the alternatives, and the chosen token is found
  among them by its text (``split_delta``: the texts must join to the chunk's delta; at a byte
  seam, replacement characters stand for the bytes of a split character); an OpenAI remote
  also gives the chosen token's own log-probability, which settles it (``openai_chosen``).
  ``rank`` is then its place among them (1 = most likely). A chosen token
  outside the reported top-k gets ``rank`` k+1 and, as ``logprob``, the lowest reported value
  (an upper bound of its own). With ``top_k`` 0 the rank is unknown: ``rank`` 0.
- ``entropy`` is a lower bound: the entropy over the reported tokens plus the unreported mass
  taken as one outcome (exact when the reported tokens hold all the mass).
- ``forced`` is False; ``elapsed`` is measured here, from sending the request.
- llama-stack requests carry no seed (the contract has none); the OpenAI route sends ``seed``.
"""

from __future__ import annotations

import math
import re
from typing import Iterator

from ..engine.records import TokenRecord


# ---- server-sent events ---------------------------------------------------------------------


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


# ---- token records from reported log-probabilities ------------------------------------------


def entropy_lower_bound(logprobs: Iterator[float] | list[float]) -> float:
    probs = [math.exp(lp) for lp in logprobs if math.isfinite(lp)]
    rest = max(0.0, 1.0 - sum(probs))
    return -sum(p * math.log(p) for p in probs + [rest] if p > 0)


def make_record(index: int, text: str, chosen: str | None, reported: dict[str, float], top_k: int, elapsed: float) -> TokenRecord:
    """One token from what the remote reported. ``text``: what it adds to the output; ``chosen``:
    its key among the reported texts (``None``: not among them)."""
    ordered = tuple(sorted(reported.items(), key=lambda kv: kv[1], reverse=True))
    values = [lp for _, lp in ordered]
    lowest = values[-1] if values else 0.0
    if top_k == 0:  # only the chosen token was reported: exact logprob, unknown rank
        logprob = reported.get(chosen, lowest) if chosen is not None else lowest
        return TokenRecord(
            index,
            -1,
            text,
            logprob,
            0,
            (),
            entropy_lower_bound([logprob]),
            elapsed=elapsed,
            piece=chosen if chosen is not None else text,
        )
    if chosen is not None and chosen in reported:
        rank, logprob = [t for t, _ in ordered].index(chosen) + 1, reported[chosen]
    else:
        rank, logprob = len(ordered) + 1, lowest
    return TokenRecord(
        index,
        -1,
        text,
        logprob,
        rank,
        ordered,
        entropy_lower_bound(values),
        elapsed=elapsed,
        piece=chosen if chosen is not None else text,
    )


_PARTIAL = re.compile("\ufffd|‹[0-9A-F]{2}(?: [0-9A-F]{2})*›")  # a broken character, or its bytes (engine/token_text.py)
_NON_ASCII = "[^\\x00-\\x7f]*"


def _relaxed(key: str) -> re.Pattern:
    """A reported text as it may appear in the output at a byte seam: any bytes an earlier token
    held back may come first, and its own replacement characters may be any non-ASCII text."""
    parts = [re.escape(part) for part in _PARTIAL.split(key)]
    return re.compile(_NON_ASCII + _NON_ASCII.join(parts), re.DOTALL)


def split_delta(delta: str, reported: list[dict[str, float]]) -> list[tuple[str, str | None]]:
    """Each token's share of ``delta`` and which reported text it chose.

    First an exact split (each token's reported text, in order, joins to the delta); failing
    that, one that lets replacement characters stand for the bytes of a character split across
    tokens; failing that, tokens whose text is not found are ``None`` and the last of them takes
    the text left over, so the shares still join to the delta.
    """
    n, size = len(reported), len(delta)

    def ends(i: int, pos: int, key: str, relaxed: bool) -> list[int]:
        if not relaxed:
            return [pos + len(key)] if delta.startswith(key, pos) else []
        pattern = _relaxed(key)  # shortest first: an engine shows a split character with its last token
        return [end for end in range(pos, size + 1) if pattern.fullmatch(delta, pos, end)]

    def solve(relaxed: bool) -> list[tuple[str, str | None]] | None:
        memo: dict[tuple[int, int], list | None] = {}

        def step(i: int, pos: int) -> list | None:
            if i == n:
                return [] if pos == size else None
            if (i, pos) not in memo:
                memo[(i, pos)] = None
                keys = sorted(reported[i], key=lambda k: (not delta.startswith(k, pos), -len(k), -reported[i][k]))
                for key in keys:
                    for end in ends(i, pos, key, relaxed):
                        rest = step(i + 1, end)
                        if rest is not None:
                            memo[(i, pos)] = [(delta[pos:end], key), *rest]
                            return memo[(i, pos)]
            return memo[(i, pos)]

        return step(0, 0)

    if n * (size + 1) <= 4000:
        for relaxed in (False, True):
            found = solve(relaxed)
            if found is not None:
                return found
    shares: list[tuple[str, str | None]] = []
    pos = 0
    for alternatives in reported:
        keys = sorted((k for k in alternatives if k and delta.startswith(k, pos)), key=len, reverse=True)
        shares.append((keys[0], keys[0]) if keys else ("", None))
        pos += len(keys[0]) if keys else 0
    if pos < size:
        unknown = [i for i, (_, key) in enumerate(shares) if key is None] or [len(shares) - 1]
        text, key = shares[unknown[-1]]
        shares[unknown[-1]] = (text + delta[pos:], key)  # the text left over, to the last unknown token
    return shares


def openai_chosen(text: str, logprob: float | None, reported: dict[str, float]) -> str | None:
    """The reported key of an OpenAI token: the one with its exact log-probability and a
    compatible text (ties and missing values are settled by the text alone)."""
    same = {k: v for k, v in reported.items() if logprob is not None and v == logprob}
    for candidates in (same, reported):
        if len(candidates) == 1 and candidates is same:
            return next(iter(same))
        if candidates:
            ((_, chosen),) = split_delta(text, [candidates])
            if chosen is not None:
                return chosen
    return None
