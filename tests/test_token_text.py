"""Partial characters: a token holding part of a multi-byte character (Japanese, emoji) is shown
as its bytes, ‹E3 81›, and such alternatives stay apart, so top_k entries come back. Real
tokenizers: the tiny model's byte-level BPE, and the default model's (real_model)."""

from __future__ import annotations

import pytest

from nb_completion import complete
from nb_completion.engine.detokenize import StreamingDetokenizer
from nb_completion.engine.registry import get
from nb_completion.engine.tiny import build_tokenizer
from nb_completion.engine.token_text import PARTIAL_BYTES, show_bytes, token_display_text
from nb_completion.notebook.render import heatmap_html
from nb_completion.widget._tokens import branch_record, token_dict

TEXT = "東京🙂"


def test_show_bytes_keeps_whole_characters_and_marks_the_rest():
    assert show_bytes("こ".encode()[:2]) == "‹E3 81›"
    assert show_bytes(b"a\xe3\x81") == "a‹E3 81›"
    assert show_bytes("🙂".encode()) == "🙂"
    assert show_bytes(b"\xbd" + "x".encode() + b"\xf0\x9f") == "‹BD›x‹F0 9F›"


def test_byte_level_bpe_tokens_of_japanese_and_emoji_show_their_bytes():
    tok = build_tokenizer()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    alone = [tok.decode([i]) for i in ids]
    shown = [token_display_text(tok, i) for i in ids]
    assert all("\ufffd" in a for a in alone)  # decoded alone, each one is broken ...
    assert all(PARTIAL_BYTES.fullmatch(s) for s in shown)  # ... and shown as its bytes instead
    raw = b"".join(bytes.fromhex(s[1:-1].replace(" ", "")) for s in shown)
    assert raw.decode() == TEXT  # the bytes shown are the token's own bytes
    assert len(set(shown)) == len(set(ids))  # different tokens, different texts
    assert token_display_text(tok, tok(" Paris", add_special_tokens=False)["input_ids"][0]) == tok.decode(
        tok(" Paris", add_special_tokens=False)["input_ids"][:1]
    )


def test_a_forced_japanese_completion_shows_partial_tokens_as_bytes(tiny_model_id):
    """The grammar forces "東京🙂" token by token: the tokens that end mid-character have no text
    yet (the detokenizer holds it back) and show their bytes instead of ⟨end⟩ / ⋯."""
    fmt = {"type": "grammar", "bnf": {"regex": TEXT}}
    backend = get(tiny_model_id)
    events = list(backend.open(_request(tiny_model_id, fmt)))
    records = [t for e in events if hasattr(e, "tokens") for t in e.tokens]
    assert "".join(r.text for r in records) == TEXT
    partial = [r for r in records if not r.text]
    assert partial and all(PARTIAL_BYTES.fullmatch(r.piece) for r in partial)
    dicts = [token_dict(r) for r in records]
    assert [d["piece"] for d in dicts if not d["text"]] == [r.piece for r in partial]
    html = heatmap_html(records)
    assert all(r.piece in html for r in partial) and "⋯" not in html and "⟨end⟩" not in html
    with pytest.raises(ValueError, match="part of a multi-byte character"):
        branch_record(records[0], partial[0].piece)


def _request(model_id, fmt):
    from nb_completion.service import build_request

    return build_request("Say:", model_id, {"max_tokens": 12}, logprobs={"top_k": 5}, response_format=fmt)


def test_partial_alternatives_do_not_collapse_so_top_k_entries_come_back(tiny_model_id):
    # The tiny vocabulary has 128 lone high bytes, all "�" when decoded alone: in a top 20
    # several of them meet; each must stay its own entry.
    r = complete("東京", model_id=tiny_model_id, sampling_params={"max_tokens": 6}, logprobs={"top_k": 20})
    assert r.logprobs and all(len(t.logprobs_by_token) == 20 for t in r.logprobs)
    keys = [k for t in r.logprobs for k in t.logprobs_by_token]
    assert "\ufffd" not in keys and any(PARTIAL_BYTES.fullmatch(k) for k in keys)


def test_the_streaming_detokenizer_and_the_display_agree_on_the_bytes():
    tok = build_tokenizer()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    detok = StreamingDetokenizer(tok)
    texts = [detok.add_token(i) for i in ids]
    raw = b""
    for text, token_id in zip(texts, ids):
        raw += bytes.fromhex(token_display_text(tok, token_id)[1:-1].replace(" ", ""))
        assert text == "" or raw.decode("utf-8", errors="ignore").endswith(text)


@pytest.mark.real_model
def test_default_model_keeps_top_k_entries_on_japanese(real_model_id):
    r = complete("日本の首都は", model_id=real_model_id, sampling_params={"max_tokens": 6}, logprobs={"top_k": 20})
    assert all(len(t.logprobs_by_token) == 20 for t in r.logprobs), [len(t.logprobs_by_token) for t in r.logprobs]
    keys = [k for t in r.logprobs for k in t.logprobs_by_token]
    assert "\ufffd" not in keys and any(PARTIAL_BYTES.search(k) for k in keys)
