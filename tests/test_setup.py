"""The Makefile's set-up path: a missing npm stops first with one line, and `make lab` / `make
model` find a cached conversion without loading the model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_setup_without_npm_stops_first_with_a_one_line_hint(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "id", "make"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "--no-print-directory", "setup", f"VENV={venv}", f"PYTHON={sys.executable}"],
        cwd=ROOT, env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    hint = [line for line in done.stderr.splitlines() if "npm" in line]
    assert hint and hint[0].startswith("nb_completion: npm not found; install Node.js")
    assert not venv.exists()  # stopped before creating anything


@pytest.mark.real_model
def test_load_if_needed_finds_the_cached_conversion_without_loading(real_backend):
    code = (
        "import sys; from nb_completion.cli import main; code = main(['load', '--if-needed']); "
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "0 False False"  # nothing loaded, torch not even imported
    assert "nothing to do" in lines[0] and real_backend.info.provider_resource_id in lines[0]
