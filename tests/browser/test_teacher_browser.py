"""The teaching extras end to end in JupyterLab (headless Chromium, the default model): the "why
this token" panel after a Step, the draw and the distribution naming one position, presentation
mode (20 px numbers, controls + text + draw + top bars inside 1280x720, text contrast >= 7:1),
axe-core (0 serious or critical violations inside the widget; js/node_modules/axe-core, a dev
dependency of js/package.json), and screenshots at 1280x720 and 1920x1080, light and dark, to
``$NBC_SHOTS`` (default ``artifacts/screenshots/teacher``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import test_widget_browser as wb

pytestmark = [pytest.mark.browser, pytest.mark.real_model, pytest.mark.slow]

lab = wb.lab  # the same JupyterLab server fixture; this module opens a notebook of its own
AXE = wb.ROOT / "js" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path(os.environ.get("NBC_SHOTS", wb.ROOT / "artifacts" / "screenshots" / "teacher"))
CELL = (
    "from nb_completion import CompletionWidget\n"
    'w = CompletionWidget("The capital of France is", max_tokens=6, strategy="top_p", temperature=0.9, seed=3)\n'
    "w"
)

# Each text element's colour against the first opaque background behind it (WCAG ratio).
CONTRASTS = """(sel) => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = (c) => { const v = rgb(c).slice(0, 3).map((x) => x / 255).map((x) => x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4);
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const bgOf = (e) => { for (; e; e = e.parentElement) { const b = getComputedStyle(e).backgroundColor; const a = rgb(b);
    if (a.length < 4 || a[3] > 0.9) return b; } return 'rgb(255, 255, 255)'; };
  return [...document.querySelectorAll(sel)].filter((e) => e.offsetParent && e.textContent.trim()).map((e) => {
    const [a, b] = [lum(getComputedStyle(e).color), lum(bgOf(e))].sort((x, y) => y - x);
    return [e.className, e.textContent.trim().slice(0, 30), (a + 0.05) / (b + 0.05)];
  });
}"""
TEXTS = ".nbc-widget :is(.nbc-dist-value, .nbc-dist-caption, .nbc-why li, .nbc-metrics, .nbc-status, .nbc-draw-caption, .nbc-token, .nbc-slider-value, .nbc-field > label)"


def notebook_page(lab, name: str, cell: str, shots: Path):
    """A page (1280x720, page errors collected in ``pg.errors``) on a notebook ``name`` of one
    ``cell``, written beside the lab's own, its kernel idle; closed after the module."""
    import nbformat
    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(cell)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab["dir"] / name)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=wb.CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1280, "height": 720})
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(lab["url"].replace("widget.ipynb", name))
        pg.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        pg.errors = errors  # type: ignore[attr-defined]
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def page(lab):
    yield from notebook_page(lab, "teacher.ipynb", CELL, SHOTS)


def _shots(pg, name: str) -> None:
    """The page at 1280x720 and 1920x1080 with the widget's top in view (no tooltip over it)."""
    pg.mouse.move(2, 700)
    pg.locator(".nbc-widget [role='tooltip']").first.wait_for(state="hidden", timeout=5_000)
    for w, h in ((1280, 720), (1920, 1080)):
        pg.set_viewport_size({"width": w, "height": h})
        pg.locator(".nbc-widget").evaluate("e => e.scrollIntoView({block: 'start'})")
        pg.screenshot(path=str(SHOTS / f"{name}-{w}x{h}.png"))
    pg.set_viewport_size({"width": 1280, "height": 720})


def _axe(pg) -> list:
    if not AXE.exists():
        pytest.skip("axe-core is not installed (cd js && npm ci)")
    pg.add_script_tag(path=str(AXE))
    found = pg.evaluate(
        "async () => (await axe.run(document.querySelector('.nbc-widget'), {resultTypes: ['violations']})).violations"
        ".filter((v) => ['serious', 'critical'].includes(v.impact))"
        ".map((v) => [v.id, v.impact, v.nodes.slice(0, 3).map((n) => n.target.join(' ') + ': ' + n.failureSummary)])"
    )
    return found


def _dark(pg) -> None:
    light = pg.locator(".nbc-widget").evaluate("e => getComputedStyle(e).backgroundColor")
    pg.get_by_role("menuitem", name="Settings", exact=True).click()
    pg.locator(".lm-Menu").get_by_text("Theme", exact=True).hover()
    pg.locator(".lm-Menu").get_by_text("JupyterLab Dark", exact=True).click()
    pg.wait_for_function(f"getComputedStyle(document.querySelector('.nbc-widget')).backgroundColor !== {light!r}", timeout=30_000)
    pg.wait_for_selector("#jupyterlab-splash", state="detached", timeout=30_000)  # the theme's splash is gone


def test_why_panel_presentation_mode_axe_and_screenshots(page):
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
    pg.get_by_role("button", name="Step", exact=True).click()
    pg.wait_for_function(
        f"() => document.querySelectorAll('.nbc-widget .nbc-tokens [data-token-index]').length === {n + 1}", timeout=60_000
    )
    # the stepped token: its distribution, the draw at the same position, and why it was drawn
    draw = w.locator(".nbc-draw")
    draw.wait_for(state="visible", timeout=10_000)
    assert draw.locator(".nbc-draw-title").inner_text() == f"The draw at token #{n}"
    # the Step is over once its probe shows the next token's distribution; then ask for the stepped one
    label = "document.querySelector('.nbc-widget .nbc-dist[role=figure]')?.getAttribute('aria-label') || ''"
    pg.wait_for_function(f"() => ({label}).includes('the next token (#{n + 1})')", timeout=30_000)
    wb._tokens(pg).nth(n).click()
    fig = w.locator(".nbc-output .nbc-dist[role='figure']")
    pg.wait_for_function(
        f"() => ({label}).includes('before token #{n}')",
        timeout=30_000,
    )
    why = fig.locator(".nbc-why").inner_text()
    assert "Raw probability" in why and "Processed probability" in why and "Rank #" in why
    assert "so it was drawn" in why and "equally likely choices" in why
    fig.locator(".nbc-why-glossary summary").click()
    assert fig.locator(".nbc-why-glossary dl").is_visible()
    _shots(pg, "1-light")
    low = [c for c in pg.evaluate(CONTRASTS, TEXTS) if c[2] < 4.5]  # the small grey numbers included
    assert low == [], low
    violations = _axe(pg)
    assert violations == [], violations

    # presentation mode: one screen, 20 px numbers, contrast >= 7:1
    w.locator("input[name='present']").check()
    pg.wait_for_function("() => document.querySelector('.nbc-widget').classList.contains('nbc-present')", timeout=10_000)
    w.evaluate("e => e.scrollIntoView({block: 'start'})")
    # on the 1280x720 page itself, JupyterLab's menus and status bar included
    bottom = pg.locator(".jp-StatusBar, #jp-bottom-panel").first.bounding_box()["y"]
    parts = [".nbc-controls", ".nbc-sliders", ".nbc-text", ".nbc-draw-bar", ".nbc-draw-u-label", ".nbc-dist-item >> nth=7"]
    for sel in parts:
        box = w.locator(sel).first.bounding_box()
        assert box is not None, sel
        assert box["y"] >= 0 and box["y"] + box["height"] <= bottom and box["x"] + box["width"] <= 1280, (sel, box, bottom)
    sizes = w.locator(".nbc-dist-value, .nbc-metrics, .nbc-slider-value, .nbc-draw-caption").evaluate_all(
        "els => els.map((e) => parseFloat(getComputedStyle(e).fontSize))"
    )
    assert sizes and min(sizes) >= 20, sizes
    low = [c for c in pg.evaluate(CONTRASTS, TEXTS) if c[2] < 7]
    assert low == [], low
    _shots(pg, "2-present-light")
    assert _axe(pg) == []

    _dark(pg)
    low = [c for c in pg.evaluate(CONTRASTS, TEXTS) if c[2] < 7]
    assert low == [], low
    _shots(pg, "3-present-dark")
    w.locator("input[name='present']").uncheck()
    pg.wait_for_function("() => !document.querySelector('.nbc-widget').classList.contains('nbc-present')", timeout=10_000)
    low = [c for c in pg.evaluate(CONTRASTS, TEXTS) if c[2] < 4.5]
    assert low == [], low
    _shots(pg, "4-dark")
    assert _axe(pg) == []
    assert pg.errors == []  # type: ignore[attr-defined]
