"""`RedisBudgetStore`: the `BudgetStore` protocol on Redis, shared by every process.

Each reservation is a *hold* with its own id and expiry: `settle` removes exactly that hold and
adds the real cost, and a hold whose worker crashed expires (after `hold_seconds`) instead of
leaking. The protocol's `settle(keys, reserved, actual)` carries no id, so the store remembers
the ids it handed out per `(keys, amount)`; holds with equal keys and amounts are
interchangeable, so any one of them may be closed.

Used by `BudgetTracker(store=...)`. The gateway itself admits through `SharedGate`, which writes
the same keys in the same layout (one script for limits and budgets together).
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Final

from avionics.ratelimit.base import BudgetClaim, BudgetRefusal, BudgetState
from avionics.ratelimit.budget import BudgetPeriod
from avionics.ratelimit.memory import MemoryBudgetStore

from ._base import SharedStateUnavailable
from ._connection import RedisConnection
from ._lua import BUDGET_RESERVE, BUDGET_SETTLE, BUDGET_STATE
from ._units import from_pico, period_ttl_ms, to_pico, to_pico_limit, utcnow

__all__ = ["DEFAULT_HOLD_SECONDS", "RedisBudgetStore", "budget_key_ttl_ms"]

#: How long an unsettled reservation (a crashed worker's) holds budget before it is given back.
DEFAULT_HOLD_SECONDS: Final = 300.0

_Hold = tuple[tuple[str, ...], Decimal]


def budget_key_ttl_ms(key: str) -> int:
    """Expiry of a budget key from its period (`...:day:2025-06-01`); 0 keeps it."""
    parts = key.rsplit(":", 2)
    try:
        period = BudgetPeriod(parts[-2])
    except (ValueError, IndexError):
        return 0
    return period_ttl_ms(period, utcnow())


class RedisBudgetStore:
    """A `BudgetStore` on Redis. With `fail_mode = "open"` an unreachable Redis falls back to a
    per-process `MemoryBudgetStore` (one warning per outage)."""

    def __init__(
        self, connection: RedisConnection, *, hold_seconds: float = DEFAULT_HOLD_SECONDS
    ) -> None:
        self.connection = connection
        self.hold_ms = max(int(hold_seconds * 1000), 1)
        self.fallback = MemoryBudgetStore()
        self._ids: defaultdict[_Hold, list[tuple[str, bool]]] = defaultdict(list)

    async def reserve(self, amount: Decimal, claims: Sequence[BudgetClaim]) -> BudgetRefusal | None:
        keys = [claim.key for claim in claims]
        hold_id = secrets.token_hex(8)
        args: list[str | int] = [hold_id, to_pico(amount), self.hold_ms]
        for claim in claims:
            args += [to_pico_limit(claim.limit), budget_key_ttl_ms(claim.key)]
        try:
            reply = await self.connection.run(BUDGET_RESERVE, keys, args)
        except SharedStateUnavailable:
            if not self.connection.fail_open:
                raise
            self.connection.warn_once("per-process budgets")
            refusal = await self.fallback.reserve(amount, claims)
            if refusal is None:
                self._ids[(tuple(keys), amount)].append((hold_id, False))
            return refusal
        index = int(reply[0])
        if index:
            state = BudgetState(spent=from_pico(reply[1]), reserved=from_pico(reply[2]))
            return BudgetRefusal(claims[index - 1], state)
        self._ids[(tuple(keys), amount)].append((hold_id, True))
        return None

    async def settle(self, keys: Sequence[str], reserved: Decimal, actual: Decimal) -> None:
        held = self._ids.get((tuple(keys), reserved))
        hold_id, shared = held.pop() if held else (secrets.token_hex(8), True)
        if held is not None and not held:
            del self._ids[(tuple(keys), reserved)]
        if not shared:
            await self.fallback.settle(keys, reserved, actual)
            return
        args: list[str | int] = [hold_id, to_pico(actual)]
        args += [budget_key_ttl_ms(key) for key in keys]
        try:
            await self.connection.run(BUDGET_SETTLE, list(keys), args)
        except SharedStateUnavailable:
            if not self.connection.fail_open:
                raise
            # The hold expires in Redis; the cost is counted here until Redis returns.
            self.connection.warn_once("per-process budgets")
            await self.fallback.settle(keys, Decimal(0), actual)

    async def state(self, key: str) -> BudgetState:
        try:
            reply = await self.connection.run(BUDGET_STATE, [key], [])
        except SharedStateUnavailable:
            if not self.connection.fail_open:
                raise
            self.connection.warn_once("per-process budgets")
            return await self.fallback.state(key)
        return BudgetState(spent=from_pico(reply[0]), reserved=from_pico(reply[1]))
