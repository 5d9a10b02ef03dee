"""Ledger: rows, totals that always equal the sum of rows, subscribers; GatewayError's report."""

from __future__ import annotations

import asyncio
import json
import pickle
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

import airframe
from avionics.errors import (
    AttemptFailed,
    AttemptSummary,
    AvionicsError,
    GatewayError,
    RateLimitedLocally,
)
from avionics.ledger import Ledger, LedgerRow, LedgerTotals, Outcome

D = Decimal
AGENTS = ("planner", "coder", "critic")
PROVIDERS = ("anthropic", "openai", "local")
OUTCOMES = tuple(Outcome)


def random_row(rng: random.Random, i: int) -> LedgerRow:
    outcome = rng.choice(OUTCOMES)
    return LedgerRow(
        request_id=f"req-{i}",
        agent=rng.choice(AGENTS),
        provider=rng.choice(PROVIDERS),
        model="m",
        attempt=rng.randint(1, 3),
        outcome=outcome,
        error_category=None if outcome is Outcome.OK else "server",
        input_tokens=rng.choice([None, rng.randint(0, 50_000)]),
        output_tokens=rng.choice([None, rng.randint(0, 5_000)]),
        cache_read_tokens=rng.randint(0, 100),
        cache_write_tokens=rng.randint(0, 100),
        reasoning_tokens=rng.randint(0, 100),
        cost_usd=rng.choice([None, D(rng.randint(0, 10**6)) / D(10**7)]),
        latency_ms=rng.random() * 1000,
    )


def expected_totals(rows: list[LedgerRow]) -> LedgerTotals:
    """Totals computed from the rows directly, independently of the ledger's aggregation."""
    return LedgerTotals(
        calls=len(rows),
        ok=sum(r.outcome == "ok" for r in rows),
        errors=sum(r.outcome in ("error", "interrupted") for r in rows),
        skipped=sum(r.outcome == "skipped" for r in rows),
        input_tokens=sum(r.input_tokens or 0 for r in rows),
        output_tokens=sum(r.output_tokens or 0 for r in rows),
        cache_read_tokens=sum(r.cache_read_tokens for r in rows),
        cache_write_tokens=sum(r.cache_write_tokens for r in rows),
        reasoning_tokens=sum(r.reasoning_tokens for r in rows),
        cost_usd=sum((r.cost_usd for r in rows if r.cost_usd is not None), D(0)),
        unpriced_calls=sum(r.cost_usd is None and r.outcome != "skipped" for r in rows),
    )


def test_a_recorded_row_shows_in_rows_and_totals() -> None:
    ledger = Ledger()
    row = LedgerRow(
        request_id="r1",
        agent="planner",
        provider="anthropic",
        node="api.anthropic.com",
        model="claude-sonnet-4-5",
        input_tokens=1_000,
        output_tokens=200,
        cache_read_tokens=400,
        cost_usd=D("0.00462"),
        latency_ms=812.5,
    )
    ledger.record(row)
    assert ledger.rows() == [row]
    totals = ledger.totals()
    assert totals.calls == 1
    assert totals.ok == 1
    assert totals.total_tokens == 1_200
    assert totals.cost_usd == D("0.00462")
    assert totals.unpriced_calls == 0


def test_totals_equal_the_sum_of_all_rows_though_only_the_last_rows_are_kept() -> None:
    rng = random.Random(1234)
    rows = [random_row(rng, i) for i in range(5_000)]
    ledger = Ledger(max_rows=100)
    for row in rows:
        ledger.record(row)
    assert ledger.rows() == rows[-100:]
    assert len(ledger) == 100
    assert ledger.totals() == expected_totals(rows)
    assert ledger.totals().unpriced_calls > 0  # the sample has rows with cost None
    for agent in AGENTS:
        assert ledger.totals(agent=agent) == expected_totals([r for r in rows if r.agent == agent])
        assert ledger.by_agent()[agent] == ledger.totals(agent=agent)
    for provider in PROVIDERS:
        subset = [r for r in rows if r.provider == provider]
        assert ledger.totals(provider=provider) == expected_totals(subset)
        assert ledger.by_provider()[provider] == expected_totals(subset)
    both = [r for r in rows if r.agent == "coder" and r.provider == "local"]
    assert ledger.totals(agent="coder", provider="local") == expected_totals(both)
    assert sum(ledger.by_agent().values(), LedgerTotals()) == ledger.totals()


def test_totals_of_unknown_names_are_zero() -> None:
    assert Ledger().totals(agent="nobody") == LedgerTotals()


def test_skipped_routes_are_not_unpriced_calls() -> None:
    ledger = Ledger()
    ledger.record(LedgerRow(request_id="r", agent="a", provider="p", model="m", outcome="skipped"))
    ledger.record(LedgerRow(request_id="r", agent="a", provider="p", model="m", outcome="error"))
    totals = ledger.totals()
    assert (totals.calls, totals.skipped, totals.errors, totals.unpriced_calls) == (2, 1, 1, 1)


def test_rows_serialise_to_json_with_exact_decimal_strings() -> None:
    row = LedgerRow(
        request_id="r",
        agent="a",
        provider="p",
        model="m",
        outcome="interrupted",
        error_category=airframe.ErrorCategory.INTERRUPTED,
        cost_usd=D("0.1000000000000000000001"),
        streamed=True,
    )
    data = json.loads(json.dumps(row.to_dict()))
    assert data["cost_usd"] == "0.1000000000000000000001"
    assert data["outcome"] == "interrupted"
    assert data["error_category"] == "interrupted"
    assert data["timestamp"].endswith("+00:00")
    assert json.loads(json.dumps(Ledger().totals().to_dict()))["cost_usd"] == "0"


def test_outcome_strings_are_parsed_once() -> None:
    row = LedgerRow(request_id="r", agent="a", provider="p", model="m", outcome="ok")
    assert row.outcome is Outcome.OK
    with pytest.raises(ValueError, match="nope"):
        LedgerRow(request_id="r", agent="a", provider="p", model="m", outcome="nope")  # type: ignore[arg-type]


def test_subscribers_see_each_row_and_a_failing_one_breaks_nothing() -> None:
    ledger = Ledger()
    seen: list[LedgerRow] = []

    def broken(row: LedgerRow) -> None:
        raise RuntimeError("subscriber bug")

    ledger.subscribe(broken)
    unsubscribe = ledger.subscribe(seen.append)
    row = LedgerRow(request_id="r", agent="a", provider="p", model="m", cost_usd=D(1))
    with capture_logs() as logs:
        ledger.record(row)
    assert seen == [row]
    assert ledger.totals().cost_usd == D(1)
    assert [e["event"] for e in logs] == ["ledger_callback_failed"]
    unsubscribe()
    unsubscribe()  # twice is fine
    ledger.record(row)
    assert seen == [row]


async def test_async_subscribers_are_scheduled_and_their_errors_logged() -> None:
    ledger = Ledger()
    seen: list[str] = []

    async def good(row: LedgerRow) -> None:
        seen.append(row.request_id)

    async def bad(row: LedgerRow) -> None:
        raise RuntimeError("async subscriber bug")

    ledger.subscribe(good)
    ledger.subscribe(bad)
    with capture_logs() as logs:
        ledger.record(LedgerRow(request_id="r1", agent="a", provider="p", model="m"))
        await ledger.drain()
    assert seen == ["r1"]
    assert [e["event"] for e in logs] == ["ledger_callback_failed"]


def test_an_async_subscriber_without_a_running_loop_is_skipped_with_a_warning() -> None:
    ledger = Ledger()

    async def good(row: LedgerRow) -> None:  # pragma: no cover - cannot run without a loop
        pass

    ledger.subscribe(good)
    with capture_logs() as logs:
        ledger.record(LedgerRow(request_id="r", agent="a", provider="p", model="m"))
    assert [e["event"] for e in logs] == ["ledger_callback_needs_event_loop"]


def test_recording_from_many_threads_keeps_totals_exact() -> None:
    ledger = Ledger(max_rows=50)
    barrier = threading.Barrier(8)

    def work(seed: int) -> list[LedgerRow]:
        rng = random.Random(seed)
        rows = [random_row(rng, seed * 10_000 + i) for i in range(2_000)]
        barrier.wait()
        for row in rows:
            ledger.record(row)
        return rows

    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(work, range(8)))
    every = [row for batch in batches for row in batch]
    assert ledger.totals() == expected_totals(every)
    assert len(ledger.rows()) == 50


async def test_recording_from_many_tasks_keeps_totals_exact() -> None:
    ledger = Ledger()
    rng = random.Random(7)
    rows = [random_row(rng, i) for i in range(1_000)]
    start = asyncio.Event()

    async def record(row: LedgerRow) -> None:
        await start.wait()
        ledger.record(row)

    tasks = [asyncio.create_task(record(row)) for row in rows]
    start.set()
    await asyncio.gather(*tasks)
    assert ledger.totals() == expected_totals(rows)


def test_max_rows_zero_keeps_only_totals_and_negative_is_refused() -> None:
    ledger = Ledger(max_rows=0)
    ledger.record(LedgerRow(request_id="r", agent="a", provider="p", model="m", cost_usd=D(2)))
    assert ledger.rows() == []
    assert ledger.totals().cost_usd == D(2)
    with pytest.raises(ValueError, match="max_rows"):
        Ledger(max_rows=-1)


# -- GatewayError: what the caller reads when every route failed ----------------------------


def rate_limited() -> airframe.RateLimitError:
    return airframe.RateLimitError("429 Too Many Requests: slow down\nbody: ...")


def test_gateway_error_lists_each_attempt_on_its_own_line() -> None:
    err_429 = rate_limited()
    local = RateLimitedLocally("openai", "tpm", 2.5, limit=40_000)
    error = GatewayError.from_attempts(
        "planner",
        [
            AttemptSummary.from_error("anthropic", "claude-sonnet-4-5", err_429, node="api"),
            AttemptSummary.from_error("openai", "gpt-4o", local),
            AttemptSummary("local", "qwen", category="skipped", reason="no vision support"),
        ],
        [err_429, local],
    )
    lines = str(error).splitlines()
    assert lines[0] == "All 3 route attempts failed for agent 'planner':"
    assert (
        lines[1]
        == "  1. anthropic/claude-sonnet-4-5 @ api: rate_limit: 429 Too Many Requests: slow down"
    )
    assert lines[2].startswith("  2. openai/gpt-4o: rate_limited_locally: Local tpm limit")
    assert lines[3] == "  3. local/qwen: skipped: no vision support"
    assert error.attempts[0].error is err_429
    assert error.exceptions == (err_429, local)
    assert error.errors == error.exceptions
    assert error.agent == "planner"
    assert isinstance(error, AvionicsError)
    assert isinstance(error, ExceptionGroup)


def test_gateway_error_without_errors_groups_one_cause_per_attempt() -> None:
    err = rate_limited()
    error = GatewayError.from_attempts(
        None,
        [
            AttemptSummary.from_error("anthropic", "claude", err),
            AttemptSummary("local", "qwen", category="skipped", reason="no tools"),
        ],
    )
    assert error.exceptions[0] is err
    assert isinstance(error.exceptions[1], AttemptFailed)
    assert error.exceptions[1].attempt.reason == "no tools"


def test_except_star_picks_the_causes_out_of_a_gateway_error() -> None:
    err = rate_limited()
    caught: list[BaseException] = []
    try:
        raise GatewayError.from_attempts(
            "a",
            [
                AttemptSummary.from_error("p", "m", err),
                AttemptSummary("q", "n", category="skipped", reason="r"),
            ],
        )
    except* airframe.RateLimitError as group:
        caught.extend(group.exceptions)
    except* AttemptFailed:
        pass
    assert caught == [err]


def test_gateway_error_accepts_mappings_and_a_plain_message() -> None:
    error = GatewayError(
        "no route of agent 'a' can serve this request",
        attempts=[{"provider": "p", "model": "m", "error_category": "auth", "reason": "bad key"}],
        errors=[],
    )
    assert str(error) == "no route of agent 'a' can serve this request"
    assert error.attempts == (AttemptSummary("p", "m", category="auth", reason="bad key"),)
    empty = GatewayError.from_attempts("a", [])
    assert "No route to try for agent 'a'" in str(empty)
    assert len(empty.exceptions) == 1


def test_gateway_error_pickles() -> None:
    error = GatewayError.from_attempts("a", [AttemptSummary("p", "m", category="server")])
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == str(error)
    assert clone.attempts == error.attempts


def test_attempt_reasons_are_one_short_line() -> None:
    summary = AttemptSummary.from_error("p", "m", ValueError("x" * 500 + "\nsecond line"))
    assert "\n" not in summary.reason
    assert len(summary.reason) == 200
    assert summary.category is None
    assert AttemptSummary.from_error("p", "m", ValueError()).reason == "ValueError"
