"""Shared fixtures: a tiny random Llama (fast, no weights) and the real default model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


@pytest.fixture(scope="module")
def ids(tiny_backend):
    """Helper backends for the HTTP tests (slow, failing on open, failing mid-stream), by role."""
    from server_support import register_helpers

    from nb_completion.engine import registry

    helpers = register_helpers(tiny_backend)
    yield helpers
    for model_id in helpers.values():
        registry.unregister(model_id)
