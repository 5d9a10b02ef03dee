"""Default stores: windows on the `limits` library, budgets in a dict.

`LimitsWindowStore` keeps window counters in any `limits` async storage, in memory by default
(`memory://`); a `limits` URL such as `async+redis://host:6379` moves the counters to Redis.
Windows use the sliding window counter strategy: O(1) per call whatever the token counts (the
moving window stores one entry per unit, too heavy for tokens per minute).

`limits` cannot take units back, so settlement is kept beside it, per process and per key:

- units given back become a *credit* that expires when the original units leave the window;
  the next `acquire` on the key spends credit before asking `limits` for more;
- units taken beyond a reservation are taken at once when they fit, else they become a *debt*
  the next `acquire` on the key pays first.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import SlidingWindowCounterSupport, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.storage import storage_from_string

__all__ = ["LimitsWindowStore", "async_storage_uri", "sliding_window_wait"]

_STRATEGIES: Final[Mapping[str, Callable[[Storage], RateLimiter]]] = {
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
}
# The shortest wait ever returned, so a reset time in the past never turns into a busy loop.
_MIN_WAIT: Final = 0.01
# Added to solved waits so a sleeper does not wake a hair before the room appears.
_EPSILON: Final = 0.001


def async_storage_uri(uri: str) -> str:
    """`memory://` -> `async+memory://`, `redis://h` -> `async+redis://h`; async URLs as given."""
    return uri if uri.startswith("async+") else f"async+{uri}"


def sliding_window_wait(
    previous: int,
    previous_ttl: float,
    current: int,
    current_ttl: float,
    expiry: int,
    limit: int,
    amount: int,
) -> float:
    """Seconds until a sliding window counter admits `amount` more units (nobody else hitting).

    The counter admits when `floor(previous * previous_ttl / expiry + current) + amount <= limit`:
    the previous window's weight decays linearly to 0 as `previous_ttl` runs out, then the
    current window becomes the previous one (`current_ttl - expiry` seconds from now) and decays
    in turn. `limits` reports only when the next single unit frees; for tokens that is every few
    milliseconds, so the wait is solved for the whole amount instead.
    """
    room = limit - amount + 1  # the weighted count must end below this
    if room <= 0:
        return float("inf")
    if current < room:
        if previous == 0:
            return 0.0
        return max(previous_ttl - (room - current) * expiry / previous, 0.0) + _EPSILON
    current_ends_in = max(current_ttl - expiry, 0.0)
    return current_ends_in + max(expiry * (1 - room / current), 0.0) + _EPSILON


class LimitsWindowStore:
    """A `WindowStore` on a `limits` storage and strategy (sliding window counter by default)."""

    def __init__(
        self,
        storage_uri: str = "memory://",
        *,
        strategy: str = "sliding-window-counter",
        **options: float | str | bool,
    ) -> None:
        self.storage_uri = async_storage_uri(storage_uri)
        storage = storage_from_string(self.storage_uri, **options)
        if not isinstance(storage, Storage):  # pragma: no cover - async_storage_uri ensures it
            raise TypeError(f"{storage_uri!r} is not an async limits storage")
        self.storage: Storage = storage
        try:
            strategy_class = _STRATEGIES[strategy]
        except KeyError:
            raise ValueError(
                f"unknown limits strategy {strategy!r}; use one of {sorted(_STRATEGIES)}"
            ) from None
        self._strategy: RateLimiter = strategy_class(storage)
        self._items: dict[tuple[int, int], RateLimitItem] = {}
        # Per key: credits as a list of (expires_at, units) sorted by expiry; debts in units.
        self._credits: dict[str, list[tuple[float, int]]] = {}
        self._debts: dict[str, int] = {}
        self._lock = threading.Lock()

    async def acquire(self, key: str, amount: int, *, limit: int, window: int) -> float:
        item = self._item(limit, window)
        with self._lock:
            debt = self._debts.pop(key, 0)
            need = amount + debt
            taken = self._take_credit(key, need, time.time())
        ask = need - sum(units for _, units in taken)
        pay = min(ask, limit)  # a debt beyond the whole limit is paid over later calls
        granted = False
        try:
            granted = pay <= 0 or await self._strategy.hit(item, key, cost=pay)
        finally:
            with self._lock:
                if granted:
                    if ask > pay:
                        self._debts[key] = self._debts.get(key, 0) + ask - pay
                else:
                    self._debts[key] = self._debts.get(key, 0) + debt
                    for entry in taken:
                        bisect.insort(self._credits.setdefault(key, []), entry)
        if granted:
            return 0.0
        return max(await self._wait(item, key, pay), _MIN_WAIT)

    async def settle(
        self, key: str, delta: int, *, limit: int, window: int, acquired_at: float
    ) -> None:
        if delta < 0:
            expires_at = acquired_at + window
            if expires_at > time.time():
                with self._lock:
                    bisect.insort(self._credits.setdefault(key, []), (expires_at, -delta))
            return
        if delta == 0:
            return
        item = self._item(limit, window)
        pay = min(delta, limit)
        if not await self._strategy.hit(item, key, cost=pay):
            # Take what fits now; the rest is a debt for the next acquire.
            remaining = (await self._strategy.get_window_stats(item, key)).remaining
            pay = min(pay, remaining)
            if pay <= 0 or not await self._strategy.hit(item, key, cost=pay):
                pay = 0
        if delta > pay:
            with self._lock:
                self._debts[key] = self._debts.get(key, 0) + delta - pay

    def pending(self, key: str) -> tuple[int, int]:
        """(unexpired credit, debt) held for `key` in this process: for tests and diagnostics."""
        now = time.time()
        with self._lock:
            credit = sum(units for expires, units in self._credits.get(key, ()) if expires > now)
            return credit, self._debts.get(key, 0)

    async def reset(self) -> None:
        """Forget every counter, credit and debt."""
        await self.storage.reset()
        with self._lock:
            self._credits.clear()
            self._debts.clear()

    async def _wait(self, item: RateLimitItem, key: str, amount: int) -> float:
        """Seconds until `amount` units may fit, from the window's reset time."""
        if isinstance(self._strategy, SlidingWindowCounterRateLimiter) and isinstance(
            self.storage, SlidingWindowCounterSupport
        ):
            window = await self.storage.get_sliding_window(item.key_for(key), item.get_expiry())
            return sliding_window_wait(*window, item.get_expiry(), item.amount, amount)
        # Other strategies report when the next unit frees; the caller asks again then.
        stats = await self._strategy.get_window_stats(item, key)
        return stats.reset_time - time.time()

    def _item(self, limit: int, window: int) -> RateLimitItem:
        item = self._items.get((limit, window))
        if item is None:
            item = self._items[(limit, window)] = RateLimitItemPerSecond(limit, window)
        return item

    def _take_credit(self, key: str, need: int, now: float) -> list[tuple[float, int]]:
        """Remove up to `need` units of unexpired credit, soonest to expire first."""
        credits = self._credits.get(key)
        if not credits:
            return []
        live = bisect.bisect_right(credits, (now, 2**63))
        del credits[:live]
        taken: list[tuple[float, int]] = []
        while credits and need > 0:
            expires, units = credits[0]
            use = min(units, need)
            taken.append((expires, use))
            need -= use
            if use == units:
                credits.pop(0)
            else:
                credits[0] = (expires, units - use)
        if not credits:
            del self._credits[key]
        return taken
