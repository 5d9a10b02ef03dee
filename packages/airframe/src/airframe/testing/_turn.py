"""The protocol-neutral answer to one request: a `Reply` resolved against the request.

A `Turn` holds the pieces to stream (reasoning, text, refusal, tool-call argument fragments),
the neutral finish reason and the usage to report. Each protocol module renders a Turn in its
own wire shape, so every protocol says the same thing for the same script.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ._behaviours import Reply, TokenCounts

__all__ = ["Prompt", "ToolCallOut", "Turn", "build_turn", "count_words", "split_pieces"]

_PIECE = re.compile(r"\s*\S+")
_ARG_PIECE = 6


def split_pieces(text: str) -> list[str]:
    """One piece per whitespace-delimited word, whitespace kept: "".join(pieces) == text."""
    if not text:
        return []
    pieces: list[str] = _PIECE.findall(text)
    if not pieces:
        return [text]
    consumed = sum(len(piece) for piece in pieces)
    if consumed < len(text):
        pieces[-1] += text[consumed:]
    return pieces


def split_json(text: str) -> list[str]:
    """Argument JSON in several fragments (at least two when it has two characters)."""
    size = max(1, min(_ARG_PIECE, len(text) // 2))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def count_words(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class Prompt:
    """What a protocol module extracted from the request."""

    tokens: int
    last_user_text: str
    max_tokens: int | None
    model: str


@dataclass
class ToolCallOut:
    index: int
    id: str | None
    name: str
    arguments: dict[str, Any]
    arguments_json: str
    pieces: list[str]


@dataclass
class Turn:
    reasoning: list[str]
    text: list[str]
    refusal: list[str]
    tool_calls: list[ToolCallOut]
    finish: str
    usage: TokenCounts
    prompt: Prompt
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        return "".join(self.text)

    @property
    def full_reasoning(self) -> str:
        return "".join(self.reasoning)

    @property
    def full_refusal(self) -> str:
        return "".join(self.refusal)

    @property
    def output_pieces(self) -> int:
        return (
            len(self.reasoning)
            + len(self.text)
            + len(self.refusal)
            + sum(len(call.pieces) for call in self.tool_calls)
        )


def build_turn(reply: Reply, prompt: Prompt) -> Turn:
    """Resolve `reply` for `prompt`: echo text, truncation by max_tokens, computed usage."""
    content = reply.content
    if reply.kind == "echo":
        content = "echo: " + prompt.last_user_text
    reasoning = split_pieces(reply.reasoning)
    text: list[str] = []
    refusal: list[str] = []
    if reply.kind == "refusal":
        refusal = split_pieces(content)
    else:
        text = split_pieces(content)
    finish = reply.finish_reason

    budget = prompt.max_tokens
    if budget is not None and budget >= 0 and reply.kind != "tool_calls":
        produced = len(reasoning) + len(text) + len(refusal)
        if produced > budget:
            reasoning = reasoning[:budget]
            left = budget - len(reasoning)
            text = text[:left]
            refusal = refusal[: max(0, left - len(text))]
            finish = "length"

    calls = []
    for index, spec in enumerate(reply.calls):
        arguments = dict(spec.arguments)
        encoded = json.dumps(arguments, ensure_ascii=False)
        calls.append(
            ToolCallOut(
                index=index,
                id=spec.id,
                name=spec.name,
                arguments=arguments,
                arguments_json=encoded,
                pieces=split_json(encoded),
            )
        )

    turn = Turn(
        reasoning=reasoning,
        text=text,
        refusal=refusal,
        tool_calls=calls,
        finish=finish,
        usage=TokenCounts(0, 0),
        prompt=prompt,
    )
    turn.usage = reply.usage or TokenCounts(
        input_tokens=prompt.tokens,
        output_tokens=turn.output_pieces,
        reasoning_tokens=len(reasoning),
    )
    return turn
