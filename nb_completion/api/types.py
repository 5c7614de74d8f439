"""The llama-stack ``POST /v1/inference/completion`` contract as pydantic v2 types.

Mirrors ``shared/spec/``: field names, defaults, enums and discriminated unions. Knows nothing
about torch. Where the published schema is loose, ``shared/spec/README.md`` decides (see the
comments below).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from .bounds import TOP_P


class _Strict(BaseModel):
    """Every spec object has ``additionalProperties: false``."""

    model_config = ConfigDict(extra="forbid")


# Request objects also take JSON's types as the schema says: no string-to-number, number-to-bool
# or bool-to-int coercion (``"10"``, ``true`` for an integer), and no non-finite number (``1e400``
# parses as infinity). An integer is still accepted where the schema says ``number``. Neither
# setting changes the JSON Schema (tests/test_spec_types.py).
_REQUEST_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Request(_Strict):
    model_config = _REQUEST_CONFIG


def _type_required(schema: dict[str, Any]) -> None:
    """The spec lists each union member's ``type`` discriminator as required (with a default)."""
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")


class _Tagged(_Request):
    """A member of a discriminated union, tagged by its ``type`` field (request objects only)."""

    model_config = ConfigDict(**_REQUEST_CONFIG, json_schema_extra=_type_required)


# ---- content ---------------------------------------------------------------------------------


class URL(_Request):
    uri: str = Field(description="The URL string pointing to the resource")


class _Image(_Request):
    url: URL | None = None
    data: str | None = Field(default=None, json_schema_extra={"contentEncoding": "base64"})


class ImageContentItem(_Tagged):
    type: Literal["image"] = "image"
    image: _Image


class TextContentItem(_Tagged):
    type: Literal["text"] = "text"
    text: str


InterleavedContentItem = Annotated[
    Union[ImageContentItem, TextContentItem], Field(discriminator="type", title="InterleavedContentItem")
]
InterleavedContent = Union[str, InterleavedContentItem, list[InterleavedContentItem]]


# ---- sampling --------------------------------------------------------------------------------


class GreedySamplingStrategy(_Tagged):
    type: Literal["greedy"] = "greedy"


class TopPSamplingStrategy(_Tagged):
    type: Literal["top_p"] = "top_p"
    # README: temperature defaults to 1.0 when absent and must be > 0.
    temperature: float | None = None
    top_p: float | None = TOP_P


class TopKSamplingStrategy(_Tagged):
    type: Literal["top_k"] = "top_k"
    top_k: int


SamplingStrategy = Annotated[
    Union[GreedySamplingStrategy, TopPSamplingStrategy, TopKSamplingStrategy],
    Field(discriminator="type"),
]


class SamplingParams(_Request):
    # The published schema marks strategy required; llama-stack servers defaulted it to greedy
    # and their own clients omit it, so we accept that (README).
    strategy: SamplingStrategy = Field(default_factory=GreedySamplingStrategy)
    max_tokens: int | None = 0
    repetition_penalty: float | None = 1.0
    stop: list[str] | None = None


# ---- response format -------------------------------------------------------------------------


class JsonSchemaResponseFormat(_Tagged):
    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any]


class GrammarResponseFormat(_Tagged):
    type: Literal["grammar"] = "grammar"
    bnf: dict[str, Any]


ResponseFormat = Annotated[Union[JsonSchemaResponseFormat, GrammarResponseFormat], Field(discriminator="type")]


class LogProbConfig(_Request):
    top_k: int | None = 0


class CompletionRequest(_Request):
    model_id: str
    content: InterleavedContent
    sampling_params: SamplingParams | None = None
    response_format: ResponseFormat | None = None
    stream: bool | None = None
    logprobs: LogProbConfig | None = None


# ---- responses -------------------------------------------------------------------------------


class StopReason(str, Enum):
    end_of_turn = "end_of_turn"
    end_of_message = "end_of_message"
    out_of_tokens = "out_of_tokens"


class MetricInResponse(_Strict):
    metric: str
    value: int | float
    unit: str | None = None


class TokenLogProbs(_Strict):
    logprobs_by_token: dict[str, float]


class CompletionResponse(_Strict):
    metrics: list[MetricInResponse] | None = None
    content: str
    stop_reason: StopReason
    logprobs: list[TokenLogProbs] | None = None


class CompletionResponseStreamChunk(_Strict):
    metrics: list[MetricInResponse] | None = None
    delta: str
    stop_reason: StopReason | None = None
    logprobs: list[TokenLogProbs] | None = None


class Error(_Strict):
    status: int
    title: str
    detail: str
    instance: str | None = None
