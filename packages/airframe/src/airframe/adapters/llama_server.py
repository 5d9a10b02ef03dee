"""llama.cpp's `llama-server`: its native `/completion` API, or its OpenAI-compatible `/v1`.

`EndpointSpec.base_url` is the server root (`http://127.0.0.1:8080`).

- `api_type="openai"`: Chat Completions at `/v1/chat/completions`, exactly as the OpenAI adapter
  (same body, parser and stream parser, by delegation), plus llama.cpp's `timings` in `raw`.
- `api_type="native"` (default): the chat is rendered by the server's own chat template
  (`POST /apply-template`), then completed by `POST /completion`. A raw prompt given as
  `extra_body={"prompt": ...}` skips the template. Tools need `api_type="openai"`.

Extras: `props`, `context_size`, `render_prompt`, `tokenize`, `count_tokens` (exact prompt tokens
before a call), `slots`.

Wire reference: llama.cpp `tools/server/README.md` (`/completion`, `/apply-template`, `/tokenize`,
`/health`, `/props`, `/slots`) and `format_error_response` in the server sources.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from .._config import BackendKind, EndpointSpec
from .._errors import (
    AirframeError,
    BadRequestError,
    ErrorCategory,
    NotFoundError,
    ProtocolError,
)
from .._streams import SSEEvent
from .._transport import inband_error, send_json, stream_events
from .._types import (
    FinishReason,
    ImagePart,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    StreamEventType,
    Usage,
)
from ._base import (
    NO_EVENTS,
    BackendAdapter,
    Capabilities,
    ErrorInfo,
    HealthStatus,
    StreamParser,
    WireRequest,
    error_fields,
    error_message,
    put_sampling,
)
from .openai import OpenAIAdapter, OpenAIStreamParser, context_numbers, openai_messages

if TYPE_CHECKING:
    from .._hooks import TransportHooks

__all__ = [
    "NATIVE_CAPABILITIES",
    "LlamaCompletionStreamParser",
    "LlamaServerAdapter",
    "completion_usage",
]

NATIVE_CAPABILITIES = Capabilities(tools=False, image_urls=False)
"""What `/completion` carries: no tool calling (use `api_type="openai"`), images as bytes only
(sent as `multimodal_data`; the server needs a multimodal projector loaded)."""

OPENAI_CAPABILITIES = Capabilities()

STOP_TYPES: Mapping[str, FinishReason] = {
    "eos": FinishReason.STOP,
    "word": FinishReason.STOP,
    "limit": FinishReason.LENGTH,
}

# llama-server's error `type` values (format_error_response) -> category.
_ERROR_TYPES: Mapping[str, ErrorCategory] = {
    "not_supported_error": ErrorCategory.BAD_REQUEST,
    "authentication_error": ErrorCategory.AUTH,
    "permission_error": ErrorCategory.AUTH,
    "not_found_error": ErrorCategory.NOT_FOUND,
    "unavailable_error": ErrorCategory.OVERLOADED,
    "server_error": ErrorCategory.SERVER,
}
# "request (300 tokens) exceeds the available context size (256 tokens), try increasing it"
_CONTEXT_NUMBERS = re.compile(r"(\d+) tokens\)? exceeds[^(\d]*\(?(\d+) tokens", re.IGNORECASE)
_FILTER_PHRASES = ("content blocked", "content filter", "moderation filter", "safety filter")
_CONTEXT_PHRASES = (
    "exceeds the available context size",
    "context size",
    "context length",
    "context window",
)

# /apply-template results are cached briefly, so `count_tokens` followed by `infer` (or the same
# request sent again) renders once. Entries expire so a server restarted with another model (and
# so another template) on the same URL is picked up.
_TEMPLATE_CACHE_SIZE = 64
_TEMPLATE_CACHE_TTL = 30.0
_TEMPLATE_CACHE_MAX_KEY = 64 * 1024
# Request fields that shape the rendered prompt; forwarded to /apply-template from `extra_body`.
_TEMPLATE_KEYS = ("chat_template_kwargs", "add_generation_prompt", "reasoning_format")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def completion_usage(payload: Mapping[str, Any]) -> Usage | None:
    """`Usage` of a `/completion` result: prompt = `tokens_evaluated` (the whole prompt, cached
    part included), output = `tokens_predicted`, cache reads = `timings.cache_n`.

    `tokens_cached` is not the reused prompt: it is the slot's KV position after the call
    (prompt + generated tokens). Without `cache_n` (older servers) the reused part is
    `tokens_evaluated - timings.prompt_n` when both are given.
    """
    evaluated = _int(payload.get("tokens_evaluated"))
    predicted = _int(payload.get("tokens_predicted"))
    if evaluated is None and predicted is None:
        return None
    timings = payload.get("timings")
    cached: int | None = None
    if isinstance(timings, dict):
        cached = _int(timings.get("cache_n"))
        if cached is None:
            processed = _int(timings.get("prompt_n"))
            if evaluated is not None and processed is not None and 0 <= processed <= evaluated:
                cached = evaluated - processed
    return Usage(input_tokens=evaluated, output_tokens=predicted, cache_read_tokens=cached or 0)


def _finish_reason(payload: Mapping[str, Any]) -> FinishReason:
    stop_type = payload.get("stop_type")
    if isinstance(stop_type, str):
        return STOP_TYPES.get(stop_type, FinishReason.OTHER)
    # Servers before `stop_type` said it with booleans.
    if payload.get("stopped_limit"):
        return FinishReason.LENGTH
    if payload.get("stopped_eos") or payload.get("stopped_word"):
        return FinishReason.STOP
    return FinishReason.OTHER


_RAW_KEYS = (
    "stop_type",
    "stopping_word",
    "truncated",
    "tokens_cached",
    "id_slot",
    "generation_settings",
)


def _raw(payload: Mapping[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {k: payload[k] for k in _RAW_KEYS if k in payload}
    if "timings" in payload:
        raw["timings"] = payload["timings"]
    return raw


def _classify(status: int | None, payload: Any, text: str) -> ErrorInfo:
    """llama-server's `{"error": {"code", "message", "type"}}` (also the bare inner object of the
    old `error:` SSE field) -> category; context errors carry `n_prompt_tokens` and `n_ctx`.

    llama.cpp's own error types and messages first; the rest is the OpenAI dialect's mapping
    (where the HTTP status decides unless the body names something more specific).
    """
    err = error_fields(payload)
    message = error_message(payload, text, status)
    etype = str(err.get("type") or "")
    lowered = message.lower()
    if any(p in lowered for p in _FILTER_PHRASES):  # a filtering proxy in front of the server
        return ErrorInfo(ErrorCategory.CONTENT_FILTER, message)
    if etype == "exceed_context_size_error" or (
        etype in ("", "invalid_request_error") and any(p in lowered for p in _CONTEXT_PHRASES)
    ):
        found = _CONTEXT_NUMBERS.search(message)
        prompt, window = (
            (int(found.group(1)), int(found.group(2))) if found else context_numbers(message)
        )
        n_prompt, n_ctx = _int(err.get("n_prompt_tokens")), _int(err.get("n_ctx"))
        return ErrorInfo(
            ErrorCategory.CONTEXT_LENGTH,
            message,
            prompt_tokens=n_prompt if n_prompt is not None else prompt,
            context_window=n_ctx if n_ctx is not None else window,
        )
    category = _ERROR_TYPES.get(etype)
    if category is not None:
        return ErrorInfo(category, message)
    if status is None and "loading model" in lowered:
        return ErrorInfo(ErrorCategory.OVERLOADED, message)
    return _OPENAI_DIALECT.classify_error(status, payload, text)


_OPENAI_DIALECT = OpenAIAdapter()
# llama-server closes the TCP connection after every stream while its headers still say
# keep-alive; reusing that pooled connection races the close ("server disconnected without
# sending a response"). Asking for `close` keeps streams off the pool.
STREAM_HEADERS: Mapping[str, str] = {"connection": "close"}


def _field_error(adapter: BackendAdapter, endpoint: EndpointSpec, data: str) -> AirframeError:
    """The error of an old-style `error: {...}` SSE field (decoded as an event named "error").
    It holds the bare error object; wrapped as `{"error": ...}` its `code` is the status."""
    try:
        payload: Any = json.loads(data)
    except ValueError:
        payload = {"error": {"message": data}}
    if not isinstance(payload, dict):
        payload = {"error": {"message": data}}
    elif "error" not in payload:
        payload = {"error": payload}
    return inband_error(adapter, endpoint, payload, json.dumps(payload))


class _OpenAIModeStreamParser(OpenAIStreamParser):
    """OpenAI chunks, plus llama-server's old `error:` SSE field read with its status code."""

    __slots__ = ()

    def feed(self, item: SSEEvent | str) -> Sequence[InferenceStreamEvent]:
        if not isinstance(item, str) and item.event == "error":
            raise _field_error(self._adapter, self._endpoint, item.data)
        return super().feed(item)


class _OpenAIMode(OpenAIAdapter):
    """The OpenAI adapter pointed at llama-server's `/v1`, reporting as llama_server."""

    kind = BackendKind.LLAMA_SERVER
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"

    def build_chat(
        self, endpoint: EndpointSpec, request: InferenceRequest, *, stream: bool
    ) -> WireRequest:
        wire = super().build_chat(endpoint, request, stream=stream)
        if stream:
            wire.headers = STREAM_HEADERS
        return wire

    def stream_parser(self, endpoint: EndpointSpec, request: InferenceRequest) -> StreamParser:
        return _OpenAIModeStreamParser(self, endpoint)

    def classify_error(self, status: int | None, payload: Any, text: str) -> ErrorInfo:
        return _classify(status, payload, text)


class LlamaServerAdapter(BackendAdapter):
    """llama-server, native (`/completion`) or OpenAI-compatible (`/v1`) per `api_type`."""

    kind = BackendKind.LLAMA_SERVER
    capabilities = NATIVE_CAPABILITIES
    completion_path = "/completion"
    template_path = "/apply-template"
    tokenize_path = "/tokenize"
    health_path = "/health"
    props_path = "/props"
    slots_path = "/slots"

    def __init__(self) -> None:
        self._openai = _OpenAIMode()
        self._templates: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._templates_lock = threading.Lock()

    # -- capabilities and checks -------------------------------------------------------------

    def capabilities_for(self, endpoint: EndpointSpec) -> Capabilities:
        """What this endpoint's wire protocol carries (`capabilities` is the native mode's)."""
        return OPENAI_CAPABILITIES if endpoint.api_type == "openai" else NATIVE_CAPABILITIES

    def check_request(self, endpoint: EndpointSpec, request: InferenceRequest) -> None:
        if endpoint.api_type == "openai":
            self._openai.check_request(endpoint, request)
            return
        if request.messages and request.tools:
            raise BadRequestError(
                "llama-server's native /completion API has no tool calling; "
                'use EndpointSpec(api_type="openai") for tools',
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        super().check_request(endpoint, request)

    # -- translation ---------------------------------------------------------------------------

    def auth_headers(self, endpoint: EndpointSpec) -> dict[str, str]:
        if endpoint.api_key:
            return {"authorization": f"Bearer {endpoint.api_key}"}
        return {}

    def completion_body(
        self, endpoint: EndpointSpec, request: InferenceRequest, prompt: Any, *, stream: bool
    ) -> dict[str, Any]:
        """The `/completion` body for an already rendered `prompt` (images go beside it)."""
        images = _image_data(request)
        body: dict[str, Any] = {
            "prompt": {"prompt_string": prompt, "multimodal_data": images} if images else prompt,
            "stream": stream,
        }
        if request.model:
            body["model"] = request.model
        put_sampling(body, request, "n_predict")
        fmt = request.response_format
        if fmt is not None:
            body["json_schema"] = (
                dict(fmt.schema or {}) if fmt.type == "json_schema" else {"type": "object"}
            )
        for key, value in request.extra_body.items():
            if key == "prompt" or key in _TEMPLATE_KEYS:
                continue
            body[key] = value
        return body

    def build_chat(
        self, endpoint: EndpointSpec, request: InferenceRequest, *, stream: bool
    ) -> WireRequest:
        """The chat request. Native mode needs the prompt rendered first (`infer` and
        `stream_infer` do that), so here it only works with `extra_body={"prompt": ...}`."""
        if endpoint.api_type == "openai":
            return self._openai.build_chat(endpoint, request, stream=stream)
        if "prompt" not in request.extra_body:
            raise BadRequestError(
                "a native llama-server request is rendered by the server's chat template first: "
                'use infer()/stream_infer(), or pass extra_body={"prompt": ...}',
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        prompt = request.extra_body["prompt"]
        body = self.completion_body(endpoint, request, prompt, stream=stream)
        return WireRequest("POST", self.completion_path, body)

    def parse_chat(self, endpoint: EndpointSpec, payload: Any) -> InferenceResult:
        if endpoint.api_type == "openai":
            return self._openai.parse_chat(endpoint, payload)
        if not isinstance(payload, dict):
            raise ProtocolError(
                f"/completion answered {type(payload).__name__}, not an object",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        if "error" in payload and "content" not in payload:
            raise inband_error(self, endpoint, payload)
        content = payload.get("content")
        return InferenceResult(
            text=content if isinstance(content, str) else "",
            tool_calls=[],
            finish_reason=_finish_reason(payload),
            usage=completion_usage(payload),
            model=str(payload.get("model") or ""),
            response_id=None,
            raw=_raw(payload),
        )

    def stream_parser(self, endpoint: EndpointSpec, request: InferenceRequest) -> StreamParser:
        if endpoint.api_type == "openai":
            return self._openai.stream_parser(endpoint, request)
        return LlamaCompletionStreamParser(self, endpoint)

    def classify_error(self, status: int | None, payload: Any, text: str) -> ErrorInfo:
        return _classify(status, payload, text)

    def models_request(self, endpoint: EndpointSpec) -> WireRequest:
        return WireRequest("GET", "/v1/models")

    def parse_models(self, payload: Any) -> list[str]:
        return self._openai.parse_models(payload)

    def health_request(self, endpoint: EndpointSpec) -> WireRequest:
        return WireRequest("GET", self.health_path)

    def parse_health(self, status: int, payload: Any) -> HealthStatus:
        """200: ready. 503 "Loading model": up but not ready (`loading`). Else an error."""
        info: dict[str, Any] = payload if isinstance(payload, dict) else {}
        if status < 400:
            return HealthStatus(ok=True, state="ok", info=info)
        message = error_message(payload, "", status)
        loading = error_fields(payload).get("type") == "unavailable_error" or (
            "loading" in f"{message} {info.get('status', '')}".lower()
        )
        if status == 503 and loading:
            return HealthStatus(ok=False, state="loading", detail=message, info=info)
        return HealthStatus(ok=False, state="error", detail=message, info=info)

    # -- calls ---------------------------------------------------------------------------------

    async def infer(
        self,
        endpoint: EndpointSpec,
        request: InferenceRequest,
        *,
        hooks: TransportHooks | None = None,
    ) -> InferenceResult:
        if endpoint.api_type == "openai":
            return await self._openai.infer(endpoint, request, hooks=hooks)
        self.check_request(endpoint, request)
        wire = await self._completion_request(endpoint, request, stream=False, hooks=hooks)
        result = await send_json(self, endpoint, wire, hooks=hooks, parse=self.parse_chat)
        assert isinstance(result, InferenceResult)
        return result

    def stream_infer(
        self,
        endpoint: EndpointSpec,
        request: InferenceRequest,
        *,
        hooks: TransportHooks | None = None,
    ) -> AsyncGenerator[InferenceStreamEvent, None]:
        if endpoint.api_type == "openai":
            return self._openai.stream_infer(endpoint, request, hooks=hooks)
        self.check_request(endpoint, request)
        return self._stream_native(endpoint, request, hooks)

    async def _stream_native(
        self, endpoint: EndpointSpec, request: InferenceRequest, hooks: TransportHooks | None
    ) -> AsyncGenerator[InferenceStreamEvent, None]:
        wire = await self._completion_request(endpoint, request, stream=True, hooks=hooks)
        events = stream_events(
            self, endpoint, wire, lambda: LlamaCompletionStreamParser(self, endpoint), hooks
        )
        async with aclosing(events):
            async for event in events:
                yield event

    async def _completion_request(
        self,
        endpoint: EndpointSpec,
        request: InferenceRequest,
        *,
        stream: bool,
        hooks: TransportHooks | None,
    ) -> WireRequest:
        if "prompt" in request.extra_body:
            prompt: Any = request.extra_body["prompt"]
        else:
            prompt = await self.render_prompt(endpoint, request, hooks=hooks)
        body = self.completion_body(endpoint, request, prompt, stream=stream)
        return WireRequest(
            "POST", self.completion_path, body, headers=STREAM_HEADERS if stream else None
        )

    # -- extras --------------------------------------------------------------------------------

    def template_body(self, endpoint: EndpointSpec, request: InferenceRequest) -> dict[str, Any]:
        """What `/apply-template` gets. In OpenAI mode it is the whole chat body (tools and
        template options included), so the prompt is the one the chat endpoint renders."""
        if endpoint.api_type == "openai":
            return self._openai.chat_body(endpoint, request, stream=False)
        body: dict[str, Any] = {"messages": openai_messages(request)}
        for key in _TEMPLATE_KEYS:
            if key in request.extra_body:
                body[key] = request.extra_body[key]
        return body

    async def render_prompt(
        self,
        endpoint: EndpointSpec,
        request: InferenceRequest,
        *,
        hooks: TransportHooks | None = None,
    ) -> str:
        """The request's messages rendered by the server's chat template (`/apply-template`)."""
        body = self.template_body(endpoint, request)
        key: tuple[str, str] | None = None
        if not request.has_images():  # image markers are random per server process
            text = json.dumps(body, separators=(",", ":"), sort_keys=True)
            if len(text) <= _TEMPLATE_CACHE_MAX_KEY:
                key = (endpoint.base_url, text)
                with self._templates_lock:
                    hit = self._templates.get(key)
                    if hit is not None and time.monotonic() - hit[0] < _TEMPLATE_CACHE_TTL:
                        self._templates.move_to_end(key)
                        return hit[1]
        wire = WireRequest("POST", self.template_path, body)
        payload = await send_json(self, endpoint, wire, hooks=hooks)
        prompt = payload.get("prompt") if isinstance(payload, dict) else None
        if not isinstance(prompt, str):
            raise ProtocolError(
                "/apply-template answered without a `prompt` string",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        if key is not None:
            with self._templates_lock:  # the adapter is shared by every thread's event loop
                self._templates[key] = (time.monotonic(), prompt)
                self._templates.move_to_end(key)
                while len(self._templates) > _TEMPLATE_CACHE_SIZE:
                    self._templates.popitem(last=False)
        return prompt

    def clear_template_cache(self) -> None:
        """Forget every cached `/apply-template` rendering."""
        with self._templates_lock:
            self._templates.clear()

    async def tokenize(
        self, endpoint: EndpointSpec, text: str, add_special: bool = False
    ) -> list[int]:
        """Token ids of `text` (`POST /tokenize`); `add_special` adds BOS as the model wants."""
        wire = WireRequest(
            "POST", self.tokenize_path, {"content": text, "add_special": add_special}
        )
        payload = await send_json(self, endpoint, wire, hooks=None)
        tokens = payload.get("tokens") if isinstance(payload, dict) else None
        if not isinstance(tokens, list):
            raise ProtocolError(
                "/tokenize answered without a `tokens` list",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        return [t["id"] if isinstance(t, dict) else int(t) for t in tokens]

    async def count_tokens(self, endpoint: EndpointSpec, request: InferenceRequest) -> int:
        """Exact prompt tokens of `request` before sending it: the server renders it with its
        chat template and tokenizes it as the completion would (special tokens added/parsed).
        Images cannot be counted this way."""
        if request.has_images():
            raise BadRequestError(
                "count_tokens cannot count image tokens (llama-server has no tokenizer endpoint "
                "for media)",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        prompt = request.extra_body.get("prompt")
        if not isinstance(prompt, str):
            prompt = await self.render_prompt(endpoint, request)
        return len(await self.tokenize(endpoint, prompt, add_special=True))

    async def props(self, endpoint: EndpointSpec) -> dict[str, Any]:
        """The server's global properties (`GET /props`)."""
        payload = await send_json(self, endpoint, WireRequest("GET", self.props_path), hooks=None)
        if not isinstance(payload, dict):
            raise ProtocolError(
                "/props answered something other than an object",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        return payload

    async def context_size(self, endpoint: EndpointSpec) -> int | None:
        """The context window a request gets (`default_generation_settings.n_ctx` of /props)."""
        props = await self.props(endpoint)
        settings = props.get("default_generation_settings")
        if isinstance(settings, dict):
            n_ctx = _int(settings.get("n_ctx"))
            if n_ctx is not None:
                return n_ctx
        return _int(props.get("n_ctx"))

    async def slots(self, endpoint: EndpointSpec) -> list[dict[str, Any]]:
        """Per-slot state (`GET /slots`). A server started with `--no-slots` raises
        `NotFoundError`."""
        try:
            payload = await send_json(
                self, endpoint, WireRequest("GET", self.slots_path), hooks=None
            )
        except AirframeError as exc:
            if exc.category is ErrorCategory.BAD_REQUEST and (
                exc.status_code == 501 or "not_supported" in json.dumps(exc.body)
            ):
                raise NotFoundError(
                    "the /slots endpoint is disabled on this llama-server (start it with --slots)",
                    status_code=exc.status_code,
                    backend=exc.backend,
                    endpoint=exc.endpoint,
                    request_id=exc.request_id,
                    body=exc.body,
                ) from exc
            raise
        if not isinstance(payload, list):
            raise ProtocolError(
                "/slots answered something other than a list",
                backend=self.kind.value,
                endpoint=endpoint.name,
            )
        return [s for s in payload if isinstance(s, dict)]


def _image_data(request: InferenceRequest) -> list[str]:
    """Base64 of every image, in message order (the order of the template's media markers)."""
    out: list[str] = []
    for message in request.messages:
        if isinstance(message.content, str):
            continue
        out.extend(p.base64_data() for p in message.content if isinstance(p, ImagePart))
    return out


class LlamaCompletionStreamParser(StreamParser):
    """`/completion` SSE chunks: `{"content": "...", "stop": false}`, then a final `stop: true`
    chunk with `stop_type`, token counts and `timings` (the terminator; the server may close
    right after it). Errors come as `data: {"error": {...}}` or, from older servers, as an
    `error: {...}` SSE field (decoded as an event named "error")."""

    __slots__ = ("_adapter", "_counts", "_endpoint", "_final", "_model", "_text", "_usage")

    def __init__(self, adapter: BackendAdapter, endpoint: EndpointSpec) -> None:
        super().__init__()
        self._adapter = adapter
        self._endpoint = endpoint
        self._text: list[str] = []
        self._final: dict[str, Any] | None = None
        self._usage: Usage | None = None
        self._counts: dict[str, Any] | None = None  # the last partial chunk that had counts
        self._model = ""

    def feed(self, item: SSEEvent | str) -> Sequence[InferenceStreamEvent]:
        assert not isinstance(item, str)
        data = item.data
        if item.event == "error":
            raise _field_error(self._adapter, self._endpoint, data)
        if data == "[DONE]":
            self.done = True
            return NO_EVENTS
        chunk = json.loads(data)
        if "error" in chunk:
            raise inband_error(self._adapter, self._endpoint, chunk, data)
        out: list[InferenceStreamEvent] | None = None
        content = chunk.get("content")
        if content and isinstance(content, str):
            self._text.append(content)
            out = [InferenceStreamEvent(StreamEventType.TOKEN, content)]
        if chunk.get("stop") is True:
            self.done = True
            self._final = chunk
            self._model = str(chunk.get("model") or "")
            self._usage = completion_usage(chunk)
            if self._usage is not None:
                ev = InferenceStreamEvent(StreamEventType.USAGE, usage=self._usage)
                out = [ev] if out is None else [*out, ev]
        elif "tokens_predicted" in chunk:  # recent servers count on every partial chunk
            self._counts = chunk
        return NO_EVENTS if out is None else out

    def result(self) -> InferenceResult:
        final = self._final
        usage = self._usage
        if final is None and self._counts is not None:
            usage = completion_usage(self._counts)  # counts so far: a broken stream is billed
        return InferenceResult(
            text="".join(self._text),
            tool_calls=[],
            finish_reason=_finish_reason(final) if final is not None else FinishReason.OTHER,
            usage=usage,
            model=self._model,
            response_id=None,
            raw=_raw(final) if final is not None else None,
        )
