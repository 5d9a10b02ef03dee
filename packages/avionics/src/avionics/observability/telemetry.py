"""The gateway's telemetry seam: one `CallTelemetry` per call, told about each attempt.

This baseline emits structlog events only; spans and metrics plug in behind the same methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from airframe import InferenceRequest, TransportHooks

if TYPE_CHECKING:
    from ..accounting import AttemptRecord
    from ..ledger import LedgerRow
    from ..responses import LLMResponse
    from ..settings import AvionicsSettings

__all__ = ["CallTelemetry", "Telemetry"]


class CallTelemetry:
    """Observes one gateway call."""

    __slots__ = ("agent", "log", "request_id")

    def __init__(self, log: Any, agent: str, request_id: str) -> None:
        self.log = log
        self.agent = agent
        self.request_id = request_id

    def attempt_hooks(self, record: AttemptRecord) -> TransportHooks | None:
        return None

    def attempt_finished(self, record: AttemptRecord, row: LedgerRow) -> None:
        return None

    def finish(self, response: LLMResponse | None, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, GeneratorExit):
            self.log.warning(
                "llm_call_failed",
                agent=self.agent,
                request_id=self.request_id,
                error_type=type(error).__name__,
                error=str(error).splitlines()[0] if str(error) else "",
            )


class Telemetry:
    """Factory of per-call telemetry; holds the logger."""

    def __init__(self, logger: Any = None) -> None:
        self.log = logger if logger is not None else structlog.get_logger("avionics")

    @classmethod
    def from_settings(cls, settings: AvionicsSettings, logger: Any = None) -> Telemetry:
        return cls(logger)

    def start_call(
        self, agent: str, request: InferenceRequest, *, stream: bool, request_id: str
    ) -> CallTelemetry:
        return CallTelemetry(self.log, agent, request_id)

    def log_fallback(self, agent: str, record: AttemptRecord, error: BaseException) -> None:
        self.log.info(
            "llm_fallback",
            agent=agent,
            provider=record.route.provider,
            model=record.route.model,
            error_type=getattr(getattr(error, "category", None), "value", type(error).__name__),
        )

    def log_callback_error(self, name: str) -> None:
        self.log.exception("callback_failed", callback=name)
