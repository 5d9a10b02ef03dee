"""Telemetry of gateway calls: OpenTelemetry GenAI spans and metrics, structlog events.

The library side (`Telemetry`, used by `LLMGateway`) depends on `opentelemetry-api` only and costs
next to nothing until the application configures an SDK. The application side (`configure`,
`configure_logging`, the `redact_secrets` / `add_trace_context` processors) is for apps and demos;
`configure` needs the `otel` extra. Every emitted name is in `avionics.observability.semconv`.
See docs/observability.md.
"""

from typing import TYPE_CHECKING, Any

from . import semconv
from .logs import add_trace_context, redact_secrets
from .telemetry import CallTelemetry, Telemetry

if TYPE_CHECKING:
    from .app import ObservabilityHandle, configure, configure_logging

__all__ = [
    "CallTelemetry",
    "ObservabilityHandle",
    "Telemetry",
    "add_trace_context",
    "configure",
    "configure_logging",
    "redact_secrets",
    "semconv",
]


def __getattr__(name: str) -> Any:
    # The application-side helpers load on first use: the gateway never needs them.
    if name in ("ObservabilityHandle", "configure", "configure_logging"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
