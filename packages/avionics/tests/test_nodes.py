"""NodePool: least-in-flight choice and the circuit breaker, with an injected clock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from airframe import BackendKind, ConnectionError, EndpointSpec, ErrorCategory, InterruptedError
from avionics.nodes import (
    MemoryBreakerStore,
    Node,
    NodePool,
    NoHealthyNodeError,
    node_category,
)

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import FakeClock

COOLDOWN = 30.0


def make_pool(count: int = 2, threshold: int = 2) -> tuple[NodePool, FakeClock]:
    clock = FakeClock()
    nodes = [
        Node(f"p/h{i}:80", EndpointSpec(f"http://h{i}:80", BackendKind.LLAMA_SERVER))
        for i in range(count)
    ]
    return NodePool(nodes, failure_threshold=threshold, cooldown=COOLDOWN, clock=clock), clock


def names(pool: NodePool) -> list[str]:
    return [pool.state(n) for n in pool.nodes]


def test_least_in_flight_wins_and_ties_go_to_the_first_listed() -> None:
    pool, _ = make_pool(3)
    a = pool.acquire()
    b = pool.acquire()
    c = pool.acquire()
    assert [a.name, b.name, c.name] == ["p/h0:80", "p/h1:80", "p/h2:80"]
    assert pool.acquire() is a
    pool.release(b)
    assert pool.pick() is b
    assert [n.in_flight for n in pool.nodes] == [2, 0, 1]


def test_pick_has_no_side_effects() -> None:
    pool, _ = make_pool()
    pool.pick()
    pool.pick()
    assert [n.in_flight for n in pool.nodes] == [0, 0]


def test_exclude_skips_nodes() -> None:
    pool, _ = make_pool()
    assert pool.pick(exclude=["p/h0:80"]).name == "p/h1:80"
    assert not pool.has_available(["p/h0:80", "p/h1:80"])
    with pytest.raises(NoHealthyNodeError, match="cooling down"):
        pool.pick(["p/h0:80", "p/h1:80"])


def test_consecutive_node_failures_open_the_breaker() -> None:
    pool, _ = make_pool(threshold=2)
    node = pool.nodes[0]
    pool.release(pool.acquire(), ErrorCategory.SERVER)
    assert names(pool) == ["closed", "closed"]
    pool.release(pool.acquire(), ErrorCategory.TIMEOUT)
    assert names(pool) == ["open", "closed"]
    assert pool.pick() is pool.nodes[1]
    assert node.in_flight == 0


def test_a_success_resets_the_count() -> None:
    pool, _ = make_pool(threshold=2)
    pool.release(pool.acquire(), ErrorCategory.CONNECTION)
    pool.release(pool.acquire())
    pool.release(pool.acquire(), ErrorCategory.CONNECTION)
    assert names(pool) == ["closed", "closed"]


def test_request_level_errors_never_trip_the_breaker() -> None:
    pool, _ = make_pool(threshold=1)
    for category in (ErrorCategory.BAD_REQUEST, ErrorCategory.RATE_LIMIT, ErrorCategory.AUTH):
        pool.release(pool.acquire(), category)
    assert names(pool) == ["closed", "closed"]


def test_half_open_probe_then_close_or_reopen() -> None:
    pool, clock = make_pool(threshold=1)
    first = pool.nodes[0]
    pool.release(pool.acquire(), ErrorCategory.SERVER)
    assert names(pool) == ["open", "closed"]
    clock.advance(COOLDOWN - 1)
    assert pool.pick() is pool.nodes[1]
    clock.advance(1)
    assert names(pool) == ["half_open", "closed"]
    probe = pool.acquire()
    assert probe is first
    assert pool.pick() is pool.nodes[1]  # one probe at a time
    pool.release(probe, ErrorCategory.OVERLOADED)
    assert names(pool) == ["open", "closed"]  # the failed probe re-opens at once
    clock.advance(COOLDOWN)
    pool.release(pool.acquire())
    assert names(pool) == ["closed", "closed"]


def test_an_abandoned_probe_gives_no_verdict() -> None:
    pool, clock = make_pool(threshold=1)
    pool.release(pool.acquire(), ErrorCategory.SERVER)
    clock.advance(COOLDOWN)
    probe = pool.acquire()
    pool.release(probe, completed=False)
    assert names(pool) == ["half_open", "closed"]
    assert pool.acquire() is probe  # the next request probes


def test_a_lost_probe_is_replaced_after_another_cooldown() -> None:
    pool, clock = make_pool(count=1, threshold=1)
    pool.release(pool.acquire(), ErrorCategory.SERVER)
    clock.advance(COOLDOWN)
    lost = pool.acquire()  # never released (say, a crashed process sharing the store)
    clock.advance(COOLDOWN - 1)
    assert not pool.has_available()
    clock.advance(1)
    assert pool.acquire() is lost  # the stale probe no longer blocks a new one


def test_mark_opens_and_closes_by_name_or_url() -> None:
    pool, _ = make_pool()
    pool.mark("p/h0:80", False)
    assert names(pool) == ["open", "closed"]
    pool.mark("http://h0:80", True)
    assert names(pool) == ["closed", "closed"]
    with pytest.raises(KeyError, match="no node named"):
        pool.mark("p/other:1", True)


def test_breaker_state_lives_in_the_store() -> None:
    store = MemoryBreakerStore()
    clock = FakeClock()
    endpoint = EndpointSpec("http://h:1", BackendKind.OLLAMA)
    one = NodePool([Node("p/h:1", endpoint)], failure_threshold=1, store=store, clock=clock)
    two = NodePool([Node("p/h:1", endpoint)], failure_threshold=1, store=store, clock=clock)
    one.release(one.acquire(), ErrorCategory.SERVER)
    assert two.state(two.nodes[0]) == "open"
    assert not two.has_available()


def test_node_category_reads_through_an_interruption() -> None:
    interrupted = InterruptedError("cut")
    interrupted.__cause__ = ConnectionError("reset")
    assert node_category(interrupted) is ErrorCategory.CONNECTION
    assert node_category(InterruptedError("no cause")) is ErrorCategory.INTERRUPTED
    assert node_category(ConnectionError("x")) is ErrorCategory.CONNECTION


def test_a_pool_needs_nodes() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        NodePool([])
