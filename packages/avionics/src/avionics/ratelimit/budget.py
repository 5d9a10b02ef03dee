"""USD budgets per agent (and optionally one global budget), per day, month or in total.

    tracker = BudgetTracker(global_budget=Decimal("50"), global_period="month")
    reservation = await tracker.reserve("planner", estimate, budget=Decimal("5"), period="day")
    try:
        result = await call()
    except Exception:
        await reservation.release()          # failed without cost
        raise
    await reservation.commit(metrics.total_cost)

`reserve` raises `BudgetExceededError` before any network I/O of the call when
`spent + reserved + estimate > budget`. The check and the reservation are one atomic store
operation, so tasks racing for the last dollars cannot all pass: admitted estimates never sum
past the budget, and only a call that costs more than its estimate can overspend (by its excess).

`commit(None)` (cost unknown: an unpriced model, a missing usage count) keeps the estimate as
the spend. Counting an unknown cost as 0 would let unpriced calls run past any budget.

Periods are calendar periods in UTC: "day" resets at 00:00 UTC, "month" on the 1st, "total" never.
A reservation settles into the period it was made in, even if it commits after midnight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from types import TracebackType
from typing import Final, Literal

from avionics.errors import BudgetExceededError
from avionics.pricing import non_negative_decimal

from .base import BudgetClaim, BudgetStore
from .memory import MemoryBudgetStore

__all__ = ["GLOBAL_SCOPE", "BudgetPeriod", "BudgetTracker", "BudgetUsage", "Reservation"]

#: The agent name under which the global budget's spending is reported.
GLOBAL_SCOPE: Final = "*"


class BudgetPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"
    TOTAL = "total"

    def window(self, now: datetime) -> str:
        """The id of the period window containing `now` (UTC), e.g. "2025-06-01"."""
        now = now.astimezone(UTC)
        if self is BudgetPeriod.DAY:
            return now.strftime("%Y-%m-%d")
        if self is BudgetPeriod.MONTH:
            return now.strftime("%Y-%m")
        return "all"


def _usd(value: Decimal | int | float | str, name: str) -> Decimal:
    return non_negative_decimal(value, f"{name} (USD)")


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """Spending of one agent (or the global scope) in one period window."""

    agent: str
    period: BudgetPeriod
    window: str
    spent: Decimal
    reserved: Decimal
    budget: Decimal | None = None

    @property
    def remaining(self) -> Decimal | None:
        if self.budget is None:
            return None
        return max(self.budget - self.spent - self.reserved, Decimal(0))


ReservationState = Literal["open", "committed", "released"]


class Reservation:
    """An estimate held against one or more budgets until `commit` or `release`.

    Also an async context manager: leaving the block with an exception releases it; leaving it
    normally without a commit commits the estimate.
    """

    def __init__(
        self,
        store: BudgetStore,
        agent: str,
        estimate: Decimal,
        period: BudgetPeriod,
        keys: tuple[str, ...],
    ) -> None:
        self._store = store
        self.agent = agent
        self.estimate_usd = estimate
        self.period = period
        self.keys = keys
        self.state: ReservationState = "open"
        #: What was charged once committed (None while open; 0 once released).
        self.charged_usd: Decimal | None = None

    async def commit(self, actual: Decimal | None) -> Decimal:
        """Replace the estimate by the real cost (None: unknown, keep the estimate).

        Returns the amount charged. Raises RuntimeError if already committed or released.
        """
        if self.state != "open":
            raise RuntimeError(f"reservation already {self.state}")
        charged = self.estimate_usd if actual is None else _usd(actual, "actual")
        self.state = "committed"
        self.charged_usd = charged
        await self._store.settle(self.keys, self.estimate_usd, charged)
        return charged

    async def release(self) -> None:
        """Drop the reservation without cost (the call failed before costing anything).

        A no-op once committed or released, so it is safe in `finally`.
        """
        if self.state != "open":
            return
        self.state = "released"
        self.charged_usd = Decimal(0)
        await self._store.settle(self.keys, self.estimate_usd, Decimal(0))

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await self.release()
        elif self.state == "open":
            await self.commit(None)

    def __repr__(self) -> str:
        return (
            f"Reservation(agent={self.agent!r}, estimate_usd={self.estimate_usd}, "
            f"period={self.period.value!r}, state={self.state!r})"
        )


class BudgetTracker:
    """Reserves estimates against per-agent budgets and an optional global budget.

    `clock` returns the current time (UTC-aware); pass one in tests to cross period boundaries.
    """

    def __init__(
        self,
        *,
        global_budget: Decimal | float | None = None,
        global_period: BudgetPeriod | str = BudgetPeriod.DAY,
        store: BudgetStore | None = None,
        clock: Callable[[], datetime] | None = None,
        key_prefix: str = "avionics:",
    ) -> None:
        self.key_prefix = key_prefix
        self.global_budget = None if global_budget is None else _usd(global_budget, "global_budget")
        self.global_period = BudgetPeriod(global_period)
        self.store: BudgetStore = store if store is not None else MemoryBudgetStore()
        self._clock = clock or (lambda: datetime.now(UTC))

    async def reserve(
        self,
        agent: str,
        estimate: Decimal | float,
        budget: Decimal | float | None,
        period: BudgetPeriod | str = BudgetPeriod.DAY,
    ) -> Reservation:
        """Hold `estimate` USD for one call of `agent`, or raise `BudgetExceededError`.

        `budget` None tracks the agent's spending without limiting it (the global budget, if
        any, still applies).
        """
        amount = _usd(estimate, "estimate")
        limit = None if budget is None else _usd(budget, "budget")
        period = BudgetPeriod(period)
        now = self._clock()
        claims = [BudgetClaim(self._key(agent, period, now), limit)]
        claims.append(
            BudgetClaim(self._key(GLOBAL_SCOPE, self.global_period, now), self.global_budget)
        )
        refusal = await self.store.reserve(amount, claims)
        if refusal is not None:
            is_global = refusal.claim is claims[-1]
            raise BudgetExceededError(
                agent,
                budget_usd=refusal.claim.limit if refusal.claim.limit is not None else Decimal(0),
                spent_usd=refusal.state.spent,
                reserved_usd=refusal.state.reserved,
                estimate_usd=amount,
                period=(self.global_period if is_global else period).value,
                scope="global" if is_global else "agent",
            )
        return Reservation(self.store, agent, amount, period, tuple(c.key for c in claims))

    async def usage(
        self,
        agent: str,
        period: BudgetPeriod | str = BudgetPeriod.DAY,
        *,
        budget: Decimal | float | None = None,
    ) -> BudgetUsage:
        """`agent`'s spending in the current window of `period`."""
        period = BudgetPeriod(period)
        now = self._clock()
        state = await self.store.state(self._key(agent, period, now))
        return BudgetUsage(
            agent=agent,
            period=period,
            window=period.window(now),
            spent=state.spent,
            reserved=state.reserved,
            budget=None if budget is None else _usd(budget, "budget"),
        )

    async def global_usage(self) -> BudgetUsage:
        """Spending of all agents together in the current global period window."""
        return await self.usage(GLOBAL_SCOPE, self.global_period, budget=self.global_budget)

    async def spent(self, agent: str, period: BudgetPeriod | str = BudgetPeriod.DAY) -> Decimal:
        return (await self.usage(agent, period)).spent

    def _key(self, agent: str, period: BudgetPeriod, now: datetime) -> str:
        return f"{self.key_prefix}budget:{agent}:{period.value}:{period.window(now)}"
