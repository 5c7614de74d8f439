"""Hub ids download on first use, as transformers and vLLM do (``huggingface_hub``).

* ``owner/name``: the repository's snapshot (config, tokenizer, safetensors) into the Hugging Face
  cache, with huggingface_hub's own progress bar (``tqdm.auto``: one line in a notebook, a terminal
  bar in the CLI).
* ``owner/name:Q4_K_M`` (llama.cpp's shorthand) or ``owner/name/file.gguf``: one GGUF file of a
  GGUF repository.

``HF_HUB_OFFLINE`` and ``HF_TOKEN`` (and ``HF_ENDPOINT``) are read by huggingface_hub itself. A
missing or gated repository, a missing file or no network is a ``CompletionError`` (4xx) naming
the ``model_id``, never a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..api.errors import CompletionError, shorten

# weights and what loads them; other files of a repository (onnx, flax, pickles, ...) are skipped
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja", "*.py"]
_REPO = r"[A-Za-z0-9][\w.-]*/[\w.-]+"
GGUF_SHORTHAND = re.compile(rf"^(?P<repo>{_REPO}):(?P<quant>[\w.-]+)$")
GGUF_FILE = re.compile(rf"^(?P<repo>{_REPO})/(?P<file>[^:]+\.gguf)$")
HUB_ID = re.compile(rf"^{_REPO}$")


class HubError(CompletionError):
    def __init__(self, status: int, model_id: str, why: str):
        from .registry import registered_ids

        self.model_id = model_id
        super().__init__(
            status,
            f"model_id: '{shorten(model_id)}' {why}. Available models: {', '.join(registered_ids())}; a local "
            "Hugging Face folder, a .gguf file or a hub id (downloaded into the local Hugging Face cache) also load",
        )


def is_hub_id(model_id: str) -> bool:
    return bool(HUB_ID.match(model_id) or GGUF_SHORTHAND.match(model_id) or GGUF_FILE.match(model_id))


def _failure(model_id: str, exc: BaseException) -> HubError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return HubError(403, model_id, "is a gated repository: accept its terms on the hub and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(404, model_id, "is not a repository on the hub (or it is private: set HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(404, model_id, "has no such revision on the hub")
    if isinstance(exc, LocalEntryNotFoundError):
        return HubError(
            404, model_id, "is not in the local Hugging Face cache and the hub cannot be reached (offline, or HF_HUB_OFFLINE=1)"
        )
    if isinstance(exc, EntryNotFoundError):
        return HubError(404, model_id, f"has no such file on the hub ({exc})")
    return HubError(
        404, model_id, f"could not be downloaded: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    )


def download(model_id: str) -> Path:
    """A local folder (a snapshot) or ``.gguf`` file for the hub id ``model_id``."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    try:
        if match := GGUF_FILE.match(model_id):
            return Path(hf_hub_download(match["repo"], match["file"]))
        if match := GGUF_SHORTHAND.match(model_id):
            files = [f for f in HfApi().list_repo_files(match["repo"]) if f.endswith(".gguf")]
            wanted = match["quant"].lower()
            chosen = [f for f in files if re.search(rf"[-._]{re.escape(wanted)}(\.gguf|[-._])", f.lower())]
            if not chosen:
                raise HubError(
                    404,
                    model_id,
                    f"names no GGUF file of quant {match['quant']}; the repository has {', '.join(files) or 'none'}",
                )
            return Path(hf_hub_download(match["repo"], sorted(chosen, key=len)[0]))
        return Path(snapshot_download(model_id, allow_patterns=SNAPSHOT_PATTERNS))
    except CompletionError:
        raise
    except Exception as exc:  # noqa: BLE001 - every hub failure is the user's 4xx naming model_id
        raise _failure(model_id, exc) from None
