"""``chat=True``: the model's own chat template around the content, as one user turn.

An Instruct model completes raw text poorly ("La capitale de l'Allemagne est" -> "rait, 2012,
2013"); wrapped in the template it was trained on, it answers ("The capital of Germany is
Berlin."). The template is the tokenizer's (``apply_chat_template`` with
``add_generation_prompt=True``), so the prompt ends where the assistant's answer begins. The
result is still a raw completion request whose content is the templated text, special tokens
written out, so every frontend can echo exactly what the model read. The HTTP route never does
this: it stays the contract's raw completion.
"""

from __future__ import annotations


from .api.content import content_text
from .api.errors import BadRequest
from .api.types import CompletionRequest
from .engine.backend import Backend

__all__ = ["chat_prompt", "with_chat_template"]


def chat_prompt(backend: Backend, text: str) -> str:
    """``text`` as one user turn in the model's chat template, ready for the assistant's reply."""
    model_id = backend.info.identifier
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        raise BadRequest(
            "chat",
            f"model '{model_id}' is served remotely, so its chat template is not known here; "
            "send the templated text yourself, or use chat=False for a raw completion",
        )
    if not getattr(tokenizer, "chat_template", None):
        raise BadRequest(
            "chat",
            f"model '{model_id}' has no chat template (its tokenizer defines none); use chat=False for a raw "
            "completion, or an Instruct/chat model",
        )
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos) and tokenizer("", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]:
        prompt = prompt[len(bos) :]  # the tokenizer adds it again when encoding: not twice
    return prompt


def with_chat_template(request: CompletionRequest, backend: Backend) -> CompletionRequest:
    """The same request, its content replaced by the templated prompt."""
    return request.model_copy(
        update={
            "content": chat_prompt(backend, content_text(request.content, images_refused="chat=True takes text content only"))
        }
    )
