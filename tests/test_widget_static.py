"""The widget's static rendering survives a saved notebook: run a notebook with nbclient (the
tiny model in the kernel), then export it with nbconvert as a reader without a kernel would."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

CELLS = [
    "from nb_completion.engine.tiny import register_tiny_model\n"
    "from nb_completion import CompletionWidget\n"
    "tiny = register_tiny_model().info.identifier",
    "w = CompletionWidget('def add(a, b):', model_id=tiny, max_tokens=6, logprobs_top_k=3)\n"
    "w.generate(wait=True, timeout=120)\n"
    "w",
]


def test_saved_notebook_shows_the_heatmap_without_a_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nbconvert = pytest.importorskip("nbconvert")

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = nb.cells[1].outputs
    data = next(o["data"] for o in outputs if o.get("output_type") == "execute_result")
    assert "application/vnd.jupyter.widget-view+json" in data  # the live panel
    static = data["text/html"]  # and its kernel-free copy
    assert static.count("data-token-index=") == 6
    assert "title=" in static and "alternatives" in static and "def add(a, b):" in static
    assert "<script" not in static

    # A notebook saved from JupyterLab (which by default does not save widget state) and exported
    # by nbconvert, or shown on GitHub, falls back from the widget view to this static copy.
    nb.metadata.pop("widgets", None)
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert html.count("data-token-index=") >= 6
