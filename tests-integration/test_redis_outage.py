"""Redis killed (SIGKILL) and restarted mid-run: fail closed names the URL and never hangs,
fail open carries on with per-process limits and one warning, and once Redis is back the limits
are shared again. The restarted server is empty (persistence is off), as after a crash.

Nothing sleeps to wait: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from redis_fixture import RedisServer, run_workers

from avionics import AvionicsSettings, LLMGateway, MockProvider
from avionics.errors import RateLimitedLocally
from avionics.state import RedisConnection, SharedGate, SharedStateUnavailable

pytestmark = pytest.mark.redis

HOUR = 3600
DEADLINE_S = 30.0


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def admit(gate: SharedGate, rpm: int) -> str:
    """ "shared" / "local" (how the call was admitted), or the refusing limit's kind."""
    permit, _ = gate.admission("p", rpm=rpm, tokens=1)
    try:
        async with permit:
            return "local" if permit.local else "shared"
    except RateLimitedLocally as exc:
        return exc.kind.value


async def test_fail_closed_refuses_with_the_url_then_resumes(redis_server: RedisServer) -> None:
    conn = RedisConnection(redis_server.url, fail_mode="closed")
    gate = SharedGate(conn, max_wait=0, window_seconds=HOUR)
    try:
        assert await admit(gate, rpm=3) == "shared"
        redis_server.kill()
        for _ in range(3):  # the first one finds out; the next are refused without I/O
            with pytest.raises(SharedStateUnavailable) as caught:
                await admit(gate, rpm=3)
            assert caught.value.url == redis_server.url
            assert redis_server.url in str(caught.value)
            assert 'fail_mode = "open"' in str(caught.value)  # the message says how to change it

        redis_server.start()  # same port, empty

        async def back() -> bool:
            try:
                return await admit(gate, rpm=3) == "shared"
            except SharedStateUnavailable:
                return False

        await eventually(back, "admissions go through Redis again")
        assert [await admit(gate, rpm=3) for _ in range(3)] == ["shared", "shared", "rpm"]
    finally:
        await conn.aclose()


async def test_fail_open_falls_back_with_one_warning_then_shares_again(
    redis_server: RedisServer,
) -> None:
    conn = RedisConnection(redis_server.url, fail_mode="open")
    gate = SharedGate(conn, max_wait=0, window_seconds=HOUR)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await admit(gate, rpm=2) == "shared"
            redis_server.kill()
            # Per-process limits now: rpm 2 in this process, whatever the others do.
            outcomes = [await admit(gate, rpm=2) for _ in range(5)]
            assert outcomes == ["local", "local", "rpm", "rpm", "rpm"]
            warnings = [e for e in logs if e["log_level"] == "warning"]
            assert len(warnings) == 1
            assert warnings[0]["event"] == "shared state unreachable"
            assert warnings[0]["url"] == redis_server.url

            redis_server.start()

            async def back() -> bool:
                return await admit(gate, rpm=2) == "shared"

            await eventually(back, "admissions go through Redis again")
        assert any(e["event"] == "shared state reachable again" for e in logs)
        assert len([e for e in logs if e["log_level"] == "warning"]) == 1
    finally:
        await conn.aclose()
    # Shared again: this process took 1 of the 2; another process gets exactly the other one.
    [other] = run_workers(
        [("hammer", {"url": redis_server.url, "rpm": 2, "tasks": 1, "attempts": 3})]
    )
    assert (other["admitted"], other["refused"]) == (1, {"rpm": 2})


async def test_an_unsent_settlement_is_replayed_when_redis_returns(
    redis_server: RedisServer,
) -> None:
    conn = RedisConnection(redis_server.url, fail_mode="closed")
    gate = SharedGate(conn, max_wait=0)
    try:
        permit, _ = gate.admission("p", max_concurrency=1)
        await permit.__aenter__()
        redis_server.kill()
        await permit.__aexit__(None, None, None)  # the lease cannot be given back now
        assert gate.unsettled == 1
        redis_server.start()

        async def settled() -> bool:
            try:
                return await admit(gate, rpm=10) == "shared" and gate.unsettled == 0
            except SharedStateUnavailable:
                return False

        await eventually(settled, "the settlement is replayed")
    finally:
        await conn.aclose()


async def test_a_gateway_running_through_a_redis_crash(redis_server: RedisServer) -> None:
    """Calls run in the background while Redis is killed and restarted: during the outage they
    fail with the URL (fail closed), after it they succeed, and nothing else ever happens."""
    settings = AvionicsSettings(
        providers={"local": {"kind": "llama_server", "base_url": "http://127.0.0.1:9",
                             "default_model": "m", "rpm": 100_000, "max_concurrency": 8}},
        profiles={"default": {"provider": "local"}},
        state={"backend": "redis", "redis_url": redis_server.url, "fail_mode": "closed"},
    )  # fmt: skip
    gateway = LLMGateway(settings, providers={"local": MockProvider()})
    outcomes: list[Any] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            try:
                await gateway.complete("ping")
                outcomes.append("ok")
            except SharedStateUnavailable as exc:
                outcomes.append(exc)
            await asyncio.sleep(0.002)  # pacing, not waiting for anything

    async def seen(count: Callable[[], int], n: int) -> bool:
        return count() >= n

    def oks() -> int:
        return outcomes.count("ok")

    def errors() -> int:
        return len(outcomes) - oks()

    runner = asyncio.create_task(traffic())
    try:
        await eventually(lambda: seen(oks, 5), "calls succeed")
        redis_server.kill()
        await eventually(lambda: seen(errors, 3), "calls are refused")
        refused_at = len(outcomes)
        redis_server.start()
        await eventually(lambda: seen(lambda: outcomes[refused_at:].count("ok"), 5), "recovery")
    finally:
        stop.set()
        await runner
        await gateway.accountant.shared.aclose()
    failures = [o for o in outcomes if o != "ok"]
    assert failures
    assert all(isinstance(f, SharedStateUnavailable) for f in failures)
    assert all(f.url == redis_server.url for f in failures)
    assert outcomes[-1] == "ok"
