"""OpenAI Chat Completions, and every service that speaks it (Groq, vLLM, Together, OpenRouter,
LM Studio, llama-server's `/v1`): one adapter, another `base_url`.

Wire reference: https://platform.openai.com/docs/api-reference/chat and openai-python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._config import BackendKind, EndpointSpec
from .._errors import ErrorCategory
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
    ErrorInfo,
    StreamParser,
    WireRequest,
    error_fields,
    error_message,
    put_sampling,
)

__all__ = ["OpenAIAdapter", "OpenAIStreamParser", "openai_messages", "openai_usage"]

FINISH_REASONS: Mapping[str | None, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}

_CONTEXT_NUMBERS = re.compile(r"(\d[\d,]*)")
_URL = re.compile(r"https?://\S+")
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation", "invalid_prompt"})
_QUOTA_WORDS = ("quota", "billing", "spend limit", "spending limit", "credit")


def _content(message: Message) -> str | list[dict[str, Any]]:
    if isinstance(message.content, str):
        return message.content
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": part.as_url()}})
        else:
            parts.append({"type": "text", "text": part.text})
    return parts


def openai_messages(request: InferenceRequest) -> list[dict[str, Any]]:
    """The `messages` array: system prompt first, tool calls and tool results in OpenAI shape."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for m in request.messages:
        item: dict[str, Any] = {"role": m.role, "content": _content(m)}
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": c.raw_arguments or json.dumps(c.arguments),
                    },
                }
                for c in m.tool_calls
            ]
            if not item["content"]:
                item["content"] = None
        if m.tool_call_id is not None:
            item["tool_call_id"] = m.tool_call_id
        if m.name is not None and m.role != "tool":
            item["name"] = m.name
        out.append(item)
    return out


def openai_usage(usage: Mapping[str, Any] | None) -> Usage | None:
    """`Usage` from an OpenAI usage object (`prompt_tokens` already includes cached tokens)."""
    if not usage:
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else None,
        output_tokens=completion if isinstance(completion, int) else None,
        cache_read_tokens=prompt_details.get("cached_tokens") or 0,
        reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
    )


def _tool_choice(choice: str | Mapping[str, Any] | None) -> Any:
    if choice is None or not isinstance(choice, str):
        return choice
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def context_numbers(message: str) -> tuple[int | None, int | None]:
    """(prompt_tokens, context_window) from OpenAI's 'maximum context length is N ... M tokens'."""
    numbers = [int(n.replace(",", "")) for n in _CONTEXT_NUMBERS.findall(message)]
    if len(numbers) >= 2:
        return numbers[1], numbers[0]
    return None, numbers[0] if numbers else None


class OpenAIAdapter(BackendAdapter):
    """Chat Completions over SSE. `base_url` includes `/v1`."""

    kind = BackendKind.OPENAI
    chat_path = "/chat/completions"
    models_path = "/models"

    def auth_headers(self, endpoint: EndpointSpec) -> dict[str, str]:
        if endpoint.api_key:
            return {"authorization": f"Bearer {endpoint.api_key}"}
        return {}

    def _max_tokens_field(self, endpoint: EndpointSpec) -> str:
        # OpenAI's reasoning models refuse `max_tokens`; compatible servers only know `max_tokens`.
        return "max_completion_tokens" if endpoint.host == "api.openai.com" else "max_tokens"

    def chat_body(
        self, endpoint: EndpointSpec, request: InferenceRequest, *, stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": openai_messages(request)}
        if request.model:
            body["model"] = request.model
        put_sampling(body, request, self._max_tokens_field(endpoint))
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        fmt = request.response_format
        if fmt is not None:
            if fmt.type == "json_object":
                body["response_format"] = {"type": "json_object"}
            else:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": fmt.name,
                        "schema": dict(fmt.schema or {}),
                        "strict": fmt.strict,
                    },
                }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if request.extra_body:
            body.update(request.extra_body)
        return body

    def build_chat(
        self, endpoint: EndpointSpec, request: InferenceRequest, *, stream: bool
    ) -> WireRequest:
        return WireRequest("POST", self.chat_path, self.chat_body(endpoint, request, stream=stream))

    def parse_chat(self, endpoint: EndpointSpec, payload: Any) -> InferenceResult:
        if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
            raise inband_error(self, endpoint, payload)
        choices = payload.get("choices") or [{}]
        choice = choices[0]
        message = choice.get("message") or {}
        calls = [
            ToolCall.from_raw(
                c.get("id") or f"call_{i}",
                c["function"]["name"],
                c["function"].get("arguments") or "",
            )
            for i, c in enumerate(message.get("tool_calls") or ())
        ]
        raw = {k: v for k, v in payload.items() if k not in ("choices", "usage")}
        return InferenceResult(
            text=message.get("content") or "",
            tool_calls=calls,
            finish_reason=FINISH_REASONS.get(choice.get("finish_reason"), FinishReason.OTHER),
            usage=openai_usage(payload.get("usage")),
            model=payload.get("model") or "",
            response_id=payload.get("id"),
            reasoning=message.get("reasoning_content") or message.get("reasoning") or "",
            refusal=message.get("refusal") or "",
            raw=raw,
        )

    def stream_parser(self, endpoint: EndpointSpec, request: InferenceRequest) -> StreamParser:
        return OpenAIStreamParser(self, endpoint)

    def classify_error(self, status: int | None, payload: Any, text: str) -> ErrorInfo:
        err = error_fields(payload)
        message = error_message(payload, text, status)
        code = str(err.get("code") or "")
        etype = str(err.get("type") or "")
        lowered = message.lower()
        if (
            code == "context_length_exceeded"
            or etype == "exceed_context_size_error"
            or "context length" in lowered
            or "context window" in lowered
        ):
            prompt, window = context_numbers(message)
            n_prompt, n_ctx = err.get("n_prompt_tokens"), err.get("n_ctx")
            return ErrorInfo(
                ErrorCategory.CONTEXT_LENGTH,
                message,
                prompt_tokens=n_prompt if isinstance(n_prompt, int) else prompt,
                context_window=n_ctx if isinstance(n_ctx, int) else window,
            )
        if code in _FILTER_CODES or "content_filter" in etype:
            return ErrorInfo(ErrorCategory.CONTENT_FILTER, message)
        if (
            code == "insufficient_quota"
            or etype == "insufficient_quota"
            # Services link every rate-limit message to a "quota increase" page: only quota
            # words outside URLs make a 429 a quota error.
            or (status == 429 and any(w in _URL.sub(" ", lowered) for w in _QUOTA_WORDS))
        ):
            return ErrorInfo(ErrorCategory.QUOTA, message)
        if code in ("invalid_api_key", "invalid_authentication") or etype == "authentication_error":
            return ErrorInfo(ErrorCategory.AUTH, message)
        if code == "model_not_found":
            return ErrorInfo(ErrorCategory.NOT_FOUND, message)
        if status is not None:
            return ErrorInfo(status_category(status), message)
        # An in-band error: no HTTP status, only what the event says.
        inner = err.get("code")
        if isinstance(inner, int):
            return ErrorInfo(status_category(inner), message)
        if "overload" in etype or "overload" in code:
            return ErrorInfo(ErrorCategory.OVERLOADED, message)
        if "rate_limit" in etype or "rate_limit" in code:
            return ErrorInfo(ErrorCategory.RATE_LIMIT, message)
        if etype in ("invalid_request_error", "invalid_request"):
            return ErrorInfo(ErrorCategory.BAD_REQUEST, message)
        return ErrorInfo(ErrorCategory.SERVER, message)

    def models_request(self, endpoint: EndpointSpec) -> WireRequest:
        return WireRequest("GET", self.models_path)

    def parse_models(self, payload: Any) -> list[str]:
        return [m["id"] for m in payload.get("data") or () if isinstance(m, dict) and "id" in m]


def _error_payload(data: str) -> dict[str, Any]:
    """`{"error": {...}}` from a bare error object, an error body, or plain text."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return {"error": {"message": data.strip() or "stream error"}}
    if isinstance(parsed, dict) and "error" in parsed:
        return parsed
    return {"error": parsed if isinstance(parsed, dict) else {"message": str(parsed)}}


class _PendingCall:
    __slots__ = ("args", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.args: list[str] = []


class OpenAIStreamParser(StreamParser):
    """Chat completion chunks: text, reasoning and refusal deltas, indexed tool-call deltas."""

    __slots__ = (
        "_adapter",
        "_calls",
        "_emitted_calls",
        "_endpoint",
        "_extra",
        "_finish",
        "_id",
        "_model",
        "_reasoning",
        "_refusal",
        "_text",
        "_usage",
    )

    def __init__(self, adapter: BackendAdapter, endpoint: EndpointSpec) -> None:
        super().__init__()
        self._adapter = adapter
        self._endpoint = endpoint
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, _PendingCall] = {}
        self._emitted_calls: list[ToolCall] | None = None
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._model = ""
        self._id: str | None = None
        self._extra: dict[str, Any] = {}

    def feed(self, item: SSEEvent | str) -> Sequence[InferenceStreamEvent]:
        assert not isinstance(item, str)
        data = item.data
        if data == "[DONE]":
            self.done = True
            return self._flush_calls()
        if item.event == "error":  # llama.cpp's older `error: {...}` SSE field
            raise inband_error(self._adapter, self._endpoint, _error_payload(data))
        chunk = event_json(data)
        if "error" in chunk:
            raise inband_error(self._adapter, self._endpoint, chunk, data)
        return self.feed_chunk(chunk)

    def feed_chunk(self, chunk: dict[str, Any]) -> Sequence[InferenceStreamEvent]:
        """One parsed `chat.completion.chunk` (subclasses inspect it before passing it on)."""
        if not self._id:
            self._id = chunk.get("id") or None
            self._model = chunk.get("model") or ""
        out: list[InferenceStreamEvent] | None = None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                if content:
                    self._text.append(content)
                    out = [InferenceStreamEvent(StreamEventType.TOKEN, content)]
                # The usual delta is {"content": "..."} alone: nothing else to look for.
                if not content or len(delta) > 1:
                    thinking = delta.get("reasoning_content") or delta.get("reasoning")
                    if thinking:
                        self._reasoning.append(thinking)
                        ev = InferenceStreamEvent(StreamEventType.REASONING, thinking)
                        out = [ev] if out is None else [*out, ev]
                    refusal = delta.get("refusal")
                    if refusal:
                        self._refusal.append(refusal)
                    if delta.get("tool_calls"):
                        self._add_call_deltas(delta["tool_calls"])
            finish = choice.get("finish_reason")
            if finish:
                self._finish = finish
                calls = self._flush_calls()
                if calls:
                    out = list(calls) if out is None else out + list(calls)
        usage = chunk.get("usage")
        if usage:
            self._usage = openai_usage(usage)
            ev = InferenceStreamEvent(StreamEventType.USAGE, usage=self._usage)
            out = [ev] if out is None else [*out, ev]
        if "timings" in chunk:  # llama-server's OpenAI mode adds its timings to the last chunk
            self._extra["timings"] = chunk["timings"]
        return NO_EVENTS if out is None else out

    def _add_call_deltas(self, deltas: list[dict[str, Any]]) -> None:
        for d in deltas:
            call = self._calls.get(d.get("index", 0))
            if call is None:
                call = self._calls[d.get("index", 0)] = _PendingCall()
            if d.get("id"):
                call.id = d["id"]
            fn = d.get("function") or {}
            if fn.get("name"):
                call.name += fn["name"]
            if fn.get("arguments"):
                call.args.append(fn["arguments"])

    def _flush_calls(self) -> Sequence[InferenceStreamEvent]:
        if self._emitted_calls is not None or not self._calls:
            return NO_EVENTS
        self._emitted_calls = [
            ToolCall.from_raw(c.id or f"call_{i}", c.name, "".join(c.args))
            for i, c in sorted(self._calls.items())
        ]
        return [
            InferenceStreamEvent(StreamEventType.TOOL_CALL, tool_call=c)
            for c in self._emitted_calls
        ]

    def result(self) -> InferenceResult:
        calls = self._emitted_calls
        if calls is None:
            calls = [
                ToolCall.from_raw(c.id or f"call_{i}", c.name, "".join(c.args))
                for i, c in sorted(self._calls.items())
            ]
        return InferenceResult(
            text="".join(self._text),
            tool_calls=list(calls),
            finish_reason=FINISH_REASONS.get(self._finish, FinishReason.OTHER),
            usage=self._usage,
            model=self._model,
            response_id=self._id,
            reasoning="".join(self._reasoning),
            refusal="".join(self._refusal),
            raw=self._extra or None,
        )
