"""Answers of an OpenAI-completions route, streamed or whole, as ``Delta``/``Finished`` events.

Both log-probability shapes are read, whichever the server sends:

- legacy (OpenAI, vLLM): ``logprobs: {tokens, token_logprobs, top_logprobs: [{text: lp}], text_offset}``;
  no token ids; the chosen token is matched among the alternatives (``openai_chosen``);
- llama.cpp: ``logprobs: {content: [{id, token, bytes, logprob, top_logprobs: [{id, token, bytes,
  logprob}]}]}``: token ids, the exact chosen log-probability, and its rank when it is among the
  alternatives (k+1 when it is not). A token's share of the text is decoded from its bytes. At a
  character split across tokens llama.cpp reports only the token that completes it, its ``bytes``
  holding the whole character (the earlier tokens get no entry, so no record); the tokens of a
  stop string come with their text withheld and get no record either (as in a local run); an
  end token keeps its record, with empty text.

A ``{"error": ...}`` event is the remote's error (its status and message); a stream that ends
without a finish reason is a 502.
"""

from __future__ import annotations

import codecs
import json
import time
from dataclasses import replace
from typing import Any, Iterator

from ..engine.records import Delta, Finished, TokenRecord
from .errors import error_from, gateway_error, is_error_body
from .records import entropy_lower_bound, make_record, openai_chosen

_FINISH = {"stop": "end_of_turn", "length": "out_of_tokens", "eos": "end_of_turn"}


class Tally:
    """What the stream has delivered so far, for the records and ``Finished``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.tokens = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def saw_output(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def finished(self, stop_reason: str, metrics: dict[str, float], cancelled: bool = False) -> Finished:
        completion = int(metrics.get("completion_tokens", self.tokens))
        ttft = metrics.get("time_to_first_token", None if self.first is None else self.first - self.start)
        tps = metrics.get("tokens_per_second")
        if tps is None and self.first is not None and completion:
            tps = completion / max(time.perf_counter() - self.first, 1e-9)
        return Finished(stop_reason, int(metrics.get("prompt_tokens", 0)), completion, ttft, tps, cancelled)


def fit_shares(shares: list[str], text: str) -> list[str]:
    """Token shares cut or extended so they join to ``text`` exactly (a remote trims a stop
    string from the text, not from the tokens it reports)."""
    fitted, pos = [], 0
    for share in shares:
        if text.startswith(share, pos):
            take = share
        elif "\ufffd" in share:
            take = ""  # part of a character another token completes
        else:
            take = text[pos : pos + len(share)]  # as much of the text in its place
        fitted.append(take)
        pos += len(take)
    if fitted and pos < len(text):
        fitted[-1] += text[pos:]
    return fitted


def _inside_stop_string(entry: dict) -> bool:
    """llama.cpp reports the tokens of a stop string with their text withheld (``token: ""``,
    ``bytes: []``) while the same id among the alternatives shows it: like a local run, such a
    token gets no record. An end token (its text is empty everywhere) keeps its record."""
    if entry.get("bytes") != [] or entry.get("token"):
        return False
    same = [a for a in entry.get("top_logprobs") or [] if isinstance(a, dict) and a.get("id") == entry.get("id")]
    return any(a.get("token") or a.get("bytes") for a in same)


class OpenAIAnswer:
    """Parses one answer; ``shape`` is ``"llama.cpp"`` once a ``logprobs.content`` list was seen."""

    def __init__(self, top_k: int, tally: Tally):
        self.top_k = top_k
        self.tally = tally
        self.shape: str | None = None
        self._bytes = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def events(self, datas: Iterator[str]) -> Iterator[Delta | Finished]:
        finish: str | None = None
        usage: dict = {}
        for data in datas:
            if data.strip() == "[DONE]":
                break
            chunk = json.loads(data)
            if is_error_body(chunk):
                raise error_from(chunk, 500)
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                text = choice.get("text") or ""
                records = self._records(choice.get("logprobs"), text)
                if text or records:
                    self.tally.saw_output()
                    yield Delta(text, tuple(records))
                finish = choice.get("finish_reason") or finish
        if finish is None:
            raise gateway_error("the remote stream ended without a finish reason")
        yield self.tally.finished(_FINISH.get(finish, "end_of_turn"), dict(usage))

    def _records(self, block: Any, text: str) -> list[TokenRecord]:
        if not isinstance(block, dict):
            return []
        if isinstance(block.get("content"), list):
            self.shape = "llama.cpp"
            return self._content_records(block["content"], text)
        self.shape = self.shape or "legacy"
        return self._legacy_records(block, text)

    # llama.cpp: one entry per token, with its id, bytes and exact log-probability
    def _content_records(self, entries: list[dict], text: str) -> list[TokenRecord]:
        entries = [e for e in entries if isinstance(e, dict) and not _inside_stop_string(e)]
        shares = []
        for entry in entries:
            raw = entry.get("bytes")
            shares.append(self._bytes.decode(bytes(raw)) if isinstance(raw, list) else entry.get("token", ""))
        shares = fit_shares(shares, text)
        records = []
        for entry, share in zip(entries, shares):
            alternatives = [a for a in entry.get("top_logprobs") or [] if isinstance(a, dict)]
            ordered = sorted(alternatives, key=lambda a: a.get("logprob", float("-inf")), reverse=True)
            top = tuple((str(a.get("token", "")), float(a["logprob"])) for a in ordered if "logprob" in a)
            token_id = entry.get("id") if isinstance(entry.get("id"), int) else -1
            ids = [a.get("id") for a in ordered]
            if token_id in ids and token_id != -1:
                rank = ids.index(token_id) + 1
            else:
                rank = len(top) + 1 if top else 0
            logprob = float(entry.get("logprob", top[rank - 1][1] if 0 < rank <= len(top) else 0.0))
            values = [lp for _, lp in top] + ([logprob] if rank > len(top) or not top else [])
            records.append(
                TokenRecord(
                    self.tally.tokens,
                    token_id,
                    share,
                    logprob,
                    rank,
                    top,
                    entropy_lower_bound(values),
                    elapsed=self.tally.elapsed(),
                    piece=str(entry.get("token", share)),
                )
            )
            self.tally.tokens += 1
        return records

    # OpenAI / vLLM: parallel arrays of token texts, their log-probabilities and alternatives
    def _legacy_records(self, block: dict, text: str) -> list[TokenRecord]:
        tokens = block.get("tokens") or []
        chosen_lps = block.get("token_logprobs") or [None] * len(tokens)
        tops = block.get("top_logprobs") or [None] * len(tokens)
        shares = fit_shares([str(t) for t in tokens], text)
        records = []
        for token_text, share, chosen_lp, top in zip(tokens, shares, chosen_lps, tops):
            reported = dict(top or {})
            if self.top_k == 0 and chosen_lp is not None:
                reported = {token_text: chosen_lp}
            record = make_record(
                self.tally.tokens,
                share,
                openai_chosen(token_text, chosen_lp, reported),
                reported,
                self.top_k,
                self.tally.elapsed(),
            )
            if chosen_lp is not None and self.top_k > 0:  # the chosen token's own logprob, exact
                record = replace(record, logprob=chosen_lp)
            records.append(record)
            self.tally.tokens += 1
        return records
