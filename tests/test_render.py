"""The static heatmap: self-contained, escaped, whitespace visible, alternatives in the title."""

from __future__ import annotations

import dataclasses
import html
import math
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nb_completion.api.types import Error
from nb_completion.engine.records import Finished, TokenRecord
from nb_completion.engine.fold import summary as stats_text
from nb_completion.notebook.render import color_for, error_html, heatmap_html, text_block_html, token_title


def rec(i, text, p=0.5, rank=1, top=None, entropy=1.0, forced=False):
    lp = math.log(p)
    return TokenRecord(
        i, 1000 + i, text, lp, rank, top if top is not None else ((text, lp), ("alt", math.log(0.1))), entropy, forced
    )


class Spans(HTMLParser):
    """Collects each token span's attributes and visible text; checks tags balance."""

    VOID = {"wbr", "br"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tokens, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in self.VOID:
            return
        attrs = dict(attrs)
        self.stack.append((tag, attrs))
        if "data-token-index" in attrs:
            self.tokens.append({"attrs": attrs, "text": ""})

    def handle_endtag(self, tag):
        opened, _ = self.stack.pop()
        assert opened == tag, f"</{tag}> closes <{opened}>"

    def handle_data(self, data):
        if any("data-token-index" in a for _, a in self.stack):
            self.tokens[-1]["text"] += data


def parse(markup: str) -> Spans:
    parser = Spans()
    parser.feed(markup)
    parser.close()
    assert parser.stack == [], "unclosed tags"
    return parser


def luminance(hex_color: str) -> float:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_one_span_per_token_with_index_title_and_colour():
    tokens = [rec(0, " Paris", 0.9), rec(1, " is", 0.4, rank=2), rec(2, " nice", 0.05)]
    spans = parse(heatmap_html(tokens)).tokens
    assert [s["attrs"]["data-token-index"] for s in spans] == ["0", "1", "2"]
    assert all(s["attrs"]["tabindex"] == "0" and "background:#" in s["attrs"]["style"] for s in spans)
    title = spans[1]["attrs"]["title"]
    assert "40.0%" in title and "rank 2" in title and "alternatives" in title and "10.0%" in title
    assert "dashed" in spans[1]["attrs"]["style"] and "dashed" not in spans[0]["attrs"]["style"]


def test_less_likely_tokens_are_darker_and_entropy_has_its_own_scale():
    probs = [1.0, 0.5, 0.2, 0.05, 0.01, 0.001]
    shades = [luminance(color_for(rec(0, "x", p))) for p in probs]
    assert shades == sorted(shades, reverse=True) and shades[0] > shades[-1] + 60
    entropies = [luminance(color_for(rec(0, "x", entropy=e), "entropy")) for e in (0.0, 1.0, 2.5, 6.0)]
    assert entropies == sorted(entropies, reverse=True)
    assert color_for(rec(0, "x", entropy=float("inf")), "entropy") == color_for(rec(0, "x", entropy=9.0), "entropy")


def test_whitespace_and_newlines_are_visible_and_still_break():
    spans = parse(heatmap_html([rec(0, " a\tb\nc")])).tokens
    assert spans[0]["text"] == "·a→b↵\nc"


def test_everything_is_escaped():
    evil = '<script>alert("x")</script>&'
    out = heatmap_html([rec(0, evil, top=((evil, -0.1), ('"><img src=x>', -2.0)))])
    assert "<script" not in out and "<img" not in out
    spans = parse(out).tokens
    assert spans[0]["text"] == evil.replace(" ", "·")
    assert '"><img·src=x>' in spans[0]["attrs"]["title"]  # round-trips as text, not markup


def test_self_contained_markup_for_nbconvert_and_github():
    out = heatmap_html([rec(0, "a"), rec(1, "b", forced=True)], color_by="entropy")
    assert "<script" not in out and "<style" not in out and "http" not in out and "class=" in out
    assert "font-style:italic" in out  # forced by the grammar
    assert "entropy (how unsure" in out  # the entropy legend
    assert "entropy (how unsure" not in heatmap_html([rec(0, "a")], color_by="entropy", legend=False)


def test_empty_text_token_and_empty_list():
    spans = parse(heatmap_html([rec(0, "")])).tokens
    assert spans[0]["text"] == "⟨end⟩"  # a withheld end token
    assert "(no tokens)" in heatmap_html([])


def test_a_partial_character_shows_its_bytes_and_the_legend_explains_them():
    first = dataclasses.replace(rec(0, ""), piece="‹E6 9D›")  # the first two bytes of 東
    second = dataclasses.replace(rec(1, "東"), piece="‹B1›")
    out = heatmap_html([first, second])
    assert [t["text"] for t in parse(out).tokens] == ["‹E6 9D›", "東"]
    assert "⋯" not in out and "⟨end⟩" not in out
    assert "bytes of a partial character" in out
    assert "bytes of a partial character" not in heatmap_html([rec(0, "a")])


def test_the_legend_mentions_grammar_forced_tokens_only_when_there_are_some():
    assert "forced by the grammar" not in heatmap_html([rec(0, "a"), rec(1, "b")])
    assert "forced by the grammar" in heatmap_html([rec(0, "a"), rec(1, "b", forced=True)])


def test_unknown_color_by_is_refused():
    with pytest.raises(ValueError, match="color_by"):
        heatmap_html([rec(0, "a")], color_by="rainbow")


def test_title_marks_the_chosen_token_among_alternatives():
    title = token_title(rec(3, " cat", 0.3, rank=2, top=((" dog", math.log(0.5)), (" cat", math.log(0.3)))))
    lines = title.splitlines()
    assert lines[0].startswith("#3 ·cat: 30.0%")
    assert lines[-1].endswith("◀") and "·cat" in lines[-1] and "◀" not in lines[-2]


@given(st.lists(st.text(min_size=0, max_size=8), min_size=1, max_size=6))
def test_any_text_round_trips_as_text(texts):
    tokens = [rec(i, t) for i, t in enumerate(texts)]
    spans = parse(heatmap_html(tokens)).tokens
    assert len(spans) == len(texts)
    for span, text in zip(spans, texts):
        shown = span["text"]
        if not text:
            assert shown == "⟨end⟩"  # a withheld end token
            continue
        assert shown.count("\n") == text.count("\n")  # a newline still breaks the line
        drawn = shown.replace("\n", "")  # one visible character per character of the text
        assert len(drawn) == len(text)
        for char, seen in zip(text, drawn):
            if char in " \t\r\n":
                assert not seen.isspace()  # whitespace is drawn as a visible glyph
            else:
                assert seen == char


def test_text_block_stats_and_error_box():
    block = text_block_html("<b>hi</b>", "3 tokens")
    assert "&lt;b&gt;hi&lt;/b&gt;" in block and "3 tokens" in block
    assert (
        stats_text(Finished("out_of_tokens", 3, 12, tokens_per_second=20.0)) == "12 tokens · 20.0 tokens/s · stop: out_of_tokens"
    )
    assert "interrupted" in stats_text(Finished("out_of_tokens", 3, 4, cancelled=True))
    box = error_html(Error(status=400, title="Bad Request", detail="content: <x>"))
    assert "400 Bad Request" in box and html.escape("<x>") in box
