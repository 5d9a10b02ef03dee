"""One Redis address: a `redis.asyncio` client per event loop, scripts, and the outage policy.

Every store and the gate talk to Redis only through `RedisConnection.run(script, keys, args)`:
one EVALSHA, one round trip (an EVAL more, once, when the server does not know the script yet,
e.g. after a restart). Failures are translated here, in one place:

- any `redis` error becomes `SharedStateUnavailable` naming the URL (credentials removed);
- sockets have short timeouts (1 s to connect, 1 s per reply, unless the URL's query sets
  `socket_connect_timeout` / `socket_timeout`) and nothing is retried, so nothing hangs;
- after a failure the address is *held off* for a short, growing delay (0.25 s doubling up to
  2 s): calls in that time fail at once without touching the network, then one call tries
  again. Success ends the outage, so the stores reconnect by themselves when Redis returns;
- `fail_mode` tells the callers what to do with the error: "closed" lets it propagate,
  "open" falls back to per-process state. Either way one warning is logged per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Sequence
from typing import Any, Final

import structlog

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - exercised by installs without the extra
    raise ImportError(
        "avionics' Redis state backend needs the `redis` package: "
        "pip install 'jeeves-avionics[redis]'  (or: uv add 'jeeves-avionics[redis]')"
    ) from exc

from ._base import FailMode, SharedStateUnavailable, redact_url
from ._lua import LuaScript

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "RedisConnection"]

DEFAULT_CONNECT_TIMEOUT: Final = 1.0
DEFAULT_SOCKET_TIMEOUT: Final = 1.0
_HOLD_OFF_FIRST: Final = 0.25
_HOLD_OFF_MAX: Final = 2.0

_log = structlog.get_logger("avionics.state")


class RedisConnection:
    """A Redis address shared by the stores of one process.

    `client()` is created lazily, one per event loop (a `redis.asyncio` client and its sockets
    belong to the loop that opened them). `round_trips` counts requests sent, for benchmarks
    and tests.
    """

    def __init__(
        self,
        url: str,
        *,
        fail_mode: FailMode = "closed",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        clock: Any = time.monotonic,
    ) -> None:
        if fail_mode not in ("closed", "open"):
            raise ValueError(f'fail_mode must be "closed" or "open", got {fail_mode!r}')
        self._url = url
        self.display_url = redact_url(url)
        self.fail_mode: FailMode = fail_mode
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.round_trips = 0
        self._clock = clock
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._hold_off = 0.0
        self._reason = ""
        self._warned = False

    def __repr__(self) -> str:
        return f"RedisConnection({self.display_url!r}, fail_mode={self.fail_mode!r})"

    @property
    def fail_open(self) -> bool:
        return self.fail_mode == "open"

    @property
    def down(self) -> bool:
        """True while an outage is being held off (calls fail without I/O)."""
        return self._down_since is not None and self._clock() < self._retry_at

    def client(self) -> aioredis.Redis:
        """This event loop's client, created on first use."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = aioredis.Redis.from_url(
                self._url,
                socket_connect_timeout=self.connect_timeout,
                socket_timeout=self.socket_timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
                client_name="avionics",
            )
        return client

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run `script` atomically on the server: one round trip.

        Raises `SharedStateUnavailable` when Redis cannot be reached (or is held off).
        """
        now = self._clock()
        if self._down_since is not None and now < self._retry_at:
            raise self.unavailable(retry_in=self._retry_at - now)
        client = self.client()
        try:
            self.round_trips += 1
            try:
                reply = await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:  # a new or restarted server: send the source once
                self.round_trips += 1
                reply = await client.eval(script.source, len(keys), *keys, *args)
        except (RedisError, OSError) as exc:
            await self._failed(client, f"{script.name}: {type(exc).__name__}: {exc}")
            raise self.unavailable() from exc
        if self._down_since is not None:
            self._recovered()
        return reply

    def unavailable(self, *, retry_in: float | None = None) -> SharedStateUnavailable:
        return SharedStateUnavailable(
            self.display_url, self._reason or "unknown", retry_in=retry_in
        )

    def warn_once(self, fallback: str) -> None:
        """Log the outage once (per outage); `fallback` says what callers do meanwhile."""
        if self._warned:
            return
        self._warned = True
        _log.warning(
            "shared state unreachable",
            url=self.display_url,
            reason=self._reason,
            fail_mode=self.fail_mode,
            fallback=fallback,
        )

    async def aclose(self) -> None:
        """Close this event loop's client (and forget clients of other, finished loops)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        clients = dict(self._clients)
        self._clients.clear()
        for owner, client in clients.items():
            if owner is loop:
                await client.aclose()

    # -- outages -----------------------------------------------------------------------------

    async def _failed(self, client: aioredis.Redis, reason: str) -> None:
        now = self._clock()
        self._reason = reason
        if self._down_since is not None and now < self._retry_at:
            return  # another call of the same burst already counted this outage
        if self._down_since is None:
            self._down_since = now
            self._hold_off = _HOLD_OFF_FIRST
        else:
            self._hold_off = min(self._hold_off * 2, _HOLD_OFF_MAX)
        self._retry_at = now + self._hold_off
        # Drop every pooled socket: after a server restart they are all dead.
        with contextlib.suppress(RedisError, OSError):
            await client.connection_pool.disconnect(inuse_connections=False)
        if not self.fail_open:
            self.warn_once("calls are refused")

    def _recovered(self) -> None:
        down_for = self._clock() - (self._down_since or 0.0)
        self._down_since = None
        self._hold_off = 0.0
        if self._warned:
            _log.info("shared state reachable again", url=self.display_url, down_s=down_for)
        self._warned = False
        self._reason = ""
