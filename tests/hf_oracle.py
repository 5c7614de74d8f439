"""The oracle: Hugging Face ``generate()`` greedy, cut at the model's end token, with its raw logits."""

from __future__ import annotations

import torch


def hf_generate(backend, ids: list[int], n: int, **kwargs) -> tuple[list[int], list[torch.Tensor]]:
    """HF ``generate()`` greedy on token ``ids``: every generated id (an end token included, where
    generate stops at one) and the raw logits of each step; ``kwargs`` go to ``generate``
    (repetition_penalty, eos_token_id=None, ...)."""
    tensor = torch.tensor([ids])
    with torch.inference_mode():
        out = backend.model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=n,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **{"pad_token_id": 0, **kwargs},
        )
    return out.sequences[0, len(ids) :].tolist(), [step[0] for step in out.logits]


def hf_greedy(backend, prompt: str, n: int, **kwargs) -> tuple[list[int], list[torch.Tensor]]:
    """HF ``generate()``'s greedy token ids for ``prompt`` (up to and without the end token) and
    the raw logits of each of those steps."""
    generated, logits = hf_generate(backend, backend.encode(prompt), n, **kwargs)
    cut = next((i for i, t in enumerate(generated) if t in backend.stop_token_ids), len(generated))
    return generated[:cut], logits[:cut]
