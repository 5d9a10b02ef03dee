"""`LLMGateway` with settings pointing at real llama-servers (built from source, tiny model):
calls and streams through the gateway, cost 0 and ledger rows, a node stopped mid-run (its
breaker opens and calls go to the other node), fallback from a dead llama-server route.

No sleeps (conditions are polled with a deadline), no timing assertions.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, Literal

import pytest
from llama_server_fixture import LlamaServer, LlamaServerFactory

import airframe
from airframe import (
    BackendKind,
    EndpointSpec,
    ErrorCategory,
    FinishReason,
    InferenceRequest,
    Message,
)
from airframe.adapters.llama_server import LlamaServerAdapter
from avionics import AvionicsSettings, GatewayError, LLMGateway, LLMResponse, StreamingChunk
from avionics.providers.remote import AirframeProvider

pytestmark = pytest.mark.llama_server

Mode = Literal["native", "openai"]
FAST_RETRY = {"max_retries": 1, "initial_delay": 0.001, "max_delay": 0.002}
MODEL = "tiny-llama"


def llama_provider(*urls: str, api_type: Mode = "native", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "llama_server",
        "api_type": api_type,
        "default_model": MODEL,  # llama-server serves the model it loaded, whatever the name
        "retry": FAST_RETRY,
    }
    if len(urls) == 1:
        spec["base_url"] = urls[0]
    else:
        spec["nodes"] = list(urls)
    spec.update(extra)
    return spec


def make_settings(
    providers: dict[str, dict[str, Any]],
    profiles: dict[str, Any] | None = None,
    agents: dict[str, Any] | None = None,
) -> AvionicsSettings:
    profiles = dict(profiles or {})
    profiles.setdefault("default", {"provider": next(iter(providers))})
    values: dict[str, Any] = {
        "providers": providers,
        "profiles": profiles,
        # A node that failed stays out for the whole test (no half-open probe mid-test).
        "gateway": {"node_cooldown": 600.0},
    }
    if agents is not None:
        values["agents"] = agents
    return AvionicsSettings(**values)


def node_name(provider: str, server: LlamaServer) -> str:
    return f"{provider}/127.0.0.1:{server.port}"


async def prompt_tokens(server: LlamaServer, prompt: str, api_type: Mode = "native") -> int:
    """What llama-server will count as this one-message prompt's tokens."""
    ep = EndpointSpec(server.base_url, BackendKind.LLAMA_SERVER, api_type=api_type)
    return await LlamaServerAdapter().count_tokens(ep, InferenceRequest.from_prompt(prompt))


async def stream_all(gw: LLMGateway, prompt: str, **kwargs: Any) -> list[StreamingChunk]:
    return [chunk async for chunk in gw.complete_stream(prompt, **kwargs)]


def attempts(response: LLMResponse) -> list[tuple[str, str | None, str, str | None]]:
    return [
        (a["provider"], a["node"], a["outcome"], a["error_category"])
        for a in response.metadata["attempts"]
    ]


# ----------------------------------------------------------------------- complete and stream


@pytest.mark.parametrize("api_type", ["native", "openai"])
async def test_complete_and_stream_cost_nothing_and_are_ledgered(
    llama_server_factory: LlamaServerFactory, api_type: Mode
) -> None:
    a, b = llama_server_factory(), llama_server_factory()
    rows: list[dict[str, Any]] = []
    gw = LLMGateway(
        make_settings({"local": llama_provider(a.base_url, b.base_url, api_type=api_type)}),
        resource_callback=rows.append,
    )
    expected_prompt = await prompt_tokens(a, "hello gateway", api_type)

    response = await gw.complete("hello gateway", max_tokens=6, temperature=0.0)
    assert response.text
    assert response.provider == "local"
    assert response.finish_reason is FinishReason.LENGTH
    assert response.completion_tokens == 6
    assert response.prompt_tokens == expected_prompt
    assert response.tokens_used == expected_prompt + 6
    assert response.cost == Decimal(0)
    assert response.cost_usd == 0.0
    assert response.metadata["node"] in (node_name("local", a), node_name("local", b))
    assert response.metadata["raw"]["timings"]["predicted_n"] == 6
    assert attempts(response) == [("local", response.metadata["node"], "ok", None)]

    chunks = await stream_all(gw, "hello gateway", max_tokens=6, temperature=0.0)
    *pieces, final = chunks
    assert final.is_final
    assert all(not c.is_final for c in pieces)
    assert len(pieces) == 6  # one chunk per token
    assert [c.cumulative_tokens for c in pieces] == list(range(1, 7))
    streamed = final.response
    assert streamed is not None
    assert streamed.streamed
    assert streamed.text == "".join(c.text for c in pieces) == response.text  # greedy
    assert streamed.completion_tokens == 6
    assert streamed.prompt_tokens == expected_prompt
    assert streamed.cost == Decimal(0)

    ledger = gw.accountant.ledger.rows()
    assert [(r.provider, str(r.outcome), r.streamed) for r in ledger] == [
        ("local", "ok", False),
        ("local", "ok", True),
    ]
    assert [(r.input_tokens, r.output_tokens, r.cost_usd) for r in ledger] == [
        (expected_prompt, 6, Decimal(0)),
        (expected_prompt, 6, Decimal(0)),
    ]
    assert rows == [r.to_dict() for r in ledger]
    totals = gw.get_stats()["totals"]
    assert totals["calls"] == 2
    assert totals["input_tokens"] == 2 * expected_prompt
    assert totals["output_tokens"] == 12


async def test_chat_messages_through_the_gateway(llama_server: LlamaServer) -> None:
    gw = LLMGateway(make_settings({"local": llama_provider(llama_server.base_url)}))
    messages = [
        Message.user("Name a colour."),
        Message.assistant("Blue."),
        Message.user("Another one?"),
    ]
    response = await gw.complete(messages=messages, system="Be brief.", max_tokens=4)
    ep = EndpointSpec(llama_server.base_url, BackendKind.LLAMA_SERVER)
    counted = await LlamaServerAdapter().count_tokens(
        ep, InferenceRequest(messages=messages, system="Be brief.")
    )
    assert response.prompt_tokens == counted
    assert response.completion_tokens == 4


# --------------------------------------------------------------------------------- two nodes


async def test_a_node_stopped_mid_run_opens_its_breaker_and_calls_go_to_the_other(
    llama_server_factory: LlamaServerFactory,
) -> None:
    a, b = llama_server_factory(), llama_server_factory()
    gw = LLMGateway(make_settings({"local": llama_provider(a.base_url, b.base_url)}))
    provider = gw.factory.provider("local")
    assert isinstance(provider, AirframeProvider)
    threshold = provider.pool.failure_threshold
    node_a, node_b = node_name("local", a), node_name("local", b)

    # Both nodes serve while both are up (least in flight: concurrent calls spread out).
    before = await asyncio.gather(*(gw.complete(f"warm {i}", max_tokens=2) for i in range(4)))
    assert {r.metadata["node"] for r in before} == {node_a, node_b}

    a.stop()
    # Sequential calls try the first-listed node first: each fails over to b inside the call
    # (a connection error is a node-level failure) until a's breaker opens.
    for i in range(threshold):
        response = await gw.complete(f"after the stop {i}", max_tokens=3)
        assert response.completion_tokens == 3
        assert attempts(response) == [
            ("local", node_a, "error", "connection"),
            ("local", node_b, "ok", None),
        ]
        assert response.cost == Decimal(0)
    states = {n["name"]: n["breaker"] for n in provider.get_stats()["nodes"]}
    assert states == {node_a: "open", node_b: "closed"}

    # Breaker open: calls and streams go straight to b, nothing is tried on a.
    response = await gw.complete("breaker open", max_tokens=3)
    assert attempts(response) == [("local", node_b, "ok", None)]
    chunks = await stream_all(gw, "breaker open, streamed", max_tokens=3)
    assert chunks[-1].response is not None
    assert attempts(chunks[-1].response) == [("local", node_b, "ok", None)]
    many = await asyncio.gather(*(gw.complete(f"load {i}", max_tokens=2) for i in range(6)))
    assert {r.metadata["node"] for r in many} == {node_b}

    # The health check agrees: a is down (breaker stays open), b is up.
    assert await gw.health_check() == {"local": True}
    states = {n["name"]: n["breaker"] for n in provider.get_stats()["nodes"]}
    assert states[node_a] == "open"


async def test_a_node_dying_under_a_stream_interrupts_it_and_the_next_call_moves_on(
    llama_server_factory: LlamaServerFactory,
) -> None:
    """A stream that already delivered chunks cannot fall back: it raises `interrupted` with
    what arrived as `partial` and is billed; the next call goes to the surviving node."""
    a = llama_server_factory(ctx=8192, parallel=1)
    b = llama_server_factory()
    gw = LLMGateway(make_settings({"local": llama_provider(a.base_url, b.base_url)}))
    node_a, node_b = node_name("local", a), node_name("local", b)

    received: list[str] = []

    async def consume() -> None:
        async for chunk in gw.complete_stream("a long story", max_tokens=8000):
            received.append(chunk.text)
            if len(received) == 3:  # the node dies while it is generating
                a.process.kill()
                a.process.wait()

    with pytest.raises(airframe.InterruptedError) as info:
        await consume()
    err = info.value
    assert err.partial is not None
    assert err.partial.text == "".join(received)
    (row,) = gw.accountant.ledger.rows()
    assert row.node == node_a
    assert str(row.outcome) == "interrupted"
    assert row.output_tokens is not None
    assert row.output_tokens >= len(received)
    assert row.cost_usd == Decimal(0)

    response = await gw.complete("and now?", max_tokens=2)
    assert response.metadata["node"] == node_b
    assert response.completion_tokens == 2


# ---------------------------------------------------------------------------------- fallback


def dead_and_live(dead: LlamaServer, live: LlamaServer, **gateway: Any) -> LLMGateway:
    return LLMGateway(
        make_settings(
            {"dead": llama_provider(dead.base_url), "live": llama_provider(live.base_url)},
            profiles={"main": {"provider": "dead"}, "backup": {"provider": "live"}},
            agents={"planner": {"profile": "main", "fallbacks": ["backup"]}},
        ),
        **gateway,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_fallback_from_a_dead_llama_server_to_a_live_one(
    llama_server_factory: LlamaServerFactory, stream: bool
) -> None:
    dead, live = llama_server_factory(), llama_server_factory()
    dead.stop()
    gw = dead_and_live(dead, live)
    if stream:
        chunks = await stream_all(gw, "hello", agent_name="planner", max_tokens=4)
        response = chunks[-1].response
        assert response is not None
        assert len(chunks) == 5
    else:
        response = await gw.complete("hello", agent_name="planner", max_tokens=4)
    assert response.provider == "live"
    assert response.completion_tokens == 4
    assert response.metadata["fallback_used"] is True
    assert attempts(response) == [
        ("dead", node_name("dead", dead), "error", "connection"),
        ("live", node_name("live", live), "ok", None),
    ]
    assert response.cost == Decimal(0)
    assert gw.get_stats()["fallbacks"] == 1


async def test_gateway_fallback_provider_after_a_dead_route(
    llama_server_factory: LlamaServerFactory,
) -> None:
    dead, live = llama_server_factory(), llama_server_factory()
    dead.stop()
    gw = LLMGateway(
        make_settings(
            {"dead": llama_provider(dead.base_url), "live": llama_provider(live.base_url)},
            profiles={"default": {"provider": "dead"}},
        ),
        fallback_providers=["live"],
    )
    response = await gw.complete("hello", max_tokens=3)
    assert response.provider == "live"
    assert [a[0] for a in attempts(response)] == ["dead", "live"]


async def test_every_llama_server_down_is_a_gateway_error(
    llama_server_factory: LlamaServerFactory,
) -> None:
    dead, also_dead = llama_server_factory(), llama_server_factory()
    dead.stop()
    also_dead.stop()
    gw = dead_and_live(dead, also_dead)
    with pytest.raises(GatewayError) as info:
        await gw.complete("hello", agent_name="planner", max_tokens=3)
    causes = [e for e in info.value.errors if isinstance(e, airframe.AirframeError)]
    assert [e.category for e in causes] == [ErrorCategory.CONNECTION] * 2
    assert [str(r.outcome) for r in gw.accountant.ledger.rows()] == ["error", "error"]


async def test_context_overflow_falls_back_to_a_larger_window(
    llama_server_factory: LlamaServerFactory,
) -> None:
    """`context_length` moves on only to a route with a larger context window."""
    small, large = llama_server_factory(ctx=256), llama_server_factory(ctx=1024)
    gw = LLMGateway(
        make_settings(
            {
                "small": llama_provider(small.base_url, context_window=256),
                "large": llama_provider(large.base_url, context_window=1024),
            },
            profiles={"main": {"provider": "small"}, "backup": {"provider": "large"}},
            agents={"reader": {"profile": "main", "fallbacks": ["backup"]}},
        )
    )
    prompt = "x" * 400  # 400 tokens with the tiny model's vocabulary
    response = await gw.complete(prompt, agent_name="reader", max_tokens=3)
    assert response.provider == "large"
    assert attempts(response)[0][2:] == ("error", "context_length")
    assert response.completion_tokens == 3
    assert response.metadata["attempts"][1]["input_tokens"] == await prompt_tokens(large, prompt)
