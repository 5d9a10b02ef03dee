"""Streaming through the gateway: fallback only before the first chunk, interrupted streams
billed, and nothing leaked when the caller stops early (aclose, break, task cancellation)."""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import airframe
from airframe import (
    FinishReason,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    StreamEventType,
    Usage,
)
from airframe.testing import Emulator, Fault, RecordedRequest, Reply
from avionics import LLMGateway, LLMProvider, MockProvider, StreamingChunk
from avionics.ratelimit.budget import BudgetUsage

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import NO_RETRY, inference_requests, provider, settings

PRICE = {"input": "2", "output": "8"}  # USD per million tokens


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emu2() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def limited_gateway(first: Emulator, second: Emulator | None = None) -> LLMGateway:
    """Agent `a` with a budget, priced model, rpm/tpm/concurrency limits on `p` on `first`;
    a fallback profile on `second` when given."""
    providers = {
        "p": provider(first, "openai", retry=NO_RETRY, rpm=1000, tpm=1_000_000, max_concurrency=4)
    }
    agent: dict[str, Any] = {"profile": "default", "budget_usd": 1}
    profiles: dict[str, Any] = {}
    if second is not None:
        providers["q"] = provider(second, "openai")
        profiles["backup"] = {"provider": "q"}
        agent["fallbacks"] = ["backup"]
    return LLMGateway(
        settings(
            providers,
            profiles=profiles,
            agents={"a": agent},
            pricing={"gpt-4o": PRICE},
        )
    )


async def budget(gw: LLMGateway) -> BudgetUsage:
    return await gw.accountant.budgets.usage("a", "day")


def assert_released(gw: LLMGateway, name: str = "p") -> None:
    """No permit, node or reservation is left held by a finished call."""
    limiter = gw.accountant.limiters.get(name)
    assert limiter is not None
    assert limiter.in_flight == 0
    assert all(node.in_flight == 0 for node in gw.factory.provider(name).pool.nodes)  # type: ignore[attr-defined]


def estimated_cost(prompt: str, received: str, chunks: int) -> Decimal:
    """What an interrupted attempt without reported usage is billed (see accounting.py)."""
    prompt_tokens = max(1, (len(prompt) + 3) // 4)
    output_tokens = max(math.ceil(len(received) / 4), chunks)
    return (prompt_tokens * Decimal(PRICE["input"]) + output_tokens * Decimal(PRICE["output"])) / (
        Decimal(1_000_000)
    )


# -- fallback before the first chunk ----------------------------------------------------------


FAILS_BEFORE_OUTPUT = [
    Fault.server_error(),
    Fault.drop(after_chunks=0),
    Fault.in_band_error(after_chunks=0, kind="overloaded"),
    Fault.html_200(),
]


@pytest.mark.parametrize("fault", FAILS_BEFORE_OUTPUT, ids=lambda f: f.kind)
async def test_a_stream_falls_back_before_the_first_chunk(
    emu: Emulator, emu2: Emulator, fault: Fault
) -> None:
    gw = limited_gateway(emu, emu2)
    emu.script(fault)
    emu2.script(Reply.text("backup speaking"))
    chunks = [c async for c in gw.complete_stream("hi", agent_name="a")]
    assert "".join(c.text for c in chunks) == "backup speaking"
    assert {c.provider for c in chunks} == {"q"}
    final = chunks[-1].response
    assert final is not None
    outcomes = [(a["provider"], a["outcome"]) for a in final.metadata["attempts"]]
    assert outcomes == [("p", "error"), ("q", "ok")]
    assert final.cost == sum(Decimal(a["cost_usd"]) for a in final.metadata["attempts"])
    assert_released(gw)
    usage = await budget(gw)
    assert usage.reserved == 0
    assert usage.spent == final.cost


async def test_an_interruption_before_any_chunk_reached_the_caller_falls_back() -> None:
    class UsageThenDrop(LLMProvider):
        """Sends a usage event (no text), then the connection breaks."""

        local = True

        async def infer(self, request: InferenceRequest, **kw: Any) -> InferenceResult:
            raise NotImplementedError

        async def stream(
            self, request: InferenceRequest, **kw: Any
        ) -> AsyncGenerator[InferenceStreamEvent, None]:
            yield InferenceStreamEvent(StreamEventType.USAGE, usage=Usage(5, None))
            cause = airframe.ConnectionError("reset")
            error = airframe.InterruptedError("broke", partial=None)
            raise error from cause

        async def health_check(self) -> bool:
            return True

    local = {"kind": "llama_server", "base_url": "http://127.0.0.1:9", "default_model": "m"}
    gw = LLMGateway(
        settings(
            {"p": local, "q": local},
            profiles={"backup": {"provider": "q"}},
            agents={"a": {"profile": "default", "fallbacks": ["backup"]}},
        ),
        providers={"p": UsageThenDrop(), "q": MockProvider(["second route"])},
    )
    chunks = [c async for c in gw.complete_stream("x", agent_name="a")]
    assert chunks[-1].response is not None
    assert chunks[-1].response.text == "second route"


# -- interrupted after the first chunk --------------------------------------------------------


async def test_after_the_first_chunk_the_error_carries_the_partial_text(
    emu: Emulator, emu2: Emulator
) -> None:
    gw = limited_gateway(emu, emu2)
    emu.script(Fault.drop(after_chunks=3, reply=Reply.text("alpha beta gamma delta epsilon")))
    received: list[StreamingChunk] = []
    with pytest.raises(airframe.InterruptedError) as info:
        await collect(gw.complete_stream("tell me", agent_name="a"), received)
    error = info.value
    assert error.partial is not None
    assert error.partial.text == "".join(c.text for c in received) == "alpha beta"
    assert isinstance(error.__cause__, airframe.ConnectionError)
    assert inference_requests(emu2) == []  # no fallback once output reached the caller
    (row,) = gw.accountant.ledger.rows()
    assert row.outcome == "interrupted"
    assert row.error_category == "interrupted"
    assert row.input_tokens is None  # not reported: unknown, never 0
    assert row.cost_usd == estimated_cost("tell me", "alpha beta", 2)
    assert row.cost_usd > 0
    usage = await budget(gw)
    assert usage.spent == row.cost_usd  # the budget is charged what the row bills
    assert usage.reserved == 0
    assert_released(gw)
    assert gw.get_stats()["totals"]["cost_usd"] == str(row.cost_usd)


async def test_an_in_band_error_mid_stream_is_interrupted_with_its_cause(emu: Emulator) -> None:
    gw = limited_gateway(emu)
    emu.script(Fault.in_band_error(after_chunks=3, kind="server", reply=Reply.text("a b c d e f")))
    with pytest.raises(airframe.InterruptedError) as info:
        _ = [c async for c in gw.complete_stream("x", agent_name="a")]
    assert isinstance(info.value.__cause__, airframe.AirframeError)
    assert info.value.__cause__.category == "server"
    (row,) = gw.accountant.ledger.rows()
    assert row.outcome == "interrupted"


async def test_a_provider_error_after_output_is_raised_as_interrupted() -> None:
    mock = MockProvider(["one two three four"], fail_after_tokens=2)
    local = {"kind": "llama_server", "base_url": "http://127.0.0.1:9", "default_model": "m"}
    gw = LLMGateway(settings({"m": local}), providers={"m": mock})
    with pytest.raises(airframe.InterruptedError) as info:
        _ = [c async for c in gw.complete_stream("x")]
    assert info.value.partial is not None
    assert info.value.partial.text == "one two "
    (row,) = gw.accountant.ledger.rows()
    assert row.outcome == "interrupted"
    assert row.output_tokens == 2
    assert row.cost_usd == 0  # local


# -- the caller stops early -----------------------------------------------------------------


async def test_closing_a_stream_early_releases_permit_budget_and_node(emu: Emulator) -> None:
    gw = limited_gateway(emu)
    emu.script(Reply.text("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"))
    async with aclosing(gw.complete_stream("count", agent_name="a")) as stream:
        async for chunk in stream:
            if chunk.cumulative_tokens == 3:
                break
    assert_released(gw)
    (row,) = gw.accountant.ledger.rows()
    assert row.outcome == "interrupted"
    assert row.error_category == "cancelled"
    assert row.cost_usd == estimated_cost("count", "", 3)
    usage = await budget(gw)
    assert usage.reserved == 0
    assert usage.spent == row.cost_usd
    assert await emu.await_connections(0)  # the response was closed, not left streaming
    # the provider's limits are free for the next call
    assert (await gw.complete("again", agent_name="a")).text == "echo: again"


async def test_cancelling_a_streaming_task_releases_everything(emu: Emulator) -> None:
    gw = limited_gateway(emu)
    emu.script(Fault.stall(30, after_chunks=3, reply=Reply.text("a b c d e f")))
    first = asyncio.Event()
    seen: list[StreamingChunk] = []

    async def consume() -> None:
        async for chunk in gw.complete_stream("x", agent_name="a"):
            seen.append(chunk)
            first.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(10):  # a hang guard, not a timing assertion
        await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_released(gw)
    (row,) = gw.accountant.ledger.rows()
    assert row.error_category == "cancelled"
    assert row.outcome == "interrupted"
    usage = await budget(gw)
    assert usage.reserved == 0
    assert usage.spent == row.cost_usd


async def test_cancelling_a_call_before_any_output_keeps_the_estimate_as_spent(
    emu: Emulator,
) -> None:
    gw = limited_gateway(emu)
    arrived = threading.Event()

    def stall(request: RecordedRequest) -> Fault:
        arrived.set()
        return Fault.stall(30, after_chunks=None)

    emu.script(stall)
    task = asyncio.create_task(gw.complete("x", agent_name="a", max_tokens=100))
    assert await asyncio.to_thread(arrived.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_released(gw)
    (row,) = gw.accountant.ledger.rows()
    assert row.outcome == "error"
    assert row.error_category == "cancelled"
    assert row.cost_usd is None  # the backend may have done the work: unknown
    usage = await budget(gw)
    assert usage.reserved == 0
    estimate = (1 * Decimal(PRICE["input"]) + 100 * Decimal(PRICE["output"])) / 1_000_000
    assert usage.spent == estimate  # an unknown cost keeps the estimate (never counts as 0)


async def test_a_never_iterated_stream_sends_nothing(emu: Emulator) -> None:
    gw = limited_gateway(emu)
    stream = gw.complete_stream("x", agent_name="a")
    await stream.aclose()
    assert inference_requests(emu) == []
    assert gw.accountant.ledger.rows() == []


async def test_a_streamed_tool_call_ends_in_the_final_response(emu: Emulator) -> None:
    gw = limited_gateway(emu)
    emu.script(Reply.tool_calls([("add", {"a": 1, "b": 2})], text="Let me add."))
    chunks = [c async for c in gw.complete_stream("1+2?", agent_name="a", tools=[{"name": "add"}])]
    final = chunks[-1].response
    assert final is not None
    assert final.text == "Let me add."
    assert [(t.name, t.arguments) for t in final.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert final.finish_reason is FinishReason.TOOL_CALLS


async def collect(stream: AsyncIterator[StreamingChunk], into: list[StreamingChunk]) -> None:
    """Append each chunk as it arrives (so a test sees what came before an error)."""
    async for chunk in stream:
        into.append(chunk)  # noqa: PERF401
