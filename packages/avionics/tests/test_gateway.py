"""LLMGateway basics over real sockets: complete, streams, the sync facade, stats, callbacks,
templates. Fallback, nodes, streaming failures and the ledger have their own test modules."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import aclosing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airframe import FinishReason, Message
from airframe.testing import Emulator, Fault, Reply
from avionics import LLMGateway, LLMResponse, MockProvider, StreamingChunk, TemplateError

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import gateway, inference_requests, provider, rows_cost, settings


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


# -- complete ---------------------------------------------------------------------------------


async def test_complete_returns_text_usage_and_route(emu: Emulator) -> None:
    gw = gateway(emu)
    emu.script(Reply.text("Hello there friend"))
    response = await gw.complete("Say hi", system="Be brief", temperature=0.1, max_tokens=20)
    assert isinstance(response, LLMResponse)
    assert response.text == response.content == "Hello there friend"
    assert response.provider == "p"
    assert response.model == "gpt-4o"
    assert response.finish_reason is FinishReason.STOP
    assert response.streamed is False
    assert response.usage is not None
    assert response.prompt_tokens == response.usage.input_tokens
    assert response.completion_tokens == 3
    assert response.tokens_used == response.prompt_tokens + response.completion_tokens
    assert response.agent_name == "default"
    assert response.metadata["profile"] == "default"
    assert response.metadata["node"].startswith("p/127.0.0.1:")
    body = emu.last_request.json
    assert body["model"] == "gpt-4o"
    assert body["temperature"] == 0.1
    assert body["max_tokens"] == 20
    assert body["messages"][0] == {"role": "system", "content": "Be brief"}


async def test_complete_takes_message_dicts_and_model_override(emu: Emulator) -> None:
    gw = gateway(emu)
    messages: list[Any] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        Message.user("second"),
    ]
    response = await gw.complete(messages=messages, model="gpt-4o-mini")
    assert response.text == "echo: second"
    assert emu.last_request.json["model"] == "gpt-4o-mini"
    assert [m["role"] for m in emu.last_request.json["messages"]] == ["user", "assistant", "user"]


async def test_complete_needs_a_prompt_or_messages(emu: Emulator) -> None:
    gw = gateway(emu)
    with pytest.raises(ValueError, match="prompt= or messages="):
        await gw.complete()
    assert inference_requests(emu) == []


async def test_tool_calls_come_back_on_the_response(emu: Emulator) -> None:
    gw = gateway(emu)
    emu.script(Reply.tool_calls([("get_weather", {"city": "Paris"})]))
    tool = {"name": "get_weather", "parameters": {"type": "object"}}
    response = await gw.complete("Weather?", tools=[tool])
    assert response.has_tool_calls
    assert response.tool_calls[0].name == "get_weather"
    assert response.tool_calls[0].arguments == {"city": "Paris"}
    assert response.finish_reason is FinishReason.TOOL_CALLS


# -- streaming --------------------------------------------------------------------------------


async def test_complete_stream_yields_chunks_then_a_final_response(emu: Emulator) -> None:
    gw = gateway(emu)
    emu.script(Reply.text("one two three"))
    chunks = [c async for c in gw.complete_stream("count", agent_name="counter")]
    pieces = [c for c in chunks if not c.is_final]
    assert "".join(c.text for c in pieces) == "one two three"
    assert [c.cumulative_tokens for c in pieces] == [1, 2, 3]
    assert all(c.agent_name == "counter" and c.provider == "p" for c in chunks)
    assert len({c.request_id for c in chunks}) == 1
    final = chunks[-1]
    assert final.is_final
    assert final.text == ""
    assert final.response is not None
    assert final.response.text == "one two three"
    assert final.response.streamed is True
    assert final.response.request_id == final.request_id
    assert emu.last_request.json["stream"] is True


async def test_complete_stream_can_also_be_awaited_first(emu: Emulator) -> None:
    gw = gateway(emu)
    emu.script(Reply.text("a b"))
    stream = await gw.complete_stream("x")
    texts = [c.text async for c in stream]
    assert texts == ["a", " b", ""]


async def test_reasoning_chunks_are_marked(emu: Emulator) -> None:
    gw = gateway(emu, kind="anthropic")
    emu.script(Reply.text("Answer", reasoning="Think hard"))
    chunks = [c async for c in gw.complete_stream("q")]
    kinds = {c.kind for c in chunks if not c.is_final}
    assert kinds == {"reasoning", "token"}
    final = chunks[-1].response
    assert final is not None
    assert final.text == "Answer"
    assert final.reasoning == "Think hard"


# -- sync facade ------------------------------------------------------------------------------


def test_complete_sync_outside_a_loop(emu: Emulator) -> None:
    gw = gateway(emu)
    emu.script(Reply.text("sync answer"))
    response = gw.complete_sync("hi")
    assert response.text == "sync answer"
    assert gw.get_stats()["calls"] == 1


async def test_complete_sync_inside_a_running_loop(emu: Emulator) -> None:
    gw = gateway(emu)
    emu.script(Reply.text("from inside"))
    response = gw.complete_sync("hi", agent_name="default")  # blocks this loop, still works
    assert response.text == "from inside"
    # and the async API on this loop still works afterwards
    assert (await gw.complete("again")).text == "echo: again"


def test_complete_sync_raises_template_errors_before_io(emu: Emulator) -> None:
    gw = gateway(emu)
    with pytest.raises(TemplateError):
        gw.complete_sync(template="Hi {{name}}")
    assert inference_requests(emu) == []


# -- templates ------------------------------------------------------------------------------


async def test_template_and_vars_render_the_prompt(emu: Emulator) -> None:
    gw = gateway(emu)
    user = {"name": "Ada", "langs": {"first": "Python"}}
    response = await gw.complete(
        template="Hi {{ user.name }}, {{user.langs.first}}?", vars={"user": user}
    )
    assert response.text == "echo: Hi Ada, Python?"


async def test_a_missing_template_variable_fails_before_any_io(emu: Emulator) -> None:
    gw = gateway(emu)
    with pytest.raises(TemplateError) as info:
        await gw.complete(template="{{greeting}}, {{name}}", vars={"greeting": "Hi"})
    assert info.value.missing == ["name"]
    assert "name" in str(info.value)
    with pytest.raises(TemplateError):
        gw.complete_stream(template="{{x}}")  # raised at the call, before iterating
    assert inference_requests(emu) == []
    assert gw.accountant.ledger.rows() == []


async def test_vars_apply_to_a_prompt_with_placeholders(emu: Emulator) -> None:
    gw = gateway(emu)
    response = await gw.complete("Dear {{who}}", vars={"who": "team"})
    assert response.text == "echo: Dear team"
    with pytest.raises(ValueError, match="not both"):
        await gw.complete("x", template="y")


# -- stats and callbacks ------------------------------------------------------------------------


async def test_get_stats_counts_calls_and_totals_per_agent_and_provider(emu: Emulator) -> None:
    gw = LLMGateway(
        settings(
            {"p": provider(emu, "openai"), "q": provider(emu, "anthropic")},
            profiles={"smart": {"provider": "q"}},
            agents={"planner": {"profile": "smart"}},
        )
    )
    await gw.complete("a")
    await gw.complete("b", agent_name="planner")
    _ = [c async for c in gw.complete_stream("c", agent_name="planner")]
    stats = gw.get_stats()
    assert stats["calls"] == 3
    assert stats["streams"] == 1
    assert stats["failures"] == 0
    assert stats["totals"]["calls"] == 3
    assert stats["by_agent"]["planner"]["calls"] == 2
    assert stats["by_agent"]["default"]["calls"] == 1
    assert set(stats["by_provider"]) == {"p", "q"}
    rows = gw.accountant.ledger.rows()
    assert Decimal(stats["totals"]["cost_usd"]) == rows_cost(rows)
    assert stats["totals"]["input_tokens"] == sum(r.input_tokens or 0 for r in rows)
    assert stats["providers"]["p"]["nodes"][0]["breaker"] == "closed"


async def test_resource_callback_sees_every_ledger_row(emu: Emulator) -> None:
    seen: list[dict[str, Any]] = []
    gw = gateway(emu, resource_callback=seen.append)
    emu.script(Fault.server_error(), Fault.server_error(), Reply.text("fine"))  # 2 = 1 retry
    gw2 = LLMGateway(
        settings(
            {"p": provider(emu, "openai"), "q": provider(emu, "openai")},
            agents={"a": {"profile": "default", "fallbacks": ["backup"]}},
            profiles={"backup": {"provider": "q"}},
        ),
        resource_callback=seen.append,
    )
    response = await gw2.complete("x", agent_name="a")
    assert [r["outcome"] for r in seen] == ["error", "ok"]
    assert [r["provider"] for r in seen] == ["p", "q"]
    assert seen == response.metadata["attempts"]
    assert all(r["request_id"] == response.request_id for r in seen)
    await gw.complete("y")
    assert len(seen) == 3


async def test_a_raising_resource_callback_never_breaks_a_call(emu: Emulator) -> None:
    def boom(row: dict[str, Any]) -> None:
        raise RuntimeError("callback bug")

    gw = gateway(emu, resource_callback=boom)
    assert (await gw.complete("x")).text == "echo: x"
    chunks = [c async for c in gw.complete_stream("y")]
    assert chunks[-1].is_final


async def test_an_async_resource_callback_is_awaited(emu: Emulator) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def record(row: dict[str, Any]) -> None:
        seen.append(row["outcome"])
        done.set()

    gw = gateway(emu)
    gw.set_resource_callback(record)
    await gw.complete("x")
    async with asyncio.timeout(10):  # a hang guard, not a timing assertion
        await done.wait()
    assert seen == ["ok"]


async def test_streaming_callback_sees_each_chunk_and_may_raise(emu: Emulator) -> None:
    seen: list[StreamingChunk] = []

    def watch(chunk: StreamingChunk) -> None:
        seen.append(chunk)
        raise RuntimeError("watcher bug")  # logged, never breaks the stream

    gw = gateway(emu, streaming_callback=watch)
    emu.script(Reply.text("x y z"))
    received = [c async for c in gw.complete_stream("go")]
    assert seen == received
    assert seen[-1].is_final
    gw.set_streaming_callback(None)
    assert [c async for c in gw.complete_stream("again")][-1].is_final
    assert len(seen) == len(received)


async def test_mock_provider_serves_a_route_without_a_backend() -> None:
    mock = MockProvider(["scripted answer"])
    gw = LLMGateway(
        settings(
            {"m": {"kind": "llama_server", "base_url": "http://127.0.0.1:9", "default_model": "m1"}}
        ),
        providers={"m": mock},
    )
    response = await gw.complete("anything")
    assert response.text == "scripted answer"
    assert response.cost == Decimal(0)
    assert mock.requests[0].messages[-1].text() == "anything"


async def test_early_close_with_aclosing_returns_the_connection(emu: Emulator) -> None:
    gw = gateway(emu)
    emu.script(Reply.text("a b c d e f g h"))
    async with aclosing(gw.complete_stream("x")) as stream:
        async for chunk in stream:
            assert chunk.text == "a"
            break
    assert await emu.await_connections(1)
