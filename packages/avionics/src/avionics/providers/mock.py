"""`MockProvider`: deterministic, offline, scriptable. A test double that is product.

    provider = MockProvider(["first answer", airframe.RateLimitError("slow down"), "third"])

Each call takes the next scripted item: a string is the reply, an `InferenceResult` is returned as
is, an exception is raised. With no script the reply echoes the last user message. Usage counts are
whitespace words, so they are stable across runs.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any

from airframe import (
    FinishReason,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    InterruptedError,
    StreamEventType,
    TransportHooks,
    Usage,
)

from ..nodes import Node
from .base import LLMProvider

__all__ = ["MockProvider"]

ScriptItem = str | InferenceResult | BaseException
_PIECES = re.compile(r"\S+\s*|\s+")


def _words(text: str) -> int:
    return len(text.split())


class MockProvider(LLMProvider):
    """Scripted replies (or an echo), streamed word by word; costs nothing."""

    local = True

    def __init__(
        self,
        responses: Iterable[ScriptItem] | Callable[[InferenceRequest], ScriptItem] | None = None,
        *,
        name: str = "mock",
        default_model: str = "mock-model",
        fail_after_tokens: int | None = None,
    ) -> None:
        self.name = name
        self.kind = "mock"
        self.default_model = default_model
        self._fn = responses if callable(responses) else None
        self._script: deque[ScriptItem] = deque(
            () if responses is None or callable(responses) else responses
        )
        self.fail_after_tokens = fail_after_tokens
        self.requests: list[InferenceRequest] = []

    def script(self, *items: ScriptItem) -> None:
        """Queue more replies."""
        self._script.extend(items)

    def _next(self, request: InferenceRequest) -> InferenceResult:
        self.requests.append(request)
        if self._fn is not None:
            item: ScriptItem = self._fn(request)
        elif self._script:
            item = self._script.popleft()
        else:
            last = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
            item = f"mock response to: {last}"
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, InferenceResult):
            return item
        prompt_words = sum(_words(m.text()) for m in request.messages) + _words(
            request.system or ""
        )
        return InferenceResult(
            text=item,
            tool_calls=[],
            finish_reason=FinishReason.STOP,
            usage=Usage(prompt_words, _words(item)),
            model=request.model or self.default_model or "mock-model",
            response_id=f"mock-{len(self.requests)}",
        )

    async def infer(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> InferenceResult:
        return self._next(request)

    async def stream(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> AsyncGenerator[InferenceStreamEvent, None]:
        result = self._next(request)
        sent: list[str] = []
        for piece in _PIECES.findall(result.text):
            if self.fail_after_tokens is not None and len(sent) >= self.fail_after_tokens:
                partial = InferenceResult(
                    "".join(sent),
                    [],
                    FinishReason.OTHER,
                    Usage(None, len(sent)),
                    result.model,
                    None,
                )
                raise InterruptedError(
                    "mock stream interrupted", backend="mock", endpoint=self.name, partial=partial
                )
            sent.append(piece)
            yield InferenceStreamEvent(StreamEventType.TOKEN, piece)
        for call in result.tool_calls:
            yield InferenceStreamEvent(StreamEventType.TOOL_CALL, tool_call=call)
        if result.usage is not None:
            yield InferenceStreamEvent(StreamEventType.USAGE, usage=result.usage)
        yield InferenceStreamEvent(StreamEventType.MESSAGE, result=result)

    async def health_check(self) -> bool:
        return True

    def pick_node(self, exclude: Sequence[str] = ()) -> Node | None:
        return None

    def get_stats(self) -> dict[str, Any]:
        return {**super().get_stats(), "calls": len(self.requests)}
