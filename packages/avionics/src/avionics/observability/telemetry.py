"""The gateway's telemetry seam: one `CallTelemetry` per call, told about each attempt.

    telemetry = Telemetry.from_settings(settings)           # once per gateway
    call = telemetry.start_call(agent, request, stream=False, request_id=rid)
    hooks = call.attempt_hooks(record)                       # airframe hooks, or None
    call.attempt_finished(record, ledger_row)                # per attempt, failed ones too
    call.finish(response, error)                             # once; later calls do nothing

Spans (`invoke_agent {agent}` INTERNAL, a `chat {model}` CLIENT child per HTTP attempt), metrics
and structlog events, through the OpenTelemetry API only. Without an SDK no span is started and no
attribute is built (a type check per call decides), attempts get no airframe hooks, and debug
events are skipped while structlog is unconfigured. With one, attributes are built only for spans
that record (`is_recording()`), and nothing runs per streamed chunk.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

from airframe import InferenceRequest, TransportHooks

from . import content
from . import semconv as sc
from .logs import trace_ids
from .metrics import Instruments
from .spans import (
    AttemptHooks,
    closed_early,
    content_attributes,
    cost_value,
    error_description,
    error_type,
    request_attributes,
    result_attributes,
    server_attributes,
    set_error,
)

if TYPE_CHECKING:
    from ..accounting import AttemptRecord
    from ..ledger import LedgerRow
    from ..responses import LLMResponse
    from ..settings import AvionicsSettings

__all__ = ["CallTelemetry", "Telemetry", "capture_content_from_env"]

_SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
_TRUE = frozenset({"1", "true", "yes", "on"})


def capture_content_from_env() -> bool:
    """`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is true."""
    return os.environ.get(sc.CAPTURE_CONTENT_ENV, "").strip().lower() in _TRUE


class Telemetry:
    """Factory of per-call telemetry: holds the tracer, the instruments and the logger.

    `tracer_provider` / `meter_provider` default to the global ones (set by the application, for
    instance with `avionics.observability.configure()`); pass your own in tests. Content capture
    (`capture_content`) defaults to `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`.
    """

    def __init__(
        self,
        logger: Any = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: bool | None = None,
    ) -> None:
        self.log = logger if logger is not None else structlog.get_logger("avionics")
        self._default_logger = logger is None
        self.tracer = trace.get_tracer(
            sc.TRACER_NAME, _version(), tracer_provider, schema_url=_SCHEMA_URL
        )
        self.instruments = Instruments(meter_provider)
        self.capture_content = (
            capture_content_from_env() if capture_content is None else capture_content
        )
        # An explicit provider decides once; the global ones are looked at per call, so an SDK
        # configured after the gateway was built is picked up.
        self._tracing = None if tracer_provider is None else _live_tracing(tracer_provider)
        self._metering = None if meter_provider is None else _live_metrics(meter_provider)

    def tracing(self) -> bool:
        """Spans can record: some SDK provider is in place (else no span is even started)."""
        if self._tracing is not None:
            return self._tracing
        live = _live_tracing(trace.get_tracer_provider())
        if live:  # a global provider, once set, stays
            self._tracing = True
        return live

    def metering(self) -> bool:
        """Measurements go somewhere (else no attributes are built for them)."""
        if self._metering is not None:
            return self._metering
        live = _live_metrics(metrics.get_meter_provider())
        if live:
            self._metering = True
        return live

    @classmethod
    def from_settings(
        cls,
        settings: AvionicsSettings,
        logger: Any = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> Telemetry:
        """Content capture is on when `[observability] capture_content` or the env var says so."""
        capture = settings.observability.capture_content or capture_content_from_env()
        return cls(
            logger,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            capture_content=capture,
        )

    def start_call(
        self, agent: str, request: InferenceRequest, *, stream: bool, request_id: str
    ) -> CallTelemetry:
        return CallTelemetry(self, agent, request, stream, request_id)

    def verbose(self) -> bool:
        """Debug events are worth building: a logger was given, or structlog is configured (an
        unconfigured structlog prints every level to stdout, which a library must not cause)."""
        return not self._default_logger or structlog.is_configured()

    def log_fallback(
        self,
        agent: str,
        record: AttemptRecord,
        error: BaseException,
        call: CallTelemetry | None = None,
    ) -> None:
        """`llm_fallback`: the route of `record` failed and the next one will be tried. Pass the
        call's telemetry to put its trace and span ids on the event."""
        fields: dict[str, Any] = {
            "agent": agent,
            "provider": record.route.provider,
            "model": record.route.model,
            "attempt": record.attempt,
            "error_type": error_type(error),
        }
        if call is not None:
            fields["request_id"] = call.request_id
            call.add_trace_ids(fields)
        self.log.info("llm_fallback", **fields)

    def log_callback_error(self, name: str) -> None:
        self.log.exception("callback_failed", callback=name)


class CallTelemetry:
    """Observes one gateway call: its span, one `AttemptHooks` per attempt, its log events."""

    __slots__ = (
        "_attempts",
        "_cache_read",
        "_cache_write",
        "_context",
        "_cost",
        "_cost_known",
        "_done",
        "_first_route",
        "_last",
        "_metering",
        "_reasoning",
        "_started_ns",
        "_started_pc",
        "_telemetry",
        "agent",
        "log",
        "recording",
        "request",
        "request_id",
        "span",
        "stream",
        "verbose",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        agent: str,
        request: InferenceRequest,
        stream: bool,
        request_id: str,
    ) -> None:
        self._telemetry = telemetry
        self.log = telemetry.log
        self.agent = agent
        self.request = request
        self.stream = stream
        self.request_id = request_id
        self._started_pc = time.perf_counter()
        self._started_ns = 0
        self._attempts: dict[int, tuple[AttemptRecord, AttemptHooks]] = {}
        self._first_route: tuple[str, str] | None = None
        self._last: AttemptRecord | None = None
        self._done = False
        self._cost = 0.0
        self._cost_known = True
        self._cache_read = self._cache_write = self._reasoning = 0
        self._metering = telemetry.metering()
        self.verbose = telemetry.verbose()
        if telemetry.tracing():
            # Attributes go in with the start: the SDK checks them once, not again on a set.
            attrs: dict[str, Any] = {
                sc.GEN_AI_OPERATION_NAME: sc.OPERATION_INVOKE_AGENT,
                sc.GEN_AI_AGENT_NAME: agent,
                sc.AVIONICS_AGENT: agent,
                sc.AVIONICS_REQUEST_ID: request_id,
                sc.GEN_AI_REQUEST_STREAM: stream,
            }
            request_attributes(request, attrs)
            self.span = telemetry.tracer.start_span(
                sc.call_span_name(agent), kind=SpanKind.INTERNAL, attributes=attrs
            )
            self.recording = self.span.is_recording()
        else:
            self.span = trace.INVALID_SPAN
            self.recording = False
        self._context = None
        if self.recording:
            self._started_ns = time.time_ns()
            self._context = trace.set_span_in_context(self.span)
        if self.verbose:
            fields = {"agent": agent, "request_id": request_id, "stream": stream}
            self.add_trace_ids(fields)
            self.log.debug("llm_call_start", **fields)

    # -- attempts ----------------------------------------------------------------------------

    def attempt_hooks(self, record: AttemptRecord) -> TransportHooks | None:
        """airframe hooks for one attempt: spans when recording; for a stream, at least the time
        of its first chunk (the time-to-first-chunk metric). None otherwise."""
        self._note_route(record)
        if not self.recording:
            if not self.stream or not self._metering:
                return None  # nothing to observe: airframe skips every hook call
            hooks = AttemptHooks(None, None, "", None, self._clock)
        else:
            attrs = self._attempt_attributes(record)
            model = attrs.get(sc.GEN_AI_REQUEST_MODEL, "")
            hooks = AttemptHooks(
                self._telemetry.tracer, self._context, sc.attempt_span_name(model), attrs,
                self._clock,
            )  # fmt: skip
        self._attempts[record.attempt] = (record, hooks)
        return hooks

    def attempt_finished(self, record: AttemptRecord, row: LedgerRow) -> None:
        """Ledger row written: end the attempt's span with its cost; record its metrics."""
        self._note_route(record)
        self._last = record
        cost = cost_value(row.cost_usd)
        if cost is None:
            self._cost_known = False
        else:
            self._cost += cost
        self._cache_read += row.cache_read_tokens
        self._cache_write += row.cache_write_tokens
        self._reasoning += row.reasoning_tokens
        found = self._attempts.pop(record.attempt, None)
        hooks = found[1] if found is not None else None
        if self.recording:
            self._end_attempt_span(record, hooks, cost)
        if self._metering:
            self._record_metrics(record, row, hooks, cost)

    def _note_route(self, record: AttemptRecord) -> None:
        """The first attempt's route is what the agent asked for; later ones are fallbacks."""
        if self._first_route is None:
            route = record.route
            self._first_route = (route.provider, route.model)
            if self.recording and route.model:
                self.span.set_attribute(sc.GEN_AI_REQUEST_MODEL, route.model)

    def _end_attempt_span(
        self, record: AttemptRecord, hooks: AttemptHooks | None, cost: float | None
    ) -> None:
        extra: dict[str, Any] = {}
        if cost is not None:
            extra[sc.AVIONICS_COST_USD] = cost
        result = record.result
        if result is not None and self._telemetry.capture_content:
            extra[sc.GEN_AI_OUTPUT_MESSAGES] = content.output_messages(result)
        if hooks is not None and hooks.span is not None:
            hooks.finalize(record, extra)
            return
        if hooks is None or hooks.attributes is None:
            hooks = AttemptHooks(
                self._telemetry.tracer, self._context, "", self._attempt_attributes(record),
                self._clock,
            )  # fmt: skip
        assert hooks.attributes is not None
        hooks.name = sc.attempt_span_name(hooks.attributes.get(sc.GEN_AI_REQUEST_MODEL, ""))
        source = result if result is not None else record.partial
        if source is not None:
            result_attributes(source, extra)
        hooks.synthesize(record, extra)

    def _attempt_attributes(self, record: AttemptRecord) -> dict[str, Any]:
        from ..requests import for_route

        route = record.route
        request = for_route(self.request, route.model or None, route.params)
        model = route.model or getattr(record.provider, "default_model", None) or ""
        attrs: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OPERATION_CHAT,
            sc.GEN_AI_PROVIDER_NAME: sc.provider_name(route.kind),
            sc.GEN_AI_REQUEST_STREAM: self.stream,
            sc.AVIONICS_AGENT: self.agent,
            sc.AVIONICS_PROVIDER: route.provider,
            sc.AVIONICS_ATTEMPT: record.attempt,
            sc.AVIONICS_FALLBACK: (route.provider, route.model) != self._first_route,
        }
        if model:
            attrs[sc.GEN_AI_REQUEST_MODEL] = model
        if route.profile:
            attrs[sc.AVIONICS_PROFILE] = route.profile
        node = record.node
        if node is not None:
            attrs[sc.AVIONICS_NODE] = node.name
            attrs.update(server_attributes(node.endpoint.base_url))
        request_attributes(request, attrs)
        if self._telemetry.capture_content:
            content_attributes(request, attrs)
        return attrs

    def _metric_attributes(self, record: AttemptRecord) -> tuple[dict[str, Any], dict[str, Any]]:
        """(attributes of the duration, token and first-chunk metrics, of the cost counter)."""
        route = record.route
        cost_attrs: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OPERATION_CHAT,
            sc.GEN_AI_PROVIDER_NAME: sc.provider_name(route.kind),
            sc.AVIONICS_AGENT: self.agent,
            sc.AVIONICS_PROVIDER: route.provider,
        }
        model = route.model or getattr(record.provider, "default_model", None) or ""
        if model:
            cost_attrs[sc.GEN_AI_REQUEST_MODEL] = model
        attrs = dict(cost_attrs)
        if record.result is not None and record.result.model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = record.result.model
        if record.node is not None:
            attrs.update(server_attributes(record.node.endpoint.base_url))
        if record.error is not None and not closed_early(record.error):
            attrs[sc.ERROR_TYPE] = error_type(record.error)
        return attrs, cost_attrs

    def _record_metrics(
        self,
        record: AttemptRecord,
        row: LedgerRow,
        hooks: AttemptHooks | None,
        cost: float | None,
    ) -> None:
        attrs, cost_attrs = self._metric_attributes(record)
        started, ended = record.started, record.ended
        duration = ttfc = None
        if started is not None:
            if ended is not None and not closed_early(record.error):  # cut short: not a duration
                duration = ended - started
            if hooks is not None and hooks.first_chunk is not None:
                ttfc = hooks.first_chunk - started
        self._telemetry.instruments.record_attempt(
            attrs,
            cost_attrs,
            duration=duration,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            time_to_first_chunk=ttfc,
            cost=cost,
        )

    # -- the end -----------------------------------------------------------------------------

    def finish(self, response: LLMResponse | None, error: BaseException | None) -> None:
        """The call ended with `response` or `error` (GeneratorExit: the consumer closed the
        stream early). Ends every span still open. Only the first call counts."""
        if self._done:
            return
        self._done = True
        for record, hooks in self._attempts.values():  # cut short: no ledger row came
            if self._metering and hooks.first_chunk is not None and record.started is not None:
                attrs, _ = self._metric_attributes(record)
                self._telemetry.instruments.time_to_first_chunk.record(
                    hooks.first_chunk - record.started, attrs
                )
            hooks.abandon(error)
        self._attempts.clear()
        latency_ms = (time.perf_counter() - self._started_pc) * 1000.0
        if self.recording:
            self._end_call_span(response, error)
        if response is not None:
            if self.verbose:
                self._log_complete(response, latency_ms)
        elif error is not None and not closed_early(error):
            self._log_failed(error, latency_ms)

    def _log_failed(self, error: BaseException, latency_ms: float) -> None:
        cancelled = isinstance(error, asyncio.CancelledError)
        if cancelled and not self.verbose:
            return
        fields: dict[str, Any] = {
            "agent": self.agent,
            "request_id": self.request_id,
            "error_type": error_type(error),
            "error": error_description(error),
            "attempts": self._last.attempt if self._last is not None else 0,
            "latency_ms": round(latency_ms, 3),
        }
        self.add_trace_ids(fields)
        if cancelled:  # the caller gave up: not a failure worth a warning
            self.log.debug("llm_call_failed", **fields)
        else:
            self.log.warning("llm_call_failed", **fields)

    def _end_call_span(self, response: LLMResponse | None, error: BaseException | None) -> None:
        span = self.span
        attrs: dict[str, Any] = {}
        last = self._last
        if last is not None:
            attrs[sc.AVIONICS_ATTEMPT] = last.attempt
            attrs[sc.GEN_AI_PROVIDER_NAME] = sc.provider_name(last.route.kind)
            attrs[sc.AVIONICS_PROVIDER] = last.route.provider
            attrs[sc.AVIONICS_FALLBACK] = (
                last.route.provider,
                last.route.model,
            ) != self._first_route
        if response is not None:
            if last is not None and last.result is not None:
                result_attributes(last.result, attrs)
            attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = response.prompt_tokens
            attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = response.completion_tokens
            _set_positive(attrs, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, self._cache_read)
            _set_positive(attrs, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, self._cache_write)
            _set_positive(attrs, sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, self._reasoning)
        if self._cost_known and last is not None:
            attrs[sc.AVIONICS_COST_USD] = self._cost
        span.set_attributes(attrs)
        if error is not None:
            set_error(span, error)
        span.end()

    def _log_complete(self, response: LLMResponse, latency_ms: float) -> None:
        fields: dict[str, Any] = {
            "agent": self.agent,
            "request_id": self.request_id,
            "provider": response.provider,
            "model": response.model,
            "input_tokens": response.prompt_tokens,
            "output_tokens": response.completion_tokens,
            "cost_usd": response.cost_usd,
            "latency_ms": round(latency_ms, 3),
            "attempts": self._last.attempt if self._last is not None else 1,
            "fallback": bool(response.metadata.get("fallback_used")),
            "stream": self.stream,
        }
        self.add_trace_ids(fields)
        self.log.debug("llm_call_complete", **fields)

    # -- helpers -----------------------------------------------------------------------------

    def add_trace_ids(self, fields: dict[str, Any]) -> None:
        """Put the call span's `trace_id` / `span_id` on a log event (when the span is valid)."""
        ids = trace_ids(self.span)
        if ids is not None:
            fields["trace_id"], fields["span_id"] = ids

    def _clock(self, perf: float) -> int:
        """A `time.perf_counter()` reading as epoch nanoseconds (span timestamps)."""
        return self._started_ns + int((perf - self._started_pc) * 1e9)


try:  # the API's stand-in until an SDK is set; a private name, hence the fallback
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _NO_METRICS: tuple[type, ...] = (metrics.NoOpMeterProvider, _ProxyMeterProvider)
except ImportError:  # pragma: no cover - another API version: always measure
    _NO_METRICS = (metrics.NoOpMeterProvider,)
_NO_TRACING: tuple[type, ...] = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def _live_tracing(provider: trace.TracerProvider) -> bool:
    return not isinstance(provider, _NO_TRACING)


def _live_metrics(provider: metrics.MeterProvider) -> bool:
    return not isinstance(provider, _NO_METRICS)


def _set_positive(attrs: dict[str, Any], key: str, value: int) -> None:
    if value:
        attrs[key] = value


def _version() -> str:
    from .. import __version__

    return __version__
