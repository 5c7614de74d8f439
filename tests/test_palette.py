"""One palette: the live widget (js/src, run under node) and the static HTML/SVG (Python) colour
the same tokens alike, from the one definition nb_completion/palette.json."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from nb_completion import CompletionWidget
from nb_completion.notebook.palette import PALETTE, entropy_color, legend_colors, probability_color
from nb_completion.notebook.render import color_for, heatmap_html
from nb_completion.notebook.render_svg import heatmap_svg

JS = Path(__file__).resolve().parent.parent / "js"


def js_colors(tokens: list[dict], tmp_path: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run the widget's colour functions (the widget is built with it)")
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(tokens))
    out = subprocess.run([node, str(JS / "test" / "palette-colors.mjs"), str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_widget_and_static_html_colour_the_same_run_alike(tiny_model_id, tmp_path):
    w = CompletionWidget("Once upon a time", model_id=tiny_model_id, max_tokens=24, strategy="top_k", top_k=50, seed=3)
    w.generate(wait=True, timeout=120)
    assert w.status == "done" and len(w.tokens) >= 10, w.error
    # the run's tokens as the browser receives them, and a sweep over the whole scale
    sweep = [{"logprob": -x / 4, "entropy": x / 4} for x in range(0, 41)] + [
        {"logprob": -1e4, "entropy": 0.0},
        {"logprob": math.log(0.3162), "entropy": math.log(10)},
    ]
    tokens = [{"logprob": t["logprob"], "entropy": t["entropy"]} for t in w.tokens] + sweep
    js = js_colors(tokens, tmp_path)
    assert js["probability"] == [probability_color(t["logprob"]) for t in tokens]
    assert js["entropy"] == [entropy_color(t["entropy"]) for t in tokens]
    assert js["legend"] == {k: [list(pair) for pair in legend_colors(k)] for k in ("probability", "entropy")}
    assert len(set(js["probability"])) >= 20  # a real spread of colours, not one shade

    # and the static renderings use those colours for the same records
    records = w.records
    html, svg = heatmap_html(records), heatmap_svg(records)
    for record, colour in zip(records, js["probability"]):
        assert color_for(record) == colour
        assert f"background:{colour}" in html and f'fill="{colour}"' in svg


def test_probability_uses_a_log_scale_and_entropy_the_same_nats_axis():
    stops = PALETTE["probability"]["stops"]
    assert probability_color(0.0) == stops[0] and probability_color(math.log(0.01)) == stops[-1]
    assert probability_color(math.log(0.1)) == stops[2]  # 10%: the middle of a log scale
    assert probability_color(math.log(0.9)) != probability_color(math.log(0.5))  # likely tokens still differ
    assert entropy_color(math.log(10)) == PALETTE["entropy"]["stops"][2]  # a choice among 10 tokens
    assert entropy_color(float("inf")) == entropy_color(99.0) == PALETTE["entropy"]["stops"][-1]


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two "#rrggbb" colours."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_ratio_matches_wcag_reference_values():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)  # the classic AA grey


def test_token_text_reads_at_4_5_to_1_on_every_palette_colour_the_darkest_included():
    ramps = [PALETTE["probability"]["stops"], PALETTE["entropy"]["stops"]]
    ramps += [PALETTE["colorblind"]["probability"]["stops"], PALETTE["colorblind"]["entropy"]["stops"]]
    worst = min(contrast(PALETTE["text"], stop) for ramp in ramps for stop in ramp)
    assert worst >= 4.5, f"the darkest token colour leaves the text at {worst:.2f}:1"
    # the draw's chosen segment (orange) carries dark text: 7:1, presentation mode's bar
    assert contrast("#000000", PALETTE["chart"]["chosen"]) >= 7
