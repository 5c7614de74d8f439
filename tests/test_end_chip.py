"""A run that ended on the model's end token shows a marked ⟨end⟩ where its text stops (the
%%complete display, plain or as a heatmap), even when it wrote no text at all; a stop string or
the token limit shows none."""

from __future__ import annotations

from nb_completion.engine.records import Finished
from nb_completion.notebook.render import END_CHIP, ended_on_end_token, heatmap_html, text_block_html


def test_only_the_end_token_counts_as_ending_on_it():
    assert ended_on_end_token(Finished("end_of_turn", 3, 0))
    assert not ended_on_end_token(Finished("end_of_turn", 3, 2, stop_string="\n"))
    assert not ended_on_end_token(Finished("out_of_tokens", 3, 30))
    assert not ended_on_end_token(None)


def test_the_chip_sits_where_the_text_stops_even_with_no_text():
    empty = text_block_html("", "0 tokens · stop: end_of_turn", end=True)
    assert "⟨end⟩" in empty and empty.index("⟨end⟩") < empty.index("0 tokens")
    assert "⟨end⟩" not in text_block_html("Paris.", "2 tokens · stop: out_of_tokens")
    assert heatmap_html([], end=True).count(END_CHIP) == 1 and END_CHIP not in heatmap_html([])
