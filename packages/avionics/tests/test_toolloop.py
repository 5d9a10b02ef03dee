"""`LLMGateway.chat_with_tools` against the emulator: handlers run, results go back to the model,
failures become tool errors, iterations are bounded, usage and cost add up over every turn."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airframe.testing import Emulator, Fault, Reply, TokenCounts
from avionics import LLMGateway
from avionics.toolloop import ToolLoopError

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import inference_requests, provider, settings

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers",
        "parameters": {"type": "object", "properties": {"a": {}, "b": {}}},
    },
}
PRICES = {"gpt-4o": {"input": "1", "output": "2"}}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def gw(emu: Emulator) -> LLMGateway:
    return LLMGateway(settings({"p": provider(emu, "openai")}, pricing=PRICES))


def tool_messages(emu: Emulator, index: int) -> list[dict[str, Any]]:
    body = inference_requests(emu)[index].json
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_a_sync_handler_result_goes_back_to_the_model(emu: Emulator, gw: LLMGateway) -> None:
    emu.script(
        Reply.tool_calls([("add", {"a": 2, "b": 3})], usage=TokenCounts(20, 5)),
        Reply.text("The sum is 5.", usage=TokenCounts(40, 6)),
    )
    response = await gw.chat_with_tools(
        [{"role": "user", "content": "2+3?"}], [ADD], {"add": lambda a, b: a + b}
    )
    assert response.text == "The sum is 5."
    assert not response.tool_calls
    (tool_message,) = tool_messages(emu, 1)
    assert tool_message["content"] == "5"
    first_call = inference_requests(emu)[1].json["messages"][1]["tool_calls"][0]
    assert tool_message["tool_call_id"] == first_call["id"]
    meta = response.metadata
    assert meta["turns"] == 2
    assert meta["max_iterations_reached"] is False
    assert meta["tool_results"] == [
        {"id": first_call["id"], "name": "add", "ok": True, "output": "5"}
    ]
    # usage and cost over both turns, equal to the ledger
    assert response.prompt_tokens == 60
    assert response.completion_tokens == 11
    assert response.tokens_used == 71
    expected = (60 * Decimal(1) + 11 * Decimal(2)) / 1_000_000
    assert response.cost == expected
    assert gw.accountant.ledger.totals().cost_usd == expected
    assert len(meta["attempts"]) == 2


async def test_an_async_handler_returning_data_is_sent_as_json(
    emu: Emulator, gw: LLMGateway
) -> None:
    async def lookup(city: str) -> dict[str, Any]:
        return {"city": city, "temp_c": 21}

    emu.script(Reply.tool_calls([("weather", {"city": "Oslo"})]), Reply.text("Mild."))
    response = await gw.chat_with_tools(
        [{"role": "user", "content": "weather?"}], [{"name": "weather"}], {"weather": lookup}
    )
    assert response.text == "Mild."
    assert tool_messages(emu, 1)[0]["content"] == '{"city": "Oslo", "temp_c": 21}'


async def test_a_handler_exception_is_reported_to_the_model(emu: Emulator, gw: LLMGateway) -> None:
    def broken(**kwargs: Any) -> str:
        raise ValueError("database is down")

    emu.script(
        Reply.tool_calls([("add", {"a": 1, "b": 1}), ("missing", {})]),
        Reply.text("Sorry, the tool failed."),
    )
    response = await gw.chat_with_tools(
        [{"role": "user", "content": "1+1?"}], [ADD, {"name": "missing"}], {"add": broken}
    )
    assert response.text == "Sorry, the tool failed."
    first, second = tool_messages(emu, 1)
    assert first["content"] == "error: ValueError: database is down"
    assert second["content"].startswith("error: LookupError: no handler is registered")
    assert [r["ok"] for r in response.metadata["tool_results"]] == [False, False]


async def test_raise_on_tool_error_raises_with_the_cause(emu: Emulator, gw: LLMGateway) -> None:
    def broken(a: int, b: int) -> int:
        raise ZeroDivisionError("nope")

    emu.script(Reply.tool_calls([("add", {"a": 1, "b": 0})]))
    with pytest.raises(ToolLoopError) as info:
        await gw.chat_with_tools(
            [{"role": "user", "content": "x"}], [ADD], {"add": broken}, raise_on_tool_error=True
        )
    assert info.value.tool == "add"
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert len(inference_requests(emu)) == 1


async def test_max_iterations_bounds_the_model_calls(emu: Emulator, gw: LLMGateway) -> None:
    emu.set_default(Reply.tool_calls([("add", {"a": 1, "b": 1})]))
    runs: list[int] = []

    def add(a: int, b: int) -> int:
        runs.append(a + b)
        return a + b

    response = await gw.chat_with_tools(
        [{"role": "user", "content": "loop"}], [ADD], {"add": add}, max_iterations=3
    )
    assert len(inference_requests(emu)) == 3
    assert runs == [2, 2]  # the last call's tool requests are returned, not run
    assert response.metadata["max_iterations_reached"] is True
    assert response.metadata["turns"] == 3
    assert response.tool_calls[0].name == "add"
    with pytest.raises(ValueError, match="max_iterations"):
        await gw.chat_with_tools([{"role": "user", "content": "x"}], [ADD], {}, max_iterations=0)


async def test_usage_and_cost_include_failed_attempts_of_every_turn(emu: Emulator) -> None:
    with Emulator() as emu2:
        gw = LLMGateway(
            settings(
                {
                    "p": provider(emu, "openai", retry={"max_retries": 0}),
                    "q": provider(emu2, "openai"),
                },
                profiles={"backup": {"provider": "q"}},
                agents={"tools": {"profile": "default", "fallbacks": ["backup"]}},
                pricing=PRICES,
            )
        )
        emu.script(Reply.tool_calls([("add", {"a": 1, "b": 2})]), Fault.server_error())
        emu2.script(Reply.text("3"))
        response = await gw.chat_with_tools(
            [{"role": "user", "content": "1+2"}],
            [ADD],
            {"add": lambda a, b: a + b},
            agent_name="tools",
        )
    assert response.provider == "q"
    assert [a["outcome"] for a in response.metadata["attempts"]] == ["ok", "error", "ok"]
    rows = gw.accountant.ledger.rows()
    assert response.cost == sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0))
    assert response.tokens_used == sum((r.input_tokens or 0) + (r.output_tokens or 0) for r in rows)
