"""The oracle: Hugging Face ``generate()`` greedy, cut at the model's end token, with its raw logits."""

from __future__ import annotations

import torch


def hf_greedy(backend, prompt: str, n: int, **kwargs) -> tuple[list[int], list[torch.Tensor]]:
    """HF ``generate()``'s greedy token ids for ``prompt`` (up to and without the end token) and
    the raw logits of each of those steps; ``kwargs`` go to ``generate`` (repetition_penalty, ...)."""
    ids = torch.tensor([backend.encode(prompt)])
    with torch.inference_mode():
        out = backend.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )
    generated = out.sequences[0, ids.shape[1] :].tolist()
    cut = next((i for i, t in enumerate(generated) if t in backend.stop_token_ids), len(generated))
    return generated[:cut], [step[0] for step in out.logits[:cut]]
