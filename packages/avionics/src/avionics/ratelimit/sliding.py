"""`SlidingLogStore`: exact sliding windows kept in this process (the `memory://` default).

Each key keeps a log of (time, units) taken within the window and their running sum, so an
admission is a few list operations under a lock, with no await and no library round trip: the
gateway's per-call cost stays small when local limits are on. Shared limits use Redis instead
(`avionics.state`), and other `limits` storage URLs use `LimitsWindowStore`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["SlidingLogStore"]

_MIN_WAIT = 0.001


class _Log:
    __slots__ = ("entries", "used")

    def __init__(self) -> None:
        self.entries: deque[list[float]] = deque()  # [time, units], oldest first
        self.used = 0.0


class SlidingLogStore:
    """A `WindowStore` with exact sliding logs per key, safe across tasks and threads."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._logs: dict[str, _Log] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _current(self, key: str, now: float, window: int) -> _Log:
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log()
        cutoff = now - window
        entries = log.entries
        while entries and entries[0][0] <= cutoff:
            log.used -= entries.popleft()[1]
        return log

    async def acquire(self, key: str, amount: int, *, limit: int, window: int) -> float:
        with self._lock:
            now = self._clock()
            log = self._current(key, now, window)
            if log.used + amount <= limit:
                log.entries.append([now, float(amount)])
                log.used += amount
                return 0.0
            # Room appears when enough of the oldest units leave the window.
            excess = log.used + amount - limit
            freed = 0.0
            for taken_at, units in log.entries:
                freed += units
                if freed >= excess:
                    return max(taken_at + window - now, _MIN_WAIT)
            return float(window)

    async def settle(
        self, key: str, delta: int, *, limit: int, window: int, acquired_at: float
    ) -> None:
        if delta == 0:
            return
        with self._lock:
            now = self._clock()
            if acquired_at <= now - window:
                return  # those units have left the window already
            log = self._current(key, now, window)
            if delta > 0:
                log.entries.append([now, float(delta)])  # used now; they leave last
                log.used += delta
                return
            # Give units back from the entries taken at or after `acquired_at`: they are the
            # newest, so the scan runs from the right and stops at the first older entry.
            give = float(-delta)
            for entry in reversed(log.entries):
                if entry[0] < acquired_at:
                    return
                if entry[1] <= 0:
                    continue
                taken = min(entry[1], give)
                entry[1] -= taken
                log.used -= taken
                give -= taken
                if give <= 0:
                    return

    def pending(self, key: str) -> float:
        """Units currently counted in `key`'s window (for tests and diagnostics)."""
        with self._lock:
            log = self._logs.get(key)
            return log.used if log is not None else 0.0
