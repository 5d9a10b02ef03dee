"""Telemetry of gateway calls: OpenTelemetry spans and metrics, structlog events."""

from .telemetry import CallTelemetry, Telemetry

__all__ = ["CallTelemetry", "Telemetry"]
