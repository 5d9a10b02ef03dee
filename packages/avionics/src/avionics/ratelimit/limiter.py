"""Per-provider local limits: requests per window (rpm), tokens per window (tpm), concurrency.

    limiter = ProviderLimiter("anthropic", rpm=50, tpm=40_000, max_concurrency=8)
    async with limiter.acquire(estimated_tokens=1_200) as permit:
        result = await airframe.infer(endpoint, request)
        permit.settle(result.usage.total_tokens if result.usage else None)

`acquire` waits for room (sleeping until the window's reset time, never spinning) up to
`max_wait` seconds in all, then raises `RateLimitedLocally`. Tokens are reserved from the estimate
before the call and settled to the real count when the block exits:

- `settle(n)` called: the reservation becomes n (the difference is given back or taken);
- `settle(None)` or no settle on a normal exit: the estimate stands;
- the block raised or was cancelled without a settle: the whole reservation is given back.

A request counts once towards rpm as soon as it is admitted. A dimension left unset (None) costs
nothing: no store call, no semaphore.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from types import TracebackType
from typing import Final

from avionics.errors import LimitKind, RateLimitedLocally

from .base import WindowStore

__all__ = [
    "DEFAULT_MAX_WAIT",
    "DEFAULT_WINDOW_SECONDS",
    "LimiterRegistry",
    "Permit",
    "ProviderLimiter",
]

DEFAULT_MAX_WAIT: Final = 30.0
DEFAULT_WINDOW_SECONDS: Final = 60
#: Prefix of every store key, as `[state] key_prefix` in settings.
DEFAULT_KEY_PREFIX: Final = "avionics:"


def window_store_for(storage_uri: str) -> WindowStore:
    """The in-process sliding log for `memory://`; the `limits` library for any other URL."""
    if storage_uri in ("memory://", "async+memory://"):
        from .sliding import SlidingLogStore

        return SlidingLogStore()
    from .windows import LimitsWindowStore  # loads `limits` only for its storages

    return LimitsWindowStore(storage_uri)


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be a positive integer or None (unlimited), got {value}")
    return value


class Permit:
    """Admission to make one call. Use as `async with limiter.acquire(n) as permit`."""

    def __init__(self, limiter: ProviderLimiter, estimated_tokens: int) -> None:
        self.limiter = limiter
        self.estimated_tokens = max(int(estimated_tokens), 0)
        #: Tokens held in the tpm window for this call (0 when tpm is unlimited).
        self.reserved_tokens = 0
        #: Seconds spent waiting for room.
        self.waited = 0.0
        self.actual_tokens: int | None = None
        self._settled = False
        self._acquired_at = 0.0
        self._semaphore: asyncio.Semaphore | None = None
        self._entered = False

    def settle(self, actual_tokens: int | None) -> None:
        """Record the call's real token count (None: unknown, keep the estimate).

        Applied when the `async with` block exits, also when it exits with an exception.
        """
        self._settled = True
        self.actual_tokens = None if actual_tokens is None else max(int(actual_tokens), 0)

    async def __aenter__(self) -> Permit:
        if self._entered:
            raise RuntimeError("a Permit is entered once; call limiter.acquire() again")
        self._entered = True
        await self.limiter._admit(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.limiter._release(self, failed=exc_type is not None)


class ProviderLimiter:
    """Local limits for one provider, shared by every call to it in this process (or, with a
    shared store, across processes for rpm and tpm; concurrency is always per event loop)."""

    def __init__(
        self,
        name: str,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrency: int | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
        storage_uri: str = "memory://",
        *,
        store: WindowStore | None = None,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0 seconds")
        if window_seconds < 1:
            raise ValueError("window_seconds must be >= 1")
        self.name = name
        self.rpm = _positive("rpm", rpm)
        self.tpm = _positive("tpm", tpm)
        self.max_concurrency = _positive("max_concurrency", max_concurrency)
        self.max_wait = float(max_wait)
        self.window_seconds = window_seconds
        if store is None and (rpm is not None or tpm is not None):
            store = window_store_for(storage_uri)
        self.store = store
        self._rpm_key = f"{key_prefix}ratelimit:{name}:requests"
        self._tpm_key = f"{key_prefix}ratelimit:{name}:tokens"
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self._in_flight = 0

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_concurrency is None

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released (all event loops)."""
        return self._in_flight

    def acquire(self, estimated_tokens: int = 0) -> Permit:
        """A permit to enter with `async with`; admission (and any wait) happens on entry."""
        return Permit(self, estimated_tokens)

    def __repr__(self) -> str:
        return (
            f"ProviderLimiter({self.name!r}, rpm={self.rpm}, tpm={self.tpm}, "
            f"max_concurrency={self.max_concurrency}, max_wait={self.max_wait})"
        )

    # -- admission ---------------------------------------------------------------------------

    async def _admit(self, permit: Permit) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.max_wait
        tokens = permit.estimated_tokens if self.tpm is not None else 0
        if self.tpm is not None and tokens > self.tpm:
            raise RateLimitedLocally(
                self.name,
                LimitKind.TPM,
                None,
                limit=self.tpm,
                detail=f"this request alone is estimated at {tokens} tokens",
            )
        semaphore = await self._enter_semaphore(loop, start, deadline)
        try:
            while True:
                refused = await self._take_windows(permit, tokens)
                if refused is None:
                    break
                kind, wait = refused
                now = loop.time()
                if now + wait > deadline:
                    raise RateLimitedLocally(
                        self.name,
                        kind,
                        wait,
                        limit=self.rpm if kind is LimitKind.RPM else self.tpm,
                        waited=now - start,
                    )
                await asyncio.sleep(wait)
        except BaseException:
            if semaphore is not None:
                semaphore.release()
            raise
        permit._semaphore = semaphore
        permit.waited = loop.time() - start
        self._in_flight += 1

    async def _enter_semaphore(
        self, loop: asyncio.AbstractEventLoop, start: float, deadline: float
    ) -> asyncio.Semaphore | None:
        if self.max_concurrency is None:
            return None
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        if not semaphore.locked():
            await semaphore.acquire()  # free: returns without suspending
            return semaphore
        try:
            async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                await semaphore.acquire()
        except TimeoutError:
            waited = loop.time() - start
            raise RateLimitedLocally(
                self.name,
                LimitKind.CONCURRENCY,
                waited,
                limit=self.max_concurrency,
                waited=waited,
                detail=f"{self.max_concurrency} calls already in flight",
            ) from None
        return semaphore

    async def _take_windows(self, permit: Permit, tokens: int) -> tuple[LimitKind, float] | None:
        """Take one request and `tokens` tokens, or nothing: the refusing limit and its wait."""
        store = self.store
        if store is None:
            return None
        window = self.window_seconds
        took_request = False
        acquired_at = time.time()
        try:
            if self.rpm is not None:
                wait = await store.acquire(self._rpm_key, 1, limit=self.rpm, window=window)
                if wait > 0:
                    return LimitKind.RPM, wait
                took_request = True
            if self.tpm is not None and tokens > 0:
                wait = await store.acquire(self._tpm_key, tokens, limit=self.tpm, window=window)
                if wait > 0:
                    took_request = False
                    await asyncio.shield(self._give_back_request(acquired_at))
                    return LimitKind.TPM, wait
                permit.reserved_tokens = tokens
        except BaseException:
            if took_request:
                await asyncio.shield(self._give_back_request(acquired_at))
            raise
        permit._acquired_at = acquired_at
        return None

    async def _give_back_request(self, acquired_at: float) -> None:
        if self.store is not None and self.rpm is not None:
            await self.store.settle(
                self._rpm_key,
                -1,
                limit=self.rpm,
                window=self.window_seconds,
                acquired_at=acquired_at,
            )

    # -- release -----------------------------------------------------------------------------

    async def _release(self, permit: Permit, *, failed: bool) -> None:
        self._in_flight -= 1
        if permit._semaphore is not None:
            permit._semaphore.release()
            permit._semaphore = None
        if self.store is None or self.tpm is None:
            return
        reserved = permit.reserved_tokens
        if permit._settled:
            actual = reserved if permit.actual_tokens is None else permit.actual_tokens
        else:
            actual = 0 if failed else reserved
        delta = actual - reserved
        if delta == 0:
            return
        permit.reserved_tokens = actual
        await asyncio.shield(
            self.store.settle(
                self._tpm_key,
                delta,
                limit=self.tpm,
                window=self.window_seconds,
                acquired_at=permit._acquired_at,
            )
        )


class LimiterRegistry:
    """One `ProviderLimiter` per provider name, all sharing one store."""

    def __init__(
        self,
        storage_uri: str = "memory://",
        *,
        store: WindowStore | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        self.storage_uri = storage_uri
        self.key_prefix = key_prefix
        self._store = store
        self.max_wait = max_wait
        self.window_seconds = window_seconds
        self._limiters: dict[str, ProviderLimiter] = {}

    @property
    def store(self) -> WindowStore:
        if self._store is None:
            self._store = window_store_for(self.storage_uri)
        return self._store

    def limiter(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrency: int | None = None,
        max_wait: float | None = None,
    ) -> ProviderLimiter:
        """The provider's limiter, created on first use and replaced if its limits changed."""
        wait = self.max_wait if max_wait is None else max_wait
        current = self._limiters.get(name)
        if current is not None and (
            current.rpm,
            current.tpm,
            current.max_concurrency,
            current.max_wait,
        ) == (rpm, tpm, max_concurrency, float(wait)):
            return current
        limiter = ProviderLimiter(
            name,
            rpm=rpm,
            tpm=tpm,
            max_concurrency=max_concurrency,
            max_wait=wait,
            store=self.store if (rpm is not None or tpm is not None) else None,
            window_seconds=self.window_seconds,
            key_prefix=self.key_prefix,
        )
        self._limiters[name] = limiter
        return limiter

    def get(self, name: str) -> ProviderLimiter | None:
        """The provider's limiter if one was created."""
        return self._limiters.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._limiters

    def names(self) -> list[str]:
        return sorted(self._limiters)
