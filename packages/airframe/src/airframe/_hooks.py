"""Observation points of one HTTP attempt, for callers that trace (avionics turns them into spans).

The transport calls these synchronously; keep implementations cheap. Override only what you need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._errors import AirframeError
    from ._types import InferenceResult

__all__ = ["AttemptInfo", "TransportHooks"]


@dataclass(slots=True)
class AttemptInfo:
    """One HTTP attempt. `attempt` counts from 1; `url` never carries credentials."""

    attempt: int
    backend: str
    endpoint: str
    method: str
    url: str
    stream: bool


class TransportHooks:
    """No-op base: subclass and override the events you care about."""

    def on_attempt_start(self, info: AttemptInfo) -> None:
        """The request is about to be sent."""

    def on_response_headers(self, info: AttemptInfo, status_code: int, headers: object) -> None:
        """Status line and headers arrived (`headers` is an `httpx.Headers`)."""

    def on_first_token(self, info: AttemptInfo) -> None:
        """The first streamed event reached the caller (streams only)."""

    def on_attempt_end(self, info: AttemptInfo, result: InferenceResult | None) -> None:
        """The attempt succeeded (`result` is None for non-inference calls)."""

    def on_attempt_error(self, info: AttemptInfo, error: AirframeError) -> None:
        """The attempt failed with `error` (it may still be retried; see `on_retry`)."""

    def on_retry(self, info: AttemptInfo, error: AirframeError, delay: float) -> None:
        """The attempt will be retried after `delay` seconds."""
