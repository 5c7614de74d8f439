"""``chat=True``: the model's own chat template around the content, as one user turn.

An Instruct model completes raw text poorly ("La capitale de l'Allemagne est" -> "rait, 2012,
2013"); wrapped in the template it was trained on, it answers ("The capital of Germany is
Berlin."). The template is the tokenizer's (``apply_chat_template`` with
``add_generation_prompt=True``), so the prompt ends where the assistant's answer begins. The
result is still a raw completion request whose content is the templated text, special tokens
written out, so every frontend can echo exactly what the model read. The HTTP route never does
this: it stays the contract's raw completion.

**Special-token strings in the user's text stay text.** Typed into the content, ``<|im_end|>``
would otherwise become the real end-of-turn token once the templated text is tokenized, and a
user could close their turn and write the assistant's. When the content holds such a string, the
prompt's ids are made in three parts: the template before the content and after it with their
special tokens, the content with ``split_special_tokens=True`` (as transformers names it), so
``<|im_end|>`` is spelled ``<``, ``|``, ``im``, ... The backend is handed these ids for this
prompt text (``remember_prompt_ids``), so every frontend that tokenizes it gets them. The old
behaviour, special tokens read wherever they appear, is an opt-in:
``NB_COMPLETION_CHAT_SPECIAL_TOKENS=1``.
"""

from __future__ import annotations

import logging
import os


from .api.content import content_text
from .api.errors import BadRequest
from .api.types import CompletionRequest
from .engine.backend import Backend, is_local

__all__ = ["chat_prompt", "with_chat_template", "SPECIAL_TOKENS_OPT_IN"]

SPECIAL_TOKENS_OPT_IN = "NB_COMPLETION_CHAT_SPECIAL_TOKENS"
log = logging.getLogger("nb_completion")


def chat_prompt(backend: Backend, text: str) -> str:
    """``text`` as one user turn in the model's chat template, ready for the assistant's reply."""
    model_id = backend.info.identifier
    if not is_local(backend):
        raise BadRequest(
            "chat",
            f"model '{model_id}' is served remotely, so its chat template is not known here; "
            "send the templated text yourself, or use chat=False for a raw completion",
        )
    tokenizer = backend.tokenizer
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
    if _special_strings_in(tokenizer, text):
        opted_in = os.environ.get(SPECIAL_TOKENS_OPT_IN, "").lower() in ("1", "true", "yes")
        backend.remember_prompt_ids(prompt, None if opted_in else _ids_with_text_kept(tokenizer, prompt, text))  # None: forget
    return prompt


def _special_strings_in(tokenizer, text: str) -> bool:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    specials = {t.content for t in decoder.values() if getattr(t, "special", False)} | set(tokenizer.all_special_tokens)
    return any(s and s in text for s in specials)


def _ids_with_text_kept(tokenizer, prompt: str, text: str) -> list[int] | None:
    """The templated prompt's ids with ``text`` (the user's content) tokenized as plain text."""
    at = prompt.rfind(text)
    if at < 0:  # the template changed the content (stripped it, say): cannot tell where it lies
        log.warning("chat: the template alters the content, so special-token strings in it are read as special tokens")
        return None
    before, after = prompt[:at], prompt[at + len(text) :]
    return (
        list(tokenizer(before, add_special_tokens=True)["input_ids"])
        + list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        + list(tokenizer(after, add_special_tokens=False)["input_ids"])
    )


def with_chat_template(request: CompletionRequest, backend: Backend) -> CompletionRequest:
    """The same request, its content replaced by the templated prompt."""
    return request.model_copy(
        update={
            "content": chat_prompt(backend, content_text(request.content, images_refused="chat=True takes text content only"))
        }
    )
