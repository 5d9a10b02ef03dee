"""Local rate limits and budgets through the gateway: refused before any network I/O, a local
limit moves on to the next route, and nothing stays reserved after a refusal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airframe.testing import Emulator, Reply, TokenCounts
from avionics import BudgetExceededError, GatewayError, LLMGateway, RateLimitedLocally
from avionics.errors import LimitKind

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import inference_requests, provider, settings

PRICES = {"gpt-4o": {"input": "10", "output": "30"}}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emu2() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def limited(
    emu: Emulator, emu2: Emulator | None = None, agent: dict[str, Any] | None = None, **limits: Any
) -> LLMGateway:
    providers = {"p": provider(emu, "openai", **limits)}
    profiles: dict[str, Any] = {}
    spec: dict[str, Any] = {"profile": "default", **(agent or {})}
    if emu2 is not None:
        providers["q"] = provider(emu2, "openai")
        profiles["backup"] = {"provider": "q"}
        spec["fallbacks"] = ["backup"]
    return LLMGateway(
        settings(
            providers,
            profiles=profiles,
            agents={"a": spec},
            pricing=PRICES,
            gateway={"rate_limit_max_wait": 0},
        )
    )


# -- rate limits -------------------------------------------------------------------------------


async def test_rpm_refusal_moves_on_to_the_next_route(emu: Emulator, emu2: Emulator) -> None:
    gw = limited(emu, emu2, rpm=1)
    assert (await gw.complete("first", agent_name="a")).provider == "p"
    response = await gw.complete("second", agent_name="a")
    assert response.provider == "q"
    assert len(inference_requests(emu)) == 1
    local, answered = response.metadata["attempts"]
    assert local["outcome"] == "skipped"
    assert local["error_category"] == "rate_limited_locally"
    assert local["node"] is None
    assert local["cost_usd"] == "0"
    assert answered["outcome"] == "ok"
    totals = gw.accountant.ledger.totals()
    assert totals.skipped == 1
    assert totals.unpriced_calls == 0


async def test_rpm_refusal_without_another_route_names_the_limit(emu: Emulator) -> None:
    gw = limited(emu, rpm=1)
    await gw.complete("first", agent_name="a")
    with pytest.raises(GatewayError) as info:
        await gw.complete("second", agent_name="a")
    assert "rate_limited_locally" in str(info.value)
    assert "rpm=1" in str(info.value)
    (cause,) = info.value.exceptions
    assert isinstance(cause, RateLimitedLocally)
    assert cause.kind is LimitKind.RPM
    assert cause.retry_after is not None
    assert len(inference_requests(emu)) == 1


async def test_a_request_larger_than_tpm_is_refused_at_once(emu: Emulator, emu2: Emulator) -> None:
    gw = limited(emu, emu2, tpm=100)
    response = await gw.complete("x" * 2000, agent_name="a", max_tokens=10)
    assert response.provider == "q"
    assert inference_requests(emu) == []
    assert response.metadata["attempts"][0]["error_category"] == "rate_limited_locally"


async def test_max_concurrency_is_enforced(emu: Emulator, emu2: Emulator) -> None:
    gw = limited(emu, emu2, max_concurrency=1)
    stream = gw.complete_stream("long one", agent_name="a")
    assert not (await anext(stream)).is_final  # holds p's only slot
    response = await gw.complete("meanwhile", agent_name="a")
    assert response.provider == "q"
    _ = [c async for c in stream]
    assert (await gw.complete("after", agent_name="a")).provider == "p"


async def test_a_refused_permit_gives_the_budget_reservation_back(emu: Emulator) -> None:
    gw = limited(emu, agent={"budget_usd": 1}, rpm=1)
    await gw.complete("first", agent_name="a")
    with pytest.raises(GatewayError):
        await gw.complete("second", agent_name="a")
    usage = await gw.accountant.budgets.usage("a", "day")
    assert usage.reserved == 0
    assert usage.spent == gw.accountant.ledger.totals().cost_usd


# -- budgets -----------------------------------------------------------------------------------


async def test_a_budget_refuses_a_call_before_any_network_io(emu: Emulator) -> None:
    gw = limited(emu, agent={"budget_usd": "0.0001"})
    with pytest.raises(BudgetExceededError) as info:
        await gw.complete("plan everything", agent_name="a", max_tokens=1000)
    assert emu.requests == []
    assert gw.accountant.ledger.rows() == []
    error = info.value
    assert error.agent == "a"
    assert error.budget_usd == Decimal("0.0001")
    assert error.estimate_usd > error.budget_usd
    assert "agents.a.budget_usd" in str(error)
    with pytest.raises(BudgetExceededError):
        _ = [c async for c in gw.complete_stream("stream too", agent_name="a", max_tokens=1000)]
    assert emu.requests == []
    usage = await gw.accountant.budgets.usage("a", "day")
    assert usage.reserved == 0
    assert usage.spent == 0


async def test_a_budget_is_spent_by_real_costs_then_refuses(emu: Emulator) -> None:
    gw = limited(emu, agent={"budget_usd": "0.002"})
    emu.script(Reply.text("ok", usage=TokenCounts(100, 10)))
    response = await gw.complete("x", agent_name="a", max_tokens=10)
    assert response.cost == Decimal("0.0013")  # (100*10 + 10*30) / 1e6
    usage = await gw.accountant.budgets.usage("a", "day")
    assert usage.spent == response.cost
    with pytest.raises(BudgetExceededError):  # 0.0013 + an estimate of 1024 output > 0.002
        await gw.complete("y", agent_name="a")
    assert len(inference_requests(emu)) == 1


async def test_local_routes_are_free_under_a_budget(emu: Emulator) -> None:
    gw = LLMGateway(
        settings({"local": provider(emu, "llama_server")}, agents={"a": {"budget_usd": 0}})
    )
    assert (await gw.complete("x", agent_name="a")).cost == 0
