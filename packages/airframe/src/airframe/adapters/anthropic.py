"""Anthropic Messages API (`POST /v1/messages`), streamed as named SSE events.

Wire reference: https://platform.claude.com/docs/en/api/messages, .../build-with-claude/streaming,
.../api/errors, and anthropic-sdk-python (`lib/streaming/_messages.py` accumulates a stream the
same way this parser does). `base_url` is the root (`https://api.anthropic.com`), as for the SDK.

Translation notes:

- System text (`request.system` plus every `system` turn) becomes the top-level `system` field.
  Consecutive turns of one role are merged into one turn (the API wants user/assistant
  alternation); `tool` turns become `tool_result` blocks of a user turn, placed before any text.
- `response_format=json_schema` uses Anthropic's structured outputs,
  `output_config={"format": {"type": "json_schema", "schema": ...}}` (generally available, no beta
  header; models that lack it answer 400 -> `bad_request`). `json_object` has no wire equivalent:
  it adds an instruction to the system prompt, so it is best effort, not enforced.
- `seed` has no Anthropic equivalent and is not sent. `max_tokens` is required by the API:
  4096 when the request leaves it unset.
- `Usage.input_tokens` includes cache reads and writes (Anthropic's `input_tokens` excludes them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._config import BackendKind, EndpointSpec
from .._errors import BadRequestError, ErrorCategory
from .._retry import status_category
from .._streams import SSEEvent, event_json
from .._transport import inband_error
from .._types import (
    FinishReason,
    ImagePart,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    Message,
    StreamEventType,
    ToolCall,
    Usage,
)
from ._base import (
    NO_EVENTS,
    BackendAdapter,
    Capabilities,
    ErrorInfo,
    StreamParser,
    WireRequest,
    error_fields,
    error_message,
)

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicAdapter",
    "AnthropicStreamParser",
    "anthropic_messages",
    "anthropic_usage",
]

DEFAULT_API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no code fences."
)

FINISH_REASONS: Mapping[str | None, FinishReason] = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    # The model ran into its context window while generating: a length stop.
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
    # "pause_turn" (a server tool paused a long turn) and unknown reasons map to OTHER.
}

# `error.type` -> category. The generic types (`invalid_request_error` for "other 4xx",
# `api_error` for "other 5xx") do not override an HTTP status; these specific ones do.
_SPECIFIC_TYPES: Mapping[str, ErrorCategory] = {
    "overloaded_error": ErrorCategory.OVERLOADED,
    "rate_limit_error": ErrorCategory.RATE_LIMIT,
    "authentication_error": ErrorCategory.AUTH,
    "permission_error": ErrorCategory.AUTH,
    "not_found_error": ErrorCategory.NOT_FOUND,
    "request_too_large": ErrorCategory.BAD_REQUEST,
    "billing_error": ErrorCategory.QUOTA,
    "timeout_error": ErrorCategory.TIMEOUT,
}
# In a stream there is no status: every type decides.
_INBAND_TYPES: Mapping[str, ErrorCategory] = {
    **_SPECIFIC_TYPES,
    "api_error": ErrorCategory.SERVER,
    "invalid_request_error": ErrorCategory.BAD_REQUEST,
}
# "Your credit balance is too low...", "You have reached your specified API usage limits...",
# "Usage credits are required...", spend limits: spending problems, never worth a retry.
_QUOTA_PHRASES = (
    "credit balance",
    "usage credits",
    "usage limit",
    "spend limit",
    "spending limit",
    "billing",
    "quota",
)
# "prompt is too long: 210000 tokens > 200000 maximum"
_PROMPT_TOO_LONG = re.compile(r"(\d[\d,]*)\s*tokens?\s*>\s*(\d[\d,]*)")
# "input length and `max_tokens` exceed context limit: 197202 + 21333 > 200000, ..."
_CONTEXT_LIMIT = re.compile(r"(\d[\d,]*)\s*\+\s*(\d[\d,]*)\s*>\s*(\d[\d,]*)")
_CONTEXT_WORDS = ("prompt is too long", "context limit", "context window", "context length")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


# -- request ------------------------------------------------------------------------------


def _image_block(part: ImagePart) -> dict[str, Any]:
    url = part.url
    if url is not None and not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type = part.media_type
    if url is not None:  # data:image/jpeg;base64,....
        head = url[5:].split(",", 1)[0]
        media_type = head.split(";", 1)[0] or media_type
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": part.base64_data()},
    }


def _content_blocks(message: Message) -> list[dict[str, Any]]:
    """Text and image blocks of a turn; empty text is left out (the API refuses it)."""
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            blocks.append(_image_block(part))
        elif part.text:
            blocks.append({"type": "text", "text": part.text})
    return blocks


def _tool_result(message: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
    if isinstance(message.content, str):
        block["content"] = message.content
    else:
        block["content"] = _content_blocks(message)
    return block


def _system_text(request: InferenceRequest) -> str:
    parts = [request.system] if request.system else []
    parts.extend(m.text() for m in request.messages if m.role == "system" and m.text())
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        parts.append(JSON_OBJECT_INSTRUCTION)
    return "\n\n".join(parts)


def anthropic_messages(request: InferenceRequest) -> list[dict[str, Any]]:
    """The `messages` array: strictly alternating turns, tool calls and results as blocks.

    System turns are left out (they go to the top-level `system`).
    """
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if not turns or turns[-1][0] != role:
            turns.append((role, []))
        blocks = turns[-1][1]
        if m.role == "tool":
            # tool_result blocks must come first in a user turn, before any text.
            at = 0
            while at < len(blocks) and blocks[at]["type"] == "tool_result":
                at += 1
            blocks.insert(at, _tool_result(m))
            continue
        blocks.extend(_content_blocks(m))
        for call in m.tool_calls:
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            )
    out: list[dict[str, Any]] = []
    for role, blocks in turns:
        if not blocks:
            content: str | list[dict[str, Any]] = ""
        elif len(blocks) == 1 and blocks[0]["type"] == "text":
            content = blocks[0]["text"]
        else:
            content = blocks
        out.append({"role": role, "content": content})
    return out


def _tool_choice(choice: str | Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(choice, str):
        return dict(choice)
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    return {"type": "tool", "name": choice}


# -- response -----------------------------------------------------------------------------


def anthropic_usage(
    input_tokens: Any, output_tokens: Any, cache_read: Any, cache_write: Any
) -> Usage:
    """`Usage` from Anthropic's counts; `input_tokens` becomes the total including the cache."""
    read = cache_read if isinstance(cache_read, int) else 0
    write = cache_write if isinstance(cache_write, int) else 0
    return Usage(
        input_tokens=input_tokens + read + write if isinstance(input_tokens, int) else None,
        output_tokens=output_tokens if isinstance(output_tokens, int) else None,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def _usage_of(usage: Any) -> Usage | None:
    if not isinstance(usage, dict) or not usage:
        return None
    return anthropic_usage(
        usage.get("input_tokens"),
        usage.get("output_tokens"),
        usage.get("cache_read_input_tokens"),
        usage.get("cache_creation_input_tokens"),
    )


def _tool_call(block: Mapping[str, Any]) -> ToolCall:
    raw_input = block.get("input")
    arguments = raw_input if isinstance(raw_input, dict) else {}
    return ToolCall(
        id=block.get("id") or "",
        name=block.get("name") or "",
        arguments=arguments,
        raw_arguments=json.dumps(arguments),
    )


class AnthropicAdapter(BackendAdapter):
    """Messages API over SSE. `base_url` is the root; `api_version` overrides the
    `anthropic-version` header (default 2023-06-01)."""

    kind = BackendKind.ANTHROPIC
    capabilities = Capabilities(
        vision=True, tools=True, json_object=True, json_schema=True, image_urls=True
    )
    request_id_headers = ("request-id", "x-request-id")
    messages_path = "/v1/messages"
    models_path = "/v1/models"

    def auth_headers(self, endpoint: EndpointSpec) -> dict[str, str]:
        headers = {"anthropic-version": endpoint.api_version or DEFAULT_API_VERSION}
        if endpoint.api_key:
            headers["x-api-key"] = endpoint.api_key
        return headers

    def check_request(self, endpoint: EndpointSpec, request: InferenceRequest) -> None:
        super().check_request(endpoint, request)
        if not request.model and "model" not in request.extra_body:
            raise BadRequestError(
                "the Anthropic API needs a model name (InferenceRequest(model=...))",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )

    def chat_body(self, request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens
            if request.max_tokens is not None
            else DEFAULT_MAX_TOKENS,
            "messages": anthropic_messages(request),
        }
        system = _system_text(request)
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if request.tools:
            tools: list[dict[str, Any]] = []
            for t in request.tools:
                tool: dict[str, Any] = {"name": t.name, "input_schema": dict(t.parameters)}
                if t.description:
                    tool["description"] = t.description
                tools.append(tool)
            body["tools"] = tools
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema":
            body["output_config"] = {
                "format": {"type": "json_schema", "schema": dict(fmt.schema or {})}
            }
        if stream:
            body["stream"] = True
        if request.extra_body:
            extra = dict(request.extra_body)
            config = extra.get("output_config")
            if isinstance(config, Mapping) and isinstance(body.get("output_config"), dict):
                # output_config also carries e.g. `effort`: keep our `format` beside it.
                extra["output_config"] = {**body["output_config"], **config}
            body.update(extra)
        return body

    def build_chat(
        self, endpoint: EndpointSpec, request: InferenceRequest, *, stream: bool
    ) -> WireRequest:
        return WireRequest("POST", self.messages_path, self.chat_body(request, stream=stream))

    def parse_chat(self, endpoint: EndpointSpec, payload: Any) -> InferenceResult:
        if payload.get("type") == "error" or ("error" in payload and "content" not in payload):
            raise inband_error(self, endpoint, payload)
        text: list[str] = []
        reasoning: list[str] = []
        signature: str | None = None
        calls: list[ToolCall] = []
        for block in payload.get("content") or ():
            kind = block.get("type")
            if kind == "text":
                text.append(block.get("text") or "")
            elif kind == "thinking":
                reasoning.append(block.get("thinking") or "")
                signature = block.get("signature") or signature
            elif kind == "tool_use":
                calls.append(_tool_call(block))
        raw = {k: v for k, v in payload.items() if k != "content"}
        return InferenceResult(
            text="".join(text),
            tool_calls=calls,
            finish_reason=FINISH_REASONS.get(payload.get("stop_reason"), FinishReason.OTHER),
            usage=_usage_of(payload.get("usage")),
            model=payload.get("model") or "",
            response_id=payload.get("id"),
            reasoning="".join(reasoning),
            reasoning_signature=signature,
            raw=raw,
        )

    def stream_parser(self, endpoint: EndpointSpec, request: InferenceRequest) -> StreamParser:
        return AnthropicStreamParser(self, endpoint)

    def classify_error(self, status: int | None, payload: Any, text: str) -> ErrorInfo:
        err = error_fields(payload)
        message = error_message(payload, text, status)
        etype = err.get("type")
        etype = etype if isinstance(etype, str) else ""
        lowered = message.lower()
        if status in (None, 400) and any(w in lowered for w in _CONTEXT_WORDS):
            prompt: int | None = None
            window: int | None = None
            found = _CONTEXT_LIMIT.search(message)
            if found:
                prompt, window = _int(found.group(1)), _int(found.group(3))
            else:
                found = _PROMPT_TOO_LONG.search(message)
                if found:
                    prompt, window = _int(found.group(1)), _int(found.group(2))
            return ErrorInfo(
                ErrorCategory.CONTEXT_LENGTH, message, prompt_tokens=prompt, context_window=window
            )
        if "content filtering" in lowered or "content filter" in lowered:
            return ErrorInfo(ErrorCategory.CONTENT_FILTER, message)
        if (etype == "billing_error" or status == 402) or (
            status in (None, 400, 429) and any(w in lowered for w in _QUOTA_PHRASES)
        ):
            return ErrorInfo(ErrorCategory.QUOTA, message)
        if status is None:
            return ErrorInfo(_INBAND_TYPES.get(etype, ErrorCategory.SERVER), message)
        found_type = _SPECIFIC_TYPES.get(etype)
        return ErrorInfo(found_type or status_category(status), message)

    def models_request(self, endpoint: EndpointSpec) -> WireRequest:
        return WireRequest("GET", self.models_path, params={"limit": "1000"})

    def parse_models(self, payload: Any) -> list[str]:
        return [m["id"] for m in payload.get("data") or () if isinstance(m, dict) and "id" in m]


# -- stream -------------------------------------------------------------------------------


class _Block:
    """One open content block: its type and, for tool_use, the call being assembled."""

    __slots__ = ("id", "input", "json", "kind", "name")

    def __init__(self, kind: str, start: Mapping[str, Any]) -> None:
        self.kind = kind
        self.id = ""
        self.name = ""
        self.input: Any = None
        self.json: list[str] = []
        if kind == "tool_use":
            self.id = start.get("id") or ""
            self.name = start.get("name") or ""
            self.input = start.get("input")

    def tool_call(self) -> ToolCall:
        raw = "".join(self.json)
        if not raw.strip():
            # No deltas: the start block's input (normally {}) is the whole input.
            raw = json.dumps(self.input if isinstance(self.input, dict) else {})
        return ToolCall.from_raw(self.id, self.name, raw)


class AnthropicStreamParser(StreamParser):
    """Named SSE events: message_start, content_block_start/delta/stop, message_delta,
    message_stop (the terminator), ping, error. Unknown events and block types are ignored."""

    __slots__ = (
        "_adapter",
        "_blocks",
        "_cache_read",
        "_cache_write",
        "_calls",
        "_endpoint",
        "_extra",
        "_id",
        "_input",
        "_model",
        "_output",
        "_reasoning",
        "_saw_usage",
        "_signature",
        "_stop",
        "_text",
    )

    def __init__(self, adapter: BackendAdapter, endpoint: EndpointSpec) -> None:
        super().__init__()
        self._adapter = adapter
        self._endpoint = endpoint
        self._blocks: dict[int, _Block] = {}
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._signature: str | None = None
        self._calls: list[ToolCall] = []
        self._stop: str | None = None
        self._id: str | None = None
        self._model = ""
        self._input: int | None = None
        self._output: int | None = None
        self._cache_read: int | None = None
        self._cache_write: int | None = None
        self._saw_usage = False
        self._extra: dict[str, Any] = {}

    def feed(self, item: SSEEvent | str) -> Sequence[InferenceStreamEvent]:
        assert not isinstance(item, str)
        name = item.event
        if name == "ping":
            return NO_EVENTS
        data = item.data
        if name == "error":
            try:
                payload: Any = json.loads(data)
            except ValueError:
                payload = None
            raise inband_error(self._adapter, self._endpoint, payload, data)
        chunk = event_json(data)
        if not name:
            name = chunk.get("type") or ""
        if name == "content_block_delta":
            return self._delta(chunk)
        if name == "content_block_start":
            return self._start(chunk)
        if name == "content_block_stop":
            block = self._blocks.pop(chunk.get("index", 0), None)
            if block is not None and block.kind == "tool_use":
                call = block.tool_call()
                self._calls.append(call)
                return [InferenceStreamEvent(StreamEventType.TOOL_CALL, tool_call=call)]
            return NO_EVENTS
        if name == "message_start":
            message = chunk.get("message") or {}
            self._id = message.get("id")
            self._model = message.get("model") or ""
            self._take_usage(message.get("usage"))
            return NO_EVENTS
        if name == "message_delta":
            delta = chunk.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop = delta["stop_reason"]
            if delta.get("stop_sequence"):
                self._extra["stop_sequence"] = delta["stop_sequence"]
            self._take_usage(chunk.get("usage"))
            return NO_EVENTS
        if name == "message_stop":
            self.done = True
            usage = self._usage()
            if usage is None:
                return NO_EVENTS
            return [InferenceStreamEvent(StreamEventType.USAGE, usage=usage)]
        if name == "error":  # an unnamed event whose data says `"type": "error"`
            raise inband_error(self._adapter, self._endpoint, chunk, data)
        return NO_EVENTS

    def _start(self, chunk: Mapping[str, Any]) -> Sequence[InferenceStreamEvent]:
        start = chunk.get("content_block") or {}
        kind = start.get("type") or ""
        self._blocks[chunk.get("index", 0)] = _Block(kind, start)
        # A start block normally carries empty text; take any it does carry.
        if kind == "text" and start.get("text"):
            self._text.append(start["text"])
            return [InferenceStreamEvent(StreamEventType.TOKEN, start["text"])]
        if kind == "thinking" and start.get("thinking"):
            self._reasoning.append(start["thinking"])
            return [InferenceStreamEvent(StreamEventType.REASONING, start["thinking"])]
        return NO_EVENTS

    def _delta(self, chunk: Mapping[str, Any]) -> Sequence[InferenceStreamEvent]:
        delta = chunk.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text") or ""
            if not text:
                return NO_EVENTS
            self._text.append(text)
            return [InferenceStreamEvent(StreamEventType.TOKEN, text)]
        if kind == "input_json_delta":
            block = self._blocks.get(chunk.get("index", 0))
            if block is not None and block.kind == "tool_use":
                block.json.append(delta.get("partial_json") or "")
            return NO_EVENTS
        if kind == "thinking_delta":
            thinking = delta.get("thinking") or ""
            if not thinking:
                return NO_EVENTS
            self._reasoning.append(thinking)
            return [InferenceStreamEvent(StreamEventType.REASONING, thinking)]
        if kind == "signature_delta":
            # One per thinking block, just before its stop; the SDK assigns, never appends.
            self._signature = delta.get("signature") or self._signature
        return NO_EVENTS

    def _take_usage(self, usage: Any) -> None:
        """Counts are cumulative: each reported value replaces the previous one."""
        if not isinstance(usage, dict):
            return
        value = usage.get("input_tokens")
        if isinstance(value, int):
            self._input = value
            self._saw_usage = True
        value = usage.get("output_tokens")
        if isinstance(value, int):
            self._output = value
            self._saw_usage = True
        value = usage.get("cache_read_input_tokens")
        if isinstance(value, int):
            self._cache_read = value
            self._saw_usage = True
        value = usage.get("cache_creation_input_tokens")
        if isinstance(value, int):
            self._cache_write = value
            self._saw_usage = True

    def _usage(self) -> Usage | None:
        if not self._saw_usage:
            return None
        return anthropic_usage(self._input, self._output, self._cache_read, self._cache_write)

    def result(self) -> InferenceResult:
        raw: dict[str, Any] = {"stop_reason": self._stop, **self._extra}
        return InferenceResult(
            text="".join(self._text),
            tool_calls=list(self._calls),
            finish_reason=FINISH_REASONS.get(self._stop, FinishReason.OTHER),
            usage=self._usage(),
            model=self._model,
            response_id=self._id,
            reasoning="".join(self._reasoning),
            reasoning_signature=self._signature,
            raw=raw,
        )
