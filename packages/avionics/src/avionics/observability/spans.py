"""Span attributes of gateway calls and the airframe hooks that open one span per HTTP attempt.

Everything here runs only for recording spans, except `AttemptHooks` of a stream without a
recording span, which only notes when the first chunk arrived (for the time-to-first-chunk metric).
Nothing runs per streamed chunk: the first chunk's time comes from airframe's `on_first_token`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from airframe import AirframeError, AttemptInfo, InferenceRequest, InferenceResult, TransportHooks

from ..errors import AttemptFailed, BudgetExceededError, GatewayError, RateLimitedLocally
from . import content
from . import semconv as sc

if TYPE_CHECKING:
    from ..accounting import AttemptRecord

__all__ = [
    "AttemptHooks",
    "closed_early",
    "error_type",
    "request_attributes",
    "result_attributes",
    "server_attributes",
]

Attributes = dict[str, Any]


def error_type(error: BaseException) -> str:
    """`error.type`: airframe's `ErrorCategory` value, an avionics reason, or the class name."""
    if isinstance(error, GatewayError):  # how the call ended: its last attempt's reason
        if not error.exceptions:
            return type(error).__name__
        last = error.exceptions[-1]
        if isinstance(last, AttemptFailed) and last.attempt.category:
            return last.attempt.category
        return error_type(last)
    category = getattr(error, "category", None)
    if category is not None:
        return str(getattr(category, "value", category))
    if isinstance(error, RateLimitedLocally):
        return sc.ERROR_RATE_LIMITED_LOCALLY
    if isinstance(error, BudgetExceededError):
        return sc.ERROR_BUDGET
    if isinstance(error, asyncio.CancelledError):
        return sc.ERROR_CANCELLED
    return type(error).__qualname__ or sc.ERROR_OTHER


def closed_early(error: BaseException | None) -> bool:
    """The consumer closed a stream before its end: not an error of the call."""
    return isinstance(error, GeneratorExit)


def error_description(error: BaseException) -> str:
    """The first line of the message (airframe and avionics messages never hold a key)."""
    text = error.message if isinstance(error, AirframeError) else str(error)
    line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return line[:300]


@lru_cache(maxsize=256)
def server_attributes(base_url: str) -> tuple[tuple[str, Any], ...]:
    """`server.address` and `server.port` of an endpoint URL (the port defaults by scheme)."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return ()
    host = parts.hostname
    if not host:
        return ()
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return ((sc.SERVER_ADDRESS, host), (sc.SERVER_PORT, port))


def request_attributes(request: InferenceRequest, attrs: Attributes) -> None:
    """The request parameters that are set (`gen_ai.request.*`, `gen_ai.output.type`)."""
    if request.max_tokens is not None:
        attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = request.max_tokens
    if request.temperature is not None:
        attrs[sc.GEN_AI_REQUEST_TEMPERATURE] = float(request.temperature)
    if request.top_p is not None:
        attrs[sc.GEN_AI_REQUEST_TOP_P] = float(request.top_p)
    if request.seed is not None:
        attrs[sc.GEN_AI_REQUEST_SEED] = request.seed
    if request.stop:
        attrs[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = list(request.stop)
    if request.response_format is not None:
        attrs[sc.GEN_AI_OUTPUT_TYPE] = "json"


def result_attributes(result: InferenceResult, attrs: Attributes) -> None:
    """`gen_ai.response.*` and `gen_ai.usage.*` of an answer (counts not reported are left out)."""
    if result.model:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = result.model
    if result.response_id:
        attrs[sc.GEN_AI_RESPONSE_ID] = result.response_id
    attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [sc.finish_reason(result.finish_reason)]
    usage = result.usage
    if usage is not None:
        if usage.input_tokens is not None:
            attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
        if usage.output_tokens is not None:
            attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        if usage.cache_read_tokens:
            attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
        if usage.cache_write_tokens:
            attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
        if usage.reasoning_tokens:
            attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens


def set_error(span: Span, error: BaseException) -> None:
    """`error.type` and status Error; a stream closed early is marked instead (not an error)."""
    if closed_early(error):
        span.set_attribute(sc.AVIONICS_CLOSED_EARLY, True)
        return
    span.set_attribute(sc.ERROR_TYPE, error_type(error))
    span.set_status(Status(StatusCode.ERROR, error_description(error)))


def cost_value(cost: Decimal | None) -> float | None:
    return float(cost) if cost is not None else None


class AttemptHooks(TransportHooks):
    """airframe hooks of one gateway attempt: a `chat {model}` CLIENT span per HTTP attempt.

    A span that ended (answer or error) stays open until the gateway reports the attempt's ledger
    row (`finalize`), so the cost lands on it; it is ended with the time the HTTP attempt ended.
    """

    def __init__(
        self,
        tracer: trace.Tracer | None,
        parent: Context | None,
        name: str,
        attributes: Attributes | None,
        clock: Callable[[float], int],
    ) -> None:
        self.tracer = tracer
        self.parent = parent
        self.name = name
        self.attributes = attributes  # None: no recording span (only the first chunk is noted)
        self.clock = clock
        self.span: Span | None = None
        self.span_started = 0.0
        self.ended_ns: int | None = None
        self.first_chunk: float | None = None

    # -- airframe hooks ------------------------------------------------------------------------

    def on_attempt_start(self, info: AttemptInfo) -> None:
        if self.attributes is None or self.tracer is None:
            return
        self._end_previous()
        attrs = self.attributes
        if info.attempt > 1:
            attrs = {**attrs, sc.HTTP_REQUEST_RESEND_COUNT: info.attempt - 1}
        self.span = self.tracer.start_span(
            self.name, context=self.parent, kind=SpanKind.CLIENT, attributes=attrs
        )
        self.span_started = time.perf_counter()
        self.ended_ns = None

    def on_first_token(self, info: AttemptInfo) -> None:
        now = time.perf_counter()
        if self.first_chunk is None:
            self.first_chunk = now
        if self.span is not None:
            self.span.set_attribute(sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, now - self.span_started)

    def on_attempt_end(self, info: AttemptInfo, result: InferenceResult | None) -> None:
        span = self.span
        if span is None:
            return
        if result is not None:
            attrs: Attributes = {}
            result_attributes(result, attrs)
            span.set_attributes(attrs)
        self.ended_ns = time.time_ns()

    def on_attempt_error(self, info: AttemptInfo, error: AirframeError) -> None:
        span = self.span
        if span is None:
            return
        set_error(span, error)
        self.ended_ns = time.time_ns()

    # -- gateway side --------------------------------------------------------------------------

    def _end_previous(self) -> None:
        """A retried HTTP attempt: its span is complete."""
        if self.span is not None:
            self.span.end(end_time=self.ended_ns)
            self.span = None

    def finalize(self, record: AttemptRecord, extra: Attributes) -> None:
        """The gateway attempt ended: put cost and content on the last span and end it."""
        span = self.span
        if span is None:
            return
        self.span = None
        if extra:
            span.set_attributes(extra)
        if record.error is not None and self.ended_ns is None:
            set_error(span, record.error)  # failed outside airframe's hooks
        span.end(end_time=self.ended_ns if self.ended_ns is not None else time.time_ns())

    def abandon(self, error: BaseException | None) -> None:
        """The call ended while this attempt was in flight (stream closed early, cancelled)."""
        span = self.span
        if span is None:
            return
        self.span = None
        if self.ended_ns is None:
            set_error(span, error if error is not None else GeneratorExit())
        span.end(end_time=self.ended_ns)

    def synthesize(self, record: AttemptRecord, extra: Attributes) -> None:
        """No HTTP attempt was observed (an in-process or test provider, or a refusal before
        I/O): one INTERNAL span stands for the attempt, over its measured time."""
        if self.tracer is None or self.attributes is None:
            return
        start = self.clock(record.started) if record.started is not None else time.time_ns()
        end = self.clock(record.ended) if record.ended is not None else start
        span = self.tracer.start_span(
            self.name,
            context=self.parent,
            kind=SpanKind.INTERNAL,
            attributes={**self.attributes, **extra},
            start_time=start,
        )
        if record.error is not None:
            set_error(span, record.error)
        span.end(end_time=max(end, start))


def content_attributes(request: InferenceRequest, attrs: Attributes) -> None:
    """Opt-in prompt content of one attempt."""
    attrs[sc.GEN_AI_INPUT_MESSAGES] = content.input_messages(request)
    system = content.system_instructions(request)
    if system is not None:
        attrs[sc.GEN_AI_SYSTEM_INSTRUCTIONS] = system
