"""Ollama's native API: `POST /api/chat` streamed as NDJSON, plus model management.

`EndpointSpec.base_url` is the server root (`http://127.0.0.1:11434`). Every request needs a
model name (`InferenceRequest.model`).

Extras: `show` (`/api/show`), `pull_model` (streamed `/api/pull` with progress), `ensure_model`
(pull only when missing), `is_available`.

Wire reference: ollama `docs/api.md` (`/api/chat`, `/api/tags`, `/api/show`, `/api/pull`,
`/api/version`). Durations on the wire are nanoseconds.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._config import BackendKind, EndpointSpec
from .._errors import BadRequestError, ErrorCategory, NotFoundError, ProtocolError
from .._retry import status_category
from .._transport import inband_error, send_json, stream_events
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
    HealthStatus,
    StreamFormat,
    StreamParser,
    WireRequest,
    error_message,
    put_sampling,
)

if TYPE_CHECKING:
    from .._hooks import TransportHooks
    from .._streams import SSEEvent

__all__ = ["OllamaAdapter", "OllamaStreamParser", "PullProgress", "PullStreamParser"]

DONE_REASONS: Mapping[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
}

_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
_NOT_FOUND_PHRASES = ("not found", "file does not exist", "no such model")
_CONTEXT_PHRASES = (
    "exceeds the context",
    "context length",
    "context window",
    "context size",
    "prompt is too long",
    "input length exceeds",
)
_BUSY_PHRASES = ("server busy", "maximum pending requests")
_QUOTA_PHRASES = ("quota", "billing", "spend limit", "spending limit")
_FILTER_PHRASES = ("content blocked", "content filter", "moderation filter", "safety filter")


_CONTEXT_NUMBERS = re.compile(r"(\d+) tokens\)? exceeds[^(\d]*\(?(\d+) tokens", re.IGNORECASE)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One progress line of `/api/pull`. `total`/`completed` are bytes of the layer `digest`
    (absent before the download of that layer starts)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    @property
    def fraction(self) -> float | None:
        """completed / total of the current layer, when both are known."""
        if self.total and self.completed is not None:
            return min(1.0, self.completed / self.total)
        return None


def _message(m: Message) -> dict[str, Any]:
    item: dict[str, Any] = {"role": m.role, "content": m.text()}
    if not isinstance(m.content, str):
        images = [p.base64_data() for p in m.content if isinstance(p, ImagePart)]
        if images:
            item["images"] = images
    if m.tool_calls:
        item["tool_calls"] = [
            {"function": {"name": c.name, "arguments": dict(c.arguments)}} for c in m.tool_calls
        ]
    if m.role == "tool" and m.name:
        item["tool_name"] = m.name
    return item


def ollama_messages(request: InferenceRequest) -> list[dict[str, Any]]:
    """The `messages` array: system prompt first, images as base64, tool calls as objects."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    out.extend(_message(m) for m in request.messages)
    return out


def ollama_usage(payload: Mapping[str, Any]) -> Usage | None:
    """Counts of a final object. A missing count is unknown (`None`), never 0: Ollama omits
    `prompt_eval_count` when the whole prompt came from its cache."""
    prompt = _int(payload.get("prompt_eval_count"))
    output = _int(payload.get("eval_count"))
    if prompt is None and output is None:
        return None
    return Usage(input_tokens=prompt, output_tokens=output)


def _per_second(count: Any, duration_ns: Any) -> float | None:
    n, ns = _int(count), _int(duration_ns)
    if n is None or not ns:
        return None
    return n * 1e9 / ns


def _raw(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Durations (ns) and derived rates of a final object, plus `done_reason`/`created_at`."""
    raw: dict[str, Any] = {k: payload[k] for k in _DURATIONS if k in payload}
    for key in ("done_reason", "created_at"):
        if key in payload:
            raw[key] = payload[key]
    rate = _per_second(payload.get("eval_count"), payload.get("eval_duration"))
    if rate is not None:
        raw["tokens_per_second"] = rate
    rate = _per_second(payload.get("prompt_eval_count"), payload.get("prompt_eval_duration"))
    if rate is not None:
        raw["prompt_tokens_per_second"] = rate
    return raw


def _finish(done_reason: Any, has_calls: bool) -> FinishReason:
    if has_calls and done_reason in (None, "stop"):
        return FinishReason.TOOL_CALLS
    if isinstance(done_reason, str):
        return DONE_REASONS.get(done_reason, FinishReason.OTHER)
    return FinishReason.STOP if done_reason is None else FinishReason.OTHER


def _tool_call(call: Mapping[str, Any], ordinal: int) -> ToolCall:
    fn = call.get("function") or {}
    wire_args = fn.get("arguments")
    if isinstance(wire_args, str):  # not what Ollama sends, but keep it if it happens
        arguments = ToolCall.from_raw("", "", wire_args).arguments
        raw = wire_args
    else:
        arguments = dict(wire_args) if isinstance(wire_args, dict) else {}
        raw = json.dumps(arguments, ensure_ascii=False)
    call_id = call.get("id")
    return ToolCall(
        id=call_id if isinstance(call_id, str) and call_id else f"call_{ordinal}",
        name=str(fn.get("name") or ""),
        arguments=arguments,
        raw_arguments=raw,
    )


def _context_details(message: str) -> tuple[str, int | None, int | None]:
    """(message, prompt tokens, context window) of a context error. Ollama passes its llama.cpp
    runner's error on as a JSON string (`{"error": {"message", "n_prompt_tokens", "n_ctx"}}`)."""
    fields: Any = None
    if message.lstrip().startswith("{"):
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
    if isinstance(fields, dict):
        inner = fields.get("error", fields)
        if isinstance(inner, dict):
            text = inner.get("message")
            if isinstance(text, str) and text:
                message = text
            prompt, window = _int(inner.get("n_prompt_tokens")), _int(inner.get("n_ctx"))
            if prompt is not None or window is not None:
                return message, prompt, window
        elif isinstance(inner, str) and inner:
            message = inner
    found = _CONTEXT_NUMBERS.search(message)
    if found is None:
        return message, None, None
    return message, int(found.group(1)), int(found.group(2))


class OllamaAdapter(BackendAdapter):
    """Ollama `/api/chat` over NDJSON; `/api/tags`, `/api/show`, `/api/pull` for models."""

    kind = BackendKind.OLLAMA
    stream_format = StreamFormat.NDJSON
    capabilities = Capabilities(image_urls=False)
    chat_path = "/api/chat"

    def auth_headers(self, endpoint: EndpointSpec) -> dict[str, str]:
        if endpoint.api_key:
            return {"authorization": f"Bearer {endpoint.api_key}"}
        return {}

    def check_request(self, endpoint: EndpointSpec, request: InferenceRequest) -> None:
        if not request.model and request.messages:
            raise BadRequestError(
                "Ollama needs a model name: set InferenceRequest.model (e.g. 'llama3.2')",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        super().check_request(endpoint, request)

    def chat_body(self, request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": ollama_messages(request),
            "stream": stream,
        }
        options: dict[str, Any] = {}
        put_sampling(options, request, "num_predict")
        if request.tools and request.tool_choice != "none":
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
        fmt = request.response_format
        if fmt is not None:
            body["format"] = "json" if fmt.type == "json_object" else dict(fmt.schema or {})
        for key, value in request.extra_body.items():
            if key == "options" and isinstance(value, Mapping):
                options.update(value)
            else:  # keep_alive, think, and anything newer
                body[key] = value
        if options:
            body["options"] = options
        return body

    def build_chat(
        self, endpoint: EndpointSpec, request: InferenceRequest, *, stream: bool
    ) -> WireRequest:
        return WireRequest("POST", self.chat_path, self.chat_body(request, stream=stream))

    def parse_chat(self, endpoint: EndpointSpec, payload: Any) -> InferenceResult:
        if not isinstance(payload, dict):
            raise ProtocolError(
                f"/api/chat answered {type(payload).__name__}, not an object",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        if "error" in payload:
            raise inband_error(self, endpoint, payload)
        message = payload.get("message") or {}
        calls = [_tool_call(c, i) for i, c in enumerate(message.get("tool_calls") or ())]
        return InferenceResult(
            text=message.get("content") or "",
            tool_calls=calls,
            finish_reason=_finish(payload.get("done_reason"), bool(calls)),
            usage=ollama_usage(payload),
            model=str(payload.get("model") or ""),
            response_id=None,
            reasoning=message.get("thinking") or "",
            raw=_raw(payload),
        )

    def stream_parser(self, endpoint: EndpointSpec, request: InferenceRequest) -> StreamParser:
        return OllamaStreamParser(self, endpoint)

    def classify_error(self, status: int | None, payload: Any, text: str) -> ErrorInfo:
        """Ollama errors are `{"error": "text"}`: the text says more than the status."""
        message = error_message(payload, text, status)
        lowered = message.lower()
        if any(p in lowered for p in _CONTEXT_PHRASES):
            message, prompt_tokens, window = _context_details(message)
            return ErrorInfo(
                ErrorCategory.CONTEXT_LENGTH,
                message,
                prompt_tokens=prompt_tokens,
                context_window=window,
            )
        if status == 404 or (
            status in (None, 400, 500) and any(p in lowered for p in _NOT_FOUND_PHRASES)
        ):
            return ErrorInfo(ErrorCategory.NOT_FOUND, message)
        if status == 503 or any(p in lowered for p in _BUSY_PHRASES):
            return ErrorInfo(ErrorCategory.OVERLOADED, message)
        if status in (None, 429) and any(p in lowered for p in _QUOTA_PHRASES):
            return ErrorInfo(ErrorCategory.QUOTA, message)
        if any(p in lowered for p in _FILTER_PHRASES):
            return ErrorInfo(ErrorCategory.CONTENT_FILTER, message)
        if status is not None:
            return ErrorInfo(status_category(status), message)
        if "too many requests" in lowered or "rate limit" in lowered:
            return ErrorInfo(ErrorCategory.RATE_LIMIT, message)
        if "unauthorized" in lowered:
            return ErrorInfo(ErrorCategory.AUTH, message)
        return ErrorInfo(ErrorCategory.SERVER, message)

    def models_request(self, endpoint: EndpointSpec) -> WireRequest:
        return WireRequest("GET", "/api/tags")

    def parse_models(self, payload: Any) -> list[str]:
        models = payload.get("models") if isinstance(payload, dict) else None
        out: list[str] = []
        for m in models or ():
            if isinstance(m, dict):
                name = m.get("name") or m.get("model")
                if isinstance(name, str) and name:
                    out.append(name)
        return out

    def health_request(self, endpoint: EndpointSpec) -> WireRequest:
        return WireRequest("GET", "/api/version")

    def parse_health(self, status: int, payload: Any) -> HealthStatus:
        info: dict[str, Any] = payload if isinstance(payload, dict) else {}
        if status < 400:
            return HealthStatus(ok=True, state="ok", info=info)
        return HealthStatus(
            ok=False, state="error", detail=error_message(payload, "", status), info=info
        )

    # -- model management ----------------------------------------------------------------------

    async def is_available(self, endpoint: EndpointSpec) -> bool:
        """Whether the server answers (`GET /api/version`); never raises."""
        return (await self.health_check(endpoint)).ok

    async def show(self, endpoint: EndpointSpec, name: str) -> dict[str, Any]:
        """Details of a local model (`POST /api/show`); `NotFoundError` when it is not there."""
        wire = WireRequest("POST", "/api/show", {"model": name})
        payload = await send_json(self, endpoint, wire, hooks=None)
        if not isinstance(payload, dict):
            raise ProtocolError(
                "/api/show answered something other than an object",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        return payload

    async def pull_model(
        self,
        endpoint: EndpointSpec,
        name: str,
        progress: Callable[[PullProgress], None] | None = None,
        *,
        hooks: TransportHooks | None = None,
    ) -> None:
        """Download `name` (`POST /api/pull`, streamed). `progress` sees every status line.

        Returns once the server says `success`; an `{"error": ...}` line raises its typed error.
        A pull broken off is retried per the endpoint's policy (Ollama resumes it). The
        endpoint's `first_token` and `total` bounds are for inference and do not apply; the
        `read` bound (longest silence) does.
        """
        timeouts = dataclasses.replace(endpoint.timeouts, first_token=None, total=None)
        target = dataclasses.replace(endpoint, timeouts=timeouts)
        wire = WireRequest("POST", "/api/pull", {"model": name, "stream": True})
        events = stream_events(
            self, target, wire, lambda: PullStreamParser(self, target, name, progress), hooks
        )
        async with aclosing(events):
            async for _ in events:
                pass

    async def ensure_model(
        self,
        endpoint: EndpointSpec,
        name: str,
        progress: Callable[[PullProgress], None] | None = None,
    ) -> bool:
        """Pull `name` unless the server has it already. Returns whether it pulled."""
        try:
            await self.show(endpoint, name)
        except NotFoundError:
            await self.pull_model(endpoint, name, progress)
            return True
        return False


class OllamaStreamParser(StreamParser):
    """NDJSON chat lines: `message.content` (text), `message.thinking` (reasoning),
    `message.tool_calls` (complete calls, arguments as objects); the `done: true` line ends the
    stream with `done_reason`, counts and durations. `{"error": "..."}` raises."""

    __slots__ = (
        "_adapter",
        "_calls",
        "_endpoint",
        "_final",
        "_model",
        "_reasoning",
        "_text",
        "_usage",
    )

    def __init__(self, adapter: BackendAdapter, endpoint: EndpointSpec) -> None:
        super().__init__()
        self._adapter = adapter
        self._endpoint = endpoint
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[ToolCall] = []
        self._final: dict[str, Any] | None = None
        self._usage: Usage | None = None
        self._model = ""

    def feed(self, item: SSEEvent | str) -> Sequence[InferenceStreamEvent]:
        assert isinstance(item, str)
        line = json.loads(item)
        if "error" in line:
            raise inband_error(self._adapter, self._endpoint, line, item)
        out: list[InferenceStreamEvent] | None = None
        message = line.get("message")
        if message:
            content = message.get("content")
            if content:
                self._text.append(content)
                out = [InferenceStreamEvent(StreamEventType.TOKEN, content)]
            thinking = message.get("thinking")
            if thinking:
                self._reasoning.append(thinking)
                ev = InferenceStreamEvent(StreamEventType.REASONING, thinking)
                out = [ev] if out is None else [*out, ev]
            for call in message.get("tool_calls") or ():
                tool_call = _tool_call(call, len(self._calls))
                self._calls.append(tool_call)
                ev = InferenceStreamEvent(StreamEventType.TOOL_CALL, tool_call=tool_call)
                out = [ev] if out is None else [*out, ev]
        if line.get("done") is True:
            self.done = True
            self._final = line
            self._model = str(line.get("model") or "")
            self._usage = ollama_usage(line)
            if self._usage is not None:
                ev = InferenceStreamEvent(StreamEventType.USAGE, usage=self._usage)
                out = [ev] if out is None else [*out, ev]
        elif not self._model and line.get("model"):
            self._model = str(line["model"])
        return NO_EVENTS if out is None else out

    def result(self) -> InferenceResult:
        final = self._final
        return InferenceResult(
            text="".join(self._text),
            tool_calls=list(self._calls),
            finish_reason=(
                _finish(final.get("done_reason"), bool(self._calls))
                if final is not None
                else FinishReason.OTHER
            ),
            usage=self._usage,
            model=self._model,
            response_id=None,
            reasoning="".join(self._reasoning),
            raw=_raw(final) if final is not None else None,
        )


class PullStreamParser(StreamParser):
    """`/api/pull` NDJSON: progress lines, then `{"status": "success"}` (the terminator).

    It yields no stream events (so a broken pull is retried whole by the transport); each line
    goes to the `progress` callback.
    """

    __slots__ = ("_adapter", "_endpoint", "_last", "_name", "_progress")

    def __init__(
        self,
        adapter: BackendAdapter,
        endpoint: EndpointSpec,
        name: str,
        progress: Callable[[PullProgress], None] | None,
    ) -> None:
        super().__init__()
        self._adapter = adapter
        self._endpoint = endpoint
        self._name = name
        self._progress = progress
        self._last = ""

    def feed(self, item: SSEEvent | str) -> Sequence[InferenceStreamEvent]:
        assert isinstance(item, str)
        line = json.loads(item)
        if "error" in line:
            raise inband_error(self._adapter, self._endpoint, line, item)
        status = str(line.get("status") or "")
        self._last = status
        if self._progress is not None:
            digest = line.get("digest")
            self._progress(
                PullProgress(
                    status=status,
                    digest=digest if isinstance(digest, str) else None,
                    total=_int(line.get("total")),
                    completed=_int(line.get("completed")),
                )
            )
        if status == "success":
            self.done = True
        return NO_EVENTS

    def result(self) -> InferenceResult:
        return InferenceResult(
            text=self._last,
            tool_calls=[],
            finish_reason=FinishReason.STOP if self.done else FinishReason.OTHER,
            usage=None,
            model=self._name,
            response_id=None,
        )
