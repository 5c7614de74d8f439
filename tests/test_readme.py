"""The README's examples run as written, and what they show is what the default model says.

Every ``python`` block of README.md that needs no server runs here, top to bottom; a line of the
form ``expression   # 'shown value'`` asserts that the expression gives the value shown. The CLI
line runs too. (The llama-stack client block needs a server on a fixed port: the real client is
driven over the same calls in ``tests/test_llama_stack_client.py``.)"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SHOWN = re.compile(r"^(?P<expr>[^#].*?)\s+#\s*(?P<shown>'.*'|\".*\")\s*$")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def runnable_python() -> list[str]:
    return [b for b in blocks("python") if "base_url=" not in b]  # a server on a fixed port: not here


def test_the_readme_has_examples_with_shown_outputs():
    shown = [line for block in runnable_python() for line in block.splitlines() if SHOWN.match(line)]
    assert len(shown) >= 2, shown


@pytest.mark.real_model
def test_the_readme_python_runs_and_shows_what_the_default_model_says(real_backend):
    checked = 0
    for block in runnable_python():
        scope: dict = {}
        for statement in _statements(block):
            match = SHOWN.match(statement) if "\n" not in statement else None
            with contextlib.redirect_stdout(io.StringIO()):
                if match:
                    value = eval(match["expr"], scope)  # noqa: S307 - the README's own example
                    assert value == ast.literal_eval(match["shown"]), (match["expr"], value)
                    checked += 1
                else:
                    exec(statement, scope)  # noqa: S102 - the README's own example
    assert checked >= 2


def _statements(block: str) -> list[str]:
    """The block's top-level statements, each as its source text (a loop stays whole)."""
    tree = ast.parse(block)
    lines = block.splitlines()
    return ["\n".join(lines[node.lineno - 1 : node.end_lineno]) for node in tree.body]


@pytest.mark.real_model
def test_the_readme_cli_line_runs(real_backend):
    line = next(line for b in blocks("bash") for line in b.splitlines() if line.startswith("nb-completion complete"))
    args = shlex.split(line.split("#")[0])[1:]
    done = subprocess.run([sys.executable, "-m", "nb_completion.cli", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
