"""What a saved notebook shows without a kernel: run notebooks with nbclient (the tiny model in
the kernel), save them, and read them as nbconvert, an offline reader and GitHub would."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import pytest

from github_sanitizer import github_output

pytestmark = pytest.mark.slow

SETUP = (
    "from nb_completion.engine.tiny import register_tiny_model\n"
    "from nb_completion import CompletionWidget, compare\n"
    "tiny = register_tiny_model().info.identifier"
)
WIDGET = "w = CompletionWidget('def add(a, b):', model_id=tiny, max_tokens=6, logprobs_top_k=3)\nw"
RUN = "w.generate(wait=True, timeout=120)\nprint(repr(w.text))"
VIEW = "application/vnd.jupyter.widget-view+json"
SVG = "image/svg+xml"


def run_notebook(tmp_path, sources):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o["evalue"] for c in nb.cells for o in c.outputs if o["output_type"] == "error"]
    assert errors == []
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)  # saved, and read back as a reader would
    return nbformat.read(path, as_version=4)


def datas(cell) -> list[dict]:
    return [o["data"] for o in cell.outputs if "data" in o]


def static_copy(cell) -> dict:
    (copy,) = [d for d in datas(cell) if "nbc-static-copy" in d.get("text/html", "")]
    return copy


def svg_fills(svg: str) -> set[str]:
    root = ET.fromstring(svg)  # well-formed XML
    return {e.get("fill") for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("fill", "").startswith("#")}


def test_a_widget_shown_before_its_run_is_saved_with_the_last_completion(tmp_path):
    """The panel is displayed first and generates in a later cell (as a user does): the saved
    notebook's copy shows that completion, not "(no completion yet…)"."""
    nbconvert = pytest.importorskip("nbconvert")
    nb = run_notebook(tmp_path, [SETUP, WIDGET, RUN])
    generated = eval(nb.cells[2].outputs[0]["text"])  # noqa: S307 - repr() of a str printed by the cell
    assert generated.strip()
    shown = nb.cells[1]
    assert any(VIEW in d for d in datas(shown))  # the live panel ...
    copy = static_copy(shown)  # ... and its kernel-free copy, refreshed by the run
    html = copy["text/html"]
    assert "no completion yet" not in html
    assert html.count("data-token-index=") == 6 and "alternatives" in html and "def add(a, b):" in html
    assert re.sub(r"<[^>]+>", "", html).replace("·", " ").replace("↵", "\n").count(generated.strip()[:3]) >= 1
    assert copy["text/plain"] == "def add(a, b):" + generated
    assert "<script" not in html and svg_fills(copy[SVG])

    # nbconvert --execute keeps the widget state, so the panel needs a widget manager from a CDN;
    # the copy is plain HTML: the exported page shows the completion offline.
    page, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    body = re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert body.count("data-token-index=") >= 6 and "nbc-static-copy" in body


def test_saved_notebook_shows_the_heatmap_without_a_kernel(tmp_path):
    nbconvert = pytest.importorskip("nbconvert")
    nb = run_notebook(
        tmp_path,
        [
            SETUP,
            "w = CompletionWidget('def add(a, b):', model_id=tiny, max_tokens=6, logprobs_top_k=3)\n"
            "w.generate(wait=True, timeout=120)\nw",
        ],
    )
    copy = static_copy(nb.cells[1])
    assert copy["text/html"].count("data-token-index=") == 6
    # A notebook saved from JupyterLab (which by default does not save widget state) and exported
    # by nbconvert falls back from the widget view to its one-line text; the copy shows the run.
    nb.metadata.pop("widgets", None)
    page, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert page.count("data-token-index=") >= 6


def test_heatmaps_keep_their_colours_on_github(tmp_path):
    """GitHub strips style attributes and <style> from text/html; the SVG copies in the same
    bundles keep the colours of the widget's copy, compare()'s columns and %%complete --heatmap."""
    nb = run_notebook(
        tmp_path,
        [
            SETUP,
            WIDGET,
            RUN,
            "runs = compare('Once upon a time', [{'strategy': 'greedy'}, {'temperature': 1.0}], model_id=tiny, max_tokens=6)",
            "%load_ext nb_completion",
            "%%complete --model tiny-llama -n 6 --heatmap\nOnce upon a time",
        ],
    )
    outputs = {
        "widget": static_copy(nb.cells[1]),
        "compare": next(d for d in datas(nb.cells[3]) if "nbc-compare" in d.get("text/html", "")),
        "magic": next(d for d in datas(nb.cells[5]) if "data-token-index" in d.get("text/html", "")),
    }
    for name, data in outputs.items():
        colours = set(re.findall(r"background:(#[0-9a-f]{6})", data["text/html"]))
        assert len(colours) >= 2, name
        shown = github_output(data)
        html = shown[-1]
        assert "background" not in html and "style=" not in html, name  # GitHub's HTML: no colour left
        images = [re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', part) for part in shown]
        (svg,) = [base64.b64decode(m.group(1)).decode() for m in images if m]
        assert colours <= svg_fills(svg), (name, colours - svg_fills(svg))  # the image keeps them
    # compare() keeps its side-by-side columns in the image
    root = ET.fromstring(outputs["compare"][SVG])
    frames = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("stroke")]
    assert len(frames) == 2 and frames[0].get("y") == frames[1].get("y") and frames[0].get("x") != frames[1].get("x")
