"""The GGUF conversion cache survives faults (issue 21, finding 7): a conversion killed midway
left a 517 MB temporary folder for good; a full disk came back as a 400 blaming the model,
nothing in the log, and every retry converted again for 20 s."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys

import pytest

from nb_completion.api.errors import CompletionError
from nb_completion.engine import gguf_cache, loading
from nb_completion.engine.gguf_cache import CacheFull, convert_cached


@pytest.fixture()
def fresh(monkeypatch):
    """A process that has not swept any cache yet and remembers no failure."""
    monkeypatch.setattr(gguf_cache, "_swept", set())
    monkeypatch.setattr(gguf_cache, "_full", {})


@pytest.fixture()
def gguf(tmp_path):
    path = tmp_path / "src" / "model.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    return path


def writes_a_model(gguf, out):
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"weights")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_partial_conversions_of_dead_processes_are_removed_at_the_next_start(tmp_path, gguf, fresh):
    cache = tmp_path / "cache"
    models = cache / "models"
    abandoned = models / f"model-0123456789abcdef.tmp{dead_pid()}"
    abandoned.mkdir(parents=True)
    (abandoned / "model.safetensors").write_bytes(b"x" * 1000)
    index_tmp = cache / f"gguf-sha256.json.tmp{dead_pid()}"
    index_tmp.write_text("{")
    ours = models / "other.tmp1"  # pid 1 runs: a conversion in progress elsewhere is left alone
    ours.mkdir()
    folder = convert_cached(gguf, cache, writes_a_model, lambda _m: None)
    assert gguf_cache.is_complete(folder)
    assert not abandoned.exists() and not index_tmp.exists()
    assert ours.exists()


def test_a_failed_conversion_leaves_nothing_behind(tmp_path, gguf, fresh):
    def fails(gguf, out):
        writes_a_model(gguf, out)
        raise ValueError("not a GGUF")

    with pytest.raises(ValueError):
        convert_cached(gguf, tmp_path / "cache", fails, lambda _m: None)
    assert not any(".tmp" in p.name for p in (tmp_path / "cache" / "models").iterdir())


def test_a_full_disk_is_one_clear_logged_error_not_retried_at_once(tmp_path, gguf, fresh, monkeypatch, caplog):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NB_COMPLETION_CACHE", str(cache))
    calls = []

    def disk_full(gguf, out):
        calls.append(out)
        writes_a_model(gguf, out)
        raise RuntimeError("safetensors could not write") from OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loading, "_convert_gguf", disk_full)
    caplog.set_level(logging.ERROR, logger="nb_completion")
    for _ in range(3):
        with pytest.raises(CompletionError) as caught:
            loading._gguf_to_cached_folder(gguf, lambda _m: None)
        error = caught.value
        assert error.status == 507
        assert str(cache) in error.detail and "NB_COMPLETION_CACHE" in error.detail
        assert str(gguf.parent) not in error.detail  # the cache is named, not where the model lies
    assert len(calls) == 1  # remembered: no 20 s conversion per retry
    assert not calls[0].exists()
    logged = [r for r in caplog.records if "out of disk space" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR


def test_after_the_wait_the_conversion_is_tried_again(tmp_path, gguf, fresh, monkeypatch):
    calls = []

    def full_then_fine(gguf, out):
        calls.append(out)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes_a_model(gguf, out)

    with pytest.raises(CacheFull):
        convert_cached(gguf, tmp_path / "cache", full_then_fine, lambda _m: None)
    monkeypatch.setattr(gguf_cache, "FULL_RETRY_SECONDS", 0.0)
    assert gguf_cache.is_complete(convert_cached(gguf, tmp_path / "cache", full_then_fine, lambda _m: None))
    assert len(calls) == 2
