"""One attempt of a gateway call on one node of one route, as an async context manager.

    async with Attempt(accountant, telemetry, record, request, tried, on_end) as record:
        record.result = await provider.infer(request, node=record.node, hooks=record.hooks)

Entering reserves the agent's budget (`BudgetExceededError` before any I/O), waits for the
provider's local rate-limit permit (`RateLimitedLocally`, recorded as a skipped attempt) and takes
a node (in flight + 1). Leaving, however it happens (success, an airframe error, cancellation, a
stream closed early), releases the node with its verdict for the breaker, writes the ledger row
through `on_end`, then settles the permit and the budget with the attempt's real cost. Nothing
leaks when the caller goes away: that is why this is one context manager and not scattered
`try` blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from airframe import AirframeError, ConnectionError, InferenceRequest

from .accounting import Accountant, Admission, AttemptRecord
from .errors import RateLimitedLocally
from .nodes import NoHealthyNodeError, node_category

if TYPE_CHECKING:
    from .observability.telemetry import CallTelemetry

__all__ = ["Attempt"]


class Attempt:
    """Admission, node lease, ledger row and settlement of one attempt (see module docstring)."""

    __slots__ = ("_accountant", "_admission", "_agent", "_exclude", "_on_end", "_request",
                 "_telemetry", "record")  # fmt: skip

    def __init__(
        self,
        accountant: Accountant,
        agent: str,
        telemetry: CallTelemetry,
        record: AttemptRecord,
        request: InferenceRequest,
        exclude: Sequence[str],
        on_end: Callable[[AttemptRecord], None],
    ) -> None:
        self._accountant = accountant
        self._agent = agent
        self._telemetry = telemetry
        self.record = record
        self._request = request
        self._exclude = exclude
        self._on_end = on_end
        self._admission: Admission | None = None

    async def __aenter__(self) -> AttemptRecord:
        record = self.record
        admission = await self._accountant.admit(self._agent, record, self._request)
        record.started = time.perf_counter()
        try:
            await admission.enter()
        except RateLimitedLocally as exc:
            self._end_early(exc)
            raise
        try:
            record.node = record.provider.acquire_node(self._exclude)
        except NoHealthyNodeError as exc:  # every node cooled down while this call waited
            await admission.cancel()
            error = ConnectionError(
                str(exc), backend=record.provider.kind, endpoint=record.provider.name
            )
            self._end_early(error)
            raise error from None
        except BaseException:
            await admission.cancel()
            raise
        try:
            record.hooks = self._telemetry.attempt_hooks(record)
        except BaseException:
            record.provider.release_node(record.node, completed=False)
            await admission.cancel()
            raise
        self._admission = admission
        record.started = time.perf_counter()
        return record

    def _end_early(self, error: BaseException) -> None:
        record = self.record
        record.error = error
        record.ended = time.perf_counter()
        self._on_end(record)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record = self.record
        record.ended = time.perf_counter()
        category = None
        completed = True
        if exc is not None:
            record.error = exc
            if isinstance(exc, AirframeError):
                category = node_category(exc)
                if exc.partial is not None:
                    record.partial = exc.partial
            else:  # cancelled, stream closed early, or a provider bug: no verdict on the node
                completed = False
        admission = self._admission
        try:  # each step runs even if an earlier one fails (a shared store may be down)
            record.provider.release_node(record.node, category, completed=completed)
        finally:
            try:
                self._on_end(record)
            finally:
                if admission is not None:
                    await admission.settle(record)
