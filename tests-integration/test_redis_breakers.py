"""Shared circuit breakers on a real redis-server: one process's trip is seen by the others
until a half-open probe succeeds.

This test process is the observer; the tripping and probing processes are roles of
`redis_workers.py`. The observer's node pool has an hour-long cooldown, so only a shared close
can make its node available again. Nothing sleeps to wait: the observer polls its pool (which
refreshes from Redis in the background) until a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis_fixture import (
    RedisServer,
    finish_worker,
    read_json,
    run_workers,
    send_line,
    start_worker,
)

from airframe import BackendKind, EndpointSpec, ErrorCategory
from avionics.factory import LLMFactory
from avionics.nodes import Node, NodePool
from avionics.settings import AvionicsSettings
from avionics.state import RedisBreakerStore, RedisConnection

pytestmark = pytest.mark.redis

HOUR = 3600.0
DEADLINE_S = 30.0
NODE = "local/10.0.0.5:8080"


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def observer(redis_server: RedisServer) -> AsyncIterator[NodePool]:
    conn = RedisConnection(redis_server.url)
    store = RedisBreakerStore(conn, refresh_interval=0.02)
    spec = EndpointSpec("http://10.0.0.5:8080", BackendKind.LLAMA_SERVER)
    yield NodePool([Node(NODE, spec)], cooldown=HOUR, store=store)
    await store.aclose()
    await conn.aclose()


def trip_in_another_process(url: str) -> None:
    [tripped] = run_workers([("trip", {"url": url, "failures": 3})])
    assert tripped == {"state": "open"}


async def test_a_trip_is_seen_by_the_others_until_the_probe_succeeds(
    redis_server: RedisServer, observer: NodePool
) -> None:
    node = observer.nodes[0]
    assert observer.state(node) == "closed"
    trip_in_another_process(redis_server.url)

    await eventually(lambda: observer.state(node) != "closed", "the trip is seen")
    assert observer.state(node) == "open"
    assert not observer.has_available()  # this process stops sending to the node

    prober = start_worker("probe_node", {"url": redis_server.url})
    try:
        send_line(prober, "go")
        assert read_json(prober) == {"probing": "half_open"}
        await eventually(lambda: observer.state(node) == "half_open", "the probe claim is seen")
        assert not observer.has_available()  # one probe at a time, and it is not ours
        send_line(prober, "ok")
        assert finish_worker(prober) == {"state": "closed"}
    finally:
        if prober.poll() is None:
            prober.kill()
            prober.communicate()

    await eventually(lambda: observer.state(node) == "closed", "the probe's success is seen")
    assert observer.has_available()
    assert observer.acquire() is node


async def test_a_failed_probe_keeps_the_node_out_for_everyone(
    redis_server: RedisServer, observer: NodePool
) -> None:
    node = observer.nodes[0]
    trip_in_another_process(redis_server.url)
    await eventually(lambda: observer.state(node) == "open", "the trip is seen")
    prober = start_worker("probe_node", {"url": redis_server.url})
    try:
        send_line(prober, "go")
        assert read_json(prober) == {"probing": "half_open"}
        send_line(prober, "fail")
        finish_worker(prober)
    finally:
        if prober.poll() is None:
            prober.kill()
            prober.communicate()
    store = observer._store
    assert isinstance(store, RedisBreakerStore)
    await store.sync()
    assert observer.state(node) == "open"  # re-opened by the failed probe, not closed
    assert not store.get(NODE).probing


def settings_for(url: str) -> AvionicsSettings:
    return AvionicsSettings(
        providers={
            "local": {
                "kind": "llama_server",
                "nodes": ["http://10.0.0.5:8080", "http://10.0.0.6:8080"],
                "default_model": "m",
            }
        },
        profiles={"default": {"provider": "local"}},
        state={"backend": "redis", "redis_url": url},
    )


async def test_factories_built_from_redis_settings_share_their_breakers(
    redis_server: RedisServer,
) -> None:
    """Two gateways' factories (as in two processes) see each other's trips."""
    first = LLMFactory(settings_for(redis_server.url))
    second = LLMFactory(settings_for(redis_server.url))
    try:
        pool_a: Any = first.provider("local").pool  # type: ignore[attr-defined]
        pool_b: Any = second.provider("local").pool  # type: ignore[attr-defined]
        assert isinstance(pool_a._store, RedisBreakerStore)
        assert pool_a._store is not pool_b._store  # separate caches, one Redis
        down = pool_a.nodes[0]
        for _ in range(pool_a.failure_threshold):
            pool_a.record_failure(down, ErrorCategory.CONNECTION)
        await pool_a._store.sync()
        watched = pool_b.nodes[0]
        await eventually(lambda: pool_b.state(watched) == "open", "the other factory sees it")
        assert pool_b.pick() is pool_b.nodes[1]  # traffic moves to the healthy node
    finally:
        await first.shared.aclose()
        await second.shared.aclose()
