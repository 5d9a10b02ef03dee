"""Shared USD budgets on a real redis-server: exact under a race of 20 concurrent workers.

The race releases 5 processes of 4 workers at once (role `race` in `redis_workers.py`), every
worker with its own connection; each admits calls against one agent budget until the budget
refuses it, and reports what it was charged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from redis_fixture import RedisServer, run_workers

from avionics.errors import BudgetExceededError
from avionics.ratelimit import BudgetTracker
from avionics.state import RedisBudgetStore, RedisConnection, SharedGate
from avionics.state.budgets import DEFAULT_HOLD_SECONDS

pytestmark = pytest.mark.redis

D = Decimal
WORKERS = 20
DEADLINE_S = 30.0


@pytest.fixture
async def conn(redis_server: RedisServer) -> AsyncIterator[RedisConnection]:
    connection = RedisConnection(redis_server.url)
    yield connection
    await connection.aclose()


# -- the protocol store ------------------------------------------------------------------------


async def test_budget_tracker_on_redis_reserves_commits_and_refuses(
    conn: RedisConnection,
) -> None:
    tracker = BudgetTracker(store=RedisBudgetStore(conn))
    reservation = await tracker.reserve("planner", D("0.10"), D("5"))
    usage = await tracker.usage("planner", budget=D("5"))
    assert (usage.spent, usage.reserved, usage.remaining) == (D(0), D("0.10"), D("4.90"))
    assert await reservation.commit(D("0.0425")) == D("0.0425")
    assert await tracker.spent("planner") == D("0.0425")
    await (await tracker.reserve("planner", D("4.9575"), D("5"))).commit(None)  # exactly full
    with pytest.raises(BudgetExceededError) as caught:
        await tracker.reserve("planner", D("0.000000000001"), D("5"))
    assert (caught.value.spent_usd, caught.value.reserved_usd) == (D("5"), D(0))
    global_usage = await tracker.global_usage()  # every agent's spending, tracked
    assert global_usage.spent == D("5")


async def test_a_released_reservation_costs_nothing(conn: RedisConnection) -> None:
    tracker = BudgetTracker(store=RedisBudgetStore(conn))
    reservation = await tracker.reserve("a", D("0.60"), D("1"))
    with pytest.raises(BudgetExceededError):
        await tracker.reserve("a", D("0.50"), D("1"))  # open reservations count
    await reservation.release()
    usage = await tracker.usage("a")
    assert (usage.spent, usage.reserved) == (D(0), D(0))


async def test_a_crashed_workers_hold_is_given_back(conn: RedisConnection) -> None:
    store = RedisBudgetStore(conn, hold_seconds=0.2)
    tracker = BudgetTracker(store=store)
    await tracker.reserve("a", D("0.90"), D("1"))  # never settled: the worker "died"
    deadline = time.monotonic() + DEADLINE_S
    while (await tracker.usage("a")).reserved:
        assert time.monotonic() < deadline, "the hold never expired"
        await asyncio.sleep(0.05)
    await (await tracker.reserve("a", D("0.90"), D("1"))).commit(None)
    assert DEFAULT_HOLD_SECONDS >= 60  # the default outlives ordinary calls


async def test_the_gate_and_the_tracker_read_the_same_budget(conn: RedisConnection) -> None:
    gate = SharedGate(conn, max_wait=0)
    tracker = BudgetTracker(store=RedisBudgetStore(conn))
    permit, reservation = gate.admission("p", agent="planner", estimate=D("0.30"), budget=D("1"))
    assert reservation is not None
    async with permit:
        assert (await tracker.usage("planner")).reserved == D("0.3")
    await reservation.commit(D("0.25"))
    usage = await tracker.usage("planner")
    assert (usage.spent, usage.reserved) == (D("0.25"), D(0))
    permit, _ = gate.admission("p", agent="planner", estimate=D("0.80"), budget=D("1"))
    with pytest.raises(BudgetExceededError) as caught:
        async with permit:
            pytest.fail("admitted over budget")
    error = caught.value
    assert (error.agent, error.scope, error.period) == ("planner", "agent", "day")
    assert (error.spent_usd, error.reserved_usd, error.estimate_usd) == (D("0.25"), D(0), D("0.8"))


async def test_a_global_budget_refuses_across_agents(conn: RedisConnection) -> None:
    gate = SharedGate(conn, max_wait=0, global_budget=D("1"))
    for agent in ("a", "b"):
        permit, reservation = gate.admission("p", agent=agent, estimate=D("0.4"))
        assert reservation is not None
        async with permit:
            pass
        await reservation.commit(None)
    permit, _ = gate.admission("p", agent="c", estimate=D("0.4"))
    with pytest.raises(BudgetExceededError) as caught:
        async with permit:
            pass
    assert (caught.value.scope, caught.value.spent_usd) == ("global", D("0.8"))


# -- the race ----------------------------------------------------------------------------------


async def spent_and_reserved(url: str, agent: str) -> tuple[Decimal, Decimal]:
    conn = RedisConnection(url)
    try:
        usage = await BudgetTracker(store=RedisBudgetStore(conn)).usage(agent)
        return usage.spent, usage.reserved
    finally:
        await conn.aclose()


def test_twenty_workers_in_five_processes_racing_for_one_budget_never_overspend(
    redis_server: RedisServer,
) -> None:
    """Real costs at or below the estimates: the budget is never exceeded, by anyone."""
    budget, estimate = D("1.00"), D("0.07")
    job = {"url": redis_server.url, "budget": str(budget), "estimate": str(estimate)}
    results = run_workers([("race", {**job, "seed": seed, "workers": 4}) for seed in range(5)])
    charged = sum((D(r["charged"]) for r in results), D(0))
    spent, reserved = asyncio.run(spent_and_reserved(redis_server.url, "racer"))
    assert reserved == 0
    assert spent == charged  # every commit landed, exactly (Decimal in, Decimal out)
    assert spent <= budget
    assert budget - spent < estimate  # and they stopped only when the next call could not fit
    assert sum(r["finals"] for r in results) == WORKERS  # each racer ran until a final refusal


async def test_twenty_racing_workers_with_exact_estimates_fill_the_budget_exactly(
    redis_server: RedisServer,
) -> None:
    """20 workers, each with its own connection, in one process: 14 x $0.07 fit in $1.00."""
    budget, estimate = D("1.00"), D("0.07")
    admitted: list[str] = []

    async def worker(index: int) -> None:
        conn = RedisConnection(redis_server.url)
        gate = SharedGate(conn, max_wait=0)
        try:
            while True:
                permit, reservation = gate.admission(
                    "p", agent="racer", estimate=estimate, budget=budget
                )
                assert reservation is not None
                try:
                    async with permit:
                        await asyncio.sleep(0)  # let the others race in between
                except BudgetExceededError as exc:
                    if exc.reserved_usd == 0:
                        return
                    continue
                await reservation.commit(None)
                admitted.append(f"worker {index}")
        finally:
            await conn.aclose()

    await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    spent, reserved = await spent_and_reserved(redis_server.url, "racer")
    assert (len(admitted), spent, reserved) == (14, D("0.98"), D(0))
