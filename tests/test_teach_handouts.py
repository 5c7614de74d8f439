"""The teaching views' static SVGs (the widget's static copy, nbconvert HTML, GitHub): the
distribution on one fixed 0-100 % scale with raw and processed labelled and the top-p cut's label
on a line of its own; the draw with u as a labelled pointer; the Score line; each image with alt
text (role="img", aria-label and <title>), kept by GitHub's sanitizer (an <img> of the SVG)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from nb_completion.notebook.render_teach_svg import distribution_svg, draw_svg, score_svg, stack_svg, tree_svg

from github_sanitizer import github_output

NS = "{http://www.w3.org/2000/svg}"
FIXTURE = json.loads((Path(__file__).parent.parent / "js" / "test" / "fixtures" / "distribution.json").read_text())
DIST = {**FIXTURE["cases"][0]["distribution"], "index": 3, "prompt": False, "chosen": None, "end": False}
RAW = FIXTURE["cases"][0]["raw"]
DRAW = {
    "token_id": 7,
    "greedy": False,
    "u": 0.55,
    "bar": [[3, " a", 0.5], [7, " b", 0.3]],
    "rest": 0.2,
    "before": 0.5,
    "p": 0.3,
    "index": 4,
}


def _alt(svg: str) -> str:
    root = ET.fromstring(svg)
    assert root.get("role") == "img"
    title = root.find(f"{NS}title")
    assert title is not None and title.text == root.get("aria-label")
    return root.get("aria-label")


def _texts(svg: str) -> list[tuple[float, str]]:
    return [(float(e.get("y")), "".join(e.itertext())) for e in ET.fromstring(svg).iter(f"{NS}text")]


def test_distribution_bars_use_one_fixed_scale_and_label_raw_and_processed():
    svg = distribution_svg(DIST, {"strategy": "top_p", "temperature": 1.0, "top_p": 1.0})
    root = ET.fromstring(svg)
    grey = [float(r.get("width")) for r in root.iter(f"{NS}rect") if r.get("fill") == "#999999"]
    bar_w = 640 - 160 - 130
    assert grey[0] == round(bar_w * RAW[0], 1) and grey[1] == round(bar_w * RAW[1], 1)  # not stretched to the top bar
    words = " ".join(t for _, t in _texts(svg))
    assert "grey: raw · blue: processed" in words and "raw → processed" in words and "0 %" in words
    alt = _alt(svg)
    assert alt.startswith("Next-token distribution, before token #3") and "raw 16.2%" in alt


def test_the_top_p_cut_label_never_overprints_a_rows_numbers():
    svg = distribution_svg(DIST, {"strategy": "top_p", "temperature": 1.0, "top_p": 0.5})
    texts = _texts(svg)
    (cut_y,) = [y for y, t in texts if t.startswith("top-p cut")]
    numbers = [y for y, t in texts if "→" in t and "%" in t]
    assert numbers and min(abs(cut_y - y) for y in numbers) >= 12  # 11 px type: a line apart
    assert "the 4 tokens above reach 0.5" in next(t for _, t in texts if t.startswith("top-p cut"))


def test_the_draw_names_its_position_and_u_is_a_labelled_black_pointer_not_orange():
    svg = draw_svg(DRAW)
    words = [t for _, t in _texts(svg)]
    assert words[0] == "The draw at token #4" and "u = 0.550" in words
    root = ET.fromstring(svg)
    pointer = [r for r in root.iter(f"{NS}rect") if r.get("fill") == "#000000"]
    assert pointer and float(pointer[0].get("x")) == round(8 + 624 * 0.55 - 2, 1)
    assert "fell in ' b''s interval 0.500–0.800" in _alt(svg)
    assert "nothing is drawn" in _alt(draw_svg({**DRAW, "greedy": True, "u": None}))


def test_score_line_and_stack_carry_alt_text_and_survive_githubs_sanitizer():
    parts = [score_svg(8.17, 12), draw_svg(DRAW), distribution_svg(DIST, {"strategy": "greedy"})]
    parts.append(
        tree_svg([{"id": 0, "parent": None, "depth": 0, "kind": "generate", "tokens": 3, "logprob": -1.5, "current": True}])
    )
    assert _alt(parts[0]) == "Score: perplexity 8.17 over 12 prompt tokens (exp of the mean surprisal)"
    stacked = stack_svg(parts)
    alt = _alt(stacked)
    assert "Score: perplexity 8.17" in alt and "The draw" not in alt and "Step at token #4" in alt and "Branch tree" in alt
    (shown,) = github_output({"image/svg+xml": stacked})
    assert re.fullmatch(r'<img src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]+">', shown)


def _records(words):
    from nb_completion.engine.records import TokenRecord

    return [TokenRecord(i, 10 + i, w, -0.5 * (i + 1), 1, ((w, -0.5),), 1.0) for i, w in enumerate(words)]


def test_score_and_compare_svgs_have_alt_text_and_reach_github_as_images():
    from nb_completion.notebook.render_svg import columns_svg, heatmap_svg

    scored = heatmap_svg(_records(["The", " cat"]), header=["Score · perplexity 3.10 over 1 token"])  # %%complete --score
    compared = columns_svg([("greedy", "2 tokens", _records([" a", " b"])), ("T 1.2", "2 tokens", _records([" c", " d"]))])
    for svg in (scored, compared):
        assert _alt(svg)  # role="img", aria-label and the same <title>
        (shown,) = github_output({"image/svg+xml": svg})
        assert shown.startswith('<img src="data:image/svg+xml;base64,')


def test_the_widgets_static_copy_carries_score_draw_distribution_and_tree_with_alt_text(tiny_model_id):
    from nb_completion import CompletionWidget

    w = CompletionWidget("The capital of France is", model_id=tiny_model_id, max_tokens=3, strategy="top_p", seed=1)
    w.generate(wait=True, timeout=60)
    w.step()
    w.score_prompt()
    copy = w._static_copy()
    alts = re.findall(r'<img src="data:image/svg\+xml;base64,[^"]+" alt="([^"]*)"', copy["text/html"])  # nbconvert HTML
    kinds = ["Score: perplexity", "Step at token #3", "Next-token distribution, the next token (#4)", "Branch tree"]
    assert [next((a for a in alts if a.startswith(k)), None) is not None for k in kinds] == [True] * 4, alts
    assert all(_alt(svg) for svg in w.teaching_svgs())
    shown = "".join(github_output(copy))  # GitHub: the stacked image, and the alt texts in the sanitized HTML
    assert shown.startswith('<img src="data:image/svg+xml;base64,') and "Branch tree" in shown
