"""Per-attempt accounting: admission (budget + rate limits) before a call, a ledger row after.

Every attempt that reached a provider is one `LedgerRow`, failed and interrupted ones included,
billed for the usage they reported (or, for a stream cut before its usage arrived, an estimate from
what was received, so no spent money goes unaccounted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

from airframe import AirframeError, ErrorCategory, InferenceRequest, InferenceResult, Usage

from .ledger import Ledger, LedgerRow, Outcome
from .pricing import CostCalculator, ModelPrice, estimate_tokens
from .ratelimit.budget import BudgetTracker, Reservation
from .ratelimit.limiter import LimiterRegistry, Permit

if TYPE_CHECKING:
    from .nodes import Node
    from .providers.base import LLMProvider
    from .routing import Route
    from .settings import AvionicsSettings

__all__ = ["Accountant", "Admission", "AttemptRecord"]

_DEFAULT_OUTPUT_ESTIMATE = 1024


@dataclass(slots=True)
class AttemptRecord:
    """One attempt while it runs; becomes a ledger row when it ends."""

    attempt: int
    route: Route
    provider: LLMProvider
    node: Node | None
    started: float | None = None
    ended: float | None = None
    result: InferenceResult | None = None
    partial: InferenceResult | None = None
    error: BaseException | None = None
    row: LedgerRow | None = None
    cost: Decimal | None = None
    costed: bool = False

    @property
    def usage(self) -> Usage | None:
        source = self.result if self.result is not None else self.partial
        return source.usage if source is not None else None

    @property
    def model(self) -> str:
        source = self.result if self.result is not None else self.partial
        return (source.model if source is not None else "") or self.route.model or ""

    @property
    def category(self) -> str | None:
        err = self.error
        if err is None:
            return None
        category = getattr(err, "category", None)
        return str(category.value) if category is not None else type(err).__name__

    def summary(self) -> dict[str, Any]:
        """Provider, node, model, category and a short reason: one line of a GatewayError."""
        return {
            "provider": self.route.provider,
            "node": self.node.name if self.node is not None else None,
            "model": self.route.model,
            "category": self.category,
            "reason": _short(self.error),
            "error": self.error,
        }


def _short(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = error.message if isinstance(error, AirframeError) else str(error)
    first = text.splitlines()[0] if text else type(error).__name__
    return first[:200]


class Admission:
    """Budget reservation and rate-limit permit of one attempt (an async context manager)."""

    __slots__ = ("_accountant", "_permit", "_record", "_reservation")

    def __init__(
        self,
        accountant: Accountant,
        record: AttemptRecord,
        permit: Permit | None,
        reservation: Reservation | None,
    ) -> None:
        self._accountant = accountant
        self._record = record
        self._permit = permit
        self._reservation = reservation

    async def __aenter__(self) -> Admission:
        if self._permit is not None:
            await self._permit.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record = self._record
        if self._permit is not None:
            usage = record.usage
            self._permit.settle(usage.total_tokens if usage is not None else None)
            await self._permit.__aexit__(exc_type, exc, tb)
        if self._reservation is not None:
            await self._reservation.commit(self._accountant.cost(record))


class Accountant:
    """Ledger, prices, local limits and budgets of one gateway."""

    def __init__(self, settings: AvionicsSettings) -> None:
        self.settings = settings
        overrides = {
            key: ModelPrice.of(p.input, p.output, p.cache_read, p.cache_write)
            for key, p in settings.pricing.items()
        }
        self.costs = CostCalculator(overrides)
        self.ledger = Ledger()
        self.limiters = LimiterRegistry(max_wait=settings.gateway.rate_limit_max_wait)
        self.budgets = BudgetTracker()

    async def admit(
        self, agent: str, record: AttemptRecord, request: InferenceRequest
    ) -> Admission:
        """Reserve budget and take a rate-limit permit for one attempt (enter it before I/O).

        Raises `BudgetExceededError` when the estimate does not fit the agent's budget.
        """
        route = record.route
        ps = route.provider_settings
        permit: Permit | None = None
        reservation: Reservation | None = None
        limited = ps.rpm is not None or ps.tpm is not None or ps.max_concurrency is not None
        agent_settings = self.settings.agents.get(agent)
        budget = agent_settings.budget_usd if agent_settings is not None else None
        if limited or budget is not None:
            prompt_tokens = _prompt_tokens(request)
            output = request.max_tokens or _DEFAULT_OUTPUT_ESTIMATE
            if limited:
                permit = self.limiters.limiter(
                    route.provider, rpm=ps.rpm, tpm=ps.tpm, max_concurrency=ps.max_concurrency
                ).acquire(prompt_tokens + output)
            if budget is not None and agent_settings is not None:
                estimate = Decimal(0)
                if not record.provider.local:
                    found = self.costs.estimate_cost(
                        route.provider,
                        route.model or "",
                        prompt_tokens,
                        output,
                        provider_kind=record.provider.kind,
                    )
                    estimate = found if found is not None else Decimal(0)
                reservation = await self.budgets.reserve(
                    agent, estimate, budget, agent_settings.budget_period
                )
        return Admission(self, record, permit, reservation)

    def cost(self, record: AttemptRecord) -> Decimal | None:
        """The attempt's cost (computed once): exact from usage, estimated for a cut stream."""
        if record.costed:
            return record.cost
        record.costed = True
        provider = record.provider
        if provider.local:
            record.cost = Decimal(0)
            return record.cost
        usage = record.usage
        if usage is None:
            partial = record.partial
            if partial is None or not partial.text:
                record.cost = Decimal(0)  # failed before any output: nothing was generated
                return record.cost
            usage = Usage(None, estimate_tokens(partial.text))
        metrics = self.costs.calculate_cost(
            record.route.provider, record.model, usage, provider_kind=provider.kind
        )
        record.cost = metrics.total_cost
        if record.cost is None and metrics.priced and metrics.output_cost is not None:
            record.cost = metrics.output_cost  # input unknown: bill what is known
        return record.cost

    def record(
        self, agent: str, request_id: str, record: AttemptRecord, *, streamed: bool
    ) -> LedgerRow:
        """Write the attempt's ledger row."""
        usage = record.usage
        error = record.error
        if error is None:
            outcome = Outcome.OK
        elif isinstance(error, AirframeError) and (
            error.category is ErrorCategory.INTERRUPTED or record.partial is not None
        ):
            outcome = Outcome.INTERRUPTED if record.partial is not None else Outcome.ERROR
        else:
            outcome = Outcome.ERROR
        started = record.started if record.started is not None else time.perf_counter()
        ended = record.ended if record.ended is not None else started
        row = LedgerRow(
            request_id=request_id,
            agent=agent,
            provider=record.route.provider,
            model=record.model,
            node=record.node.name if record.node is not None else None,
            attempt=record.attempt,
            outcome=outcome,
            error_category=record.category,
            streamed=streamed,
            input_tokens=usage.input_tokens if usage is not None else None,
            output_tokens=usage.output_tokens if usage is not None else None,
            cache_read_tokens=usage.cache_read_tokens if usage is not None else 0,
            cache_write_tokens=usage.cache_write_tokens if usage is not None else 0,
            reasoning_tokens=usage.reasoning_tokens if usage is not None else 0,
            cost_usd=self.cost(record),
            latency_ms=(ended - started) * 1000.0,
        )
        self.ledger.record(row)
        record.row = row
        return row


def _prompt_tokens(request: InferenceRequest) -> int:
    chars = sum(len(m.text()) for m in request.messages) + len(request.system or "")
    return max(1, (chars + 3) // 4)  # ~4 characters per token, as `estimate_tokens`
