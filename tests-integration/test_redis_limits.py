"""Shared rate limits on a real redis-server: rpm, tpm and concurrency across OS processes.

Each multi-process test starts several Python processes (roles in `redis_workers.py`), releases
them together, and checks the totals they report and what Redis holds.
Windows are an hour long so no window rolls over while a test runs; nothing sleeps to wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_fixture import RedisServer, run_workers

from avionics.errors import LimitKind, RateLimitedLocally
from avionics.ratelimit import LimiterRegistry
from avionics.state import RedisConnection, RedisWindowStore, SharedGate

pytestmark = pytest.mark.redis

HOUR = 3600
DEADLINE_S = 30.0


@pytest.fixture
async def conn(redis_server: RedisServer) -> AsyncIterator[RedisConnection]:
    connection = RedisConnection(redis_server.url)
    yield connection
    await connection.aclose()


@pytest.fixture
async def probe(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client for looking at what the scripts wrote."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def call(gate: SharedGate, provider: str = "p", **limits: Any) -> bool:
    """One admission + settlement; False when a limit refused it."""
    permit, _ = gate.admission(provider, tokens=limits.pop("tokens", 1), **limits)
    try:
        async with permit:
            pass
    except RateLimitedLocally:
        return False
    return True


# -- one process -------------------------------------------------------------------------------


async def test_rpm_admits_up_to_the_limit_and_reports_the_servers_wait(
    conn: RedisConnection,
) -> None:
    gate = SharedGate(conn, max_wait=0, window_seconds=HOUR)
    assert [await call(gate, rpm=3) for _ in range(3)] == [True, True, True]
    permit, _ = gate.admission("p", rpm=3, tokens=1)
    with pytest.raises(RateLimitedLocally) as caught:
        async with permit:
            pytest.fail("admitted past rpm")
    error = caught.value
    assert (error.kind, error.limit) == (LimitKind.RPM, 3)
    assert error.retry_after is not None
    assert 0 < error.retry_after <= HOUR  # when the oldest request leaves the window


async def test_tpm_reserves_the_estimate_and_settles_to_real_usage(
    conn: RedisConnection, probe: aioredis.Redis
) -> None:
    gate = SharedGate(conn, max_wait=0, window_seconds=HOUR)
    permit, _ = gate.admission("p", tpm=1_000, tokens=600)
    async with permit:
        assert permit.reserved_tokens == 600
        assert await probe.hget("avionics:ratelimit:p:tokens:units", "=") == "600"
        permit.settle(250)
    assert await probe.hget("avionics:ratelimit:p:tokens:units", "=") == "250"
    # 250 used: 700 more fit, 800 do not.
    assert await call(gate, tpm=1_000, tokens=700)
    assert not await call(gate, tpm=1_000, tokens=100)
    # A call that fails before usage is known gives its whole reservation back.
    await probe.delete("avionics:ratelimit:p:tokens", "avionics:ratelimit:p:tokens:units")
    permit, _ = gate.admission("p", tpm=1_000, tokens=900)
    with pytest.raises(RuntimeError):
        async with permit:
            raise RuntimeError("provider failed")
    assert await probe.hget("avionics:ratelimit:p:tokens:units", "=") == "0"


async def test_a_request_larger_than_tpm_is_refused_without_a_round_trip(
    conn: RedisConnection,
) -> None:
    gate = SharedGate(conn, max_wait=5, window_seconds=HOUR)
    permit, _ = gate.admission("p", tpm=100, tokens=101)
    with pytest.raises(RateLimitedLocally) as caught:
        await permit.__aenter__()
    assert (caught.value.kind, caught.value.retry_after) == (LimitKind.TPM, None)
    assert conn.round_trips == 0


async def test_concurrency_leases_are_shared_and_given_back(conn: RedisConnection) -> None:
    other = RedisConnection(conn.display_url)  # another client, as another process would have
    try:
        mine = SharedGate(conn, max_wait=0)
        theirs = SharedGate(other, max_wait=0)
        first, _ = mine.admission("p", max_concurrency=2)
        second, _ = theirs.admission("p", max_concurrency=2)
        async with first, second:
            assert not await call(mine, max_concurrency=2)
            assert not await call(theirs, max_concurrency=2)
        assert await call(theirs, max_concurrency=2)
    finally:
        await other.aclose()


async def test_a_waiting_call_is_admitted_when_a_lease_comes_back(conn: RedisConnection) -> None:
    gate = SharedGate(conn, max_wait=DEADLINE_S)
    holder, _ = gate.admission("p", max_concurrency=1)
    await holder.__aenter__()
    waiter, _ = gate.admission("p", max_concurrency=1)
    sent = conn.round_trips
    entered = asyncio.create_task(waiter.__aenter__())
    deadline = time.monotonic() + DEADLINE_S
    while conn.round_trips < sent + 2:  # refused once, asking again
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    assert not entered.done()
    await holder.__aexit__(None, None, None)
    await asyncio.wait_for(entered, DEADLINE_S)
    await waiter.__aexit__(None, None, None)


async def test_admission_and_settlement_are_one_round_trip_each(conn: RedisConnection) -> None:
    gate = SharedGate(conn, max_wait=0, window_seconds=HOUR)
    limits = {"rpm": 1_000, "tpm": 100_000, "max_concurrency": 10}
    await call(gate, **limits)  # loads the scripts (NOSCRIPT + EVAL once)
    before = conn.round_trips
    permit, reservation = gate.admission(
        "p", tokens=500, agent="a", estimate=Decimal("0.01"), budget=Decimal("5"), **limits
    )
    assert reservation is not None
    async with permit:
        assert conn.round_trips == before + 1
        permit.settle(321)
    assert conn.round_trips == before + 1  # the reservation's commit settles both
    await reservation.commit(Decimal("0.004"))
    assert conn.round_trips == before + 2
    # rpm alone needs nothing settled: one round trip per call in all.
    before = conn.round_trips
    assert await call(gate, rpm=1_000)
    assert conn.round_trips == before + 1


async def test_redis_window_store_backs_provider_limiter(
    conn: RedisConnection, probe: aioredis.Redis
) -> None:
    registry = LimiterRegistry(store=RedisWindowStore(conn), max_wait=0, window_seconds=HOUR)
    limiter = registry.limiter("w", rpm=2, tpm=1_000)
    async with limiter.acquire(600) as permit:
        permit.settle(100)
    assert await probe.hget("avionics:ratelimit:w:tokens:units", "=") == "100"
    async with limiter.acquire(900):
        pass
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire(1):
            pass
    assert caught.value.kind is LimitKind.RPM


async def test_a_crashed_workers_lease_expires(
    redis_server: RedisServer, conn: RedisConnection
) -> None:
    """A process admitted with a 1 s lease dies without settling; the slot comes back."""
    [crashed] = run_workers([("crash_holding_lease", {"url": redis_server.url})])
    assert crashed == {"admitted": True}
    gate = SharedGate(conn, max_wait=0)
    assert not await call(gate, max_concurrency=1)  # still held by the dead worker
    deadline = time.monotonic() + DEADLINE_S
    while not await call(gate, max_concurrency=1):
        assert time.monotonic() < deadline, "the crashed worker's lease never expired"
        await asyncio.sleep(0.05)


# -- several processes -------------------------------------------------------------------------


def test_processes_hammering_one_rpm_limit_never_exceed_it(redis_server: RedisServer) -> None:
    rpm = 40
    jobs = [("hammer", {"url": redis_server.url, "rpm": rpm, "tasks": 4, "attempts": 12})] * 4
    results = run_workers(jobs)
    admitted = sum(r["admitted"] for r in results)
    assert admitted == rpm  # 192 attempts in an hour-long window: exactly the limit, no more
    assert sum(r["refused"].get("rpm", 0) for r in results) == 4 * 4 * 12 - rpm


def test_processes_hammering_one_concurrency_limit_never_exceed_it(
    redis_server: RedisServer,
) -> None:
    jobs = [("hammer", {"url": redis_server.url, "max_concurrency": 3, "tasks": 6})] * 4
    results = run_workers(jobs)
    peak = max(r["peak"] for r in results)
    assert 1 <= peak <= 3
    assert sum(r["admitted"] for r in results) >= 1
    assert all(set(r["refused"]) <= {"concurrency"} for r in results)


def test_processes_sharing_tpm_settle_to_real_usage_and_stay_under_it(
    redis_server: RedisServer,
) -> None:
    tpm, estimate = 5_000, 100
    jobs = [
        ("hammer", {"url": redis_server.url, "tpm": tpm, "tokens": estimate, "tasks": 3,
                    "attempts": 40, "seed": seed})
        for seed in range(4)
    ]  # fmt: skip
    results = run_workers(jobs)
    used = sum(r["tokens"] for r in results)
    assert used <= tpm
    # Settling to real usage (40-100 tokens) let more calls in than estimates alone would.
    assert sum(r["admitted"] for r in results) > tpm // estimate
    assert asyncio.run(window_total(redis_server.url, "avionics:ratelimit:p:tokens:units")) == used


async def window_total(url: str, key: str) -> int:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return int(await client.hget(key, "=") or 0)
    finally:
        await client.aclose()
