"""The engine under `LLMGateway`: one call walks its route chain, one attempt at a time.

    for route in chain (minus routes lacking a capability, or with every node cooling down):
        for node of route (other nodes only after a node-level failure: connection, timeout,
                           server, overloaded):
            attempt -> ledger row
        success: the response; a failure that moves on (see `fallback.py`): next route;
        otherwise: the error surfaces (a `GatewayError` listing every attempt)

Response totals (`tokens_used`, `prompt_tokens`, `completion_tokens`, `cost`, `cost_usd`) are
the sums of the call's ledger rows, so they equal what the ledger adds up; `usage` is what the
answering attempt itself reported.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airframe import AirframeError, ErrorCategory, InferenceRequest

from .accounting import Accountant, AttemptRecord
from .attempts import Attempt
from .errors import GatewayError, RateLimitedLocally
from .factory import LLMFactory
from .fallback import Needs, after_context_error, moves_on, skip_reason
from .nodes import NODE_FAILURES, node_category
from .requests import for_route
from .responses import LLMResponse, StreamingChunk
from .routing import Route, fallback_chain
from .settings import AvionicsSettings, SettingsError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .observability.telemetry import CallTelemetry, Telemetry
    from .providers.base import LLMProvider

__all__ = ["Call", "CallEngine"]


@dataclass(slots=True)
class Call:
    """One gateway call in flight. `trail` lists attempts and skipped routes in order."""

    agent: str
    request: InferenceRequest
    routes: list[Route]
    needs: Needs
    request_id: str
    stream: bool
    started: float = 0.0
    telemetry: CallTelemetry = field(init=False)
    attempts: list[AttemptRecord] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    trail: list[dict[str, Any]] = field(default_factory=list)


class CallEngine:
    """Routes, attempts, fallback decisions and accounting; `LLMGateway` is its public face."""

    settings: AvionicsSettings
    factory: LLMFactory
    accountant: Accountant
    telemetry: Telemetry
    fallback_providers: list[str]
    _stop_on: frozenset[ErrorCategory]
    _counts: dict[str, int]
    _chains: dict[str, list[Route]]
    _resource_callback: Callable[[dict[str, Any]], Any] | None
    _streaming_callback: Callable[[StreamingChunk], Any] | None
    _pending: set[asyncio.Future[Any]]

    # -- a call ----------------------------------------------------------------------------

    def _begin(self, call: Call) -> None:
        call.started = time.perf_counter()
        call.telemetry = self.telemetry.start_call(
            call.agent, call.request, stream=call.stream, request_id=call.request_id
        )

    async def _run(self, call: Call) -> LLMResponse:
        """A non-streamed call with fallback."""
        self._begin(call)
        try:
            for route, provider in self._candidates(call):
                record = await self._attempt_route(call, route, provider)
                if record.error is None:
                    response = self._response(call, route, record)
                    call.telemetry.finish(response, None)
                    return response
                if not self._moves_on(call, route, record):
                    break
            raise self._failed(call)
        except BaseException as exc:
            call.telemetry.finish(None, exc)
            raise

    async def _attempt_route(
        self, call: Call, route: Route, provider: LLMProvider
    ) -> AttemptRecord:
        """Try a route, and its other nodes after a node-level failure."""
        request = for_route(call.request, route.model, route.params)
        tried: list[str] = []
        while True:
            attempt = self._attempt(call, route, provider, request, tried)
            try:
                async with attempt as record:
                    record.result = await provider.infer(
                        request, node=record.node, hooks=record.hooks
                    )
            except (AirframeError, RateLimitedLocally):
                pass
            if attempt.record.error is None or not self._next_node(attempt.record, tried):
                return attempt.record

    def _attempt(
        self,
        call: Call,
        route: Route,
        provider: LLMProvider,
        request: InferenceRequest,
        tried: Sequence[str],
    ) -> Attempt:
        record = AttemptRecord(len(call.attempts) + 1, route, provider, None)
        return Attempt(
            self.accountant,
            call.agent,
            call.telemetry,
            record,
            request,
            tried,
            lambda r: self._record(call, r),
        )

    # -- routes ------------------------------------------------------------------------------

    def _chain(self, agent: str) -> list[Route]:
        found = self._chains.get(agent)
        if found is None:
            found = self._chains[agent] = fallback_chain(
                self.settings, agent, self.fallback_providers
            )
        return found

    def _candidates(self, call: Call) -> Iterator[tuple[Route, LLMProvider]]:
        """Routes in order, minus those that cannot serve the request (recorded as skipped)."""
        for route in call.routes:
            try:
                provider = self.factory.provider(route.provider)
            except SettingsError as exc:  # e.g. its API key env var is unset: like auth
                self._skip(call, route, exc.one_line(), exc)
                continue
            reason = skip_reason(self.factory.capabilities(route, provider), call.needs)
            if reason is None and not provider.has_node():
                reason = "every node is cooling down after failures"
            if reason is not None:
                self._skip(call, route, reason)
                continue
            yield route, provider

    def _skip(
        self, call: Call, route: Route, reason: str, error: BaseException | None = None
    ) -> None:
        entry = {"provider": route.provider, "model": route.model or "", "reason": reason}
        call.skipped.append(entry)
        call.trail.append({**entry, "node": None, "category": "skipped", "error": error})
        if error is not None:
            call.errors.append(error)

    def _moves_on(self, call: Call, route: Route, record: AttemptRecord) -> bool:
        """Whether the call falls back after this route's last attempt failed."""
        error = record.error
        assert error is not None
        if not moves_on(error, self._stop_on, delivered=record.chunks > 0):
            return False
        if isinstance(error, AirframeError) and error.category is ErrorCategory.CONTEXT_LENGTH:
            window = self.factory.capabilities(route, record.provider).context_window
            call.needs = after_context_error(call.needs, error, window)
        self._counts["fallbacks"] += 1
        self.telemetry.log_fallback(call.agent, record, error, call.telemetry)
        return True

    @staticmethod
    def _next_node(record: AttemptRecord, tried: list[str]) -> bool:
        """After a node-level failure with nothing delivered: whether another node is left."""
        error = record.error
        if record.node is None or record.chunks or not isinstance(error, AirframeError):
            return False
        if node_category(error) not in NODE_FAILURES:
            return False
        tried.append(record.node.name)
        return record.provider.has_node(tried)

    # -- accounting ----------------------------------------------------------------------------

    def _record(self, call: Call, record: AttemptRecord) -> None:
        """The attempt's ledger row; `resource_callback` sees it (a failing callback is logged)."""
        row = self.accountant.record(call.agent, call.request_id, record, streamed=call.stream)
        call.attempts.append(record)
        call.trail.append(record.summary())
        if record.error is not None:
            call.errors.append(record.error)
        call.telemetry.attempt_finished(record, row)
        callback = self._resource_callback
        if callback is None:
            return
        try:
            result = callback(row.to_dict())
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._pending.add(task)
                task.add_done_callback(self._callback_done)
        except Exception:  # a user callback never breaks a call
            self.telemetry.log_callback_error("resource_callback")

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.telemetry.log_callback_error("resource_callback")

    def _response(self, call: Call, route: Route, record: AttemptRecord) -> LLMResponse:
        result = record.result
        assert result is not None
        rows = [a.row for a in call.attempts if a.row is not None]
        total: Decimal | None = Decimal(0)
        prompt_tokens = completion_tokens = 0
        for row in rows:
            prompt_tokens += row.input_tokens or 0
            completion_tokens += row.output_tokens or 0
            if total is not None:
                total = None if row.cost_usd is None else total + row.cost_usd
        return LLMResponse(
            text=result.text,
            tool_calls=list(result.tool_calls),
            tokens_used=prompt_tokens + completion_tokens,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=(time.perf_counter() - call.started) * 1000.0,
            provider=route.provider,
            model=result.model or route.model or "",
            cost_usd=float(total) if total is not None else None,
            timestamp=datetime.now(UTC),
            metadata={
                "attempts": [r.to_dict() for r in rows],
                "skipped": call.skipped,
                "node": record.node.name if record.node is not None else None,
                "profile": route.profile,
                "response_id": result.response_id,
                "fallback_used": len(rows) > 1 or bool(call.skipped),
                **({"raw": result.raw} if result.raw else {}),
            },
            streamed=call.stream,
            finish_reason=result.finish_reason,
            usage=result.usage,
            cost=total,
            reasoning=result.reasoning,
            agent_name=call.agent,
            request_id=call.request_id,
        )

    def _failed(self, call: Call) -> GatewayError:
        self._counts["failures"] += 1
        return GatewayError.from_attempts(call.agent, call.trail, list(call.errors))

    def _notify(self, chunk: StreamingChunk) -> None:
        callback = self._streaming_callback
        if callback is not None:
            try:
                callback(chunk)
            except Exception:
                self.telemetry.log_callback_error("streaming_callback")
