"""The tool-calling loop behind `LLMGateway.chat_with_tools`."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airframe import Message, ToolCall, ToolSpec

from .requests import to_messages

if TYPE_CHECKING:
    from .gateway import LLMGateway
    from .responses import LLMResponse

__all__ = ["ToolLoopError", "run_tool_loop"]


class ToolLoopError(RuntimeError):
    """A tool handler failed and `raise_on_tool_error=True`, or a tool has no handler."""


async def _run_handler(handler: Callable[..., Any], call: ToolCall) -> Any:
    result = handler(**call.arguments)
    if inspect.isawaitable(result):
        result = await result
    return result


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


async def run_tool_loop(
    gateway: LLMGateway,
    messages: Sequence[Message | Mapping[str, Any]],
    tools: Sequence[ToolSpec | Mapping[str, Any]],
    tool_handlers: Mapping[str, Callable[..., Any]],
    max_iterations: int,
    raise_on_tool_error: bool,
    kwargs: Mapping[str, Any],
) -> LLMResponse:
    if max_iterations < 1:
        raise ValueError("max_iterations must be at least 1")
    history = to_messages(messages)
    turns: list[LLMResponse] = []
    tool_results: list[dict[str, Any]] = []
    response: LLMResponse | None = None
    for _ in range(max_iterations):
        response = await gateway.complete(messages=history, tools=tools, **kwargs)
        turns.append(response)
        if not response.tool_calls:
            break
        history.append(Message.assistant(response.text, response.tool_calls))
        for call in response.tool_calls:
            handler = tool_handlers.get(call.name)
            try:
                if handler is None:
                    raise ToolLoopError(
                        f"model called tool {call.name!r} but no handler is registered "
                        f"(handlers: {sorted(tool_handlers)})"
                    )
                output = _as_text(await _run_handler(handler, call))
                ok = True
            except Exception as exc:
                if raise_on_tool_error:
                    raise
                output = f"error: {type(exc).__name__}: {exc}"
                ok = False
            tool_results.append({"id": call.id, "name": call.name, "ok": ok, "output": output})
            history.append(Message.tool(output, call.id, call.name))
    assert response is not None
    return _combined(response, turns, tool_results, hit_limit=bool(response.tool_calls))


def _combined(
    last: LLMResponse,
    turns: list[LLMResponse],
    tool_results: list[dict[str, Any]],
    *,
    hit_limit: bool,
) -> LLMResponse:
    costs = [t.cost for t in turns]
    total: Decimal | None = (
        None if any(c is None for c in costs) else sum((c for c in costs if c), Decimal(0))
    )
    prompt = sum(t.prompt_tokens for t in turns)
    completion = sum(t.completion_tokens for t in turns)
    metadata = dict(last.metadata)
    metadata.update(
        turns=len(turns),
        tool_results=tool_results,
        max_iterations_reached=hit_limit,
        attempts=[a for t in turns for a in t.metadata.get("attempts", [])],
    )
    return replace(
        last,
        tokens_used=prompt + completion,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=sum(t.latency_ms for t in turns),
        cost=total,
        cost_usd=float(total) if total is not None else None,
        metadata=metadata,
    )
