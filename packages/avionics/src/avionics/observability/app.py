"""Application-side setup: the OpenTelemetry SDK and structlog. Libraries never call these.

    from avionics.observability import configure, configure_logging

    configure_logging()                                   # structlog: trace ids, secrets masked
    otel = configure(settings)                            # SDK + OTLP/HTTP exporter (+ console)
    ...
    otel.shutdown()                                       # flush what is buffered, then stop

The only module of avionics that imports `opentelemetry.sdk`, sets global providers or configures
structlog (ruff's banned-api rule allows it here alone). Needs the `otel` extra:
`pip install 'jeeves-avionics[otel]'`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from opentelemetry import metrics, trace

from .logs import add_trace_context, redact_secrets

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from ..settings import AvionicsSettings

__all__ = ["ObservabilityHandle", "configure", "configure_logging"]

_INSTALL_HINT = (
    "avionics.observability.configure() needs the OpenTelemetry SDK and OTLP exporter: "
    "pip install 'jeeves-avionics[otel]'"
)
_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass
class ObservabilityHandle:
    """What `configure()` set up. `shutdown()` flushes and stops both providers (call it once,
    before the process exits); the handle is also a context manager that does so."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    endpoint: str | None = None
    """The OTLP/HTTP base URL spans and metrics are exported to (None: no OTLP export)."""
    console: bool = False
    _closed: bool = field(default=False, repr=False)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything buffered now."""
        spans = self.tracer_provider.force_flush(timeout_millis)
        return bool(self.meter_provider.force_flush(timeout_millis)) and spans

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()

    def __enter__(self) -> ObservabilityHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def configure(
    settings: AvionicsSettings | None = None,
    *,
    console: bool = False,
    otlp_endpoint: str | None = None,
    service_name: str | None = None,
    set_global: bool = True,
    metric_export_interval: float = 60.0,
    console_stream: TextIO | None = None,
) -> ObservabilityHandle:
    """Set up the OpenTelemetry SDK: a TracerProvider and a MeterProvider exporting over
    OTLP/HTTP (protobuf) and/or to the console.

    The collector's base URL (`http://collector:4318`; `/v1/traces` and `/v1/metrics` are
    appended) comes from `otlp_endpoint`, else `settings.observability.otlp_endpoint`, else the
    standard `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` variables (read by the exporter itself, with
    `OTEL_EXPORTER_OTLP_HEADERS` and the rest). With none of them, nothing is exported over OTLP.
    `console` (or `settings.observability.console`) prints spans and metrics to stdout (or
    `console_stream`).
    `service.name` comes from `service_name`, else settings (when set there), else
    `OTEL_SERVICE_NAME`, else "avionics".

    `set_global=False` leaves the global providers alone: pass `handle.tracer_provider` and
    `handle.meter_provider` to `Telemetry(...)` yourself (tests do this). Raises ImportError with
    the install command when the `otel` extra is missing.
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc

    obs = settings.observability if settings is not None else None
    console = console or (obs is not None and obs.console)
    endpoint = otlp_endpoint or (obs.otlp_endpoint if obs is not None else None)
    from_env = endpoint is None and any(os.environ.get(name) for name in _ENDPOINT_ENVS)
    resource = Resource.create({"service.name": _service_name(service_name, settings)})

    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    interval_ms = metric_export_interval * 1000.0
    if endpoint is not None or from_env:
        span_exporter, metric_exporter = _otlp_exporters(endpoint)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        readers.append(
            PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval_ms)
        )
    if console:
        out = console_stream if console_stream is not None else sys.stdout
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
        readers.append(
            PeriodicExportingMetricReader(
                ConsoleMetricExporter(out=out), export_interval_millis=interval_ms
            )
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    shown = endpoint if endpoint is not None else _env_endpoint()
    return ObservabilityHandle(tracer_provider, meter_provider, shown, console)


def _otlp_exporters(endpoint: str | None) -> tuple[Any, Any]:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    if endpoint is None:  # the exporters read OTEL_EXPORTER_OTLP_* themselves
        return OTLPSpanExporter(), OTLPMetricExporter()
    traces, metrics_url = _signal_urls(endpoint)
    return OTLPSpanExporter(endpoint=traces), OTLPMetricExporter(endpoint=metrics_url)


def _signal_urls(endpoint: str) -> tuple[str, str]:
    """Per-signal URLs of an OTLP/HTTP base URL (a full `/v1/traces` URL is accepted too)."""
    base = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1/metrics"):
        base = base.removesuffix(suffix)
    return f"{base}/v1/traces", f"{base}/v1/metrics"


def _env_endpoint() -> str | None:
    for name in _ENDPOINT_ENVS:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _service_name(explicit: str | None, settings: AvionicsSettings | None) -> str:
    if explicit:
        return explicit
    if settings is not None and "service_name" in settings.observability.model_fields_set:
        return settings.observability.service_name
    return os.environ.get("OTEL_SERVICE_NAME") or (
        settings.observability.service_name if settings is not None else "avionics"
    )


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json: bool = False,
    stream: TextIO | None = None,
    extra_processors: tuple[Any, ...] = (),
) -> None:
    """Configure structlog for an application (or the demo): level filter, timestamps, the
    current span's `trace_id` / `span_id`, secrets masked, then a console or JSON renderer."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_context,
            *extra_processors,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream if stream is not None else sys.stderr),
        cache_logger_on_first_use=False,
    )
