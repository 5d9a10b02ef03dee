"""What one attempt costs and how its admission settles (the rules of `accounting.py`)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

import airframe
from airframe import FinishReason, InferenceRequest, InferenceResult, Message, Usage
from avionics import AvionicsSettings, BudgetExceededError, MockProvider, RateLimitedLocally
from avionics.accounting import Accountant, AttemptRecord
from avionics.errors import LimitKind
from avionics.ledger import Outcome
from avionics.routing import resolve_profile

PRICE_IN, PRICE_OUT = Decimal(4), Decimal(20)  # per million tokens


def accountant(**agent: object) -> Accountant:
    settings = AvionicsSettings(
        providers={
            "cloud": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": "k",
                "default_model": "m",
                "rpm": 10,
            }
        },
        profiles={"default": {"provider": "cloud"}},
        agents={"a": agent} if agent else {},
        pricing={"m": {"input": str(PRICE_IN), "output": str(PRICE_OUT)}},
        gateway={"rate_limit_max_wait": 0},
    )
    return Accountant(settings)


def record(acct: Accountant, *, local: bool = False) -> AttemptRecord:
    provider = MockProvider(name="cloud")
    provider.local = local
    provider.kind = "openai"
    return AttemptRecord(1, resolve_profile(acct.settings, "default"), provider, None)


def result(text: str, usage: Usage | None) -> InferenceResult:
    return InferenceResult(text, [], FinishReason.STOP, usage, "m", "id")


def price(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * PRICE_IN + output_tokens * PRICE_OUT) / 1_000_000


REQUEST = InferenceRequest([Message.user("x" * 40)], max_tokens=100)  # ~10 prompt tokens


def test_an_answer_is_priced_from_its_reported_usage() -> None:
    acct = accountant()
    rec = record(acct)
    rec.result = result("ok", Usage(100, 50))
    assert acct.cost(rec) == price(100, 50)
    assert acct.record("a", "r1", rec, streamed=False).outcome is Outcome.OK


def test_an_answer_without_usage_from_a_priced_model_is_unknown() -> None:
    acct = accountant()
    rec = record(acct)
    rec.result = result("ok", None)
    assert acct.cost(rec) is None


def test_a_failure_before_output_costs_nothing() -> None:
    acct = accountant()
    rec = record(acct)
    rec.error = airframe.ServerError("500")
    assert acct.cost(rec) == 0
    assert acct.record("a", "r", rec, streamed=False).outcome is Outcome.ERROR


async def test_a_cut_stream_is_billed_with_estimates_for_what_was_not_reported() -> None:
    acct = accountant()
    rec = record(acct)
    await acct.admit("a", rec, REQUEST)  # sets the prompt estimate
    assert rec.prompt_tokens == 10
    rec.error = airframe.InterruptedError("cut")
    rec.partial = result("twelve chars", None)  # 3 tokens estimated
    rec.chunks = 2
    assert acct.cost(rec) == price(10, 3)
    row = acct.record("a", "r", rec, streamed=True)
    assert row.outcome is Outcome.INTERRUPTED
    assert row.input_tokens is None  # the row keeps what was reported


def test_reported_partial_counts_win_over_estimates() -> None:
    acct = accountant()
    rec = record(acct)
    rec.prompt_tokens = 10
    rec.error = airframe.InterruptedError("cut")
    rec.partial = result("abc", Usage(250, None))  # Anthropic reports input up front
    rec.chunks = 7
    assert acct.cost(rec) == price(250, 7)


def test_a_cancelled_call_without_output_is_unknown_with_output_estimated() -> None:
    acct = accountant()
    silent = record(acct)
    silent.error = asyncio.CancelledError()
    assert acct.cost(silent) is None
    assert acct.record("a", "r", silent, streamed=False).error_category == "cancelled"
    streamed = record(acct)
    streamed.prompt_tokens = 5
    streamed.error = GeneratorExit()
    streamed.chunks = 4
    assert acct.cost(streamed) == price(5, 4)


def test_a_local_limit_refusal_is_a_free_skipped_row() -> None:
    acct = accountant()
    rec = record(acct)
    rec.error = RateLimitedLocally("cloud", LimitKind.RPM, 1.0, limit=10)
    row = acct.record("a", "r", rec, streamed=False)
    assert row.outcome is Outcome.SKIPPED
    assert row.cost_usd == 0
    assert row.error_category == "rate_limited_locally"


def test_local_providers_cost_zero_whatever_happened() -> None:
    acct = accountant()
    rec = record(acct, local=True)
    rec.error = airframe.InterruptedError("cut")
    rec.chunks = 100
    assert acct.cost(rec) == 0


async def test_admission_commits_the_real_cost_to_the_budget() -> None:
    acct = accountant(budget_usd="1")
    rec = record(acct)
    admission = await acct.admit("a", rec, REQUEST)
    await admission.enter()
    usage = await acct.budgets.usage("a", "day")
    assert usage.reserved == price(10, 100)  # the estimate: prompt + max_tokens
    rec.result = result("ok", Usage(10, 20))
    acct.record("a", "r", rec, streamed=False)
    await admission.settle(rec)
    usage = await acct.budgets.usage("a", "day")
    assert (usage.spent, usage.reserved) == (price(10, 20), 0)
    limiter = acct.limiters.get("cloud")
    assert limiter is not None
    assert limiter.in_flight == 0


async def test_a_refused_permit_releases_the_reservation() -> None:
    acct = accountant(budget_usd="1")
    for _ in range(10):  # use up rpm = 10
        admission = await acct.admit("a", record(acct), REQUEST)
        await admission.enter()
        await admission.cancel()
    admission = await acct.admit("a", record(acct), REQUEST)
    with pytest.raises(RateLimitedLocally):
        await admission.enter()
    usage = await acct.budgets.usage("a", "day")
    assert (usage.spent, usage.reserved) == (0, 0)


async def test_the_budget_refuses_before_anything_is_reserved() -> None:
    acct = accountant(budget_usd="0.0001")
    with pytest.raises(BudgetExceededError):
        await acct.admit("a", record(acct), REQUEST)
    assert acct.limiters.get("cloud") is None  # no permit was even prepared
