"""The tokenizer's routes as lm-eval's remote tokenizer reads them (vLLM's shapes): ``GET
/tokenizer_info``, and ``/tokenize`` / ``/detokenize`` without ``model`` where one model is
served; and lm-eval's ``local-completions`` with ``tokenizer_backend=remote`` against the server."""

from __future__ import annotations

import httpx
import pytest

from nb_completion import serve

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TEXT = "Once upon a time"


@pytest.fixture(scope="module")
def one_model(tiny_model_id):
    handle = serve(port=0, models=[tiny_model_id])
    yield handle
    handle.stop()


def test_tokenizer_info_and_model_left_out(one_model, tiny_backend):
    tokenizer = tiny_backend.tokenizer
    with httpx.Client(base_url=one_model.url, timeout=60) as client:
        info = client.get("/tokenizer_info").json()
        assert client.get("/tokenizer_info", params={"model": tiny_backend.info.identifier}).json() == info
        assert (info["bos_token"], info["eos_token"]) == (tokenizer.bos_token, tokenizer.eos_token)
        assert info["model_max_length"] == tiny_backend.context_length and info["vocab_size"] == tiny_backend.vocab_size
        assert info["chat_template"] is None  # the tiny tokenizer has none

        tokens = client.post("/tokenize", json={"prompt": TEXT, "add_special_tokens": False}).json()["tokens"]
        assert tokens == tokenizer(TEXT, add_special_tokens=False)["input_ids"]
        assert client.post("/detokenize", json={"tokens": tokens}).json() == {"prompt": TEXT}

        unknown = client.get("/tokenizer_info", params={"model": "no-such-model"})
        assert unknown.status_code == 404


@pytest.mark.real_model
def test_model_required_where_several_are_served(tiny_model_id, real_model_id):
    handle = serve(port=0, models=[tiny_model_id, real_model_id])
    try:
        for answer in (
            httpx.get(f"{handle.url}/tokenizer_info", timeout=60),
            httpx.post(f"{handle.url}/tokenize", json={"prompt": TEXT}, timeout=60),
        ):
            assert answer.status_code == 400
            assert tiny_model_id in answer.json()["detail"] and real_model_id in answer.json()["detail"]
        named = httpx.get(f"{handle.url}/tokenizer_info", params={"model": real_model_id}, timeout=60).json()
        assert named["eos_token"] == "<|im_end|>" and "im_start" in named["chat_template"]
    finally:
        handle.stop()


def test_lm_eval_remote_tokenizer(one_model, tiny_backend):
    from lm_eval.utils import RemoteTokenizer, check_remote_tokenizer_support

    base_url = f"{one_model.url}/v1/completions"
    assert check_remote_tokenizer_support(base_url)
    remote = RemoteTokenizer(base_url)
    assert remote.encode(TEXT) == tiny_backend.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert remote.decode(remote.encode(TEXT)) == TEXT
    assert remote.eos_token_id == tiny_backend.tokenizer.eos_token_id
    assert remote.bos_token_id == tiny_backend.tokenizer.bos_token_id


@pytest.mark.slow
def test_local_completions_with_the_remote_tokenizer_equals_the_local_one(save_tiny, tmp_path, monkeypatch):
    """The same requests, so the same answers, whether lm-eval tokenizes with the model's files
    or through the server's routes."""
    from test_lm_eval import _by_doc, _run, _tasks

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = save_tiny("lmeval-tiny")
    tasks = _tasks(tmp_path)
    handle = serve(port=0, models=[str(folder)])
    try:
        common = f"model={folder},base_url={handle.url}/v1/completions,max_retries=1"
        remote = _run("local-completions", f"{common},tokenizer_backend=remote", tasks, tmp_path)
        local = _run("local-completions", f"{common},tokenizer={folder}", tasks, tmp_path)
    finally:
        handle.stop()
    for task in tasks:
        assert _by_doc(remote, task) == _by_doc(local, task), task
    assert sorted(_by_doc(remote, "nbc_choice")) == list(range(8))
