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

**Faults.** A conversion writes into ``<folder>.tmp<pid>`` and renames it when whole. A process
killed meanwhile (kill -9) leaves that folder: the first ``convert_cached`` of every process
removes ``.tmp<pid>`` folders and index files whose process is gone (``remove_abandoned``). A
conversion that fails removes its own. One that fails for want of disk space (``ENOSPC``,
``EDQUOT``) raises ``CacheFull``, naming the cache folder and ``NB_COMPLETION_CACHE``, logs it
once, and is not tried again for ``FULL_RETRY_SECONDS`` (each try converts for ~20 s before it
fails): until then the same ``CacheFull`` comes back at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

SOURCE_FILE = "nb_completion-source.json"
INDEX_FILE = "gguf-sha256.json"
_LEGACY_SUFFIX = re.compile(r"_\d+_\d+-[0-9a-f]{10}$")  # <file name>_<size>_<mtime>-<sha1[:10]>
_TMP_SUFFIX = re.compile(r"\.tmp(\d+)$")
FULL_RETRY_SECONDS = 120.0
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
log = logging.getLogger("nb_completion")
_lock = threading.Lock()
_swept: set[Path] = set()  # cache roots whose abandoned temporaries this process removed
_full: dict[Path, tuple[float, "CacheFull"]] = {}  # folder -> (when, the error) of a full-disk failure


class CacheFull(OSError):
    """The cache's disk (or quota) is full: the conversion cannot be written."""

    def __init__(self, cache_root: Path, gguf: Path, cause: BaseException):
        free = _free_bytes(cache_root)
        shown = f", {free / 2**20:,.0f} MiB free" if free is not None else ""
        super().__init__(
            errno.ENOSPC,
            f"the model cache {cache_root} is out of disk space ({_first_line(cause)}{shown}) while converting "
            f"{gguf.name}; free space there, or point NB_COMPLETION_CACHE at a disk with room (about "
            f"{max(1, 5 * gguf.stat().st_size // 2**20):,} MiB)",
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain (safetensors and torch wrap the OSError in their own)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_abandoned(cache_root: Path) -> list[Path]:
    """Remove ``.tmp<pid>`` folders and index files left by processes that no longer run (a
    conversion killed midway); returns what was removed."""
    removed = []
    for parent in (_models_dir(cache_root), cache_root):
        for entry in parent.iterdir() if parent.is_dir() else ():
            match = _TMP_SUFFIX.search(entry.name)
            if match is None or _process_alive(int(match.group(1))):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info("model cache: removed %d abandoned partial conversion(s) in %s", len(removed), cache_root)
    return removed


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
    with _lock:
        if cache_root not in _swept:
            _swept.add(cache_root)
            remove_abandoned(cache_root)
    folder = cached_folder(gguf, cache_root)
    if is_complete(folder):
        return folder
    failed = _full.get(folder)
    if failed is not None and time.monotonic() - failed[0] < FULL_RETRY_SECONDS:
        raise failed[1]
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    progress(f"Converting {gguf.name} (first load only, ~15-30 s)")
    try:
        convert(gguf, tmp)
        digest = content_digest(gguf, cache_root)
        _write_json(tmp / SOURCE_FILE, {"sha256": digest, "source": str(gguf.resolve()), "size": gguf.stat().st_size})
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a partial conversion behind
        if not _is_disk_full(exc):
            raise
        full = CacheFull(cache_root, gguf, exc)
        _full[folder] = (time.monotonic(), full)
        log.error("model cache: %s", full.strerror)
        raise full from None
    _full.pop(folder, None)
    if is_complete(folder):  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete leftover
        tmp.rename(folder)
    remove_stale(gguf, folder, cache_root)
    return folder
