"""The cost ledger through the gateway: one row per attempt, exact Decimal costs, responses and
totals that equal the sum of rows under retries, fallbacks and interrupted streams."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import airframe
from airframe import FinishReason, InferenceResult, Usage
from airframe.testing import Emulator, Fault, Reply, TokenCounts
from avionics import LLMGateway, MockProvider
from avionics.ledger import LedgerRow, LedgerTotals

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import NO_RETRY, provider, settings

PRICES = {"gpt-4o": {"input": "3", "output": "15", "cache_read": "0.3"}}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emu2() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def priced(first: Emulator, second: Emulator, **extra: Any) -> LLMGateway:
    return LLMGateway(
        settings(
            {"p": provider(first, "openai", retry=NO_RETRY), "q": provider(second, "openai")},
            profiles={"backup": {"provider": "q"}},
            agents={"a": {"profile": "default", "fallbacks": ["backup"]}},
            pricing=PRICES,
            **extra,
        )
    )


def summed(rows: list[LedgerRow]) -> LedgerTotals:
    total = LedgerTotals()
    for row in rows:
        total = total + LedgerTotals.of_row(row)
    return total


def call_rows(gw: LLMGateway, request_id: str) -> list[LedgerRow]:
    return [r for r in gw.accountant.ledger.rows() if r.request_id == request_id]


async def test_a_priced_model_costs_the_exact_decimal(emu: Emulator, emu2: Emulator) -> None:
    gw = priced(emu, emu2)
    emu.script(Reply.text("ok", usage=TokenCounts(1000, 200, cache_read_tokens=400)))
    response = await gw.complete("x", agent_name="a")
    expected = (600 * Decimal(3) + 400 * Decimal("0.3") + 200 * Decimal(15)) / 1_000_000
    assert response.cost == expected == Decimal("0.00492")
    assert response.cost_usd == float(expected)
    (row,) = gw.accountant.ledger.rows()
    assert row.cost_usd == expected
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens) == (1000, 200, 400)


async def test_an_unknown_model_costs_none_never_a_guess(emu: Emulator) -> None:
    gw = LLMGateway(settings({"p": provider(emu, "openai", default_model="no-such-model-xyz")}))
    response = await gw.complete("x")
    assert response.cost is None
    assert response.cost_usd is None
    assert response.tokens_used > 0  # tokens are still known
    (row,) = gw.accountant.ledger.rows()
    assert row.cost_usd is None
    totals = gw.accountant.ledger.totals()
    assert totals.unpriced_calls == 1
    assert totals.cost_usd == 0


@pytest.mark.parametrize("kind", ["llama_server", "ollama"])
async def test_local_providers_cost_exactly_zero(emu: Emulator, kind: str) -> None:
    gw = LLMGateway(settings({"p": provider(emu, kind)}))
    response = await gw.complete("x")
    assert response.cost == Decimal(0)
    assert response.cost_usd == 0.0
    _ = [c async for c in gw.complete_stream("y")]
    assert [r.cost_usd for r in gw.accountant.ledger.rows()] == [Decimal(0), Decimal(0)]


async def test_one_row_per_attempt_and_the_response_is_their_sum(
    emu: Emulator, emu2: Emulator
) -> None:
    gw = priced(emu, emu2)
    emu.script(Fault.server_error())
    emu2.script(Reply.text("fine", usage=TokenCounts(50, 10)))
    response = await gw.complete("x", agent_name="a")
    rows = call_rows(gw, response.request_id)
    assert [(r.attempt, r.provider, r.outcome) for r in rows] == [
        (1, "p", "error"),
        (2, "q", "ok"),
    ]
    assert rows[0].cost_usd == 0
    assert response.cost == sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0))
    assert response.tokens_used == 60
    assert response.metadata["attempts"] == [r.to_dict() for r in rows]


async def test_a_retry_inside_airframe_is_one_attempt(emu: Emulator, emu2: Emulator) -> None:
    gw = priced(emu2, emu)  # q (on emu) retries once
    emu2.script(Fault.server_error())
    emu.script(Fault.server_error(), Reply.text("second try"))
    response = await gw.complete("x", agent_name="a")
    assert response.text == "second try"
    assert [r.outcome for r in call_rows(gw, response.request_id)] == ["error", "ok"]


async def test_tokens_count_every_attempt_usage_is_the_answer_s_own() -> None:
    partial = InferenceResult("cut", [], FinishReason.OTHER, Usage(10, 5), "m", None)
    first = MockProvider([airframe.ServerError("died", partial=partial)], name="p")
    second = MockProvider(["answer here"], name="q")
    local = {"kind": "llama_server", "base_url": "http://127.0.0.1:9", "default_model": "m"}
    gw = LLMGateway(
        settings(
            {"p": local, "q": local},
            profiles={"backup": {"provider": "q"}},
            agents={"a": {"profile": "default", "fallbacks": ["backup"]}},
        ),
        providers={"p": first, "q": second},
    )
    response = await gw.complete("one two three", agent_name="a")
    assert response.usage == Usage(3, 2)  # the answering attempt's own report
    assert response.prompt_tokens == 10 + 3  # the call's: the sum of its rows
    assert response.completion_tokens == 5 + 2
    assert response.tokens_used == 20
    rows = call_rows(gw, response.request_id)
    assert [r.outcome for r in rows] == ["interrupted", "ok"]  # output began before it died
    assert sum(r.input_tokens or 0 for r in rows) == response.prompt_tokens


async def test_ledger_totals_equal_the_sum_of_rows_under_every_failure(
    emu: Emulator, emu2: Emulator
) -> None:
    gw = priced(emu, emu2)
    emu.script(
        Fault.rate_limit(),  # fallback
        Reply.text("plain", usage=TokenCounts(30, 5)),
        Fault.drop(after_chunks=2, reply=Reply.text("a b c d")),  # interrupted stream
        Fault.overloaded(),  # streamed fallback before output
    )
    emu2.script(Fault.server_error(), Reply.text("retried"))  # q retries once
    await gw.complete("one", agent_name="a")
    await gw.complete("two", agent_name="a")
    with pytest.raises(airframe.InterruptedError):
        _ = [c async for c in gw.complete_stream("three", agent_name="a")]
    _ = [c async for c in gw.complete_stream("four", agent_name="a")]
    rows = gw.accountant.ledger.rows()
    assert len(rows) == 6
    assert {r.outcome.value for r in rows} == {"ok", "error", "interrupted"}
    assert gw.accountant.ledger.totals() == summed(rows)
    stats = gw.get_stats()
    assert Decimal(stats["totals"]["cost_usd"]) == sum(
        (r.cost_usd or Decimal(0) for r in rows), Decimal(0)
    )
    assert stats["by_provider"]["p"]["calls"] == 4
    assert stats["by_provider"]["q"]["calls"] == 2
    assert stats["fallbacks"] == 2


async def test_a_ledger_row_describes_the_attempt(emu: Emulator) -> None:
    gw = LLMGateway(settings({"p": provider(emu, "openai")}, pricing=PRICES))
    _ = [c async for c in gw.complete_stream("x", agent_name="writer")]
    (row,) = gw.accountant.ledger.rows()
    assert row.agent == "writer"
    assert row.provider == "p"
    assert row.model == "gpt-4o"
    assert row.node == f"p/127.0.0.1:{emu.port}"
    assert row.streamed is True
    assert row.latency_ms >= 0
    assert row.outcome == "ok"
    assert row.error_category is None
