"""`RedisWindowStore`: the `WindowStore` protocol on Redis, an exact sliding window log.

Each `acquire` is one entry (id, server time, units); a window's use is the sum of the entries
younger than `window` seconds, kept as a running total, so a check is O(1) amortised (each entry
is added once and evicted once). `settle` adds a correcting entry (negative to give units back)
dated like the original acquisition, so it leaves the window together with it.

Used by `ProviderLimiter(store=...)` / `LimiterRegistry(store=...)`. The gateway admits through
`SharedGate` instead, which keeps the same keys but takes rpm, tpm, concurrency and budgets in
one script.
"""

from __future__ import annotations

import secrets

from avionics.ratelimit.base import WindowStore

from ._base import SharedStateUnavailable
from ._connection import RedisConnection
from ._lua import WINDOW_ACQUIRE, WINDOW_SETTLE

__all__ = ["RedisWindowStore", "units_key"]


def units_key(key: str) -> str:
    """The HASH holding the units of window `key`'s entries (and their total)."""
    return f"{key}:units"


class RedisWindowStore:
    """A `WindowStore` on Redis. With `fail_mode = "open"` an unreachable Redis falls back to a
    per-process `LimitsWindowStore` (one warning per outage)."""

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self._fallback: WindowStore | None = None

    async def acquire(self, key: str, amount: int, *, limit: int, window: int) -> float:
        args: list[str | int] = [secrets.token_hex(8), int(amount), int(limit), window * 1000]
        try:
            wait_ms = await self.connection.run(WINDOW_ACQUIRE, [key, units_key(key)], args)
        except SharedStateUnavailable:
            if not self.connection.fail_open:
                raise
            self.connection.warn_once("per-process rate limits")
            return await self._local().acquire(key, amount, limit=limit, window=window)
        return int(wait_ms) / 1000.0

    async def settle(
        self, key: str, delta: int, *, limit: int, window: int, acquired_at: float
    ) -> None:
        if delta == 0:
            return
        at_ms = int(acquired_at * 1000)
        args: list[str | int] = [secrets.token_hex(8), int(delta), at_ms, window * 1000]
        try:
            await self.connection.run(WINDOW_SETTLE, [key, units_key(key)], args)
        except SharedStateUnavailable:
            if not self.connection.fail_open:
                raise
            self.connection.warn_once("per-process rate limits")
            await self._local().settle(
                key, delta, limit=limit, window=window, acquired_at=acquired_at
            )

    def _local(self) -> WindowStore:
        if self._fallback is None:
            from avionics.ratelimit.windows import LimitsWindowStore

            self._fallback = LimitsWindowStore()
        return self._fallback
