"""Hub ids download on first use (engine/hub.py), against a stand-in hub on loopback
(tests/hub_standin.py) that serves a saved tiny model: the downloaded model generates what the
saved one does; a missing or gated repository and an offline machine are 4xx naming the model_id."""

from __future__ import annotations

import pytest
from arch_configs import build
from hub_standin import StandInHub
from hf_oracle import hf_generate

from nb_completion.api.errors import CompletionError
from nb_completion.engine import loading, registry
from nb_completion.engine.tiny import build_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("repo")
    tokenizer = build_tokenizer()
    model = build("qwen2", len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


@pytest.fixture()
def hub(saved, tmp_path, monkeypatch):
    from huggingface_hub import constants

    with StandInHub({"someone/tiny-qwen2": saved[0]}, gated=("someone/gated",)) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server


def test_a_hub_id_downloads_on_first_use_and_generates_like_the_saved_model(hub, saved):
    try:
        backend = loading.ensure_loaded("someone/tiny-qwen2", dtype="float32")
        assert any(r.endswith("/resolve/main/config.json") or "config.json" in r for r in hub.requests)
        ids = backend.encode("Once upon a time there was")
        want, _ = hf_generate(backend, ids, 8, eos_token_id=None)
        original, _ = hf_generate(type("B", (), {"model": saved[1]})(), ids, 8, eos_token_id=None)
        assert want == original
    finally:
        registry.unregister("someone/tiny-qwen2")


@pytest.mark.parametrize(
    "model_id, status, words",
    [("someone/missing", 404, "not a repository"), ("someone/gated", 403, "gated")],
)
def test_a_missing_or_gated_repo_is_a_4xx_naming_it(hub, model_id, status, words):
    with pytest.raises(CompletionError) as caught:
        loading.ensure_loaded(model_id, dtype="float32")
    assert caught.value.status == status
    assert model_id in str(caught.value) and words in str(caught.value)


def test_offline_a_hub_id_not_cached_is_a_404_naming_it(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CompletionError) as caught:
        loading.ensure_loaded("someone/tiny-qwen2", dtype="float32")
    assert caught.value.status == 404 and "someone/tiny-qwen2" in str(caught.value)
    assert not hub.requests


@pytest.fixture()
def gguf_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    folder = tmp_path / "gguf-repo"
    folder.mkdir()
    for name in ("Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf", "Tiny-Q4_K_S.gguf"):
        (folder / name).write_bytes(b"GGUF" + name.encode())
    with StandInHub({"someone/tiny-GGUF": folder}) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server


@pytest.mark.parametrize(
    "model_id, file",
    [
        ("someone/tiny-GGUF:Q4_K_M", "Tiny-Q4_K_M.gguf"),
        ("someone/tiny-GGUF:q8_0", "Tiny-Q8_0.gguf"),
        ("someone/tiny-GGUF/Tiny-Q4_K_S.gguf", "Tiny-Q4_K_S.gguf"),
    ],
)
def test_a_gguf_repo_file_by_quant_shorthand_or_name(gguf_hub, model_id, file):
    from nb_completion.engine import hub

    path = hub.download(model_id)
    assert path.name == file and path.read_bytes() == b"GGUF" + file.encode()


def test_a_quant_the_repo_lacks_is_a_404_listing_what_it_has(gguf_hub):
    with pytest.raises(CompletionError) as caught:
        loading.ensure_loaded("someone/tiny-GGUF:Q2_K")
    assert caught.value.status == 404
    assert "someone/tiny-GGUF:Q2_K" in str(caught.value) and "Tiny-Q8_0.gguf" in str(caught.value)
