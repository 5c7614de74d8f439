"""Which server answers an OpenAI-completions route, and the request body it reads.

``POST /v1/completions`` is spoken in several dialects; what differs is where structured output
goes, how log-probabilities come back, and a few sampling names:

============ ========================================= ================================================
dialect      structured output sent in                 notes
============ ========================================= ================================================
llama.cpp    ``json_schema``; ``grammar`` (GBNF)        logprobs come back as ``logprobs.content[]``
                                                       (token ids, exact chosen logprob); ``logprobs: 0``
                                                       returns none, so at least 1 is asked;
                                                       ``repeat_penalty``; no regex, no Lark: a 400
vllm         ``structured_outputs: {json|regex|grammar}`` from 0.10.2 (``guided_*`` were removed in
             ``guided_json|guided_regex|guided_grammar`` 0.12 and are then ignored); before 0.10.2
nb_completion ``guided_json|guided_regex|guided_grammar`` this project's own server; GBNF or regex
openai       none: a constraint is a 400               an unrecognised server: nothing is known to
                                                       enforce a constraint there, and OpenAI itself
                                                       allows ``logprobs`` up to 5
============ ========================================= ================================================

``detect()`` tells them apart from ``GET /v1/models`` (llama.cpp adds an Ollama-style ``models``
list and ``owned_by: "llamacpp"``; vLLM says ``owned_by: "vllm"``; this project's server lists
llama-stack fields), then llama.cpp's ``GET /props``, then vLLM's ``GET /version``. The first
answer settles it too: a ``logprobs.content`` list is llama.cpp's.

Every dialect is asked for explicit, neutral values of the samplers the strategy does not use
(``top_k`` off, ``top_p`` 1, ``min_p`` 0), because llama.cpp (top-k 40, min-p 0.05) and vLLM (the
model's ``generation_config``) otherwise apply their own defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from ..api.bounds import TEMPERATURE, TOP_P
from ..api.content import content_text
from ..api.errors import BadRequest
from ..api.types import CompletionRequest, SamplingParams
from ..api.validation import grammar_key
from .errors import gateway_error

DIALECTS = ("llama.cpp", "vllm", "nb_completion", "openai")
VLLM_STRUCTURED_OUTPUTS = (0, 10, 2)  # the first vLLM that reads ``structured_outputs``
OPENAI_MAX_LOGPROBS = 5  # OpenAI's documented limit for ``logprobs`` on legacy completions


@dataclass(frozen=True)
class Dialect:
    name: str  # one of DIALECTS
    version: tuple[int, ...] | None = None  # vLLM's, from GET /version

    @property
    def label(self) -> str:
        version = ".".join(map(str, self.version)) if self.version else ""
        return f"{self.name} {version}".strip()


# ---- detection -----------------------------------------------------------------------------------


def _version(text: Any) -> tuple[int, ...] | None:
    parts = []
    for piece in str(text or "").split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def from_listing(listing: Any) -> str | None:
    """The dialect a ``GET /v1/models`` body shows, or ``None`` when it does not tell."""
    if not isinstance(listing, dict):
        return None
    entries = [e for e in listing.get("data") or [] if isinstance(e, dict)]
    owners = {str(e.get("owned_by", "")).lower() for e in entries}
    if "llamacpp" in owners or "llama.cpp" in owners or isinstance(listing.get("models"), list):
        return "llama.cpp"
    if "vllm" in owners:
        return "vllm"
    if entries and all("provider_id" in e and "identifier" in e for e in entries):
        return "nb_completion"
    return None


def _get_json(client: httpx.Client, path: str, required: bool = False) -> Any:
    """The JSON ``client`` gets at ``path``, or ``None``; ``required``: a remote that cannot be
    reached at all is a 502 (so no guess is kept for it)."""
    try:
        response = client.get(path, timeout=5.0)
    except httpx.HTTPError as exc:
        if required:
            raise gateway_error(f"could not reach the remote at {client.base_url}: {type(exc).__name__}: {exc}") from None
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def detect(client: httpx.Client, listing: Any = None, name: str | None = None) -> Dialect:
    """The dialect of the server behind ``client`` (``listing``: its ``/v1/models`` body, if read;
    ``name``: the dialect when the caller named it, then only vLLM's version is looked up)."""
    if name is None:
        if listing is None:
            listing = _get_json(client, "/v1/models", required=True)
        name = from_listing(listing)
    if name is None:
        props = _get_json(client, "/props")
        if isinstance(props, dict) and ("default_generation_settings" in props or "build_info" in props):
            name = "llama.cpp"
    version = None
    if name in (None, "vllm"):
        answer = _get_json(client, "/version")
        version = _version(answer.get("version")) if isinstance(answer, dict) else None
        if name is None and version is not None:
            name = "vllm"  # vLLM answers GET /version with {"version": "0.x.y"}
    return Dialect(name or "openai", version if name == "vllm" else None)


# ---- request bodies --------------------------------------------------------------------------------


def llama_stack_body(request: CompletionRequest, remote_id: str, top_k: int) -> dict:
    body = request.model_dump(mode="json", exclude_none=True)
    body.update(model_id=remote_id, stream=True, logprobs={"top_k": top_k})
    return body


def _sampling(params: SamplingParams, dialect: Dialect) -> dict[str, Any]:
    strategy = params.strategy
    off_top_k = -1 if dialect.name == "vllm" else 0  # vLLM before 0.9 takes only -1 for "off"
    if strategy.type == "greedy":
        fields: dict[str, Any] = {"temperature": 0.0}
    elif strategy.type == "top_p":
        fields = {
            "temperature": TEMPERATURE if strategy.temperature is None else strategy.temperature,
            "top_p": TOP_P if strategy.top_p is None else strategy.top_p,
            "top_k": off_top_k,
        }
    else:
        fields = {"temperature": 1.0, "top_p": 1.0, "top_k": strategy.top_k}
    if dialect.name in ("llama.cpp", "vllm") and strategy.type != "greedy":
        fields["min_p"] = 0.0
    if dialect.name == "openai":
        if strategy.type == "top_k":
            raise BadRequest(
                "sampling_params.strategy",
                "an unrecognised OpenAI-compatible remote has no top_k sampling; "
                "pass api='vllm' or api='llama.cpp' if it is one of those",
            )
        fields.pop("top_k", None)
    if params.repetition_penalty not in (None, 1.0):
        if dialect.name == "openai":
            raise BadRequest(
                "sampling_params.repetition_penalty",
                "an unrecognised OpenAI-compatible remote has no "
                "repetition_penalty; pass api='vllm' or api='llama.cpp' if it is one of those",
            )
        fields["repeat_penalty" if dialect.name == "llama.cpp" else "repetition_penalty"] = params.repetition_penalty
    return fields


def logprobs_asked(top_k: int, dialect: Dialect) -> int:
    """What ``logprobs`` to send for the request's ``top_k`` (0 when it asked none), or a 400."""
    if dialect.name == "openai" and top_k > OPENAI_MAX_LOGPROBS:
        raise BadRequest(
            "logprobs.top_k",
            f"the remote is an OpenAI-compatible server, whose limit is "
            f"{OPENAI_MAX_LOGPROBS} alternatives per token; got {top_k}",
        )
    if dialect.name == "llama.cpp":
        return max(top_k, 1)  # llama.cpp sends no log-probabilities at all for 0
    return top_k


def _structured(request: CompletionRequest, dialect: Dialect) -> dict[str, Any]:
    fmt = request.response_format
    if fmt is None:
        return {}
    if fmt.type == "json_schema":
        kind, value = "json", fmt.json_schema
    else:
        kind = grammar_key(fmt)
        value = fmt.bnf[kind]
    where = f"the remote ({dialect.label})"
    if dialect.name == "llama.cpp":
        if kind == "json":
            return {"json_schema": value}
        if kind == "gbnf":
            return {"grammar": value}
        raise BadRequest(
            "response_format.bnf",
            f"{where} enforces GBNF grammars and JSON schemas only, not '{kind}'; write the grammar as 'gbnf'",
        )
    if dialect.name == "openai":
        raise BadRequest(
            "response_format",
            f"{where} is not recognised as vLLM, llama.cpp or nb_completion, so no field "
            "is known to enforce a constraint there; pass api='vllm' or api='llama.cpp' if it is one of those",
        )
    if dialect.name == "nb_completion" and kind == "lark":
        raise BadRequest("response_format.bnf", f"{where} reads GBNF or regex grammars on /v1/completions, not 'lark'")
    key = "json" if kind == "json" else "regex" if kind == "regex" else "grammar"
    legacy = dialect.name == "nb_completion" or (dialect.version is not None and dialect.version < VLLM_STRUCTURED_OUTPUTS)
    return {f"guided_{key}": value} if legacy else {"structured_outputs": {key: value}}


def openai_body(request: CompletionRequest, remote_id: str, top_k: int, seed: int | None, dialect: Dialect) -> dict:
    """The ``POST /v1/completions`` body ``dialect`` reads for ``request``; a 400 for what it cannot enforce."""
    params = request.sampling_params or SamplingParams()
    body: dict[str, Any] = {
        "model": remote_id,
        "prompt": content_text(
            request.content,
            images_refused=f"model '{request.model_id}' is served through an OpenAI completions route, which takes text only",
        ),
        "max_tokens": params.max_tokens or None,  # 0 (until the end) is null, as vLLM reads it
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": logprobs_asked(top_k, dialect),
    }
    if body["max_tokens"] is None and dialect.name == "llama.cpp":
        del body["max_tokens"]  # llama.cpp: absent is "until the end"
    body.update(_sampling(params, dialect))
    if params.stop:
        body["stop"] = params.stop
    if seed is not None:
        body["seed"] = seed
    body.update(_structured(request, dialect))
    return body
