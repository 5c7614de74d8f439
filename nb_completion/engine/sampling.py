"""The sampling settings' checks and the sampling generator.

The processors themselves are ``batch_sampling.process`` (the one sampler); this module checks a
setting against ``api/bounds.py``'s table where a request is prepared, and makes the seeded
generator a row draws from. One-row reference processors, compared with Hugging Face's, are in
``tests/reference_sampling.py``.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..api.bounds import BOUNDS


def check(name: str, value: float) -> None:
    """``ValueError`` unless ``value`` lies in ``api/bounds.py``'s bound for ``name``."""
    if not BOUNDS[name].holds(value):
        raise ValueError(f"{name} {BOUNDS[name].text}, got {value}")


def make_generator(seed: Optional[int], device: "torch.device | str" = "cpu") -> torch.Generator:
    """A generator on ``device`` (a CUDA generator draws differently from a CPU one with the same seed)."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator
