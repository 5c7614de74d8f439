"""A prompt's length is checked before it is tokenized whole (issue 21, finding 5: a 14 MiB
prompt cost +3.3 GiB and 13-18 s before its 400, since the whole text was tokenized first)."""

from __future__ import annotations

import httpx
import pytest

import nb_completion as nb
from nb_completion.api.errors import BadRequest
from nb_completion.engine import prompt_length
from nb_completion.engine.prompt_length import over_context

FOURTEEN_MIB = "The quick brown fox jumps over the lazy dog. " * (14 * 2**20 // 45)


class Recording:
    """The backend's tokenizer, recording the longest text it was asked to tokenize."""

    def __init__(self, tokenizer):
        self._tokenizer, self.longest = tokenizer, 0

    def __call__(self, text, *args, **kwargs):
        self.longest = max(self.longest, len(text))
        return self._tokenizer(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.fixture()
def recorded(tiny_backend, monkeypatch):
    recording = Recording(tiny_backend.tokenizer)
    monkeypatch.setattr(tiny_backend, "tokenizer", recording)
    return recording


def test_a_14_mib_prompt_is_a_400_without_being_tokenized(tiny_model_id, recorded):
    with pytest.raises(BadRequest) as caught:
        nb.complete(FOURTEEN_MIB, model_id=tiny_model_id, sampling_params={"max_tokens": 1})
    assert caught.value.field == "content"
    assert "context length" in caught.value.message
    assert recorded.longest == 0


def test_a_prompt_within_the_byte_bound_is_counted_in_pieces(tiny_backend, tiny_model_id, recorded):
    context = tiny_backend.context_length
    text = "ab " * (context * 3)  # within context x longest token bytes, well over the context
    assert len(text) <= context * prompt_length.longest_token_bytes(tiny_backend.tokenizer)
    with pytest.raises(BadRequest) as caught:
        nb.complete(text, model_id=tiny_model_id, sampling_params={"max_tokens": 1})
    assert caught.value.field == "content"
    assert 0 < recorded.longest <= 4 * context + 1024 < len(text)


def test_a_prompt_that_fits_gets_the_exact_ids(tiny_backend):
    text = "Once upon a time " * 10
    assert tiny_backend.encode(text) == tiny_backend.tokenizer(text, add_special_tokens=True)["input_ids"]


def test_counting_in_pieces_matches_a_whole_count_where_cuts_fall_before_words(tiny_backend, monkeypatch):
    monkeypatch.setattr(prompt_length, "PIECE_BYTES", 64)
    tokenizer = tiny_backend.tokenizer
    text = "the cat sat on the mat and looked at the hat " * 40
    whole = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert over_context(tokenizer, text, whole - 200, longest_token_bytes=100) is not None
    assert over_context(tokenizer, text, whole, longest_token_bytes=100) is None


def test_the_server_answers_a_14_mib_prompt_with_a_400_naming_content(tiny_model_id, recorded):
    handle = nb.serve(port=0, models=[tiny_model_id])
    try:
        with httpx.Client(base_url=handle.url, timeout=120) as client:
            r = client.post("/v1/inference/completion", json={"model_id": tiny_model_id, "content": FOURTEEN_MIB})
        assert r.status_code == 400
        assert r.json()["detail"].startswith("content")
        assert recorded.longest == 0
    finally:
        handle.stop()


def test_score_refuses_a_huge_text_naming_text(tiny_model_id, recorded):
    with pytest.raises(BadRequest) as caught:
        nb.score(FOURTEEN_MIB, model_id=tiny_model_id)
    assert caught.value.field == "text" and recorded.longest == 0
