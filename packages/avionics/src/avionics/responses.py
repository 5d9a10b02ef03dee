"""What the gateway returns: `LLMResponse` for a call, `StreamingChunk` per streamed piece."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from airframe import FinishReason, ToolCall, Usage

__all__ = ["LLMResponse", "StreamingChunk"]


@dataclass(slots=True)
class LLMResponse:
    """One gateway call's answer. `metadata["attempts"]` lists every attempt (ledger rows).

    `tokens_used`, `prompt_tokens`, `completion_tokens` and `cost` are the whole call's: the sums
    of its ledger rows, failed and interrupted attempts included, so they agree with the ledger
    (and, for `chat_with_tools`, with every turn). `usage` is the answering attempt's own report
    (None-preserving: a count the backend did not report is None there, 0 in the sums).
    `cost_usd` is a float view of `cost` (exact `Decimal`); both are None when any attempt's cost
    is unknown (an unpriced model), never a guess.
    """

    text: str
    tool_calls: list[ToolCall]
    tokens_used: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    provider: str
    model: str
    cost_usd: float | None
    timestamp: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage | None = None
    cost: Decimal | None = None
    reasoning: str = ""
    agent_name: str = ""
    request_id: str = ""

    @property
    def content(self) -> str:
        """Alias of `text`."""
        return self.text

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.tool_calls)

    @property
    def input_tokens(self) -> int:
        return self.prompt_tokens

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.tokens_used


@dataclass(slots=True)
class StreamingChunk:
    """A streamed text piece. The final chunk (`is_final`) carries the whole `response`."""

    text: str
    is_final: bool
    request_id: str
    agent_name: str
    provider: str
    model: str
    cumulative_tokens: int
    timestamp: datetime
    response: LLMResponse | None = None
    kind: str = "token"  # "token" or "reasoning"
