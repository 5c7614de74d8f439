"""The SVG heatmap: well-formed whatever the text, colours as fill attributes, no styles, lines
wrapped between words, wide characters two cells, compare() as side-by-side columns."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from nb_completion.engine.records import TokenRecord
from nb_completion.notebook.render import color_for
from nb_completion.notebook.render_svg import CELL, columns_svg, heatmap_svg

NS = "{http://www.w3.org/2000/svg}"


def rec(i, text, p=0.5, rank=1, forced=False):
    return TokenRecord(i, i, text, math.log(p), rank, (), 1.0, forced)


def token_groups(svg):
    root = ET.fromstring(svg)
    return [(g.find(f"{NS}rect"), g.find(f"{NS}text")) for g in root.iter(f"{NS}g")]


@given(st.lists(st.text(max_size=10), min_size=1, max_size=8))
def test_any_text_gives_well_formed_svg_with_each_tokens_colour(texts):
    tokens = [rec(i, t, p=0.9 ** (3 * i)) for i, t in enumerate(texts)]
    svg = heatmap_svg(tokens)
    assert " style=" not in svg and "<style" not in svg  # GitHub strips style attributes and <style>
    fills = {rect.get("fill") for rect, _ in token_groups(svg)}
    assert {color_for(t) for t in tokens} <= fills


def test_lines_wrap_between_words_never_inside_one():
    words = ["Once", " upon", " a", " time", " there", " was", " a", " wonderful", " model"]
    svg = heatmap_svg([rec(i, w) for i, w in enumerate(words)], width=14, legend=False)
    rows: dict[str, str] = {}
    for _, text in token_groups(svg):
        rows[text.get("y")] = rows.get(text.get("y"), "") + text.text
    lines = [line.strip("·") for line in rows.values()]
    assert len(lines) >= 3
    for line in lines:
        assert all(word in "Once upon a time there was a wonderful model".split() for word in line.split("·"))


def test_wide_characters_take_two_cells_and_text_fits_its_box():
    ((rect, text),) = token_groups(heatmap_svg([rec(0, "東京")], legend=False))
    assert float(rect.get("width")) == 4 * CELL - 1 and float(text.get("textLength")) == 4 * CELL


def test_marks_not_top_forced_and_control_characters():
    svg = heatmap_svg([rec(0, "a\x00b", rank=2), rec(1, "c", forced=True)])
    ET.fromstring(svg)
    assert "a␀b" in svg and 'stroke-dasharray="3 2"' in svg and 'font-style="italic"' in svg
    assert "forced by the grammar" in svg


def test_compare_columns_sit_side_by_side():
    runs = [("greedy", "3 tokens", [rec(0, "a"), rec(1, " b")]), ("T = 1.0", "2 tokens", [rec(0, "c", 0.01)])]
    root = ET.fromstring(columns_svg(runs, header="prompt 'x'"))
    frames = [e for e in root.iter(f"{NS}rect") if e.get("stroke")]
    assert len(frames) == 2 and frames[0].get("y") == frames[1].get("y")
    assert float(frames[1].get("x")) > float(frames[0].get("x")) + float(frames[0].get("width"))
    titles = [t.text for t in root.iter(f"{NS}text")]
    assert "greedy" in titles and "T = 1.0" in titles
