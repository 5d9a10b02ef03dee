"""BudgetTracker: reserve before the call, commit the real cost, exact under racing tasks."""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from avionics.errors import BudgetExceededError
from avionics.ratelimit import (
    BudgetClaim,
    BudgetPeriod,
    BudgetStore,
    BudgetTracker,
    MemoryBudgetStore,
    Reservation,
)

D = Decimal


class Clock:
    """A settable clock, so period boundaries are crossed without waiting."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_reservation_within_budget_commits_the_real_cost() -> None:
    tracker = BudgetTracker()
    reservation = await tracker.reserve("planner", D("0.10"), D("5"), "day")
    usage = await tracker.usage("planner", "day", budget=D("5"))
    assert (usage.spent, usage.reserved, usage.remaining) == (D(0), D("0.10"), D("4.90"))
    assert await reservation.commit(D("0.0425")) == D("0.0425")
    usage = await tracker.usage("planner", "day", budget=D("5"))
    assert (usage.spent, usage.reserved) == (D("0.0425"), D(0))
    assert reservation.state == "committed"
    assert await tracker.spent("planner") == D("0.0425")


async def test_over_budget_raises_before_anything_is_held() -> None:
    tracker = BudgetTracker()
    first = await tracker.reserve("planner", D("4.90"), D("5"))
    await first.commit(D("4.90"))
    with pytest.raises(BudgetExceededError) as caught:
        await tracker.reserve("planner", D("0.20"), D("5"))
    error = caught.value
    assert (error.agent, error.period, error.scope) == ("planner", "day", "agent")
    assert (error.budget_usd, error.spent_usd, error.reserved_usd, error.estimate_usd) == (
        D("5"),
        D("4.90"),
        D(0),
        D("0.20"),
    )
    message = str(error)
    assert "agent 'planner'" in message
    assert "agents.planner.budget_usd" in message
    assert "day" in message
    usage = await tracker.usage("planner")
    assert usage.reserved == D(0)  # the refused reservation left nothing behind
    # Exactly filling the budget is allowed.
    await (await tracker.reserve("planner", D("0.10"), D("5"))).commit(None)
    assert await tracker.spent("planner") == D("5.00")


async def test_the_check_counts_open_reservations_not_only_spending() -> None:
    tracker = BudgetTracker()
    await tracker.reserve("a", D("0.60"), D("1"))
    with pytest.raises(BudgetExceededError) as caught:
        await tracker.reserve("a", D("0.50"), D("1"))
    assert caught.value.reserved_usd == D("0.60")


async def test_release_drops_the_reservation_without_cost() -> None:
    tracker = BudgetTracker()
    reservation = await tracker.reserve("a", D("0.90"), D("1"))
    await reservation.release()
    await reservation.release()  # idempotent, safe in `finally`
    assert reservation.state == "released"
    assert reservation.charged_usd == D(0)
    usage = await tracker.usage("a")
    assert (usage.spent, usage.reserved) == (D(0), D(0))
    await tracker.reserve("a", D("1"), D("1"))


async def test_commit_none_keeps_the_estimate_and_a_second_settle_is_refused() -> None:
    tracker = BudgetTracker()
    reservation = await tracker.reserve("a", D("0.30"), D("1"))
    assert await reservation.commit(None) == D("0.30")
    assert await tracker.spent("a") == D("0.30")
    with pytest.raises(RuntimeError, match="already committed"):
        await reservation.commit(D("0.1"))
    await reservation.release()  # a no-op after commit
    assert await tracker.spent("a") == D("0.30")


async def test_a_reservation_as_a_context_manager() -> None:
    tracker = BudgetTracker()
    async with await tracker.reserve("a", D("0.25"), D("1")) as reservation:
        pass  # left without commit: the estimate stands
    assert reservation.state == "committed"

    async def failing_call() -> None:
        async with await tracker.reserve("a", D("0.25"), D("1")):
            raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await failing_call()
    assert await tracker.spent("a") == D("0.25")
    assert (await tracker.usage("a")).reserved == D(0)


async def test_racing_tasks_cannot_overspend() -> None:
    tracker = BudgetTracker()
    start, decided, finish = asyncio.Event(), asyncio.Event(), asyncio.Event()
    outcomes: list[str] = []

    def note(outcome: str) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 50:
            decided.set()

    async def call() -> None:
        await start.wait()
        try:
            reservation = await tracker.reserve("planner", D("0.10"), D("1.00"))
        except BudgetExceededError:
            note("refused")
            return
        note("admitted")
        await finish.wait()  # every admitted call is in flight at once
        await reservation.commit(D("0.10"))

    tasks = [asyncio.create_task(call()) for _ in range(50)]
    start.set()
    await decided.wait()
    assert (await tracker.usage("planner")).reserved == D("1.00")
    finish.set()
    await asyncio.gather(*tasks)
    assert outcomes.count("admitted") == 10
    assert await tracker.spent("planner") == D("1.00")


async def test_racing_tasks_with_mixed_estimates_stay_within_one_estimate() -> None:
    tracker = BudgetTracker()
    budget = D("1.00")
    start = asyncio.Event()
    estimates = [D("0.07"), D("0.13"), D("0.05"), D("0.21"), D("0.02")] * 20

    async def call(estimate: Decimal, actual: Decimal) -> None:
        await start.wait()
        try:
            reservation = await tracker.reserve("a", estimate, budget)
        except BudgetExceededError:
            return
        usage = await tracker.usage("a")
        assert usage.spent + usage.reserved <= budget
        await asyncio.sleep(0)
        await reservation.commit(actual)

    tasks = [asyncio.create_task(call(e, e if i % 2 else e / 2)) for i, e in enumerate(estimates)]
    start.set()
    await asyncio.gather(*tasks)
    assert await tracker.spent("a") <= budget
    assert (await tracker.usage("a")).reserved == D(0)


async def test_the_global_budget_covers_every_agent() -> None:
    tracker = BudgetTracker(global_budget=D("1.00"), global_period="month")
    await (await tracker.reserve("planner", D("0.60"), None)).commit(None)
    await (await tracker.reserve("coder", D("0.30"), D("10"))).commit(None)
    with pytest.raises(BudgetExceededError) as caught:
        await tracker.reserve("critic", D("0.20"), None)
    assert caught.value.scope == "global"
    assert caught.value.period == "month"
    assert caught.value.spent_usd == D("0.90")
    assert "global budget" in str(caught.value)
    usage = await tracker.global_usage()
    assert (usage.spent, usage.budget, usage.remaining) == (D("0.90"), D("1.00"), D("0.10"))
    # The agent's own budget did not move when the global one refused.
    assert (await tracker.usage("critic")).reserved == D(0)


async def test_an_agent_without_budget_is_tracked_but_not_limited() -> None:
    tracker = BudgetTracker()
    for _ in range(3):
        await (await tracker.reserve("free", D("1000"), None)).commit(None)
    assert await tracker.spent("free") == D("3000")


async def test_a_day_budget_resets_at_midnight_utc() -> None:
    clock = Clock(datetime(2025, 6, 1, 23, 59, tzinfo=UTC))
    tracker = BudgetTracker(clock=clock)
    late = await tracker.reserve("a", D("0.80"), D("1"), "day")
    with pytest.raises(BudgetExceededError):
        await tracker.reserve("a", D("0.80"), D("1"), "day")
    clock.now += timedelta(minutes=2)
    await late.commit(D("0.80"))  # settles into June 1st, where it was reserved
    assert await tracker.spent("a", "day") == D(0)
    await tracker.reserve("a", D("1"), D("1"), "day")
    clock.now -= timedelta(minutes=2)
    assert await tracker.spent("a", "day") == D("0.80")


async def test_month_and_total_periods() -> None:
    clock = Clock(datetime(2025, 1, 31, 12, tzinfo=UTC))
    tracker = BudgetTracker(clock=clock)
    await (await tracker.reserve("a", D("1"), D("1"), "month")).commit(None)
    await (await tracker.reserve("a", D("1"), D("1"), "total")).commit(None)
    clock.now = datetime(2025, 2, 1, 0, 0, tzinfo=UTC)
    await tracker.reserve("a", D("1"), D("1"), "month")
    with pytest.raises(BudgetExceededError) as caught:
        await tracker.reserve("a", D("0.01"), D("1"), "total")
    assert "roll over" not in str(caught.value)  # a total budget never resets


def test_periods_parse_from_settings_strings() -> None:
    assert BudgetPeriod("day") is BudgetPeriod.DAY
    assert BudgetPeriod.MONTH.window(datetime(2025, 3, 9, tzinfo=UTC)) == "2025-03"
    east = datetime(2025, 3, 10, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert BudgetPeriod.DAY.window(east) == "2025-03-09"  # periods are UTC
    with pytest.raises(ValueError, match="week"):
        BudgetPeriod("week")


async def test_amounts_are_exact_and_validated() -> None:
    tracker = BudgetTracker()
    for _ in range(10):
        await (await tracker.reserve("a", 0.1, 1.0)).commit(None)  # floats from settings
    assert await tracker.spent("a") == D("1.0")
    with pytest.raises(ValueError, match="estimate"):
        await tracker.reserve("a", D("-1"), D("1"))
    with pytest.raises(ValueError, match="budget"):
        await tracker.reserve("a", D("1"), D("NaN"))


async def test_the_memory_store_follows_the_protocol() -> None:
    store = MemoryBudgetStore()
    assert isinstance(store, BudgetStore)
    claims = [BudgetClaim("x", D("1")), BudgetClaim("y", None)]
    assert await store.reserve(D("0.6"), claims) is None
    refusal = await store.reserve(D("0.6"), claims)
    assert refusal is not None
    assert refusal.claim.key == "x"
    assert refusal.state.reserved == D("0.6")
    assert (await store.state("y")).reserved == D("0.6")  # the refused attempt changed nothing
    await store.settle(["x", "y"], D("0.6"), D("0.5"))
    assert (await store.state("x")).spent == D("0.5")
    assert (await store.state("never")).spent == D(0)


async def test_a_tracker_uses_the_store_it_is_given() -> None:
    store = MemoryBudgetStore()
    first = BudgetTracker(store=store)
    second = BudgetTracker(store=store)  # e.g. two gateways sharing a Redis store
    await (await first.reserve("a", D("0.7"), D("1"))).commit(None)
    with pytest.raises(BudgetExceededError):
        await second.reserve("a", D("0.7"), D("1"))


def test_budget_exceeded_error_pickles() -> None:
    error = BudgetExceededError(
        "a", budget_usd=D(1), spent_usd=D("0.9"), estimate_usd=D("0.2"), period="day"
    )
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.agent, clone.budget_usd, clone.estimate_usd) == ("a", D(1), D("0.2"))
    assert str(clone) == str(error)


def test_reservation_repr_names_the_agent() -> None:
    reservation = Reservation(MemoryBudgetStore(), "a", D("0.1"), BudgetPeriod.DAY, ("k",))
    assert "agent='a'" in repr(reservation)
