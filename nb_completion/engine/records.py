"""What the streaming core yields. Every frontend drains these and shapes them at its edge.

``TokenRecord`` is one generated token, measured under the model's *raw* distribution
(log-softmax of the logits before penalty, temperature, truncation or grammar mask).
``Delta`` is a piece of output text plus the tokens whose text it delivers (stop strings and
incomplete multi-byte characters are held back, so one delta may deliver several tokens, or
none). ``Finished`` closes every stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class TokenRecord:
    index: int  # 0-based position in the completion
    token_id: int
    text: str  # the text this token contributes to the output ("" for a withheld end token)
    logprob: float  # log-probability of the chosen token under the raw distribution
    rank: int  # 1 = the model's most likely token
    top: tuple[tuple[str, float], ...]  # top-k alternatives (text, logprob), most likely first
    entropy: float  # entropy (nats) of the raw distribution at this step
    forced: bool = False  # the grammar allowed only this token
    elapsed: float = 0.0  # seconds since the request started
    piece: str = ""  # the token's own text, decoded alone (may differ from `text` at byte seams)
    top_ids: tuple[int, ...] = ()  # the token ids of `top`, in its order (a local model's; empty if unknown)

    @property
    def probability(self) -> float:
        import math

        return math.exp(self.logprob)


@dataclass(frozen=True)
class Delta:
    text: str
    tokens: tuple[TokenRecord, ...] = ()


@dataclass(frozen=True)
class Finished:
    stop_reason: str  # a StopReason value: end_of_turn | end_of_message | out_of_tokens
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float | None = None  # seconds
    tokens_per_second: float | None = None
    cancelled: bool = False  # ended by a cancel event (stop_reason is then out_of_tokens)
    stop_string: str | None = None  # the stop string that ended generation (stop_reason end_of_turn)
    # The end token the run ended on, scored like any token (its logprob, rank, alternatives) but
    # with no text: it is counted in completion_tokens and listed in every logprobs answer.
    end_token: "TokenRecord | None" = None


Event = Union[Delta, Finished]  # what a stream yields: Deltas, then one Finished


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /v1/models`` and the widget's model list show."""

    identifier: str
    provider_id: str = "nb_completion"
    provider_resource_id: str | None = None
    metadata: dict = field(default_factory=dict)
    context_length: int | None = None
    loaded: bool = False
