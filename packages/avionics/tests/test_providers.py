"""Providers used directly: the seed-style `generate` / `generate_stream` / `health_check` of each
named provider against the emulator's real wire protocols, and the offline `MockProvider`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing

import pytest

import airframe
from airframe import FinishReason, InferenceRequest, InferenceResult, Message, Usage
from airframe.testing import Emulator, Fault, Reply
from avionics import (
    AnthropicProvider,
    AzureAIFoundryProvider,
    LlamaServerProvider,
    LLMProvider,
    MockProvider,
    OllamaProvider,
    OpenAIProvider,
    TokenChunk,
)
from avionics.providers import AirframeProvider


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.add_ollama_model("llama3.2")
        yield emulator


def build(kind: str, emu: Emulator, max_retries: int = 0) -> AirframeProvider:
    if kind == "llama_server":
        return LlamaServerProvider(emu.base_url(kind), max_retries=max_retries)
    if kind == "llama_server_openai":
        return LlamaServerProvider(
            emu.base_url("llama_server"), max_retries=max_retries, api_type="openai"
        )
    if kind == "openai":
        return OpenAIProvider("sk-test", base_url=emu.base_url(kind), max_retries=max_retries)
    if kind == "anthropic":
        return AnthropicProvider("sk-ant", base_url=emu.base_url(kind), max_retries=max_retries)
    if kind == "azure_openai":
        return AzureAIFoundryProvider(
            emu.base_url(kind), "az-key", "gpt-4o", max_retries=max_retries
        )
    return OllamaProvider(emu.base_url(kind), max_retries=max_retries)


KINDS = ["llama_server", "llama_server_openai", "openai", "anthropic", "azure_openai", "ollama"]
MODEL = {"anthropic": "claude-sonnet-4-5", "ollama": "llama3.2"}


@pytest.mark.parametrize("kind", KINDS)
async def test_generate_returns_the_text(emu: Emulator, kind: str) -> None:
    provider = build(kind, emu)
    emu.script(Reply.text("Hello from the wire"))
    text = await provider.generate(MODEL.get(kind, "m1"), "Say hello", {"temperature": 0.3})
    assert text == "Hello from the wire"
    assert isinstance(provider, LLMProvider)
    assert provider.supports_streaming


@pytest.mark.parametrize("kind", KINDS)
async def test_generate_stream_yields_chunks_then_a_final_one(emu: Emulator, kind: str) -> None:
    provider = build(kind, emu)
    emu.script(Reply.text("one two three"))
    chunks = [c async for c in provider.generate_stream(MODEL.get(kind, "m1"), "count")]
    assert all(isinstance(c, TokenChunk) for c in chunks)
    assert "".join(c.text for c in chunks) == "one two three"
    final = chunks[-1]
    assert final.is_final
    assert final.token_count == 3
    assert final.metadata is not None
    assert final.metadata["result"].text == "one two three"


@pytest.mark.parametrize("kind", KINDS)
async def test_health_check_is_true_for_a_live_server(emu: Emulator, kind: str) -> None:
    assert await build(kind, emu).health_check() is True


async def test_health_check_is_false_for_a_loading_or_dead_server(emu: Emulator) -> None:
    provider = build("llama_server", emu)
    emu.loading = True
    assert await provider.health_check() is False
    assert provider.pool.state(provider.pool.nodes[0]) == "open"
    emu.loading = False
    assert await provider.health_check() is True
    assert provider.pool.state(provider.pool.nodes[0]) == "closed"


async def test_llama_server_options_map_to_the_native_request(emu: Emulator) -> None:
    provider = LlamaServerProvider(emu.base_url("llama_server"), default_model="qwen")
    options = {"num_predict": 16, "temperature": 0.2, "stop": "END", "top_k": 40, "seed": 7}
    await provider.generate(None, "hi", options)
    body = emu.last_request.json
    assert emu.last_request.path == "/completion"
    assert body["n_predict"] == 16
    assert body["temperature"] == 0.2
    assert body["stop"] == ["END"]
    assert body["top_k"] == 40  # unknown options pass through
    assert body["seed"] == 7


async def test_keys_go_on_the_wire_and_never_in_repr(emu: Emulator) -> None:
    provider = OpenAIProvider("sk-secret-123", base_url=emu.base_url("openai"))
    await provider.generate("gpt-4o", "x")
    assert emu.last_request.headers["authorization"] == "Bearer sk-secret-123"
    assert "sk-secret-123" not in repr(provider)
    assert "sk-secret-123" not in str(provider.get_stats())


async def test_errors_pass_through_typed(emu: Emulator) -> None:
    provider = build("anthropic", emu)
    emu.script(Fault.overloaded())
    with pytest.raises(airframe.OverloadedError):
        await provider.generate("claude-sonnet-4-5", "x")


async def test_direct_calls_feed_the_breaker(emu: Emulator) -> None:
    provider = build("openai", emu)
    emu.set_default(Fault.server_error())
    for _ in range(provider.pool.failure_threshold):
        with pytest.raises(airframe.ServerError):
            await provider.generate("m", "x")
    count = len(emu.requests)
    with pytest.raises(airframe.ConnectionError, match="cooling down"):
        await provider.generate("m", "x")
    assert len(emu.requests) == count  # refused without I/O
    assert provider.pool.nodes[0].in_flight == 0


async def test_closing_a_direct_stream_early_frees_the_node(emu: Emulator) -> None:
    provider = build("ollama", emu)
    emu.script(Reply.text("a b c d e f"))
    async with aclosing(provider.generate_stream("llama3.2", "x")) as stream:
        async for chunk in stream:
            assert chunk.text == "a"
            break
    assert provider.pool.nodes[0].in_flight == 0
    assert await emu.await_connections(0)


async def test_list_models_through_a_provider(emu: Emulator) -> None:
    assert "llama3.2:latest" in await build("ollama", emu).list_models()


# -- MockProvider ------------------------------------------------------------------------------


async def test_mock_replies_from_its_script_in_order() -> None:
    mock = MockProvider(["first", "second"])
    assert await mock.generate(None, "a") == "first"
    assert await mock.generate(None, "b") == "second"
    assert await mock.generate(None, "c") == "mock response to: c"  # script used up: echo
    assert [r.messages[-1].text() for r in mock.requests] == ["a", "b", "c"]


async def test_mock_raises_scripted_exceptions() -> None:
    mock = MockProvider([airframe.RateLimitError("slow down"), "ok"])
    with pytest.raises(airframe.RateLimitError):
        await mock.generate(None, "x")
    assert await mock.generate(None, "x") == "ok"


async def test_mock_usage_is_deterministic_word_counts() -> None:
    mock = MockProvider(["three word answer"])
    request = InferenceRequest([Message.user("four words of prompt")], system="be kind")
    result = await mock.infer(request)
    assert result.usage == Usage(6, 3)
    assert result.model == "mock-model"
    assert result.response_id == "mock-1"


async def test_mock_accepts_results_functions_and_more_script() -> None:
    ready = InferenceResult("as is", [], FinishReason.LENGTH, None, "x", None)
    mock = MockProvider(lambda request: ready if request.model == "raw" else "computed")
    assert (await mock.infer(InferenceRequest([Message.user("q")], model="raw"))) is ready
    assert await mock.generate("other", "q") == "computed"
    scripted = MockProvider()
    scripted.script("later")
    assert await scripted.generate(None, "q") == "later"
    assert await scripted.health_check() is True
    assert scripted.get_stats()["calls"] == 1


async def test_mock_streams_word_by_word_and_can_be_cut() -> None:
    mock = MockProvider(["alpha beta gamma"])
    pieces = [c.text async for c in mock.generate_stream(None, "x") if not c.is_final]
    assert pieces == ["alpha ", "beta ", "gamma"]
    cut = MockProvider(["alpha beta gamma"], fail_after_tokens=1)
    with pytest.raises(airframe.InterruptedError) as info:
        _ = [c async for c in cut.generate_stream(None, "x")]
    assert info.value.partial is not None
    assert info.value.partial.text == "alpha "
