"""Loading other models: one ``ensure_loaded`` for every frontend, clear errors for what cannot
load, plain-text progress (never a widget), and the content-keyed GGUF cache."""

from __future__ import annotations

import io
import os
import shutil

import pytest

from nb_completion import complete
from nb_completion.api.errors import CompletionError
from nb_completion.engine import gguf_cache, registry
from nb_completion.load_progress import LoadProgress
from nb_completion.load import ensure_loaded
from nb_completion.engine.local import LocalBackend

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# ---- one load-on-first-use path -----------------------------------------------------------------


def test_complete_loads_a_folder_on_first_use_and_registers_it(save_tiny, capsys):
    folder = str(save_tiny())
    assert registry.registered(folder) is None
    response = complete("Once upon a time", model_id=folder, sampling_params={"max_tokens": 4})
    assert response.stop_reason.value == "out_of_tokens" and len(response.content) > 0
    backend = registry.registered(folder)
    assert isinstance(backend, LocalBackend) and backend.info.provider_resource_id == folder
    assert ensure_loaded(folder) is backend  # the second use does not load again
    err = capsys.readouterr().err
    # stderr is not a terminal here: one whole line per step, each ending in a newline
    lines = err.splitlines(keepends=True)
    assert lines and all(line.endswith("\n") for line in lines) and "\r" not in err
    assert lines[0] == f"{folder}: Loading (float32, cpu)\n"
    assert lines[-1].startswith(f"{folder}: loaded (float32, cpu) in ")


def test_on_progress_receives_the_steps_and_nothing_is_printed(save_tiny, capsys):
    folder = str(save_tiny())
    steps: list[str] = []
    ensure_loaded(folder, on_progress=steps.append, dtype="float32")
    assert steps == ["Loading (float32, cpu)", "Ready (float32, cpu)"]
    assert capsys.readouterr().err == ""


def test_magic_model_path_loads_with_a_plain_text_display_not_a_widget(shell, save_tiny):
    folder = str(save_tiny())
    shell.display_pub.outputs.clear()
    result = shell.run_cell(f"%%complete --model {folder} -n 3\nOnce upon a time\n")
    assert result.error_in_exec is None and isinstance(result.result, str)
    outputs = shell.display_pub.outputs
    assert not any(WIDGET_MIME in o["data"] for o in outputs)
    progress = [o for o in outputs if o["data"].get("text/plain", "").startswith(f"{folder}: ")]
    assert progress[0]["data"] == {"text/plain": f"{folder}: Loading (float32, cpu)"}  # text only
    assert {o["transient"]["display_id"] for o in progress} == {progress[0]["transient"]["display_id"]}
    assert progress[-1]["update"] and progress[-1]["data"]["text/plain"].startswith(f"{folder}: loaded (float32, cpu) in ")


def test_widget_loads_a_model_path_on_generate(save_tiny):
    from nb_completion.widget import CompletionWidget

    folder = str(save_tiny())
    w = CompletionWidget("Once", model_id=folder, max_tokens=3)
    seen = []
    w.observe(lambda c: seen.append(c["new"]), names=["status"])
    w.generate(wait=True, timeout=120)
    assert seen == ["running", "loading", "running", "done"]
    assert len(w.tokens) == 3 and folder in w.model_ids


def test_terminal_progress_is_rewritten_in_place_and_cleared():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    progress = LoadProgress("m", stream=stream)
    progress("Converting")
    progress("Loading (float32, cpu)")
    progress.done("loaded (float32, cpu)")
    assert stream.getvalue() == "\r\x1b[Km: Converting\r\x1b[Km: Loading (float32, cpu)\r\x1b[K"


# ---- clear errors for what cannot load -----------------------------------------------------------


def _error(model_id: str) -> CompletionError:
    with pytest.raises(CompletionError) as caught:
        complete("Hi", model_id=model_id, sampling_params={"max_tokens": 2})
    return caught.value


def test_an_empty_folder_is_a_clear_400(tmp_path):
    error = _error(str(tmp_path))
    assert error.status == 400 and error.detail.startswith("model_id: ")
    assert "without config.json" in error.detail and str(tmp_path) in error.detail


def test_a_folder_with_a_gguf_points_at_the_file(tmp_path):
    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    error = _error(str(tmp_path))
    assert error.status == 400 and "model.Q4.gguf" in error.detail


def test_a_folder_with_a_config_but_no_tokenizer_names_the_tokenizer(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    error = _error(str(tmp_path))
    assert error.status == 400 and "could not load the tokenizer" in error.detail
    assert "Traceback" not in error.detail and len(error.detail) < 700


def test_a_broken_gguf_is_a_clear_400(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all" * 10)
    error = _error(str(broken))
    assert error.status == 400 and "could not read" in error.detail and "broken.gguf" in error.detail


def test_missing_paths_and_uncached_hub_ids_are_404_with_the_choices(tiny_model_id, tmp_path):
    missing = _error(str(tmp_path / "nope"))
    assert missing.status == 404 and "no such file or folder" in missing.detail and tiny_model_id in missing.detail
    hub = _error("someone/model-that-is-not-cached")
    assert hub.status == 404 and "local Hugging Face cache" in hub.detail and tiny_model_id in hub.detail
    assert registry.registered("someone/model-that-is-not-cached") is None


def test_a_non_gguf_file_is_refused(tmp_path):
    text = tmp_path / "weights.bin"
    text.write_bytes(b"\0" * 8)
    error = _error(str(text))
    assert error.status == 400 and "not a .gguf" in error.detail


def test_the_magic_shows_the_error_without_a_traceback(shell, tmp_path):
    result = shell.run_cell(f"%%complete --model {tmp_path}\nHi\n")
    error = result.error_in_exec
    assert error is not None and error.status == 400 and "config.json" in error.detail
    assert error._render_traceback_()[0].startswith("\x1b[1;31m400 Bad Request\x1b[0m: model_id: ")


def test_the_registry_never_loads():
    with pytest.raises(CompletionError) as caught:
        registry.get("someone/model-that-is-not-cached")
    assert caught.value.status == 404


# ---- the GGUF cache, keyed on content --------------------------------------------------------------


def _fake_gguf(path, fill: bytes = b"a") -> None:
    path.write_bytes(b"GGUF" + fill * 300_000 + b"tail")


def _converter(calls: list):
    """Stands in for the ~30 s dequantization: writes what a converted folder holds."""

    def convert(gguf, out):
        calls.append(gguf)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(gguf.read_bytes()[:16])

    return convert


def test_digest_is_of_the_content_not_the_path_or_mtime(tmp_path):
    cache = tmp_path / "cache"
    a = tmp_path / "one" / "m.gguf"
    a.parent.mkdir()
    _fake_gguf(a)
    b = tmp_path / "two" / "m.gguf"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    os.utime(b, (1_000_000, 1_000_000))  # another environment: another path, another mtime
    assert gguf_cache.content_digest(a, cache) == gguf_cache.content_digest(b, cache)
    data = bytearray(b.read_bytes())
    data[len(data) // 2] ^= 1  # one byte in the middle: head and tail unchanged
    b.write_bytes(bytes(data))
    assert gguf_cache.content_digest(a, cache) != gguf_cache.content_digest(b, cache)


def test_digest_is_remembered_per_path_size_and_mtime(tmp_path):
    import json

    cache = tmp_path / "cache"
    gguf = tmp_path / "m.gguf"
    _fake_gguf(gguf)
    real = gguf_cache.content_digest(gguf, cache)
    index_path = cache / gguf_cache.INDEX_FILE
    index = json.loads(index_path.read_text())
    index[str(gguf.resolve())]["sha256"] = "remembered"
    index_path.write_text(json.dumps(index))
    assert gguf_cache.content_digest(gguf, cache) == "remembered"  # not hashed again
    os.utime(gguf, (2_000_000, 2_000_000))
    assert gguf_cache.content_digest(gguf, cache) == real  # the file changed: hashed again


def test_a_copy_elsewhere_reuses_the_conversion_and_a_changed_file_replaces_it(tmp_path):
    cache = tmp_path / "cache"
    calls: list = []
    convert = _converter(calls)
    source = tmp_path / "env1" / "SmolLM2.Q4_1.gguf"
    source.parent.mkdir()
    _fake_gguf(source)
    legacy = cache / "models" / "SmolLM2.Q4_1.gguf_105000_1730000000-0123456789"
    other = cache / "models" / "another-model-0123456789abcdef"
    for folder in (legacy, other):
        folder.mkdir(parents=True)
    messages: list[str] = []

    first = gguf_cache.convert_cached(source, cache, convert, messages.append)
    assert len(calls) == 1 and messages == ["Converting SmolLM2.Q4_1.gguf (first load only, ~15-30 s)"]
    assert gguf_cache.is_complete(first) and not legacy.exists() and other.exists()

    copy = tmp_path / "env2" / "SmolLM2.Q4_1.gguf"
    copy.parent.mkdir()
    shutil.copyfile(source, copy)
    assert gguf_cache.convert_cached(copy, cache, convert, messages.append) == first
    assert len(calls) == 1  # same content, other path: no second conversion

    _fake_gguf(source, fill=b"b")  # the package was upgraded in place
    second = gguf_cache.convert_cached(source, cache, convert, messages.append)
    assert len(calls) == 2 and second != first
    assert not first.exists() and other.exists()  # the old conversion of that path is gone
    assert sorted(p.name for p in (cache / "models").iterdir()) == sorted([second.name, other.name])


@pytest.mark.real_model
def test_the_default_gguf_copied_elsewhere_loads_from_the_same_cache(real_backend, tmp_path):
    from nb_completion.engine.loading import _resolve_source, default_gguf_path

    copy = tmp_path / default_gguf_path().name
    shutil.copyfile(default_gguf_path(), copy)
    steps: list[str] = []
    source, _ = _resolve_source(str(copy), steps.append)
    assert steps == [] and str(source) == real_backend.info.provider_resource_id


@pytest.mark.slow  # a fresh interpreter, so that the Hugging Face cache location can be set
def test_a_hub_id_in_the_local_cache_loads_on_first_use(save_tiny, tmp_path):
    import subprocess
    import sys

    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / "0123abcd"
    shutil.copytree(save_tiny(), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    code = (
        "from nb_completion import complete; from nb_completion.engine import registry\n"
        "r = complete('Once upon', model_id='tiny-org/tiny-llama', sampling_params={'max_tokens': 3})\n"
        "print(r.stop_reason.value, registry.registered('tiny-org/tiny-llama').info.provider_resource_id)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "out_of_tokens tiny-org/tiny-llama"
    assert "tiny-org/tiny-llama: loaded (float32, cpu) in" in done.stderr
