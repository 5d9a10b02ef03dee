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

    `cost_usd` is a float view of `cost` (exact `Decimal`); both are None when a model's price is
    unknown. Token counts a backend did not report are 0 here; `usage` keeps None for unknown.
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
