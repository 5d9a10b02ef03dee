"""ProviderLimiter: rpm, tpm reservations and settlement, concurrency (on the `limits` store).

No test sleeps to wait for something; tasks coordinate through events. Window expiry is checked
through the `retry_after` the limiter computes, except one test that lets a 1-second window roll.
"""

from __future__ import annotations

import asyncio
import math
import pickle

import pytest
from limits.errors import ConfigurationError

from avionics.errors import LimitKind, RateLimitedLocally
from avionics.ratelimit import (
    LimiterRegistry,
    LimitsWindowStore,
    Permit,
    ProviderLimiter,
    WindowStore,
)
from avionics.ratelimit.windows import async_storage_uri, sliding_window_wait


def limits_limiter(name: str, **limits: int | float) -> ProviderLimiter:
    """A limiter on `LimitsWindowStore` (the `limits` storages other than memory use it)."""
    return ProviderLimiter(name, store=LimitsWindowStore("memory://"), **limits)  # type: ignore[arg-type]


def tpm_state(limiter: ProviderLimiter) -> tuple[int, int]:
    """(credit, debt) the limiter's store holds for its token window."""
    assert isinstance(limiter.store, LimitsWindowStore)
    return limiter.store.pending(limiter._tpm_key)


async def hold(
    limiter: ProviderLimiter, tokens: int, entered: asyncio.Event, leave: asyncio.Event
) -> Permit:
    async with limiter.acquire(tokens) as permit:
        entered.set()
        await leave.wait()
        return permit


# -- unlimited -------------------------------------------------------------------------------


async def test_an_unlimited_limiter_costs_nothing() -> None:
    limiter = ProviderLimiter("free")
    assert limiter.unlimited
    assert limiter.store is None
    for _ in range(1_000):
        async with limiter.acquire(10**9) as permit:
            assert permit.reserved_tokens == 0
    assert limiter.in_flight == 0


async def test_only_configured_dimensions_are_checked() -> None:
    limiter = ProviderLimiter("rpm-only", rpm=1_000)
    async with limiter.acquire(10**9) as permit:  # no tpm: any size passes
        assert permit.reserved_tokens == 0


# -- rpm -------------------------------------------------------------------------------------


async def test_rpm_admits_up_to_the_limit_then_reports_the_wait() -> None:
    limiter = ProviderLimiter("anthropic", rpm=3, max_wait=0)
    for _ in range(3):
        async with limiter.acquire():
            pass
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire():
            pytest.fail("admitted past the rpm limit")
    error = caught.value
    assert error.kind is LimitKind.RPM
    assert error.provider == "anthropic"
    assert error.limit == 3
    assert error.retry_after is not None
    assert 0 < error.retry_after <= limiter.window_seconds
    assert "providers.anthropic.rpm" in str(error)


async def test_a_caller_waits_for_the_window_to_roll_then_gets_in() -> None:
    limiter = ProviderLimiter("tiny", rpm=1, window_seconds=1, max_wait=5)
    async with limiter.acquire() as first:
        assert first.waited < 1
    async with limiter.acquire() as second:  # the limiter sleeps until the 1 s window rolls
        assert second.waited > 0


async def test_the_wait_is_refused_up_front_when_it_exceeds_max_wait() -> None:
    limiter = ProviderLimiter("slow", rpm=1, max_wait=0.5)
    async with limiter.acquire():
        pass
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire():
            pass
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0
    assert caught.value.waited < 0.5  # it did not sleep in vain


# -- tpm: reserve, settle, never leak --------------------------------------------------------


async def test_settling_below_the_estimate_gives_tokens_back() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_wait=0)
    async with limiter.acquire(600) as permit:
        assert permit.reserved_tokens == 600
        permit.settle(100)
    assert tpm_state(limiter) == (500, 0)
    async with limiter.acquire(800):  # 100 used + 800 fits only thanks to the 500 given back
        pass
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire(200):  # 900 used: 200 more does not fit
            pass
    assert caught.value.kind is LimitKind.TPM
    assert caught.value.limit == 1_000


async def test_settling_above_the_estimate_takes_the_extra() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_wait=0)
    async with limiter.acquire(100) as permit:
        permit.settle(700)
    assert tpm_state(limiter) == (0, 0)
    async with limiter.acquire(300):
        pass
    with pytest.raises(RateLimitedLocally):
        async with limiter.acquire(1):
            pass


async def test_usage_beyond_the_window_becomes_a_debt_paid_by_the_next_call() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_wait=0)
    async with limiter.acquire(900) as permit:
        permit.settle(1_300)  # 400 more than reserved, only 100 fit now
    assert tpm_state(limiter) == (0, 300)
    with pytest.raises(RateLimitedLocally):
        async with limiter.acquire(1):
            pass
    assert tpm_state(limiter) == (0, 300)  # a refused call leaves the debt in place


async def test_settle_none_or_no_settle_keeps_the_estimate() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_wait=0)
    async with limiter.acquire(400) as permit:
        permit.settle(None)
    async with limiter.acquire(400):
        pass
    assert tpm_state(limiter) == (0, 0)
    with pytest.raises(RateLimitedLocally):
        async with limiter.acquire(201):
            pass


async def test_an_exception_in_the_block_gives_the_whole_reservation_back() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_concurrency=1, max_wait=0)
    with pytest.raises(ConnectionError):
        async with limiter.acquire(900):
            raise ConnectionError("backend down")
    assert tpm_state(limiter) == (900, 0)
    assert limiter.in_flight == 0
    async with limiter.acquire(900):  # tokens and the concurrency slot both came back
        pass


async def test_an_exception_after_settle_keeps_the_settled_usage() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_wait=0)

    async def broken_stream() -> None:
        async with limiter.acquire(900) as permit:
            permit.settle(300)  # the partial usage received before the break
            raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError):
        await broken_stream()
    assert tpm_state(limiter) == (600, 0)


async def test_cancellation_inside_the_block_releases_everything() -> None:
    limiter = limits_limiter("p", rpm=10, tpm=1_000, max_concurrency=1, max_wait=0)
    entered, leave = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(hold(limiter, 900, entered, leave))
    await entered.wait()
    assert limiter.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.in_flight == 0
    assert tpm_state(limiter) == (900, 0)
    async with limiter.acquire(900):
        pass


async def test_cancellation_while_waiting_leaks_nothing() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_concurrency=1, max_wait=60)
    entered, leave = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(limiter, 100, entered, leave))
    await entered.wait()
    waiter = asyncio.create_task(hold(limiter, 100, asyncio.Event(), asyncio.Event()))
    await asyncio.sleep(0)  # let it start waiting on the concurrency slot (a yield, not a wait)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    leave.set()
    await holder
    assert limiter.in_flight == 0
    async with limiter.acquire(900):  # nothing of the cancelled waiter is held
        pass


async def test_a_request_larger_than_the_whole_tpm_is_refused_at_once() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_wait=30)
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire(1_001):
            pass
    assert caught.value.kind is LimitKind.TPM
    assert caught.value.retry_after is None
    assert caught.value.waited == 0
    assert "1001 tokens" in str(caught.value)


async def test_when_tpm_refuses_the_request_slot_is_given_back() -> None:
    limiter = limits_limiter("p", rpm=2, tpm=100, max_wait=0)
    async with limiter.acquire(100):
        pass
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire(50):
            pass
    assert caught.value.kind is LimitKind.TPM
    assert isinstance(limiter.store, LimitsWindowStore)
    assert limiter.store.pending(limiter._rpm_key) == (1, 0)
    # The slot given back is used by the next request instead of a new one.
    limiter_rpm_only = ProviderLimiter("p", rpm=2, max_wait=0, store=limiter.store)
    async with limiter_rpm_only.acquire():
        pass
    assert limiter.store.pending(limiter._rpm_key) == (0, 0)


async def test_racing_tasks_never_take_more_tokens_than_the_limit() -> None:
    limiter = limits_limiter("p", tpm=1_000, max_wait=0)
    start = asyncio.Event()
    admitted: list[int] = []

    async def call(i: int) -> None:
        await start.wait()
        try:
            async with limiter.acquire(100):
                admitted.append(i)
        except RateLimitedLocally:
            pass

    tasks = [asyncio.create_task(call(i)) for i in range(25)]
    start.set()
    await asyncio.gather(*tasks)
    assert len(admitted) == 10


# -- concurrency -----------------------------------------------------------------------------


async def test_max_concurrency_makes_the_next_caller_wait_for_a_slot() -> None:
    limiter = ProviderLimiter("p", max_concurrency=2, max_wait=60)
    gates = [(asyncio.Event(), asyncio.Event()) for _ in range(2)]
    holders = [asyncio.create_task(hold(limiter, 0, e, leave)) for e, leave in gates]
    for entered, _ in gates:
        await entered.wait()
    assert limiter.in_flight == 2
    third_in, third_leave = asyncio.Event(), asyncio.Event()
    third = asyncio.create_task(hold(limiter, 0, third_in, third_leave))
    await asyncio.sleep(0)
    assert not third_in.is_set()
    gates[0][1].set()  # one holder leaves: the waiter gets its slot
    await third_in.wait()
    assert limiter.in_flight == 2
    third_leave.set()
    gates[1][1].set()
    await asyncio.gather(third, *holders)
    assert limiter.in_flight == 0


async def test_max_concurrency_with_no_wait_refuses_with_the_kind() -> None:
    limiter = ProviderLimiter("p", max_concurrency=1, max_wait=0)
    entered, leave = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold(limiter, 0, entered, leave))
    await entered.wait()
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire():
            pass
    assert caught.value.kind is LimitKind.CONCURRENCY
    assert caught.value.limit == 1
    assert "providers.p.max_concurrency" in str(caught.value)
    leave.set()
    await holder


def test_the_semaphore_is_created_per_event_loop() -> None:
    limiter = ProviderLimiter("p", max_concurrency=1, rpm=100)

    async def once() -> None:
        async with limiter.acquire():
            pass

    asyncio.run(once())
    asyncio.run(once())  # a second loop gets its own semaphore, no "bound to another loop"
    assert limiter.in_flight == 0


# -- the store and its wait arithmetic -------------------------------------------------------


def test_sliding_window_wait_solves_for_the_whole_amount() -> None:
    eps = 0.001
    # Full current window: room appears as soon as it becomes the previous one.
    assert sliding_window_wait(0, 0.0, 2, 70.0, 60, 2, 1) == pytest.approx(10 + eps)
    # 60 % of the window still to go: the previous window's weight must fall under the room.
    # floor(100 * (45 - t) / 60 + 20) + 50 <= 100  <=>  t > 45 - 31 * 60 / 100 = 26.4
    assert sliding_window_wait(100, 45.0, 20, 105.0, 60, 100, 50) == pytest.approx(26.4 + eps)
    # Current window too full: wait for it to roll, then for its weight to decay.
    # floor(900 * (60 - s) / 60) + 500 <= 1000  <=>  s > 60 * (1 - 501 / 900)
    expected = 5 + 60 * (1 - 501 / 900) + eps
    assert sliding_window_wait(0, 0.0, 900, 65.0, 60, 1_000, 500) == pytest.approx(expected)
    assert math.isinf(sliding_window_wait(0, 0.0, 0, 60.0, 60, 10, 11))


async def test_limits_window_store_is_a_window_store_with_memory_by_default() -> None:
    store = LimitsWindowStore()
    assert isinstance(store, WindowStore)
    assert store.storage_uri == "async+memory://"
    assert await store.acquire("k", 5, limit=5, window=60) == 0.0
    wait = await store.acquire("k", 1, limit=5, window=60)
    assert 0 < wait <= 60
    await store.reset()
    assert await store.acquire("k", 5, limit=5, window=60) == 0.0


async def test_the_moving_window_strategy_is_available_too() -> None:
    store = LimitsWindowStore(strategy="moving-window")
    limiter = ProviderLimiter("p", rpm=2, max_wait=0, store=store)
    for _ in range(2):
        async with limiter.acquire():
            pass
    with pytest.raises(RateLimitedLocally) as caught:
        async with limiter.acquire():
            pass
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 60


def test_storage_urls() -> None:
    assert async_storage_uri("memory://") == "async+memory://"
    assert async_storage_uri("redis://localhost:6379") == "async+redis://localhost:6379"
    assert async_storage_uri("async+redis://h:1") == "async+redis://h:1"
    assert ProviderLimiter("p", rpm=1, storage_uri="async+memory://").store is not None
    with pytest.raises(ConfigurationError):
        LimitsWindowStore("nosuch://x")
    with pytest.raises(ValueError, match="strategy"):
        LimitsWindowStore(strategy="leaky-bucket")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="rpm"):
        ProviderLimiter("p", rpm=0)
    with pytest.raises(ValueError, match="max_wait"):
        ProviderLimiter("p", max_wait=-1)
    with pytest.raises(ValueError, match="window_seconds"):
        ProviderLimiter("p", window_seconds=0)


async def test_a_permit_is_entered_once() -> None:
    permit = ProviderLimiter("p").acquire()
    async with permit:
        pass
    with pytest.raises(RuntimeError, match="once"):
        async with permit:
            pass


# -- registry --------------------------------------------------------------------------------


def test_the_registry_keeps_one_limiter_per_provider_on_one_store() -> None:
    registry = LimiterRegistry(max_wait=5)
    anthropic = registry.limiter("anthropic", rpm=50, tpm=40_000)
    assert registry.limiter("anthropic", rpm=50, tpm=40_000) is anthropic
    assert registry.get("anthropic") is anthropic
    assert "anthropic" in registry
    assert anthropic.max_wait == 5
    openai = registry.limiter("openai", rpm=500)
    assert openai.store is anthropic.store
    changed = registry.limiter("anthropic", rpm=100, tpm=40_000)
    assert changed is not anthropic
    assert registry.get("anthropic") is changed
    assert registry.limiter("local").store is None
    assert registry.names() == ["anthropic", "local", "openai"]
    assert registry.get("nobody") is None


async def test_limiters_with_the_same_name_share_state_through_one_store() -> None:
    store = LimitsWindowStore()
    first = ProviderLimiter("shared", rpm=1, max_wait=0, store=store)
    second = ProviderLimiter("shared", rpm=1, max_wait=0, store=store)
    other = ProviderLimiter("other", rpm=1, max_wait=0, store=store)
    async with first.acquire():
        pass
    with pytest.raises(RateLimitedLocally):
        async with second.acquire():
            pass
    async with other.acquire():
        pass


# -- the error -------------------------------------------------------------------------------


def test_rate_limited_locally_pickles_and_explains() -> None:
    error = RateLimitedLocally("openai", "rpm", 1.5, limit=60, waited=0.25)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.provider, clone.kind, clone.retry_after, clone.limit, clone.waited) == (
        "openai",
        LimitKind.RPM,
        1.5,
        60,
        0.25,
    )
    assert str(clone) == str(error)
    assert "room in 1.50s" in str(error)
