"""``nb-completion serve`` and ``python -m nb_completion.server``: one parser, one-line argument
errors, the API key from the environment or a file and never from the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from nb_completion import cli
from nb_completion.server import options

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"cli": ["-m", "nb_completion.cli", "serve"], "module": ["-m", "nb_completion.server"]}


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != options.API_KEY_ENV}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _option_strings(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def test_both_entry_points_share_one_parser():
    serve_parser = cli.build_parser()._subparsers._group_actions[0].choices["serve"]
    assert _option_strings(serve_parser) == _option_strings(options.build_parser())
    assert {"--api-key-file", "--max-tokens-cap", "--allowed-host", "--cors-origin", "--max-connections"} <= _option_strings(
        serve_parser
    )


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(
    "argv, words",
    [
        (["--queue-size", "-1"], "--queue-size"),
        (["--port", "http"], "--port"),
        (["--max-tokens-cap", "0"], "--max-tokens-cap"),
        (["--api-key", "s3cret"], "ps"),
        (["--header-timeout", "nan"], "--header-timeout"),
    ],
)
def test_argument_errors_are_one_line(entry, argv, words):
    done = subprocess.run([sys.executable, *ENTRY_POINTS[entry], *argv], capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and words in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr


def test_unreadable_key_file_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, *ENTRY_POINTS["cli"], "--api-key-file", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "--api-key-file" in done.stderr


def _start(argv: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, *argv, "--tiny", "--port", "0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    found: dict = {}

    def read() -> None:
        for line in proc.stderr:
            match = re.search(r"serving on (http://\S+)", line)
            if match:
                found["url"] = match.group(1)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(180)
    if "url" not in found:
        proc.kill()
        pytest.fail("the server did not start")
    return proc, found["url"]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_honours_the_key_from_the_environment_or_a_file(entry, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    for argv, env, key in (
        (ENTRY_POINTS[entry], _env(NB_COMPLETION_API_KEY="from-env"), "from-env"),
        ([*ENTRY_POINTS[entry], "--api-key-file", str(key_file)], _env(), "from-file"),
    ):
        proc, url = _start(argv, env)
        try:
            assert httpx.get(url + "/v1/models", timeout=30).status_code == 401
            assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
            assert httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code == 200
        finally:
            proc.terminate()
            proc.wait(30)
