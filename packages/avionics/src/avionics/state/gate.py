"""`SharedGate`: a gateway call's limits and budget, admitted in one Redis round trip.

    permit, reservation = gate.admission("anthropic", rpm=50, tpm=40_000, max_concurrency=8,
                                         tokens=1_200, agent="planner", estimate=Decimal("0.02"),
                                         budget=Decimal("5"), period="day")
    async with permit:                       # ONE script: budgets, concurrency, rpm, tpm
        result = await call()
        permit.settle(result.usage.total_tokens)
    await reservation.commit(actual_cost)    # ONE script: tokens, lease, cost

Admission checks every budget (the agent's and the global one), the provider's concurrency
leases, its request window and its token window, and takes all of them or nothing. A budget that
does not fit raises `BudgetExceededError` at once; a full window sleeps until the server-computed
reset (or raises `RateLimitedLocally` when that is past `max_wait`); full concurrency is polled
with a growing delay. Settlement corrects the token reservation to the real count, gives the
concurrency lease back and moves the budget hold to spent, all in one script. A call with no
lease, no budget and no token correction skips settlement entirely.

`permit` and `reservation` are a `Permit` and a `Reservation` (the gateway's `Admission` drives
them unchanged); when a reservation exists the permit leaves settlement to its `commit`.

Redis unreachable: with `fail_mode = "closed"` admission raises `SharedStateUnavailable`; with
"open" this call goes through per-process limits and budgets (`local_limits`, `local_budgets`)
after one warning per outage. A settlement that cannot be sent is kept and replayed before the
next admission, so no spent money is lost to an outage.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Final

from avionics.errors import BudgetExceededError, LimitKind, RateLimitedLocally
from avionics.ratelimit.budget import GLOBAL_SCOPE, BudgetPeriod, BudgetTracker, Reservation
from avionics.ratelimit.limiter import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_WAIT,
    DEFAULT_WINDOW_SECONDS,
    LimiterRegistry,
    Permit,
    ProviderLimiter,
)

from ._base import SharedStateUnavailable
from ._connection import RedisConnection
from ._lua import ADMIT, SETTLE
from ._units import from_pico, period_ttl_ms, to_pico, to_pico_limit, utcnow
from .windows import units_key

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "SharedGate",
    "SharedPermit",
    "SharedReservation",
    "budget_key",
]

#: How long a call holds its concurrency lease and budget hold if it never settles (a crashed
#: worker). Set it above your longest call: a lease that expires mid-call frees its slot early.
DEFAULT_LEASE_SECONDS: Final = 300.0
_UNSETTLED_MAX: Final = 10_000
_POLL_FIRST: Final = 0.01
_POLL_MAX: Final = 0.25

_REFUSED = {2: LimitKind.RPM, 3: LimitKind.TPM}


def budget_key(prefix: str, agent: str, period: BudgetPeriod, now: datetime) -> str:
    """The key of `agent`'s budget window (the same one `BudgetTracker` uses)."""
    return f"{prefix}budget:{agent}:{period.value}:{period.window(now)}"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one call asks for, and the script arguments that ask it."""

    provider: str
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    tokens: int
    agent: str
    estimate: Decimal | None
    budget: Decimal | None
    period: BudgetPeriod
    call_id: str
    keys: list[str]
    args: list[str | int]
    budget_ttls: list[int]

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_concurrency is not None


class SharedGate:
    """Admission and settlement of gateway calls on Redis (see the module docstring)."""

    def __init__(
        self,
        connection: RedisConnection,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        max_wait: float = DEFAULT_MAX_WAIT,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        global_budget: Decimal | None = None,
        global_period: BudgetPeriod | str = BudgetPeriod.DAY,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0 seconds")
        self.connection = connection
        self.key_prefix = key_prefix
        self.max_wait = float(max_wait)
        self.window_seconds = window_seconds
        self.lease_ms = max(int(lease_seconds * 1000), 1)
        self.global_budget = global_budget
        self.global_period = BudgetPeriod(global_period)
        self._clock = clock
        #: Per-process limits and budgets, used while Redis is unreachable with fail_mode "open".
        self.local_limits = LimiterRegistry(
            max_wait=max_wait, window_seconds=window_seconds, key_prefix=key_prefix
        )
        self.local_budgets = BudgetTracker(
            global_budget=global_budget,
            global_period=self.global_period,
            key_prefix=key_prefix,
            clock=clock,
        )
        self._unsettled: deque[tuple[list[str], list[str | int]]] = deque(maxlen=_UNSETTLED_MAX)

    def admission(
        self,
        provider: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrency: int | None = None,
        tokens: int = 0,
        agent: str = "default",
        estimate: Decimal | None = None,
        budget: Decimal | None = None,
        period: BudgetPeriod | str = BudgetPeriod.DAY,
    ) -> tuple[SharedPermit, SharedReservation | None]:
        """A permit to enter (admission happens on entry) and, when `estimate` is given, the
        reservation it makes against `agent`'s `budget` (None: track without a limit)."""
        period = BudgetPeriod(period)
        prefix = f"{self.key_prefix}ratelimit:{provider}:"
        requests, token_window = prefix + "requests", prefix + "tokens"
        keys = [requests, units_key(requests), token_window, units_key(token_window)]
        keys.append(prefix + "leases")
        amount = Decimal(0) if estimate is None else estimate
        args: list[str | int] = [
            secrets.token_hex(8),
            self.window_seconds * 1000,
            rpm or 0,
            tpm or 0,
            max(int(tokens), 0),
            max_concurrency or 0,
            self.lease_ms,
            to_pico(amount),
        ]
        budget_keys: list[str] = []
        ttls: list[int] = []
        if estimate is not None:
            now = self._clock()
            claims = (
                (budget_key(self.key_prefix, agent, period, now), budget, period),
                (
                    budget_key(self.key_prefix, GLOBAL_SCOPE, self.global_period, now),
                    self.global_budget,
                    self.global_period,
                ),
            )
            for key, limit, key_period in claims:
                budget_keys.append(key)
                ttls.append(period_ttl_ms(key_period, now))
                args += [to_pico_limit(limit), ttls[-1]]
        plan = _Plan(
            provider, rpm, tpm, max_concurrency, max(int(tokens), 0), agent, estimate, budget,
            period, str(args[0]), keys + budget_keys, args, ttls,
        )  # fmt: skip
        local = self.local_limits.limiter(
            provider, rpm=rpm, tpm=tpm, max_concurrency=max_concurrency
        )
        permit = SharedPermit(self, local, plan)
        if estimate is None:
            return permit, None
        reservation = SharedReservation(self, permit, tuple(budget_keys))
        permit.reservation = reservation
        return permit, reservation

    # -- admission ---------------------------------------------------------------------------

    async def _enter(self, permit: SharedPermit) -> None:
        plan = permit.plan
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.max_wait
        if plan.tpm is not None and plan.tokens > plan.tpm:
            raise RateLimitedLocally(
                plan.provider,
                LimitKind.TPM,
                None,
                limit=plan.tpm,
                detail=f"this request alone is estimated at {plan.tokens} tokens",
            )
        if self._unsettled:
            await self._replay()
        poll = _POLL_FIRST
        while True:
            try:
                reply = await self.connection.run(ADMIT, plan.keys, plan.args)
            except SharedStateUnavailable:
                if not self.connection.fail_open:
                    raise
                self.connection.warn_once("per-process limits and budgets")
                await permit._enter_local()
                return
            code = int(reply[0])
            if code == 0:
                permit.waited = loop.time() - start
                if plan.tpm is not None:
                    permit.reserved_tokens = plan.tokens
                return
            if code == 1:
                raise self._budget_error(plan, reply)
            now = loop.time()
            hint = int(reply[1]) / 1000.0
            if code == 4:
                if now >= deadline:
                    raise RateLimitedLocally(
                        plan.provider,
                        LimitKind.CONCURRENCY,
                        now - start,
                        limit=plan.max_concurrency,
                        waited=now - start,
                        detail=f"{plan.max_concurrency} calls already in flight across processes",
                    )
                await asyncio.sleep(min(poll, hint, deadline - now))
                poll = min(poll * 2, _POLL_MAX)
                continue
            kind = _REFUSED[code]
            if now + hint > deadline:
                raise RateLimitedLocally(
                    plan.provider,
                    kind,
                    hint,
                    limit=plan.rpm if kind is LimitKind.RPM else plan.tpm,
                    waited=now - start,
                )
            await asyncio.sleep(hint)

    def _budget_error(self, plan: _Plan, reply: list[object]) -> BudgetExceededError:
        is_global = int(str(reply[1])) == 2
        limit = self.global_budget if is_global else plan.budget
        return BudgetExceededError(
            plan.agent,
            budget_usd=limit if limit is not None else Decimal(0),
            spent_usd=from_pico(str(reply[2])),
            reserved_usd=from_pico(str(reply[3])),
            estimate_usd=plan.estimate if plan.estimate is not None else Decimal(0),
            period=(self.global_period if is_global else plan.period).value,
            scope="global" if is_global else "agent",
        )

    # -- settlement --------------------------------------------------------------------------

    async def _settle(self, permit: SharedPermit, cost: Decimal | None) -> None:
        """Close the call on Redis: real tokens, lease back, cost into the budgets."""
        plan = permit.plan
        tokens = ""
        if plan.tpm is not None and permit.final_tokens != permit.reserved_tokens:
            tokens = str(permit.final_tokens)
        budgets = plan.estimate is not None
        if not tokens and plan.max_concurrency is None and not budgets:
            return  # nothing to correct: no round trip
        keys = [plan.keys[2], plan.keys[3], plan.keys[4]]
        args: list[str | int] = [plan.call_id, tokens, to_pico(cost or Decimal(0))]
        if budgets:
            keys += plan.keys[5:]
            args += plan.budget_ttls
        try:
            await self.connection.run(SETTLE, keys, args)
        except SharedStateUnavailable:
            self.connection.warn_once("settlements are kept and replayed when Redis returns")
            self._unsettled.append((keys, args))

    async def _replay(self) -> None:
        while self._unsettled:
            keys, args = self._unsettled[0]
            try:
                await self.connection.run(SETTLE, keys, args)
            except SharedStateUnavailable:
                return
            self._unsettled.popleft()

    @property
    def unsettled(self) -> int:
        """Settlements waiting for Redis to come back."""
        return len(self._unsettled)


class SharedPermit(Permit):
    """A `Permit` admitted by `SharedGate` (or, failing open, by the per-process limiter)."""

    def __init__(self, gate: SharedGate, local: ProviderLimiter, plan: _Plan) -> None:
        super().__init__(local, plan.tokens)
        self.gate = gate
        self.plan = plan
        self.reservation: SharedReservation | None = None
        #: Tokens the call is finally charged (known once the block has exited).
        self.final_tokens = 0
        self.admitted = False
        self.local = False
        self._inner: Permit | None = None
        self._exited = False

    async def __aenter__(self) -> SharedPermit:
        if self._entered:
            raise RuntimeError("a Permit is entered once; ask the gate for a new admission")
        self._entered = True
        await self.gate._enter(self)
        self.admitted = True
        return self

    async def _enter_local(self) -> None:
        """Fail open: this call takes per-process budget and limits instead."""
        plan, gate = self.plan, self.gate
        self.local = True
        if self.reservation is not None and plan.estimate is not None:
            self.reservation._inner = await gate.local_budgets.reserve(
                plan.agent, plan.estimate, plan.budget, plan.period
            )
        if not plan.limited:
            return
        inner = self.limiter.acquire(plan.tokens)
        try:
            await inner.__aenter__()
        except BaseException:
            if self.reservation is not None and self.reservation._inner is not None:
                await self.reservation._inner.release()
            raise
        self._inner = inner
        self.reserved_tokens = inner.reserved_tokens
        self.waited = inner.waited

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exited = True
        if self._inner is not None:
            if self._settled:
                self._inner.settle(self.actual_tokens)
            await self._inner.__aexit__(exc_type, exc, tb)
            self.final_tokens = self._inner.reserved_tokens
            return
        if self.local:
            return
        reserved = self.reserved_tokens
        if self._settled:
            self.final_tokens = reserved if self.actual_tokens is None else self.actual_tokens
        else:
            self.final_tokens = 0 if exc_type is not None else reserved
        if self.reservation is not None and self.reservation.state == "open":
            return  # its commit settles tokens, lease and cost in one round trip
        await asyncio.shield(self.gate._settle(self, None))


class SharedReservation(Reservation):
    """A `Reservation` held in Redis by `SharedGate`; `commit` also settles its permit."""

    def __init__(self, gate: SharedGate, permit: SharedPermit, keys: tuple[str, ...]) -> None:
        plan = permit.plan
        estimate = plan.estimate if plan.estimate is not None else Decimal(0)
        super().__init__(gate.local_budgets.store, plan.agent, estimate, plan.period, keys)
        self._gate = gate
        self._permit = permit
        self._inner: Reservation | None = None

    async def commit(self, actual: Decimal | None) -> Decimal:
        if self._inner is not None:
            charged = await self._inner.commit(actual)
            self.state, self.charged_usd = "committed", charged
            return charged
        if self.state != "open":
            raise RuntimeError(f"reservation already {self.state}")
        charged = self.estimate_usd if actual is None else _usd(actual)
        self.state, self.charged_usd = "committed", charged
        await self._close(charged)
        return charged

    async def release(self) -> None:
        if self._inner is not None:
            await self._inner.release()
            self.state, self.charged_usd = "released", Decimal(0)
            return
        if self.state != "open":
            return
        self.state, self.charged_usd = "released", Decimal(0)
        await self._close(Decimal(0))

    async def _close(self, cost: Decimal) -> None:
        permit = self._permit
        if not permit.admitted or permit.local:
            return
        if not permit._exited:  # committed inside the block: the estimate of tokens stands
            permit.final_tokens = permit.reserved_tokens
        await asyncio.shield(self._gate._settle(permit, cost))


def _usd(value: Decimal | int | float | str) -> Decimal:
    result = value if isinstance(value, Decimal) else Decimal(str(value))
    if not result.is_finite() or result < 0:
        raise ValueError(f"actual must be a finite, non-negative USD amount, got {value!r}")
    return result
