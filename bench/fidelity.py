"""How far each dtype option's probabilities are from float32 on the same weights, measured as
llama.cpp's ``llama-perplexity --kl-divergence`` measures it, and llama.cpp itself in the same run.

    python bench/fidelity.py [--window 128] [--skip-llama] [--dtypes gguf,int8,bfloat16]

The text is ``bench/fidelity.txt`` (about 5.8k tokens: sections of the Python language reference,
from CPython 3.11's ``pydoc_data/topics.py``, Python Software Foundation License). It is cut into
windows of ``--window`` tokens; each window's second half is scored (as llama-perplexity does),
and for every scored position, against float32 (``load_model(dtype="float32")``, the GGUF's
weights dequantized):

* KLD: ``sum p32 (log p32 - log p)`` over the vocabulary; the mean and the 99.9th percentile;
* same top: how often the most likely token is the same;
* RMS Δp: the root mean square of the change in the probability of the text's actual next token.

tokens/s is one stream of 128 new tokens with top-5 logprobs (the engine, ``NB_COMPLETION_THREADS``
or all cores but one), and llama.cpp's plain ``llama-bench`` tg128 on the same GGUF with the same
thread count. llama.cpp's row compares its own run of the Q4_1 GGUF with its run of an F32 GGUF
written from the same dequantized weights by its ``convert_hf_to_gguf.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from llama_cpp import bench_tg, ensure_built, f32_gguf  # noqa: E402

from nb_completion import load_model  # noqa: E402
from nb_completion.engine import block_linear  # noqa: E402
from nb_completion.engine.loading import conversion_cached, cpu_threads, default_gguf_path  # noqa: E402
from nb_completion.service import build_request  # noqa: E402

TEXT = HERE / "fidelity.txt"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle. It begins:"


def windows(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)]


@torch.inference_mode()
def logprobs(backend, window: list[int]) -> torch.Tensor:
    """Log-probabilities [positions, vocab] at the window's second half (predicting the next token)."""
    out = backend.model(input_ids=torch.tensor([window]), use_cache=False).logits[0].float()
    half = len(window) // 2
    return torch.log_softmax(out[half - 1 : -1], dim=-1)


def compare(reference: list[torch.Tensor], measured: list[torch.Tensor], targets: list[torch.Tensor]) -> dict:
    ref, got, target = torch.cat(reference), torch.cat(measured), torch.cat(targets)
    kld = (ref.exp() * (ref - got)).sum(-1).clamp_min(0)
    p_ref = ref.gather(1, target[:, None]).exp()[:, 0]
    p_got = got.gather(1, target[:, None]).exp()[:, 0]
    return {
        "kld_mean": kld.mean().item(),
        "kld_999": torch.quantile(kld.double(), 0.999).item(),
        "same_top": (ref.argmax(-1) == got.argmax(-1)).double().mean().item() * 100,
        "rms_dp": ((p_got - p_ref).double().pow(2).mean().sqrt()).item() * 100,
        "positions": int(kld.numel()),
    }


def speed(backend, new_tokens: int = 128, repeats: int = 3) -> float:
    rates = []
    for _ in range(repeats):
        request = build_request(
            PROMPT, model_id=backend.info.identifier, sampling_params={"max_tokens": new_tokens}, logprobs=5, stream=True
        )
        finished = None
        for event in backend.open(request):
            finished = event
        rates.append(finished.tokens_per_second)
    return sorted(rates)[len(rates) // 2]


def llama_cpp_row(text: Path, window: int, threads: int) -> dict:
    """``llama-perplexity --kl-divergence`` of the Q4_1 GGUF against the F32 one, and tg128."""
    bins = ensure_built()
    folder = conversion_cached()
    reference = f32_gguf(folder)
    env = {**os.environ, "LD_LIBRARY_PATH": str(bins)}
    common = ["-f", str(text), "-c", str(window), "-b", str(window), "-t", str(threads)]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "f32.kld"
        subprocess.run(
            [str(bins / "llama-perplexity"), "-m", str(reference), "--kl-divergence-base", str(base), *common],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        out = subprocess.run(
            [
                str(bins / "llama-perplexity"),
                "-m",
                str(default_gguf_path()),
                "--kl-divergence-base",
                str(base),
                "--kl-divergence",
                *common,
            ],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
    log = out.stdout + out.stderr

    def number(label: str) -> float:
        found = re.search(label + r"\s*:\s*([-0-9.eE+]+)", log)
        if found is None:
            raise RuntimeError(f"llama-perplexity printed no '{label}':\n{log[-2000:]}")
        return float(found.group(1))

    return {
        "kld_mean": number(r"Mean\s+KLD"),
        "kld_999": number(r"99\.9%\s+KLD"),
        "same_top": number(r"Same top p"),
        "rms_dp": number(r"RMS Δp"),
        "tok_s": bench_tg(default_gguf_path(), threads),
    }


def show(label: str, figures: dict, tok_s) -> None:
    rate = f"{tok_s:>7.1f}" if tok_s is not None else f"{'':>7}"
    print(
        f"{label[:44]:<44} {figures['kld_mean']:>10.2e} {figures['kld_999']:>10.2e} {figures['same_top']:>8.2f}% "
        f"{figures['rms_dp']:>7.3f}% {rate}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--dtypes", default="gguf,int8,bfloat16")
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()
    threads = cpu_threads()
    torch.set_num_threads(threads)

    float32 = load_model(dtype="float32", name="fidelity-float32")
    ids = float32.encode(TEXT.read_text())
    chunks = windows(ids, args.window)
    half = args.window // 2
    targets = [torch.tensor(w[half:]) for w in chunks]
    reference = [logprobs(float32, w) for w in chunks]
    print(f"{len(ids)} tokens, {len(chunks)} windows of {args.window}, {threads} thread(s), load {os.getloadavg()[0]:.1f}")
    header = f"{'option':<44} {'mean KLD':>10} {'99.9% KLD':>10} {'same top':>9} {'RMS Δp':>8} {'tok/s':>7}"
    print(header)
    print("-" * len(header))
    rows = [("float32", float32)]
    for dtype in args.dtypes.split(","):
        rows.append((dtype, load_model(dtype=dtype, name=f"fidelity-{dtype}")))
    for dtype, backend in rows:
        measured = reference if backend is float32 else [logprobs(backend, w) for w in chunks]
        show(f"{dtype}: {backend.info.metadata.get('weights', dtype)}", compare(reference, measured, targets), speed(backend))
        if dtype == "gguf":  # windows of 128 rows take the float32 GEMM; the block op decodes
            long_prefill, block_linear.LONG_PREFILL = block_linear.LONG_PREFILL, 10**9
            measured = [logprobs(backend, w) for w in chunks]
            block_linear.LONG_PREFILL = long_prefill
            show("gguf, every row through the block op", compare(reference, measured, targets), None)
    if not args.skip_llama:
        figures = llama_cpp_row(TEXT, args.window, threads)
        show("llama.cpp Q4_1 (llama-perplexity, tg128)", figures, figures["tok_s"])


if __name__ == "__main__":
    main()
