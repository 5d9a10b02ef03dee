"""Several nodes behind one provider, through the gateway: least in flight, breakers with a
half-open probe, other nodes before the next route, health checks. Two emulators are the nodes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airframe.testing import Emulator, Fault, Reply
from avionics import GatewayError, LLMGateway
from avionics.providers import AirframeProvider

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import NO_RETRY, FakeClock, inference_requests, provider, settings

COOLDOWN = 10.0


@pytest.fixture
def node_a() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def node_b() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def backup() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def pool_gateway(
    node_a: Emulator, node_b: Emulator, clock: FakeClock, backup: Emulator | None = None
) -> LLMGateway:
    """Provider `local` (llama_server) on two nodes; optionally a fallback profile `backup`."""
    providers: dict[str, Any] = {
        "local": provider(None, "llama_server", nodes=[node_a, node_b], retry=NO_RETRY)
    }
    agents = None
    profiles: dict[str, Any] = {}
    if backup is not None:
        providers["cloud"] = provider(backup, "openai")
        profiles["backup"] = {"provider": "cloud"}
        agents = {"a": {"profile": "default", "fallbacks": ["backup"]}}
    gw = LLMGateway(
        settings(providers, profiles=profiles, agents=agents, gateway={"node_cooldown": COOLDOWN})
    )
    local_provider(gw).pool.clock = clock
    return gw


def local_provider(gw: LLMGateway) -> AirframeProvider:
    found = gw.factory.provider("local")
    assert isinstance(found, AirframeProvider)
    return found


def node_name(emu: Emulator) -> str:
    return f"local/127.0.0.1:{emu.port}"


def breakers(gw: LLMGateway) -> list[str]:
    pool = local_provider(gw).pool
    return [pool.state(n) for n in pool.nodes]


async def test_the_node_with_fewest_requests_in_flight_is_chosen(
    node_a: Emulator, node_b: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock)
    node_a.script(Reply.text("long streamed answer from a"))
    stream = gw.complete_stream("first")
    first = await anext(stream)  # one request now in flight on node a (first listed)
    assert first.text == "long"
    assert [n.in_flight for n in local_provider(gw).pool.nodes] == [1, 0]
    response = await gw.complete("second")  # goes to the idle node
    assert response.metadata["node"] == node_name(node_b)
    rest = [c async for c in stream]
    assert rest[-1].response is not None
    assert rest[-1].response.metadata["node"] == node_name(node_a)
    assert [n.in_flight for n in local_provider(gw).pool.nodes] == [0, 0]
    assert len(inference_requests(node_a)) == len(inference_requests(node_b)) == 1


async def test_concurrent_calls_spread_over_the_nodes(
    node_a: Emulator, node_b: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock)
    streams = [gw.complete_stream(f"call {i}") for i in range(4)]
    firsts = [await anext(s) for s in streams]  # all four in flight at once
    assert all(not f.is_final for f in firsts)
    assert [n.in_flight for n in local_provider(gw).pool.nodes] == [2, 2]
    for s in streams:
        _ = [c async for c in s]
    assert len(inference_requests(node_a)) == len(inference_requests(node_b)) == 2


async def test_a_failing_node_is_skipped_for_the_other_node_of_the_same_route(
    node_a: Emulator, node_b: Emulator, backup: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock, backup)
    node_a.script(Fault.server_error())
    node_b.script(Reply.text("b answers"))
    response = await gw.complete("x", agent_name="a")
    assert response.text == "b answers"
    assert response.provider == "local"
    nodes = [(a["node"], a["outcome"]) for a in response.metadata["attempts"]]
    assert nodes == [(node_name(node_a), "error"), (node_name(node_b), "ok")]
    assert inference_requests(backup) == []
    assert gw.get_stats()["fallbacks"] == 0  # another node is not another route


async def test_every_node_fails_before_the_next_route(
    node_a: Emulator, node_b: Emulator, backup: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock, backup)
    node_a.script(Fault.overloaded())
    node_b.script(Fault.status(502))
    response = await gw.complete("x", agent_name="a")
    assert response.provider == "cloud"
    attempts = [(a["provider"], a["node"]) for a in response.metadata["attempts"]]
    assert attempts == [
        ("local", node_name(node_a)),
        ("local", node_name(node_b)),
        ("cloud", f"cloud/127.0.0.1:{backup.port}"),
    ]


async def test_a_request_level_error_does_not_try_other_nodes(
    node_a: Emulator, node_b: Emulator, backup: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock, backup)
    node_a.script(Fault.rate_limit())  # about the request or account, not the node
    response = await gw.complete("x", agent_name="a")
    assert response.provider == "cloud"
    assert inference_requests(node_b) == []
    assert breakers(gw) == ["closed", "closed"]


async def test_breaker_opens_after_the_threshold_then_probes_after_cooldown(
    node_a: Emulator, node_b: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock)
    threshold = local_provider(gw).pool.failure_threshold
    node_a.set_default(Fault.server_error())
    for _ in range(threshold):
        assert (await gw.complete("x")).metadata["node"] == node_name(node_b)
    assert breakers(gw) == ["open", "closed"]
    assert len(inference_requests(node_a)) == threshold

    for _ in range(3):  # cooling down: node a is not even tried
        response = await gw.complete("y")
        assert len(response.metadata["attempts"]) == 1
    assert len(inference_requests(node_a)) == threshold

    clock.advance(COOLDOWN)
    assert breakers(gw) == ["half_open", "closed"]
    response = await gw.complete("probe fails")  # the probe goes to a, fails, b answers
    assert [a["node"] for a in response.metadata["attempts"]] == [
        node_name(node_a),
        node_name(node_b),
    ]
    assert breakers(gw) == ["open", "closed"]  # re-opened at once by the failed probe

    clock.advance(COOLDOWN)
    node_a.set_default(Reply.echo())
    response = await gw.complete("probe succeeds")
    assert response.metadata["node"] == node_name(node_a)
    assert breakers(gw) == ["closed", "closed"]


async def test_only_one_probe_at_a_time(
    node_a: Emulator, node_b: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock)
    gw.factory.mark_node_healthy(node_name(node_a), False)
    clock.advance(COOLDOWN)
    probe = gw.complete_stream("probe")
    assert (await anext(probe)).text  # the probe is in flight on node a
    other = await gw.complete("meanwhile")
    assert other.metadata["node"] == node_name(node_b)
    _ = [c async for c in probe]
    assert breakers(gw) == ["closed", "closed"]


async def test_an_abandoned_probe_lets_the_next_call_probe(
    node_a: Emulator, node_b: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock)
    gw.factory.mark_node_healthy(node_name(node_a), False)
    clock.advance(COOLDOWN)
    probe = gw.complete_stream("probe")
    await anext(probe)
    await probe.aclose()  # the caller gave up: no verdict on node a
    assert breakers(gw) == ["half_open", "closed"]
    response = await gw.complete("next")
    assert response.metadata["node"] == node_name(node_a)
    assert breakers(gw) == ["closed", "closed"]


async def test_when_every_node_cools_down_the_route_is_skipped(
    node_a: Emulator, node_b: Emulator, backup: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock, backup)
    gw.factory.mark_node_healthy(node_name(node_a), False)
    gw.factory.mark_node_healthy(f"http://127.0.0.1:{node_b.port}", False)  # by URL works too
    response = await gw.complete("x", agent_name="a")
    assert response.provider == "cloud"
    assert response.metadata["skipped"][0]["reason"] == "every node is cooling down after failures"
    assert inference_requests(node_a) == inference_requests(node_b) == []
    with pytest.raises(GatewayError, match="every node is cooling down"):
        await gw.complete("x")  # the default agent has no other route


async def test_health_check_brings_a_node_back_and_takes_a_dead_one_out(
    node_a: Emulator, clock: FakeClock
) -> None:
    with Emulator() as node_b:
        gw = pool_gateway(node_a, node_b, clock)
        gw.factory.mark_node_healthy(node_name(node_a), False)
        assert breakers(gw) == ["open", "closed"]
        assert await gw.health_check() == {"local": True}
        assert breakers(gw) == ["closed", "closed"]
    # node b is gone now
    assert await local_provider(gw).health_check() is True
    assert breakers(gw) == ["closed", "open"]
    assert (await gw.complete("x")).metadata["node"] == node_name(node_a)


async def test_mark_node_healthy_through_the_factory(
    node_a: Emulator, node_b: Emulator, clock: FakeClock
) -> None:
    gw = pool_gateway(node_a, node_b, clock)
    gw.factory.mark_node_healthy(node_name(node_a), False)
    assert (await gw.complete("x")).metadata["node"] == node_name(node_b)
    gw.factory.mark_node_healthy(node_name(node_a), True)
    assert (await gw.complete("x")).metadata["node"] == node_name(node_a)
    with pytest.raises(KeyError, match="no provider has a node"):
        gw.factory.mark_node_healthy("local/10.9.9.9:1", True)


async def test_stats_show_each_node(node_a: Emulator, node_b: Emulator, clock: FakeClock) -> None:
    gw = pool_gateway(node_a, node_b, clock)
    await asyncio.gather(gw.complete("a"), gw.complete("b"))
    (nodes,) = [p["nodes"] for p in gw.get_stats()["providers"].values()]
    assert [n["name"] for n in nodes] == [node_name(node_a), node_name(node_b)]
    assert all(n["in_flight"] == 0 and n["breaker"] == "closed" for n in nodes)
