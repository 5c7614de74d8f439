"""The inside views end to end in JupyterLab (headless Chromium, the default model; the tiny Llama
as the second model): Layers (the logit lens of a clicked token, its output row equal to the
distribution figure's numbers), Attention (layer and head pickers), Sample 5 (five columns, five
new branches in the tree, Show) and Compare with (a second model's column), axe-core with no
serious or critical violation, and screenshots at 1280x720 to ``$NBC_SHOTS`` (default
``artifacts/screenshots/inside``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from . import test_teacher_browser as tb
from . import test_widget_browser as wb

pytestmark = [pytest.mark.browser, pytest.mark.real_model, pytest.mark.slow]

lab = wb.lab
SHOTS = Path(os.environ.get("NBC_SHOTS", wb.ROOT / "artifacts" / "screenshots" / "inside"))
CELL = (
    "from nb_completion import CompletionWidget\n"
    "from nb_completion.engine.tiny import register_tiny_model\n"
    "register_tiny_model()\n"
    'w = CompletionWidget("The capital of France is", max_tokens=6)\n'
    "w"
)
INSIDE_TEXTS = ".nbc-widget :is(.nbc-lens-cell, .nbc-lens th, .nbc-att-token, .nbc-inside-summary, .nbc-future-mean, .nbc-inside-where, .nbc-compare-head)"


@pytest.fixture(scope="module")
def page(lab):
    yield from tb.notebook_page(lab, "inside.ipynb", CELL, SHOTS)


def _shot(pg, locator, name: str) -> None:
    """The page at 1280x720 with ``locator``'s top in view (no tooltip over it)."""
    pg.mouse.move(2, 700)
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")
    pg.screenshot(path=str(SHOTS / f"{name}.png"))


def _wait_or_error(pg, selector: str, timeout: int = 120_000) -> None:
    """Wait until ``selector`` is shown, failing at once with the widget's error box if that shows."""
    pg.wait_for_function(
        "(s) => document.querySelector(s) || !document.querySelector('.nbc-widget .nbc-error').hidden",
        arg=selector,
        timeout=timeout,
    )
    error = pg.locator(".nbc-widget .nbc-error")
    assert error.is_hidden(), error.inner_text()


def test_lens_attention_futures_and_a_second_model_in_jupyterlab(page):
    pg = page
    try:
        _scenario(pg)
    except BaseException:
        pg.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
        raise


def _scenario(pg):
    wb._run_cell(pg)
    w = pg.locator(".nbc-widget")
    wb._generate_and_wait(pg)
    n = wb._tokens(pg).count()
    assert n == 6
    bar = w.locator(".nbc-inside-bar")
    assert bar.locator(".nbc-inside-where").inner_text() == "the end of the text"

    # Layers: the lens at the end, then at the first generated token (clicking it moves the lens)
    bar.get_by_role("button", name="Layers").click()
    lens = w.locator(".nbc-lens-fig")
    lens.locator("tbody tr").first.wait_for(timeout=60_000)
    assert lens.locator("figcaption").inner_text().startswith(f"Logit lens: what each layer predicts for the next token (#{n})")
    wb._tokens(pg).nth(0).click()
    pg.wait_for_function(
        "() => (document.querySelector('.nbc-widget .nbc-lens-fig figcaption')?.textContent || '').includes('for token #0')",
        timeout=60_000,
    )
    rows = lens.locator("tbody tr")
    assert rows.count() == 30  # SmolLM2-135M's decoder layers, the last the output
    assert rows.nth(29).locator("th").inner_text().endswith("(output)")
    assert lens.locator("tr.nbc-lens-first").count() == 1
    # the answer's column: its rank at every layer, 1 at the output and from the marked layer on
    ranks = [int(t.lstrip("#")) for t in lens.locator("tbody td.nbc-lens-track .nbc-lens-rank").all_inner_texts()]
    assert len(ranks) == 30 and ranks[-1] == 1, ranks
    summary = lens.locator(".nbc-inside-summary").inner_text()
    assert re.search(r"first becomes top at layer \d+ of 30", summary), summary
    # the output row is the model's own distribution for token 0: the distribution figure's top bar
    label = "document.querySelector('.nbc-widget [role=figure].nbc-dist')?.getAttribute('aria-label') || ''"
    pg.wait_for_function(f"() => ({label}).includes('before token #0')", timeout=30_000)
    top_bar = w.locator(".nbc-dist button[data-token-id]").first.get_attribute("aria-label")
    out_cell = rows.nth(29).locator("td.nbc-lens-cell").first
    out_token = out_cell.locator("code").inner_text().replace("·", " ")
    out_pct = out_cell.locator(".nbc-lens-p").inner_text()
    assert top_bar.startswith(f"{out_token!r}".replace("'", '"')), (top_bar, out_token)
    assert f"raw probability {out_pct}" in top_bar, (top_bar, out_pct)
    _shot(pg, lens, "1-lens")

    # Attention: the clicked token's row; the mean first, then a head and a layer picked
    bar.get_by_role("button", name="Layers").click()
    assert lens.is_hidden()
    bar.get_by_role("button", name="Attention").click()
    att = w.locator(".nbc-att-fig")
    att.locator(".nbc-att-token").first.wait_for(timeout=60_000)
    assert att.locator("select[name='attention_layer'] option").count() == 30
    heads = att.locator("button[data-head]")
    assert heads.count() == 10  # the mean and 9 heads
    assert heads.first.get_attribute("aria-pressed") == "true"
    tokens = att.locator(".nbc-att-token")
    prompt_tokens = tokens.count()
    assert prompt_tokens >= 6  # the prompt's tokens and the clicked one
    heads.nth(3).click()
    assert "head 3 of 9" in att.locator("figcaption").inner_text()
    att.locator("select[name='attention_layer']").select_option(index=14)
    assert "layer 15 of 30" in att.locator("figcaption").inner_text()
    weights = [float(x) for x in tokens.evaluate_all("es => es.map((e) => e.dataset.weight)")]
    assert abs(sum(weights) - 1) < 2e-3, weights  # a row of softmax attention
    att.locator("input[name='attention_skip_first']").check()
    assert "after the first token" in att.locator(".nbc-inside-summary").inner_text()
    _shot(pg, att, "2-attention")

    # Sample 5 from token #2: five columns, five new branches in the tree
    before = w.locator("[role='tree'] [role='treeitem']").count()
    wb._tokens(pg).nth(2).click()
    # the click's replies (the distribution, the attention) re-render above the bar: wait for both
    pg.wait_for_function(f"() => ({label}).includes('before token #2')", timeout=30_000)
    pg.wait_for_function(
        "() => (document.querySelector('.nbc-widget .nbc-att-fig figcaption')?.textContent || '').includes('(#2)')",
        timeout=60_000,
    )
    bar.get_by_role("button", name="Sample 5").click()
    futures = w.locator(".nbc-futures-fig")
    _wait_or_error(pg, ".nbc-widget .nbc-futures-fig:not([hidden]) .nbc-future")
    cols = futures.locator(".nbc-future")
    assert cols.count() == 5
    assert futures.locator(".nbc-future-best").count() == 1
    for j in range(5):
        assert re.match(r"mean log p −?\d+\.\d\d per token", cols.nth(j).locator(".nbc-future-mean").inner_text())
        assert cols.nth(j).locator(".nbc-token").count() >= 1
    pg.wait_for_function(
        f"() => document.querySelectorAll('.nbc-widget [role=treeitem]').length === {before + 5}", timeout=10_000
    )
    _shot(pg, futures, "3-futures")
    shown = cols.nth(1).locator(".nbc-token").evaluate_all("es => es.map((e) => e.textContent)")
    cols.nth(1).get_by_role("button", name="Show").click()
    pg.wait_for_function(
        "(t) => JSON.stringify([...document.querySelectorAll('.nbc-widget .nbc-tokens .nbc-token')].slice(2).map((e) => e.textContent)) === t",
        arg=json.dumps(shown, ensure_ascii=False, separators=(",", ":")),
        timeout=30_000,
    )
    assert "(sample)" in w.locator("[role='treeitem'][aria-selected='true']").inner_text()

    # a second model: its column beside the main text, in the same palette; Generate runs both
    w.locator("select[name='compare_model']").select_option("tiny-llama")
    column = w.locator(".nbc-compare")
    done = "() => (document.querySelector('.nbc-widget .nbc-compare .nbc-compare-head')?.textContent || '').endsWith('6 tokens')"
    pg.wait_for_function(done, timeout=60_000)
    wb._generate_and_wait(pg)
    pg.wait_for_function(done, timeout=60_000)
    assert column.locator(".nbc-compare-head").inner_text() == "tiny-llama · 6 tokens"
    assert column.locator(".nbc-token").count() == 6 and wb._tokens(pg).count() == 6
    assert w.locator(".nbc-main-head").inner_text() == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # the column follows the panel's palette (the colours themselves: js/test/inside.test.js)
    colours = "() => [...document.querySelectorAll('.nbc-widget .nbc-compare .nbc-token')].map((e) => getComputedStyle(e).backgroundColor)"
    before = pg.evaluate(colours)
    w.locator("select[name='palette']").select_option("colorblind")
    assert pg.evaluate(colours) != before
    w.locator("select[name='palette']").select_option("default")
    assert pg.evaluate(colours) == before
    _shot(pg, w.locator(".nbc-columns"), "4-second-model")

    low = [c for c in pg.evaluate(tb.CONTRASTS, INSIDE_TEXTS) if c[2] < 4.5]
    assert low == [], low
    violations = tb._axe(pg)
    assert violations == [], violations

    # the dark theme: the lens and attention again, text still >= 4.5:1
    bar.get_by_role("button", name="Layers").click()
    lens.locator("tbody tr").first.wait_for(timeout=60_000)
    tb._dark(pg)
    _shot(pg, bar, "5-dark")
    low = [c for c in pg.evaluate(tb.CONTRASTS, INSIDE_TEXTS) if c[2] < 4.5]
    assert low == [], low
    assert pg.errors == []  # type: ignore[attr-defined]
