"""`RedisBreakerStore`: circuit breakers shared by every process, behind the sync `BreakerStore`.

`NodePool` asks its store on every pick, synchronously, so the hot path must not wait for Redis.
This store answers from a local cache and talks to Redis in the background:

- **writes** are sent asynchronously, one script per transition, right after `put`: a trip
  (`open`), a half-open probe claim (`probe`) or its withdrawal, and a close are shared; counts of
  consecutive failures below the threshold stay per process (each worker judges a node by what it
  sees, and only its verdict is shared). Only the latest transition per node is kept while one
  is pending, so an outage cannot pile writes up;
- **reads** refresh the cache with every node's shared state in one script, at most once per
  `refresh_interval` (default 1 s) and only while the pool is in use, plus right after a write.

Why a refreshed cache and not pub/sub: it needs no long-lived subscriber connection or task per
process, recovers from a Redis restart by itself (the next refresh reads the truth), and bounds
staleness to `refresh_interval`; a trip costs the fleet at most that long of extra requests to a
failing node, which fail fast anyway. Times are the server's: an open breaker's age is measured on
Redis and mapped onto this process's clock, so skewed machines agree on when cooldowns end.

A probe claim older than `probe_timeout` is ignored (its worker probably died), so a crashed
prober cannot keep a node out forever. When Redis is unreachable the breakers keep working per
process, whatever `fail_mode` says; transitions are sent when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Final, Literal

from avionics.nodes import BreakerState

from ._base import SharedStateUnavailable
from ._connection import RedisConnection
from ._lua import BREAKER_PUT, BREAKER_READ

__all__ = ["DEFAULT_REFRESH_INTERVAL", "RedisBreakerStore"]

DEFAULT_REFRESH_INTERVAL: Final = 1.0
_OPEN_TTL_MS: Final = 24 * 3600 * 1000

_Op = Literal["open", "probe", "unprobe", "close"]


def _op_of(previous: BreakerState | None, state: BreakerState) -> _Op | None:
    """The shared transition from `previous` to `state` (None: nothing to share, e.g. a
    failure count below the threshold)."""
    if state.opened_at is None:
        return "close" if state.failures == 0 and not state.probing else None
    if state.probing:
        return "probe"
    if previous is not None and previous.opened_at == state.opened_at:
        return "unprobe" if previous.probing else None  # a probe given up; same trip
    return "open"


class RedisBreakerStore:
    """A `BreakerStore` whose trips, probes and closes are shared through Redis.

    `clock` must be the `NodePool`'s clock (monotonic by default): shared times are translated
    onto it.
    """

    def __init__(
        self,
        connection: RedisConnection,
        *,
        key_prefix: str = "avionics:",
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        probe_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self.key_prefix = key_prefix
        self.refresh_interval = refresh_interval
        self.probe_timeout_ms = int(probe_timeout * 1000)
        self._clock = clock
        self._states: dict[str, BreakerState] = {}
        self._pending: dict[str, tuple[_Op, int]] = {}
        self._refreshed_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._again = False

    # -- BreakerStore ------------------------------------------------------------------------

    def get(self, key: str) -> BreakerState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = BreakerState()
            self._refreshed_at = float("-inf")  # a node never read: fetch it now
        self._kick()
        return state

    def put(self, key: str, state: BreakerState) -> None:
        previous = self._states.get(key)
        self._states[key] = state
        op = _op_of(previous, state)
        if op is not None:
            self._pending[key] = (op, state.failures)
            self._kick(write=True)

    # -- syncing -----------------------------------------------------------------------------

    def redis_key(self, node: str) -> str:
        return f"{self.key_prefix}breaker:{node}"

    async def sync(self) -> None:
        """Send pending transitions, then read every known node's shared state."""
        for node, (op, failures) in list(self._pending.items()):
            await self.connection.run(
                BREAKER_PUT, [self.redis_key(node)], [op, failures, _OPEN_TTL_MS]
            )
            if self._pending.get(node) == (op, failures):
                del self._pending[node]
        nodes = list(self._states)
        if not nodes:
            return
        reply = await self.connection.run(BREAKER_READ, [self.redis_key(n) for n in nodes], [])
        self._merge(nodes, reply)

    def _merge(self, nodes: list[str], reply: list[str | int]) -> None:
        server_now = int(reply[0])
        local_now = self._clock()
        for index, node in enumerate(nodes):
            if node in self._pending:
                continue  # our newer transition has not been sent yet
            opened, failures, probe = (str(v) for v in reply[1 + 3 * index : 4 + 3 * index])
            local = self._states.get(node, BreakerState())
            if opened:
                age = (server_now - int(opened)) / 1000.0
                probing = bool(probe) and server_now - int(probe) < self.probe_timeout_ms
                self._states[node] = BreakerState(
                    int(failures or 0), local_now - max(age, 0.0), probing
                )
            elif local.opened_at is not None or local.probing:
                self._states[node] = BreakerState()  # closed elsewhere (a probe succeeded)

    def _kick(self, *, write: bool = False) -> None:
        """Start a background sync if one is due (no-op outside an event loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            self._again = self._again or write
            return
        due = self._clock() - self._refreshed_at >= self.refresh_interval
        if not (write or due):
            return
        self._refreshed_at = self._clock()
        self._task = loop.create_task(self._run(), name="avionics-breaker-sync")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.sync()
            except SharedStateUnavailable:
                return  # breakers stay per process until the next due sync
            self._refreshed_at = self._clock()
            if not self._again:
                return

    async def aclose(self) -> None:
        """Finish (or cancel) the background sync of this event loop."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if task.get_loop() is not loop:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
