"""The teaching notebooks run top to bottom with the real default model (nbclient), and say what
they claim: streamed text, heatmaps, side-by-side columns, JSON that parses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["quickstart.ipynb", "sampling_lab.ipynb", "structured_output.ipynb", "inside_a_step.ipynb", "inside_the_model.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


def execute(name: str):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


@pytest.fixture(scope="module")
def executed():
    cache: dict[str, nbformat.NotebookNode] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = execute(name)
        return cache[name]

    return get


def cell(nb, snippet: str):
    found = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    assert len(found) == 1, f"{len(found)} cells contain {snippet!r}"
    return found[0]


def data(c, mime: str) -> list[str]:
    return [o["data"][mime] for o in c.outputs if "data" in o and mime in o["data"]]


def stdout(c) -> str:
    return "".join(o["text"] for o in c.outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def errors(nb) -> list[str]:
    return [o["evalue"] for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]


def completion_text(c) -> str:
    """The text of a %%complete cell: its display's text/plain (one display, updated in place)."""
    shown = [o for o in c.outputs if "data" in o and "nbc-completion" in o["data"].get("text/html", "")]
    assert len(shown) == 1, "one live display per %%complete cell"
    return shown[0]["data"]["text/plain"]


@pytest.mark.real_model
@pytest.mark.slow
def test_quickstart(executed):
    nb = executed("quickstart.ipynb")
    assert errors(nb) == []
    first = cell(nb, "The three primary colors are")
    assert len(completion_text(first).split()) >= 5
    assert "stop: out_of_tokens" in data(first, "text/html")[-1] or "stop: end_of_turn" in data(first, "text/html")[-1]
    assert re.search(r"\d+ tokens; the first one had probability 0\.\d+", stdout(cell(nb, "text = _")))
    heat = cell(nb, "fun fact about {topic}")
    html = data(heat, "text/html")[-1]
    assert html.count("data-token-index=") >= 10 and "alternatives" in html and completion_text(heat).strip()
    assert stdout(cell(nb, "reply.stop_reason")).strip() in {"out_of_tokens", "end_of_turn"}
    assert "SmolLM2-135M-Instruct" in data(cell(nb, "%complete --models"), "text/plain")[0]
    widget = cell(nb, "CompletionWidget(")
    assert data(widget, "application/vnd.jupyter.widget-view+json")
    assert stdout(cell(nb, "w.generate(wait=True)")).strip()
    assert "Paris" in data(cell(nb, 'complete("The capital of France is"'), "text/plain")[0]
    streamed = cell(nb, "stream=True")
    assert len([o for o in streamed.outputs if o["output_type"] == "stream"]) >= 3 and stdout(streamed).strip()
    # raw completion and chat, side by side
    raw = cell(nb, "%%complete -n 30\nWrite a haiku about the sea.")
    chat = cell(nb, "%%complete --chat -n 30\nWrite a haiku about the sea.")
    said, answered = completion_text(raw).strip(), completion_text(chat).strip()
    assert said and answered and said != answered and "\n" in answered  # greedy: the same contrast every run
    assert ("⟨end⟩" in data(raw, "text/html")[-1]) == ("stop: end_of_turn" in data(raw, "text/html")[-1])
    echo = data(chat, "text/html")[-1]
    assert "&lt;|im_start|&gt;user\nWrite a haiku about the sea.&lt;|im_end|&gt;" in echo  # special tokens shown
    assert "nbc-prompt-echo" not in data(raw, "text/html")[-1]
    assert "Paris" in data(cell(nb, 'complete("What is the capital of France?", chat=True'), "text/plain")[0]


@pytest.mark.real_model
@pytest.mark.slow
def test_saved_quickstart_keeps_no_load_widget(executed):
    """The cell that loads the model keeps one plain line, not a progress widget that reads
    "Error displaying widget: model not found" once the notebook is reopened."""
    nb = executed("quickstart.ipynb")
    widget_cells = [c for c in nb.cells if c.cell_type == "code" and data(c, "application/vnd.jupyter.widget-view+json")]
    assert [c.source for c in widget_cells] == [cell(nb, "CompletionWidget(").source]
    first = cell(nb, "The three primary colors are")
    lines = [o["data"]["text/plain"] for o in first.outputs if "data" in o and set(o["data"]) == {"text/plain"}]
    assert len(lines) == 1 and re.fullmatch(r"HuggingFaceTB/SmolLM2-135M-Instruct: loaded \(\w+, \w+\) in [\d.]+ s", lines[0])
    everything = json.dumps(nb)
    assert "Loading (" not in everything and "Converting" not in everything  # no stale step left behind


@pytest.mark.real_model
@pytest.mark.slow
def test_sampling_lab(executed):
    nb = executed("sampling_lab.ipynb")
    assert errors(nb) == []
    greedy = completion_text(cell(nb, "-o greedy"))
    assert len(greedy.split()) >= 5
    temperature = data(cell(nb, '"label": "T = 0.3"'), "text/html")[0]
    assert temperature.count('class="nbc-compare-run"') == 4 and temperature.count("data-token-index=") >= 4 * 10
    assert all(t in temperature for t in ("greedy", "T = 0.3", "T = 1.0", "T = 1.5", "perplexity"))
    for snippet in ('"label": "T = 0.3"', "top_p_runs = compare(", "top_k_runs = compare(", "LOOPY ="):
        shown = [o for o in cell(nb, snippet).outputs if "nbc-compare" in o.get("data", {}).get("text/html", "")]
        assert len(shown) == 1, "compare() fills one live display and does not print its result again"
    perplexities = [float(x) for x in re.findall(r"perplexity +([\d.]+)", stdout(cell(nb, "for run in top_p_runs")))]
    assert len(perplexities) == 3 and perplexities[2] < perplexities[0]  # the cut-off tames the tail
    assert data(cell(nb, "top_k_runs = compare("), "text/html")[0].count('class="nbc-compare-run"') == 4
    assert "top-k 1 is greedy: True" in stdout(cell(nb, "top-k 1 is greedy"))
    assert "entropy (how unsure" in data(cell(nb, 'color_by="entropy"'), "text/html")[0]
    draws = stdout(cell(nb, "draws = compare("))
    greedy_ppl = float(re.search(r"greedy  perplexity ([\d.]+)", draws).group(1))
    hot = [float(x) for x in re.search(r"T 1.0   perplexity per seed: (.*)", draws).group(1).split()]
    cool = [float(x) for x in re.search(r"T 0.3   perplexity per seed: (.*)", draws).group(1).split()]
    assert len(hot) == len(cool) == 4 and min(hot) > greedy_ppl  # the climb is clear from T = 1
    assert max(cool) < min(hot)
    penalty = data(cell(nb, "LOOPY ="), "text/plain")[0]
    assert "rep. penalty 1.15" in penalty or "penalty 1.15" in penalty


@pytest.mark.real_model
@pytest.mark.slow
def test_structured_output(executed):
    nb = executed("structured_output.ipynb")
    failing = cell(nb, "unclosed")
    assert "raises-exception" in failing.metadata.tags
    assert errors(nb) == [o["evalue"] for o in failing.outputs if o["output_type"] == "error"]
    (error,) = [o for o in failing.outputs if o["output_type"] == "error"]
    assert "400 Bad Request" in error["evalue"] and "response_format.bnf" in error["evalue"]
    assert len(error["traceback"]) == 1  # title + detail, no traceback wall
    capital = json.loads(completion_text(cell(nb, "--json-schema '{")))
    assert set(capital) == {"city", "country"} and all(isinstance(v, str) for v in capital.values())
    person = json.loads(completion_text(cell(nb, "-n 80 --json-schema {Person}")))
    assert set(person) == {"name", "age", "hobbies"} and 0 <= person["age"] <= 120
    assert "Person(name=" in data(cell(nb, "Person.model_validate_json(person.content)"), "text/plain")[0]
    assert "Person(name=" in data(cell(nb, "response_format=Person"), "text/plain")[0]
    cut = cell(nb, "-n 6 --json-schema {Person}")
    assert "incomplete" in data(cut, "text/html")[-1]
    assert stdout(cell(nb, "print(cut.stop_reason.value, _.incomplete)")).strip() == "out_of_tokens True"
    yes_no = completion_text(cell(nb, "--grammar {yes_no}"))
    assert re.fullmatch(r"(yes|no) because [a-z ]+\.", yes_no)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", completion_text(cell(nb, "--grammar-syntax regex")))


@pytest.mark.real_model
@pytest.mark.slow
def test_inside_a_step(executed):
    nb = executed("inside_a_step.ipynb")
    assert errors(nb) == []
    raw = data(cell(nb, "d = nb_completion.next_token_distribution(PROMPT)"), "image/svg+xml")[0]
    assert "Next-token distribution" in raw and raw.count('data-excluded="false"') >= 20
    top_k = data(cell(nb, 'd.show(strategy="top_k", top_k=3)'), "image/svg+xml")[0]
    assert top_k.count('data-excluded="false"') == 3
    assert "top-p cut" in data(cell(nb, "top_p=0.5)"), "image/svg+xml")[0]
    shifts = re.findall(r"T = ([\d.]+): .* ([\d.]+)% -> ([\d.]+)%", stdout(cell(nb, "for t in (0.5, 1.0, 1.5)")))
    after = [float(a) for _, _, a in shifts]
    assert len(after) == 3 and after[0] > after[1] > after[2]  # sharper below 1, flatter above
    u, lo, hi = map(
        float, re.search(r"u = ([\d.]+) fell in .*: interval ([\d.]+) to ([\d.]+)", stdout(cell(nb, "step = w.step()"))).groups()
    )
    assert lo <= u <= hi
    assert "same tokens: True" in stdout(cell(nb, "Step x 5 from the start"))
    assert data(cell(nb, "\ngood"), "image/svg+xml") and data(cell(nb, "\nbad"), "image/svg+xml")
    ppl = dict(re.findall(r"(sentence|scrambled) +perplexity ([\d.]+)", stdout(cell(nb, "scrambled perplexity"))))
    assert float(ppl["scrambled"]) > 2 * float(ppl["sentence"])
    tree = stdout(cell(nb, "for item in w.tree"))
    assert tree.startswith("original run") and "  at #1 -> " in tree
    shown = cell(nb, "w.show_branch(0)")
    copy = [o["data"] for o in shown.outputs if "data" in o and "image/svg+xml" in o["data"]]
    assert copy and "Branches" in copy[-1]["image/svg+xml"]


@pytest.mark.real_model
def test_inside_the_model_runs_and_finds_paris(executed):
    nb = executed("inside_the_model.ipynb")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream")
    assert "' Paris' is first on top at layer" in text
    assert "layer 30: ' Paris'" in text
    ranks = [int(r) for r in re.findall(r"' Paris' is rank #(\d+)", text)]
    assert ranks[0] > 100 and ranks[-1] == 1, ranks  # the climb the lens tracks
    assert "panel lens: ' Paris' was written; the output's answer ' Paris' is first top at layer 30" in text
    assert len(re.findall(r"^ *-\d+\.\d\d  ['\"]", text, re.M)) >= 10  # the futures of nb.futures() and of the panel
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
