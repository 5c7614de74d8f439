"""The llama-stack ``POST /v1/inference/completion`` contract as pydantic v2 types.

Mirrors ``shared/spec/``: field names, defaults, enums and discriminated unions. Knows nothing
about torch. Where the published schema is loose, ``shared/spec/README.md`` decides (see the
comments below).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    """Every spec object has ``additionalProperties: false``."""

    model_config = ConfigDict(extra="forbid")


def _type_required(schema: dict[str, Any]) -> None:
    """The spec lists each union member's ``type`` discriminator as required (with a default)."""
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")


class _Tagged(_Strict):
    """A member of a discriminated union, tagged by its ``type`` field."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_type_required)


# ---- content ---------------------------------------------------------------------------------


class URL(_Strict):
    uri: str = Field(description="The URL string pointing to the resource")


class _Image(_Strict):
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
    top_p: float | None = 0.95


class TopKSamplingStrategy(_Tagged):
    type: Literal["top_k"] = "top_k"
    top_k: int


SamplingStrategy = Annotated[
    Union[GreedySamplingStrategy, TopPSamplingStrategy, TopKSamplingStrategy],
    Field(discriminator="type"),
]


class SamplingParams(_Strict):
    # The published schema marks strategy required; llama-stack servers defaulted it to greedy
    # and their own clients omit it, so we accept that (README).
    strategy: SamplingStrategy = Field(default_factory=GreedySamplingStrategy)
    max_tokens: int | None = 0
    repetition_penalty: float | None = 1.0
    stop: list[str] | None = None


# ---- response format -------------------------------------------------------------------------


class ResponseFormatType(str, Enum):
    json_schema = "json_schema"
    grammar = "grammar"


class JsonSchemaResponseFormat(_Tagged):
    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any]


class GrammarResponseFormat(_Tagged):
    type: Literal["grammar"] = "grammar"
    bnf: dict[str, Any]


ResponseFormat = Annotated[
    Union[JsonSchemaResponseFormat, GrammarResponseFormat], Field(discriminator="type")
]


class LogProbConfig(_Strict):
    top_k: int | None = 0


class CompletionRequest(_Strict):
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
