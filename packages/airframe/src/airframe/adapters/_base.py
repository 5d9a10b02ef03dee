"""The adapter anatomy: what a backend module provides, and the calls every adapter shares.

A backend module only translates. It builds the wire request (`build_chat`), parses a whole
response (`parse_chat`), parses stream items one at a time (`StreamParser`), and classifies an error
body (`classify_error`). The shared transport sends every byte, runs retries and timeouts and
decodes SSE/NDJSON; the public methods below wire the two together.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .._config import BackendKind, EndpointSpec
from .._errors import AirframeError, BadRequestError, ErrorCategory
from .._retry import status_category
from .._types import InferenceRequest, InferenceResult, InferenceStreamEvent

if TYPE_CHECKING:
    from .._hooks import TransportHooks
    from .._streams import SSEEvent

__all__ = [
    "BackendAdapter",
    "Capabilities",
    "ErrorInfo",
    "HealthStatus",
    "StreamFormat",
    "StreamParser",
    "WireRequest",
]


class StreamFormat(StrEnum):
    SSE = "sse"
    NDJSON = "ndjson"


@dataclass(slots=True)
class WireRequest:
    """One HTTP request, relative to the endpoint's base URL."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an adapter read from an error response."""

    category: ErrorCategory
    message: str
    prompt_tokens: int | None = None
    context_window: int | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend's wire protocol can carry. Checked before any network I/O."""

    vision: bool = True
    tools: bool = True
    json_object: bool = True
    json_schema: bool = True
    image_urls: bool = True


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """`state`: "loading" while a server loads its model (up, not ready); "down" if unreachable."""

    ok: bool
    state: Literal["ok", "loading", "down", "error"]
    latency_ms: float | None = None
    detail: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)


class StreamParser(ABC):
    """Turns decoded stream items (SSE events or NDJSON lines) into stream events.

    Set `done` when the protocol's terminator arrives. Raise an `AirframeError` for an in-band
    error event. `result()` returns what was received so far (the whole answer once done).
    """

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    @abstractmethod
    def feed(self, item: SSEEvent | str) -> Sequence[InferenceStreamEvent]: ...

    @abstractmethod
    def result(self) -> InferenceResult: ...


NO_EVENTS: tuple[InferenceStreamEvent, ...] = ()


class BackendAdapter(ABC):
    """One wire dialect. Stateless: one instance serves every endpoint of its kind."""

    kind: ClassVar[BackendKind | str]  # a plug-in adapter uses its entry-point name
    stream_format: ClassVar[StreamFormat] = StreamFormat.SSE
    capabilities: ClassVar[Capabilities] = Capabilities()
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-request-id",)

    # -- translation: what each backend module implements ------------------------------------

    @abstractmethod
    def auth_headers(self, endpoint: EndpointSpec) -> dict[str, str]:
        """Headers that authenticate (and version) a request to `endpoint`."""

    @abstractmethod
    def build_chat(
        self, endpoint: EndpointSpec, request: InferenceRequest, *, stream: bool
    ) -> WireRequest: ...

    @abstractmethod
    def parse_chat(self, endpoint: EndpointSpec, payload: Any) -> InferenceResult: ...

    @abstractmethod
    def stream_parser(self, endpoint: EndpointSpec, request: InferenceRequest) -> StreamParser: ...

    def classify_error(self, status: int | None, payload: Any, text: str) -> ErrorInfo:
        """Category and message of an error response; the default reads the status only."""
        category = status_category(status) if status is not None else ErrorCategory.SERVER
        return ErrorInfo(category, _error_message(payload, text, status))

    def health_request(self, endpoint: EndpointSpec) -> WireRequest:
        return self.models_request(endpoint)

    def parse_health(self, status: int, payload: Any) -> HealthStatus:
        if status < 400:
            return HealthStatus(ok=True, state="ok")
        return HealthStatus(ok=False, state="error", detail=_error_message(payload, "", status))

    @abstractmethod
    def models_request(self, endpoint: EndpointSpec) -> WireRequest: ...

    @abstractmethod
    def parse_models(self, payload: Any) -> list[str]: ...

    # -- shared behaviour ------------------------------------------------------------------

    def capabilities_for(self, endpoint: EndpointSpec) -> Capabilities:
        """What `endpoint` can carry (some backends differ by `api_type`)."""
        return self.capabilities

    def check_request(self, endpoint: EndpointSpec, request: InferenceRequest) -> None:
        """Refuse, before any I/O, a request this backend's protocol cannot carry."""
        caps = self.capabilities_for(endpoint)
        problem = ""
        if not request.messages:
            problem = "the request has no messages"
        elif request.tools and not caps.tools:
            problem = "this backend does not support tool calling"
        elif request.response_format is not None:
            kind = request.response_format.type
            if (kind == "json_schema" and not caps.json_schema) or (
                kind == "json_object" and not caps.json_object
            ):
                problem = f"this backend does not support response_format {kind}"
        if not problem and request.has_images():
            if not caps.vision:
                problem = "this backend does not accept images"
            elif not caps.image_urls and _has_remote_image(request):
                problem = (
                    "this backend needs image bytes, not image URLs (pass ImagePart(data=...))"
                )
        if problem:
            raise BadRequestError(
                problem, backend=str(self.kind), endpoint=endpoint.name, status_code=None
            )

    async def infer(
        self,
        endpoint: EndpointSpec,
        request: InferenceRequest,
        *,
        hooks: TransportHooks | None = None,
    ) -> InferenceResult:
        """One whole answer (non-streamed), retried per the endpoint's `RetryPolicy`."""
        from .._transport import send_json

        self.check_request(endpoint, request)
        wire = self.build_chat(endpoint, request, stream=False)
        payload = await send_json(self, endpoint, wire, hooks=hooks, parse=self.parse_chat)
        assert isinstance(payload, InferenceResult)
        return payload

    def stream_infer(
        self,
        endpoint: EndpointSpec,
        request: InferenceRequest,
        *,
        hooks: TransportHooks | None = None,
    ) -> AsyncGenerator[InferenceStreamEvent, None]:
        """Stream events; `MESSAGE` (the whole result) is always last. Close it to stop early."""
        from .._transport import stream_events

        self.check_request(endpoint, request)
        wire = self.build_chat(endpoint, request, stream=True)
        return stream_events(
            self, endpoint, wire, lambda: self.stream_parser(endpoint, request), hooks
        )

    async def health_check(self, endpoint: EndpointSpec) -> HealthStatus:
        """Probe the endpoint once (no retries). Never raises for an unhealthy server."""
        from .._transport import probe

        started = time.perf_counter()
        try:
            status, payload = await probe(self, endpoint, self.health_request(endpoint))
        except AirframeError as exc:
            state: Literal["down", "error"] = (
                "down"
                if exc.category in (ErrorCategory.CONNECTION, ErrorCategory.TIMEOUT)
                else "error"
            )
            return HealthStatus(ok=False, state=state, detail=exc.message)
        health = self.parse_health(status, payload)
        latency = (time.perf_counter() - started) * 1000.0
        return HealthStatus(health.ok, health.state, latency, health.detail, health.info)

    async def list_models(self, endpoint: EndpointSpec) -> list[str]:
        """Model ids the endpoint serves."""
        from .._transport import send_json

        payload = await send_json(self, endpoint, self.models_request(endpoint), hooks=None)
        return self.parse_models(payload)


def _has_remote_image(request: InferenceRequest) -> bool:
    from .._types import ImagePart

    for message in request.messages:
        if isinstance(message.content, str):
            continue
        for part in message.content:
            if isinstance(part, ImagePart) and part.url and not part.url.startswith("data:"):
                return True
    return False


def _error_message(payload: Any, text: str, status: int | None) -> str:
    """The most specific human message in an error body, whatever its shape."""
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if isinstance(msg, str) and msg:
                return msg
        elif isinstance(err, str) and err:
            return err
        msg = payload.get("message") or payload.get("detail")
        if isinstance(msg, str) and msg:
            return msg
    snippet = " ".join(text.split())[:200]
    if snippet:
        return snippet
    return f"HTTP {status}" if status is not None else "request failed"


def put_sampling(into: dict[str, Any], request: InferenceRequest, max_tokens_key: str) -> None:
    """Copy the request's sampling parameters that are set into a wire body (or options)."""
    if request.max_tokens is not None:
        into[max_tokens_key] = request.max_tokens
    if request.temperature is not None:
        into["temperature"] = request.temperature
    if request.top_p is not None:
        into["top_p"] = request.top_p
    if request.stop:
        into["stop"] = list(request.stop)
    if request.seed is not None:
        into["seed"] = request.seed


def error_message(payload: Any, text: str = "", status: int | None = None) -> str:
    """Public to adapters: the best human message in an error body."""
    return _error_message(payload, text, status)


def error_fields(payload: Any) -> dict[str, Any]:
    """The `error` object of a body shaped `{"error": {...}}` (or the body itself), else {}."""
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            return err
    return {}
