"""Per-attempt accounting: admission (budget + rate limits) before a call, a ledger row after.

Every attempt is one `LedgerRow`, failed and interrupted ones included. What an attempt costs:

- it answered: its reported usage, priced exactly (a priced model whose backend reported no
  usage costs `None`: unknown, never guessed);
- it failed before any output (an error status, a refused connection): 0, nothing was generated;
- it broke after output began (an interrupted stream, a stream the caller closed early): billed
  for what was spent, with each count the backend did not report estimated: input from the
  request's text, output from the text (or the number of chunks) received. The row keeps the
  counts as reported (`None` = unknown); only its cost uses the estimate;
- the caller gave up before any output (a cancelled task): `None`, unknown (the backend may
  have finished the work); a budget then keeps the call's estimate as spent;
- a local rate limit refused it (`RateLimitedLocally`): a row with outcome `skipped`, cost 0,
  no node, since no request left this process. It is listed among the call's attempts too, so
  `GatewayError` and `metadata["attempts"]` show where the time went;
- local backends always cost 0.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airframe import AirframeError, InferenceRequest, InferenceResult, Usage

from .errors import RateLimitedLocally
from .ledger import Ledger, LedgerRow, Outcome
from .pricing import CostCalculator, ModelPrice, estimate_tokens
from .ratelimit.budget import BudgetTracker, Reservation
from .ratelimit.limiter import LimiterRegistry, Permit
from .state import build_shared_state

if TYPE_CHECKING:
    from .nodes import Node
    from .providers.base import LLMProvider
    from .routing import Route
    from .settings import AvionicsSettings

__all__ = ["CANCELLED", "Accountant", "Admission", "AttemptRecord"]

_DEFAULT_OUTPUT_ESTIMATE = 1024
#: `error_category` of an attempt whose caller gave up (task cancelled, stream closed early).
CANCELLED = "cancelled"


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
    prompt_tokens: int = 0  # estimated from the request, to bill a cut stream
    chunks: int = 0  # text chunks handed to the caller (streams)
    hooks: Any = None

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
        if isinstance(err, AirframeError):
            return err.category.value
        if isinstance(err, RateLimitedLocally):
            return "rate_limited_locally"
        if isinstance(err, asyncio.CancelledError | GeneratorExit):
            return CANCELLED
        return type(err).__name__

    @property
    def produced_output(self) -> bool:
        """Whether output began before the attempt ended (so it was billed)."""
        if self.chunks:
            return True
        partial = self.partial
        if partial is None:
            return False
        usage = partial.usage
        return bool(partial.text or partial.reasoning or partial.tool_calls) or bool(
            usage is not None and usage.output_tokens
        )

    @property
    def outcome(self) -> Outcome:
        if self.error is None:
            return Outcome.OK
        if isinstance(self.error, RateLimitedLocally):
            return Outcome.SKIPPED
        return Outcome.INTERRUPTED if self.produced_output else Outcome.ERROR

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
    """Budget reservation and rate-limit permit of one attempt.

    `enter()` waits for the permit (giving the reservation back if it is refused); `settle()`
    ends both once the attempt's ledger row (and so its cost) exists; `cancel()` ends both when
    the attempt never started. Each is safe under cancellation: the reservation is always
    committed or released.
    """

    __slots__ = ("_permit", "_reservation")

    def __init__(self, permit: Permit | None, reservation: Reservation | None) -> None:
        self._permit = permit
        self._reservation = reservation

    async def enter(self) -> None:
        if self._permit is None:
            return
        try:
            await self._permit.__aenter__()
        except BaseException:
            self._permit = None  # never admitted: nothing to release
            await self.cancel()
            raise

    async def cancel(self) -> None:
        """The attempt did not run: give back the permit's tokens and the reservation."""
        try:
            if self._permit is not None:
                error = RuntimeError("attempt not started")
                await self._permit.__aexit__(RuntimeError, error, None)
        finally:
            if self._reservation is not None:
                await self._reservation.release()

    async def settle(self, record: AttemptRecord) -> None:
        """Settle tokens with the rate limiter and the cost with the budget."""
        try:
            if self._permit is not None:
                usage = record.usage
                if usage is not None:
                    self._permit.settle(usage.total_tokens)
                error = record.error
                if error is None or usage is not None:
                    await self._permit.__aexit__(None, None, None)
                else:  # failed without usage: the tokens go back to the window
                    await self._permit.__aexit__(type(error), error, None)
        finally:
            if self._reservation is not None:
                await self._reservation.commit(record.cost)


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
        #: Where limits and budgets live: per process (memory, the default) or shared (Redis).
        self.shared = build_shared_state(settings)
        prefix = settings.state.key_prefix
        self.limiters = LimiterRegistry(
            max_wait=settings.gateway.rate_limit_max_wait,
            store=self.shared.windows,
            key_prefix=prefix,
        )
        self.budgets = BudgetTracker(store=self.shared.budgets, key_prefix=prefix)

    async def admit(
        self, agent: str, record: AttemptRecord, request: InferenceRequest
    ) -> Admission:
        """Reserve budget for one attempt and prepare its rate-limit permit (`enter()` it
        before any I/O). Raises `BudgetExceededError` when the estimate does not fit."""
        route = record.route
        ps = route.provider_settings
        record.prompt_tokens = prompt_tokens = _prompt_tokens(request)
        permit: Permit | None = None
        reservation: Reservation | None = None
        agent_settings = self.settings.agents.get(agent)
        budget = agent_settings.budget_usd if agent_settings is not None else None
        output = request.max_tokens or _DEFAULT_OUTPUT_ESTIMATE
        estimate: Decimal | None = None
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
        limited = ps.rpm is not None or ps.tpm is not None or ps.max_concurrency is not None
        gate = self.shared.gate
        if gate is not None and (limited or estimate is not None):
            # Shared state: limits and budget are taken together, in one round trip, on enter().
            permit, reservation = gate.admission(
                route.provider, rpm=ps.rpm, tpm=ps.tpm, max_concurrency=ps.max_concurrency,
                tokens=prompt_tokens + output, agent=agent, estimate=estimate, budget=budget,
                period=agent_settings.budget_period if agent_settings is not None else "day",
            )  # fmt: skip
            return Admission(permit, reservation)
        if budget is not None and agent_settings is not None and estimate is not None:
            reservation = await self.budgets.reserve(
                agent, estimate, budget, agent_settings.budget_period
            )
        if limited:
            permit = self.limiters.limiter(
                route.provider, rpm=ps.rpm, tpm=ps.tpm, max_concurrency=ps.max_concurrency
            ).acquire(prompt_tokens + output)
        return Admission(permit, reservation)

    def cost(self, record: AttemptRecord) -> Decimal | None:
        """The attempt's cost (computed once); see the module docstring for the rules."""
        if record.costed:
            return record.cost
        record.costed = True
        record.cost = self._cost(record)
        return record.cost

    def _cost(self, record: AttemptRecord) -> Decimal | None:
        provider = record.provider
        if provider.local or isinstance(record.error, RateLimitedLocally):
            return Decimal(0)
        usage = record.usage
        if record.result is None:
            if not record.produced_output:
                return Decimal(0) if isinstance(record.error, AirframeError) else None
            usage = self._estimated_usage(record)
        return self.costs.calculate_cost(
            record.route.provider, record.model, usage, provider_kind=provider.kind
        ).total_cost

    @staticmethod
    def _estimated_usage(record: AttemptRecord) -> Usage:
        """Usage of a cut attempt: reported counts, estimates where the backend said nothing."""
        usage = record.usage
        partial = record.partial
        input_tokens = usage.input_tokens if usage is not None else None
        output_tokens = usage.output_tokens if usage is not None else None
        if input_tokens is None:
            input_tokens = record.prompt_tokens
        if output_tokens is None:
            received = partial.text + partial.reasoning if partial is not None else ""
            output_tokens = max(estimate_tokens(received) if received else 0, record.chunks)
        if usage is None:
            return Usage(input_tokens, output_tokens)
        return Usage(
            input_tokens,
            output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        )

    def record(
        self, agent: str, request_id: str, record: AttemptRecord, *, streamed: bool
    ) -> LedgerRow:
        """Write the attempt's ledger row."""
        usage = record.usage
        started = record.started if record.started is not None else time.perf_counter()
        ended = record.ended if record.ended is not None else started
        row = LedgerRow(
            request_id=request_id,
            agent=agent,
            provider=record.route.provider,
            model=record.model,
            node=record.node.name if record.node is not None else None,
            attempt=record.attempt,
            outcome=record.outcome,
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
