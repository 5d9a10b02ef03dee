"""Worker processes for the Redis integration tests: ``python redis_workers.py ROLE JSON_KWARGS``.

Started by ``redis_fixture.run_workers``. A worker prints ``ready`` once imported, waits for
``go`` on stdin (so every worker starts at the same moment), runs its role and prints one JSON
line with what it saw. Kept free of pytest so that twenty of them start quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from airframe import ErrorCategory
from avionics.errors import BudgetExceededError, RateLimitedLocally
from avionics.nodes import Node, NodePool
from avionics.state import RedisBreakerStore, RedisConnection, SharedGate

HOUR = 3600
D = Decimal


async def hammer(
    url: str,
    tasks: int,
    attempts: int = 20,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrency: int | None = None,
    tokens: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """`tasks` concurrent callers, `attempts` calls each, never waiting for room (max_wait 0).

    An admitted call bumps a shared in-flight counter (the INCR result is how many calls of all
    processes are inside their permits at that moment) and reports usage at or below its
    estimate."""
    rng = random.Random(seed)
    conn = RedisConnection(url)
    gate = SharedGate(conn, max_wait=0, window_seconds=HOUR)
    counter = aioredis.Redis.from_url(url, decode_responses=True)
    refused: Counter[str] = Counter()
    stats = {"admitted": 0, "peak": 0, "tokens": 0}

    async def caller() -> None:
        for _ in range(attempts):
            permit, _ = gate.admission(
                "p", rpm=rpm, tpm=tpm, max_concurrency=max_concurrency, tokens=tokens
            )
            try:
                async with permit:
                    inside = int(await counter.incr("test:inflight"))
                    stats["peak"] = max(stats["peak"], inside)
                    await counter.decr("test:inflight")
                    actual = rng.randint(tokens * 2 // 5, tokens)
                    permit.settle(actual)
            except RateLimitedLocally as exc:
                refused[exc.kind.value] += 1
                continue
            stats["admitted"] += 1
            stats["tokens"] += actual

    try:
        await asyncio.gather(*(caller() for _ in range(tasks)))
    finally:
        await counter.aclose()
        await conn.aclose()
    return {**stats, "refused": dict(refused)}


async def crash_holding_lease(url: str) -> dict[str, Any]:
    """Take a concurrency lease (1 s) and die without settling it."""
    conn = RedisConnection(url)
    gate = SharedGate(conn, max_wait=0, lease_seconds=1.0)
    permit, _ = gate.admission("p", max_concurrency=1)
    await permit.__aenter__()
    print(json.dumps({"admitted": True}), flush=True)
    os._exit(0)  # no settlement, no cleanup: as a crash


async def race(url: str, budget: str, estimate: str, seed: int, workers: int) -> dict[str, Any]:
    """`workers` racers, each with its own connection (as separate processes would have), admit
    calls against one agent budget until it refuses while nobody else holds a reservation (a
    final refusal, not a momentary crowd). Each call costs 50-100% of its estimate."""
    rng = random.Random(seed)
    probe = aioredis.Redis.from_url(url, decode_responses=True)
    charged: list[Decimal] = []
    finals: list[bool] = []

    async def racer() -> None:
        conn = RedisConnection(url)
        gate = SharedGate(conn, max_wait=0)
        try:
            while True:
                permit, reservation = gate.admission(
                    "p", agent="racer", estimate=D(estimate), budget=D(budget)
                )
                assert reservation is not None
                try:
                    async with permit:
                        await probe.ping()  # the "call": a network round trip
                except BudgetExceededError as exc:
                    if exc.reserved_usd == 0:
                        finals.append(True)
                        return
                    continue  # others hold reservations: ask again once they settle
                cost = D(estimate) * D(rng.randint(50, 100)) / 100
                charged.append(await reservation.commit(cost))
        finally:
            await conn.aclose()

    try:
        await asyncio.gather(*(racer() for _ in range(workers)))
    finally:
        await probe.aclose()
    return {"charged": str(sum(charged, D(0))), "calls": len(charged), "finals": len(finals)}


# -- breakers ----------------------------------------------------------------------------------


def _pool(url: str, cooldown: float) -> tuple[RedisConnection, RedisBreakerStore, NodePool]:
    from airframe import BackendKind, EndpointSpec

    conn = RedisConnection(url)
    store = RedisBreakerStore(conn, refresh_interval=0.02)
    spec = EndpointSpec("http://10.0.0.5:8080", BackendKind.LLAMA_SERVER)
    pool = NodePool([Node("local/10.0.0.5:8080", spec)], cooldown=cooldown, store=store)
    pool.state(pool.nodes[0])  # the store syncs the nodes it has been asked about
    return conn, store, pool


async def trip(url: str, failures: int) -> dict[str, Any]:
    """See `failures` connection errors on the node, then share the verdict."""
    conn, store, pool = _pool(url, cooldown=HOUR)
    node = pool.nodes[0]
    for _ in range(failures):
        pool.record_failure(node, ErrorCategory.CONNECTION)
    await store.sync()
    state = pool.state(node)
    await conn.aclose()
    return {"state": state}


async def probe_node(url: str) -> dict[str, Any]:
    """With no cooldown left, take the node as the half-open probe, say so, and wait for a line
    on stdin before reporting success (or failure, when the line is "fail")."""
    conn, store, pool = _pool(url, cooldown=0.0)
    await store.sync()  # learn about the trip
    node = pool.acquire()
    await store.sync()  # share the probe claim
    print(json.dumps({"probing": pool.state(node)}), flush=True)
    verdict = await asyncio.to_thread(sys.stdin.readline)
    failed = verdict.strip() == "fail"
    pool.release(node, ErrorCategory.CONNECTION if failed else None)
    await store.sync()
    state = pool.state(node)
    await conn.aclose()
    return {"state": state}


ROLES: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "hammer": hammer,
    "crash_holding_lease": crash_holding_lease,
    "race": race,
    "trip": trip,
    "probe_node": probe_node,
}


def main() -> None:
    role, kwargs = sys.argv[1], json.loads(sys.argv[2])
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go signal")
    result = asyncio.run(ROLES[role](**kwargs))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
