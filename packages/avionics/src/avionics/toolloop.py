"""The tool-calling loop behind `LLMGateway.chat_with_tools`."""

from __future__ import annotations

import inspect
import json
import time
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
    """A tool handler failed and `raise_on_tool_error=True` (the handler's exception is the
    `__cause__`), or the model called a tool that has no handler (with the same flag)."""

    def __init__(self, message: str, tool: str) -> None:
        super().__init__(message)
        self.tool = tool


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


async def _tool_result(
    call: ToolCall, tool_handlers: Mapping[str, Callable[..., Any]], raise_on_tool_error: bool
) -> dict[str, Any]:
    """Run one requested tool; a failure becomes an error text for the model (or raises)."""
    handler = tool_handlers.get(call.name)
    try:
        if handler is None:
            raise LookupError(
                f"no handler is registered for tool {call.name!r} "
                f"(handlers: {', '.join(sorted(tool_handlers)) or 'none'})"
            )
        return {"id": call.id, "name": call.name, "ok": True,
                "output": _as_text(await _run_handler(handler, call))}  # fmt: skip
    except Exception as exc:
        if raise_on_tool_error:
            raise ToolLoopError(f"tool {call.name!r} failed: {exc}", call.name) from exc
        output = f"error: {type(exc).__name__}: {exc}"
        return {"id": call.id, "name": call.name, "ok": False, "output": output}


async def run_tool_loop(
    gateway: LLMGateway,
    messages: Sequence[Message | Mapping[str, Any]],
    tools: Sequence[ToolSpec | Mapping[str, Any]],
    tool_handlers: Mapping[str, Callable[..., Any]],
    max_iterations: int,
    raise_on_tool_error: bool,
    kwargs: Mapping[str, Any],
) -> LLMResponse:
    """Call the model, run the tools it asks for, feed the results back; at most
    `max_iterations` model calls. Tools requested by the last allowed call are not run: the
    response keeps them in `tool_calls` with `metadata["max_iterations_reached"] = True`."""
    if max_iterations < 1:
        raise ValueError("max_iterations must be at least 1")
    started = time.perf_counter()
    history = to_messages(messages)
    turns: list[LLMResponse] = []
    tool_results: list[dict[str, Any]] = []
    for _ in range(max_iterations):
        response = await gateway.complete(messages=history, tools=tools, **kwargs)
        turns.append(response)
        if not response.tool_calls or len(turns) == max_iterations:
            break
        history.append(Message.assistant(response.text, response.tool_calls))
        for call in response.tool_calls:
            result = await _tool_result(call, tool_handlers, raise_on_tool_error)
            tool_results.append(result)
            history.append(Message.tool(result["output"], call.id, call.name))
    return _combined(turns, tool_results, (time.perf_counter() - started) * 1000.0)


def _combined(
    turns: list[LLMResponse], tool_results: list[dict[str, Any]], latency_ms: float
) -> LLMResponse:
    """The last turn's answer with tokens and cost summed over every turn (and so over every
    ledger row of the loop); `metadata["turns"]` counts the model calls."""
    last = turns[-1]
    total: Decimal | None = Decimal(0)
    for turn in turns:
        total = None if total is None or turn.cost is None else total + turn.cost
    prompt = sum(t.prompt_tokens for t in turns)
    completion = sum(t.completion_tokens for t in turns)
    metadata = dict(last.metadata)
    metadata.update(
        turns=len(turns),
        tool_results=tool_results,
        max_iterations_reached=bool(last.tool_calls),
        attempts=[a for t in turns for a in t.metadata.get("attempts", [])],
    )
    return replace(
        last,
        tokens_used=prompt + completion,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=latency_ms,
        cost=total,
        cost_usd=float(total) if total is not None else None,
        metadata=metadata,
    )
