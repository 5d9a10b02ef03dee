"""The shared-state layer without a Redis server: building it from settings, what the memory
default costs (nothing), outages (fail closed / fail open, never a hang), money on the wire, and
the breaker cache. Behaviour against a real redis-server is in tests-integration/test_redis_*.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import structlog

from avionics import AvionicsSettings, LLMGateway, MockProvider
from avionics.errors import BudgetExceededError, LimitKind, RateLimitedLocally
from avionics.nodes import BreakerState
from avionics.ratelimit import BudgetClaim, BudgetPeriod, BudgetTracker
from avionics.state import MEMORY, SharedStateUnavailable, build_shared_state, redact_url
from avionics.state._lua import SCRIPTS
from avionics.state._units import from_pico, period_ttl_ms, to_pico, to_pico_limit

pytest.importorskip("redis", reason="needs the redis extra: pip install 'jeeves-avionics[redis]'")

from avionics.state import (
    RedisBreakerStore,
    RedisBudgetStore,
    RedisConnection,
    RedisWindowStore,
    SharedGate,
)
from avionics.state.breakers import _op_of

D = Decimal


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


@pytest.fixture
async def down_open(closed_port: int) -> AsyncIterator[RedisConnection]:
    conn = RedisConnection(f"redis://127.0.0.1:{closed_port}/0", fail_mode="open")
    yield conn
    await conn.aclose()


def redis_settings(url: str, **state: str) -> AvionicsSettings:
    return AvionicsSettings(
        providers={
            "cloud": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": "sk-test",
                "default_model": "gpt-4o",
                "rpm": 10,
            }
        },
        profiles={"default": {"provider": "cloud"}},
        state={"backend": "redis", "redis_url": url, **state},
    )


# -- building ----------------------------------------------------------------------------------


def test_the_memory_default_builds_nothing() -> None:
    assert build_shared_state(AvionicsSettings()) is MEMORY
    assert (MEMORY.gate, MEMORY.windows, MEMORY.budgets, MEMORY.breakers) == (None,) * 4
    assert not MEMORY.shared


def test_the_memory_default_never_imports_redis() -> None:
    code = (
        "import sys\n"
        "from avionics import AvionicsSettings, LLMGateway, MockProvider\n"
        "gateway = LLMGateway(AvionicsSettings(), providers={'local': MockProvider()})\n"
        "gateway.complete_sync('hello')\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
        "assert gateway.accountant.shared.gate is None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_redis_settings_build_every_store_on_one_connection() -> None:
    url = "redis://:hunter2@10.1.2.3:6390/2"
    shared = build_shared_state(redis_settings(url, fail_mode="open", key_prefix="fleet:"))
    assert shared.shared
    assert isinstance(shared.gate, SharedGate)
    assert isinstance(shared.windows, RedisWindowStore)
    assert isinstance(shared.budgets, RedisBudgetStore)
    assert isinstance(shared.breakers, RedisBreakerStore)
    assert shared.connection is shared.gate.connection
    assert shared.gate.key_prefix == "fleet:"
    assert shared.connection is not None
    assert shared.connection.fail_open
    assert shared.connection.display_url == "redis://***@10.1.2.3:6390/2"
    assert "hunter2" not in repr(shared.connection)
    # Every gateway and factory of the process shares the connection (one pool per loop).
    again = build_shared_state(redis_settings(url, fail_mode="open", key_prefix="fleet:"))
    assert again.connection is shared.connection


def test_gateway_and_factory_take_their_stores_from_settings() -> None:
    gateway = LLMGateway(redis_settings("redis://127.0.0.1:1/0"))
    assert isinstance(gateway.accountant.shared.gate, SharedGate)
    assert gateway.accountant.budgets.store is gateway.accountant.shared.budgets
    assert gateway.accountant.limiters.store is gateway.accountant.shared.windows
    assert isinstance(gateway.factory.shared.breakers, RedisBreakerStore)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
        ("rediss://user:pw@host/1", "rediss://***@host/1"),
        ("redis://host:6379/0?password=pw&socket_timeout=2", "redis://host:6379/0?password=%2A%2A%2A&socket_timeout=2"),
        ("redis://host:6379", "redis://host:6379"),
    ],
)  # fmt: skip
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- outages -----------------------------------------------------------------------------------


async def test_fail_closed_names_the_url_and_holds_off(closed_port: int) -> None:
    conn = RedisConnection(f"redis://:s3cret@127.0.0.1:{closed_port}/0")
    gate = SharedGate(conn, max_wait=0)
    permit, _ = gate.admission("p", rpm=5)
    with pytest.raises(SharedStateUnavailable) as caught:
        await permit.__aenter__()
    error = caught.value
    assert error.url == f"redis://***@127.0.0.1:{closed_port}/0"
    assert error.url in str(error)
    assert "s3cret" not in str(error)
    assert "admit" in error.reason  # which operation failed
    assert conn.round_trips == 1
    assert conn.down
    permit, _ = gate.admission("p", rpm=5)
    with pytest.raises(SharedStateUnavailable) as caught:
        await permit.__aenter__()
    assert conn.round_trips == 1  # held off: refused without touching the network
    assert caught.value.retry_in is not None
    await conn.aclose()


async def test_a_server_that_never_answers_times_out_instead_of_hanging(
    silent_port: int,
) -> None:
    conn = RedisConnection(
        f"redis://127.0.0.1:{silent_port}/0", connect_timeout=0.2, socket_timeout=0.2
    )
    gate = SharedGate(conn, max_wait=0)
    permit, _ = gate.admission("p", rpm=5)
    with pytest.raises(SharedStateUnavailable) as caught:
        await permit.__aenter__()
    assert "Timeout" in caught.value.reason
    await conn.aclose()


async def test_fail_open_uses_per_process_limits_with_one_warning(
    down_open: RedisConnection,
) -> None:
    gate = SharedGate(down_open, max_wait=0)
    outcomes = []
    with structlog.testing.capture_logs() as logs:
        for _ in range(4):
            permit, _ = gate.admission("p", rpm=2, tokens=1)
            try:
                async with permit:
                    outcomes.append("local" if permit.local else "shared")
            except RateLimitedLocally as exc:
                outcomes.append(exc.kind.value)
    assert outcomes == ["local", "local", LimitKind.RPM.value, LimitKind.RPM.value]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "shared state unreachable"
    assert warnings[0]["url"] == down_open.display_url
    assert warnings[0]["fail_mode"] == "open"


async def test_fail_open_keeps_budgets_per_process(down_open: RedisConnection) -> None:
    gate = SharedGate(down_open, max_wait=0)
    permit, reservation = gate.admission("p", agent="a", estimate=D("0.6"), budget=D("1"))
    assert reservation is not None
    async with permit:
        pass
    assert await reservation.commit(D("0.5")) == D("0.5")
    permit, reservation = gate.admission("p", agent="a", estimate=D("0.6"), budget=D("1"))
    with pytest.raises(BudgetExceededError) as caught:
        async with permit:
            pass
    assert caught.value.spent_usd == D("0.5")
    assert (await gate.local_budgets.usage("a")).spent == D("0.5")


async def test_fail_open_protocol_stores_fall_back_too(down_open: RedisConnection) -> None:
    budgets = RedisBudgetStore(down_open)
    tracker = BudgetTracker(store=budgets)
    reservation = await tracker.reserve("a", D("0.4"), D("1"))
    await reservation.commit(D("0.3"))
    assert (await tracker.usage("a")).spent == D("0.3")
    windows = RedisWindowStore(down_open)
    assert await windows.acquire("k", 3, limit=3, window=60) == 0.0
    assert await windows.acquire("k", 1, limit=3, window=60) > 0


async def test_fail_closed_surfaces_from_the_gateway(closed_port: int) -> None:
    settings = redis_settings(f"redis://127.0.0.1:{closed_port}/0")
    gateway = LLMGateway(settings, providers={"cloud": MockProvider()})
    with pytest.raises(SharedStateUnavailable) as caught:
        await gateway.complete("hello")
    assert f"127.0.0.1:{closed_port}" in str(caught.value)
    assert gateway.factory.provider("cloud").requests == []  # type: ignore[attr-defined]
    await gateway.accountant.shared.aclose()


async def test_settlements_that_cannot_be_sent_are_kept(down_open: RedisConnection) -> None:
    gate = SharedGate(down_open, max_wait=0)
    # Admitted through Redis in a moment when it worked (simulated), settled after it died.
    permit, reservation = gate.admission("p", max_concurrency=2, agent="a", estimate=D("0.1"))
    assert reservation is not None
    permit._entered = permit.admitted = True
    await permit.__aexit__(None, None, None)
    await reservation.commit(D("0.07"))
    assert gate.unsettled == 1  # replayed before the next admission once Redis answers


# -- money and periods -------------------------------------------------------------------------


def test_money_goes_over_the_wire_as_exact_picodollars() -> None:
    assert to_pico(D("0.0425")) == "42500000000"
    assert to_pico(D("0.0000000000001")) == "1"  # below a picodollar: rounded up (costs)
    assert to_pico_limit(D("5.0000000000009")) == "5000000000000"  # limits round down
    assert to_pico_limit(None) == ""
    assert from_pico("42500000000") == D("0.0425")
    assert str(from_pico("5000000000000")) == "5"
    assert from_pico(None) == 0
    big = D("123456.789012345678")
    assert from_pico(to_pico(big)) == D("123456.789012345678")


def test_budget_keys_live_one_period_past_their_own() -> None:
    noon = datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert period_ttl_ms(BudgetPeriod.DAY, noon) == 36 * 3600 * 1000
    assert period_ttl_ms(BudgetPeriod.MONTH, noon) == (30 + 31) * 86_400_000 - 12 * 3_600_000
    assert period_ttl_ms(BudgetPeriod.TOTAL, noon) == 0


def test_every_script_has_a_distinct_name_and_sha() -> None:
    assert len({s.name for s in SCRIPTS}) == len({s.sha for s in SCRIPTS}) == len(SCRIPTS)
    assert all("math.random" not in s.source for s in SCRIPTS)


def test_budget_claim_keys_match_between_gate_and_tracker() -> None:
    from avionics.state.gate import budget_key

    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    tracker = BudgetTracker(clock=lambda: now)
    assert budget_key("avionics:", "planner", BudgetPeriod.DAY, now) == tracker._key(
        "planner", BudgetPeriod.DAY, now
    )
    assert BudgetClaim("k", None).limit is None


# -- the breaker cache -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "state", "op"),
    [
        (None, BreakerState(), "close"),
        (BreakerState(1), BreakerState(2), None),  # below the threshold: per process
        (BreakerState(2), BreakerState(3, 10.0), "open"),
        (BreakerState(3, 10.0), BreakerState(3, 10.0, True), "probe"),
        (BreakerState(3, 10.0, True), BreakerState(3, 10.0, False), "unprobe"),
        (BreakerState(3, 10.0, True), BreakerState(4, 50.0, False), "open"),  # probe failed
        (BreakerState(3, 10.0), BreakerState(3, 10.0), None),
    ],
)
def test_only_breaker_transitions_are_shared(
    previous: BreakerState | None, state: BreakerState, op: str | None
) -> None:
    assert _op_of(previous, state) == op


def test_shared_breaker_times_map_onto_the_local_clock() -> None:
    local_now = 1_000.0
    store = RedisBreakerStore(
        RedisConnection("redis://127.0.0.1:1/0"), probe_timeout=30, clock=lambda: local_now
    )
    store._states = {"a": BreakerState(), "b": BreakerState(3, 990.0), "c": BreakerState(1)}
    server_now = 1_700_000_000_000
    reply: list[str | int] = [server_now]
    reply += [str(server_now - 4_000), "3", str(server_now - 1_000)]  # a: opened 4 s ago, probing
    reply += ["", "", ""]  # b: closed elsewhere
    reply += [str(server_now - 2_000), "5", str(server_now - 60_000)]  # c: stale probe claim
    store._merge(["a", "b", "c"], reply)
    assert store._states["a"] == BreakerState(3, local_now - 4.0, True)
    assert store._states["b"] == BreakerState()
    assert store._states["c"] == BreakerState(5, local_now - 2.0, False)
