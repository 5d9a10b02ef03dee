"""Opt-in message content in the GenAI conventions' JSON shapes (recorded as JSON strings).

    gen_ai.system_instructions  [{"type": "text", "content": "You plan."}]
    gen_ai.input.messages       [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]
    gen_ai.output.messages      [{"role": "assistant", "parts": [...], "finish_reason": "stop"}]

Parts: `text`, `tool_call` (id, name, arguments), `tool_call_response` (id, response), `uri`
(an image by URL), `blob` (inline image bytes, base64) and `reasoning`. Only built when content
capture is on: prompts may hold personal data, so it is off by default.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from airframe import ImagePart, InferenceRequest, InferenceResult, Message, TextPart

from . import semconv

__all__ = ["input_messages", "output_messages", "system_instructions"]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "content": part.text}
    if part.url is not None:
        return {"type": "uri", "modality": "image", "mime_type": part.media_type, "uri": part.url}
    data = base64.b64encode(part.data or b"").decode("ascii")
    return {"type": "blob", "modality": "image", "mime_type": part.media_type, "content": data}


def _message(message: Message) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.tool_call_id, "response": message.text()}
        )
    elif isinstance(message.content, str):
        if message.content:
            parts.append({"type": "text", "content": message.content})
    else:
        parts.extend(_part(p) for p in message.content)
    parts.extend(
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
        for c in message.tool_calls
    )
    return {"role": message.role, "parts": parts}


def input_messages(request: InferenceRequest) -> str:
    """`gen_ai.input.messages`: the chat history, in the order it was sent."""
    return _dumps([_message(m) for m in request.messages])


def system_instructions(request: InferenceRequest) -> str | None:
    """`gen_ai.system_instructions` for a system prompt given apart from the history."""
    if not request.system:
        return None
    return _dumps([{"type": "text", "content": request.system}])


def output_messages(result: InferenceResult) -> str:
    """`gen_ai.output.messages`: the one choice airframe returns."""
    parts: list[dict[str, Any]] = []
    if result.reasoning:
        parts.append({"type": "reasoning", "content": result.reasoning})
    if result.text or result.refusal:
        parts.append({"type": "text", "content": result.text or result.refusal})
    parts.extend(
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
        for c in result.tool_calls
    )
    message = {
        "role": "assistant",
        "parts": parts,
        "finish_reason": semconv.finish_reason(result.finish_reason),
    }
    return _dumps([message])
