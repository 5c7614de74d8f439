"""Shared fixtures: a tiny random Llama (fast, no weights) and the real default model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Engines compile their decode pass only where a test asks (Engine(compile=True)); kernels and
# servers the tests start inherit this (engine/local.py: compile_by_default).
os.environ.setdefault("NB_COMPLETION_COMPILE", "0")


@pytest.fixture(scope="session")
def tiny_backend():
    from nb_completion.engine.tiny import register_tiny_model

    return register_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_id(tiny_backend) -> str:
    return tiny_backend.info.identifier


@pytest.fixture(scope="session")
def real_backend():
    """The default model as users get it (dtype auto), registered under the default id."""
    from nb_completion import load_model

    return load_model()


@pytest.fixture(scope="session")
def real_model_id(real_backend) -> str:
    return real_backend.info.identifier


@pytest.fixture(scope="session")
def real_backend_f32():
    """The default model in float32, registered as 'smollm2-float32' (the oracle's dtype)."""
    from nb_completion import load_model

    return load_model(dtype="float32", name="smollm2-float32")


@pytest.fixture()
def shell():
    """IPython's shell with ``%load_ext nb_completion``, displays captured as a notebook's
    front end would receive them (display handles, updates)."""
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext nb_completion")
    previous = ip.display_pub
    ip.display_pub = CapturingDisplayPublisher()
    yield ip
    ip.display_pub = previous


@pytest.fixture(scope="module")
def ids(tiny_backend):
    """Helper backends for the HTTP tests (slow, failing on open, failing mid-stream), by role."""
    from server_support import register_helpers

    from nb_completion.engine import registry

    helpers = register_helpers(tiny_backend)
    yield helpers
    for model_id in helpers.values():
        registry.unregister(model_id)


# A chat template in the ChatML shape (the one SmolLM2 uses), written with the tiny tokenizer's
# own special tokens so that the real ``apply_chat_template`` and the real tokenizer run.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def save_tiny(tmp_path_factory):
    """``save_tiny(name, chat_template=None)``: the tiny Llama saved as a Hugging Face folder (a
    fresh folder each call, so each test loads its own on first use)."""

    def save(name: str = "tiny-folder", chat_template: str | None = None):
        from nb_completion.engine.loading import _quiet_transformers
        from nb_completion.engine.tiny import build_model, build_tokenizer

        folder = tmp_path_factory.mktemp(name)
        tokenizer = build_tokenizer()
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        with _quiet_transformers():  # no "Writing model shards" bar in the tests' captured stderr
            build_model(len(tokenizer)).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        return folder

    return save
