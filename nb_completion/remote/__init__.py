"""Remote backends: another server (llama-stack, vLLM, llama.cpp, OpenAI) behind the same
``Backend`` protocol as a local model. An HTTP client, kept out of ``engine/``, which runs models.

``backend`` (``RemoteBackend``, ``register_remote``), ``dialects`` (request bodies and detection),
``openai_answer`` (an OpenAI-style answer read back into records), ``records`` (SSE lines and
token records), ``errors`` (the remote's errors as the spec's)."""

from .backend import RemoteBackend, register_remote, remote_models

__all__ = ["RemoteBackend", "register_remote", "remote_models"]
