"""The GGUF conversion cache: a GGUF dequantized once into a safetensors folder, keyed on content.

**Why the whole file's SHA-256.** The key must name the weights, not where they sit: a fresh
virtualenv re-installs the same GGUF at another path with another mtime, and a path/mtime key
converted it again (~30 s and another 0.5 GB each time). A hash of only the head and tail
chunks would be cheaper but is not a content key: two quantizations or fine-tunes of one model
can share the header layout and the last tensor and differ in between. SHA-256 of the 100 MB
default GGUF takes ~0.2 s; to not pay even that on every load, the digest is remembered per
(path, size, mtime_ns) in ``gguf-sha256.json``, so only a file never seen before is hashed.

Each cached folder holds ``nb_completion-source.json`` (the digest and the GGUF it came from).
After a conversion, folders converted earlier from the same GGUF path (its content changed, say
a package upgrade) and folders of the former path/mtime scheme for the same file name are
removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

SOURCE_FILE = "nb_completion-source.json"
INDEX_FILE = "gguf-sha256.json"
_LEGACY_SUFFIX = re.compile(r"_\d+_\d+-[0-9a-f]{10}$")  # <file name>_<size>_<mtime>-<sha1[:10]>


def _models_dir(cache_root: Path) -> Path:
    return cache_root / "models"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    tmp.replace(path)  # atomic: a concurrent reader sees the old or the new index, never half


def content_digest(gguf: Path, cache_root: Path) -> str:
    """SHA-256 of the file's bytes; remembered per (path, size, mtime_ns) so it is computed once."""
    resolved = gguf.resolve()
    stat = resolved.stat()
    index_path = cache_root / INDEX_FILE
    index = _read_json(index_path)
    seen = index.get(str(resolved))
    if isinstance(seen, dict) and seen.get("size") == stat.st_size and seen.get("mtime_ns") == stat.st_mtime_ns:
        return seen["sha256"]
    with open(resolved, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    index = _read_json(index_path)  # re-read: another process may have added entries meanwhile
    index[str(resolved)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write_json(index_path, index)
    return digest


def cached_folder(gguf: Path, cache_root: Path) -> Path:
    """Where the conversion of ``gguf`` lives (whether or not it exists yet)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", gguf.stem)[:60]
    return _models_dir(cache_root) / f"{stem}-{content_digest(gguf, cache_root)[:16]}"


def is_complete(folder: Path) -> bool:
    return all((folder / name).exists() for name in ("config.json", "model.safetensors", SOURCE_FILE))


def remove_stale(gguf: Path, keep: Path, cache_root: Path) -> list[Path]:
    """Remove earlier conversions of the same GGUF path (other content) and former-scheme folders
    of the same file name; returns what was removed."""
    models = _models_dir(cache_root)
    source = str(gguf.resolve())
    legacy_prefix = re.sub(r"[^A-Za-z0-9._-]+", "_", gguf.name) + "_"
    removed = []
    for folder in models.iterdir() if models.is_dir() else ():
        if folder == keep or not folder.is_dir():
            continue
        same_source = _read_json(folder / SOURCE_FILE).get("source") == source
        legacy = folder.name.startswith(legacy_prefix) and _LEGACY_SUFFIX.search(folder.name) is not None
        if same_source or legacy:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def convert_cached(gguf: Path, cache_root: Path, convert: Callable[[Path, Path], None], progress: Callable[[str], None]) -> Path:
    """The cached folder for ``gguf``; on a miss ``convert(gguf, tmp_folder)`` writes it first."""
    folder = cached_folder(gguf, cache_root)
    if is_complete(folder):
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    progress(f"Converting {gguf.name} (first load only, ~15-30 s)")
    convert(gguf, tmp)
    digest = content_digest(gguf, cache_root)
    _write_json(tmp / SOURCE_FILE, {"sha256": digest, "source": str(gguf.resolve()), "size": gguf.stat().st_size})
    if is_complete(folder):  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete leftover
        tmp.rename(folder)
    remove_stale(gguf, folder, cache_root)
    return folder
