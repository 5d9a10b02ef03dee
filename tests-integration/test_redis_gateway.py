"""`LLMGateway` with `[state] backend = "redis"`: limits and budgets shared through a real
redis-server, at one round trip to admit a call and one to settle it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from redis_fixture import RedisServer

from avionics import AvionicsSettings, LLMGateway, MockProvider
from avionics.errors import BudgetExceededError
from avionics.ratelimit import BudgetTracker
from avionics.state import MEMORY, RedisBudgetStore, RedisConnection, SharedGate

pytestmark = pytest.mark.redis

D = Decimal


class PricedMock(MockProvider):
    """A MockProvider billed like a cloud model ($1 per 1,000 tokens in settings)."""

    local = False


def gateway_settings(url: str, **provider: Any) -> AvionicsSettings:
    return AvionicsSettings(
        providers={
            "cloud": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": "sk-test",
                "default_model": "gpt-4o",
                **provider,
            }
        },
        profiles={"default": {"provider": "cloud"}},
        agents={"planner": {"profile": "default", "budget_usd": "0.05", "max_tokens": 10}},
        pricing={"cloud/gpt-4o": {"input": 1000, "output": 1000}},
        state={"backend": "redis", "redis_url": url},
    )


def make_gateway(settings: AvionicsSettings) -> LLMGateway:
    return LLMGateway(settings, providers={"cloud": PricedMock(["four words of answer"] * 50)})


@pytest.fixture
async def gateway(redis_server: RedisServer) -> AsyncIterator[LLMGateway]:
    gw = make_gateway(gateway_settings(redis_server.url, rpm=100, tpm=100_000, max_concurrency=4))
    yield gw
    await gw.accountant.shared.aclose()


async def test_a_gateway_call_is_one_round_trip_to_admit_and_one_to_settle(
    gateway: LLMGateway,
) -> None:
    shared = gateway.accountant.shared
    assert isinstance(shared.gate, SharedGate)
    connection = shared.connection
    assert connection is not None
    await gateway.complete("warm up the script cache", agent_name="planner")
    before = connection.round_trips
    response = await gateway.complete("how many round trips", agent_name="planner")
    assert connection.round_trips - before == 2
    assert response.cost is not None
    assert response.cost > 0


async def test_the_budget_is_shared_between_gateways(redis_server: RedisServer) -> None:
    settings = gateway_settings(redis_server.url)
    first, second = make_gateway(settings), make_gateway(settings)
    try:
        spent, refusal = D(0), None
        for turn in range(100):  # alternate between the two gateways until the budget says no
            gateway = (first, second)[turn % 2]
            try:
                response = await gateway.complete("a short prompt", agent_name="planner")
            except BudgetExceededError as exc:
                refusal = exc
                break
            assert response.cost is not None
            spent += response.cost
        assert refusal is not None
        assert turn > 1  # both gateways spent before the refusal
        reader = RedisConnection(redis_server.url)
        usage = await BudgetTracker(store=RedisBudgetStore(reader)).usage("planner")
        await reader.aclose()
        assert usage.spent == spent <= D("0.05")
        assert usage.reserved == 0
        assert refusal.spent_usd == spent
    finally:
        await first.accountant.shared.aclose()


def test_the_memory_backend_shares_nothing() -> None:
    gateway = LLMGateway(AvionicsSettings(), providers={"local": MockProvider()})
    assert gateway.accountant.shared is MEMORY
    assert gateway.factory.shared is MEMORY
