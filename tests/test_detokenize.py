"""The incremental detokenizer never splits a multi-byte character."""

import pytest

from nb_completion.engine.detokenize import StreamingDetokenizer
from nb_completion.engine.tiny import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("text", ["Café naïve", "東京 🙂 ok", "plain ascii text", "jalapeño🙂東"])
def test_streamed_pieces_join_to_the_decoded_text_and_never_hold_a_replacement_char(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert len(ids) > len(text.encode()) // 4  # byte-level pieces really split characters
    detok = StreamingDetokenizer(tokenizer)
    pieces = [detok.add_token(i) for i in ids]
    pieces.append(detok.finalize())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_emoji_split_over_byte_tokens_is_released_whole(tokenizer):
    ids = tokenizer("🙂")["input_ids"]
    detok = StreamingDetokenizer(tokenizer)
    pieces = [detok.add_token(i) for i in ids]
    assert pieces[-1].endswith("🙂") and all(p == "" for p in pieces[:-1] if len(ids) > 1)
