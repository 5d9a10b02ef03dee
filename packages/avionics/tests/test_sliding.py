"""The in-process sliding log behind `memory://` limits: exact counts, waits and settlement."""

from __future__ import annotations

import asyncio

import pytest

from avionics.errors import LimitKind, RateLimitedLocally
from avionics.ratelimit import ProviderLimiter
from avionics.ratelimit.sliding import SlidingLogStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_units_fit_until_the_limit_then_the_wait_is_when_the_oldest_leave() -> None:
    clock = Clock()
    store = SlidingLogStore(clock)
    assert await store.acquire("k", 6, limit=10, window=60) == 0.0
    clock.now += 10
    assert await store.acquire("k", 4, limit=10, window=60) == 0.0
    assert await store.acquire("k", 1, limit=10, window=60) == pytest.approx(50.0)
    assert await store.acquire("k", 7, limit=10, window=60) == pytest.approx(60.0)
    clock.now += 50  # the first 6 units leave the window
    assert await store.acquire("k", 6, limit=10, window=60) == 0.0
    assert store.pending("k") == 10


async def test_settling_gives_units_back_or_takes_more() -> None:
    clock = Clock()
    store = SlidingLogStore(clock)
    taken_at = clock.now
    await store.acquire("k", 800, limit=1000, window=60)
    await store.settle("k", -500, limit=1000, window=60, acquired_at=taken_at)
    assert store.pending("k") == 300
    await store.settle("k", 900, limit=1000, window=60, acquired_at=taken_at)
    assert store.pending("k") == 1200
    assert await store.acquire("k", 1, limit=1000, window=60) > 0
    clock.now += 61
    await store.settle("k", -100, limit=1000, window=60, acquired_at=taken_at)  # gone already
    assert await store.acquire("k", 1000, limit=1000, window=60) == 0.0
    assert store.pending("k") == 1000


async def test_the_default_limiter_enforces_rpm_and_tpm_in_process() -> None:
    limiter = ProviderLimiter("p", rpm=3, tpm=1_000, max_wait=0)
    assert isinstance(limiter.store, SlidingLogStore)
    for _ in range(3):
        async with limiter.acquire(100) as permit:
            permit.settle(50)
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire(10):
            pass
    assert caught.value.kind is LimitKind.RPM
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 60


async def test_concurrent_tasks_never_exceed_the_limit() -> None:
    limiter = ProviderLimiter("p", rpm=25, max_wait=0)
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        try:
            async with limiter.acquire():
                admitted += 1
        except RateLimitedLocally:
            pass

    await asyncio.gather(*(one() for _ in range(100)))
    assert admitted == 25
