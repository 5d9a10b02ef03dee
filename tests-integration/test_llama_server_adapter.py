"""airframe's llama-server adapter against a real llama-server (built from source) serving the
tiny random model, in both wire modes: native (`/apply-template` + `/completion`) and OpenAI
(`/v1/chat/completions`).

The tiny model never samples an end token and emits exactly one stream chunk per token, so every
generation runs to `max_tokens` and token counts are exact. No sleeps: waits poll a condition
with a deadline. No timing assertions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from llama_server_fixture import DEFAULT_CTX, DEFAULT_PARALLEL, LlamaServer, LlamaServerFactory

import airframe
from airframe import (
    BackendKind,
    ContextLengthError,
    EndpointSpec,
    ErrorCategory,
    FinishReason,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    Message,
    OverloadedError,
    RetryPolicy,
    StreamEventType,
)
from airframe._pool import open_connection_count
from airframe.adapters.llama_server import LlamaServerAdapter

pytestmark = pytest.mark.llama_server

Mode = Literal["native", "openai"]
MODES: tuple[Mode, ...] = ("native", "openai")
DEADLINE_S = 30.0
POLL_S = 0.02


# ----------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def adapter() -> LlamaServerAdapter:
    # A private instance: its /apply-template cache is this module's alone.
    return LlamaServerAdapter()


def endpoint(server: LlamaServer, mode: Mode = "native", *, retries: int = 0) -> EndpointSpec:
    # No retries by default: against a real local server every failure here is deliberate.
    return EndpointSpec(
        server.base_url,
        BackendKind.LLAMA_SERVER,
        name=f"llama-{server.port}",
        api_type=mode,
        retry=RetryPolicy(max_retries=retries, initial_delay=0.01, max_delay=0.02),
    )


def greedy(prompt: str, max_tokens: int, **kwargs: Any) -> InferenceRequest:
    return InferenceRequest.from_prompt(prompt, max_tokens=max_tokens, temperature=0.0, **kwargs)


async def collect(
    stream: AsyncGenerator[InferenceStreamEvent, None],
) -> tuple[list[InferenceStreamEvent], InferenceResult]:
    events = [event async for event in stream]
    last = events[-1]
    assert last.type is StreamEventType.MESSAGE
    assert last.result is not None
    return events, last.result


def tokens_of(events: list[InferenceStreamEvent]) -> list[str]:
    return [e.content for e in events if e.type is StreamEventType.TOKEN]


async def poll(
    check: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Await `check()` until it is true; fail after `deadline_s` (no fixed sleeps)."""
    deadline = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:.0f}s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def metrics(server: LlamaServer) -> dict[str, float]:
    """llama-server's Prometheus counters (`/metrics`, enabled by the fixture's `--metrics`)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        resp = await client.get(f"{server.base_url}/metrics")
    resp.raise_for_status()
    out: dict[str, float] = {}
    for line in resp.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            out[name.removeprefix("llamacpp:")] = float(value)
    return out


async def busy_slots(server: LlamaServer) -> int:
    """Slots processing a request (`GET /slots` on a private client, so the adapter's pool
    holds nothing but the connections under test)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        resp = await client.get(f"{server.base_url}/slots")
    resp.raise_for_status()
    return sum(1 for s in resp.json() if s.get("is_processing"))


async def slots_idle(server: LlamaServer) -> bool:
    return await busy_slots(server) == 0


def check_usage_against_timings(result: InferenceResult) -> None:
    """Usage equals llama-server's own `timings` (kept in `raw`): prompt = processed + reused."""
    usage = result.usage
    assert usage is not None
    assert result.raw is not None
    timings = result.raw["timings"]
    assert usage.output_tokens == timings["predicted_n"]
    assert usage.input_tokens == timings["prompt_n"] + timings["cache_n"]
    assert usage.cache_read_tokens == timings["cache_n"]


# ------------------------------------------------------------------------ infer / stream_infer


@pytest.mark.parametrize("mode", MODES)
async def test_infer_usage_equals_the_servers_report(
    adapter: LlamaServerAdapter, llama_server: LlamaServer, mode: Mode
) -> None:
    ep = endpoint(llama_server, mode)
    request = greedy("hello there", 7, seed=1)
    result = await adapter.infer(ep, request)

    assert result.finish_reason is FinishReason.LENGTH  # the tiny model never stops by itself
    assert result.text
    assert result.usage is not None
    assert result.usage.output_tokens == 7
    check_usage_against_timings(result)

    # The same request sent by hand: the server reports the same counts and (greedy) text.
    async with httpx.AsyncClient(base_url=llama_server.base_url, timeout=60.0) as client:
        if mode == "native":
            prompt = await adapter.render_prompt(ep, request)
            body = (
                await client.post(
                    "/completion", json={"prompt": prompt, "n_predict": 7, "temperature": 0.0}
                )
            ).json()
            assert body["tokens_evaluated"] == result.usage.input_tokens
            assert body["tokens_predicted"] == result.usage.output_tokens
            assert body["content"] == result.text
            assert result.raw is not None
            assert result.raw["stop_type"] == body["stop_type"] == "limit"
        else:
            body = (
                await client.post(
                    "/v1/chat/completions",
                    json={
                        "messages": [{"role": "user", "content": "hello there"}],
                        "max_tokens": 7,
                        "temperature": 0.0,
                    },
                )
            ).json()
            assert body["usage"]["prompt_tokens"] == result.usage.input_tokens
            assert body["usage"]["completion_tokens"] == result.usage.output_tokens
            assert body["choices"][0]["message"]["content"] == result.text
            assert result.response_id is not None
            assert result.response_id.startswith("chatcmpl-")


@pytest.mark.parametrize("mode", MODES)
async def test_stream_matches_non_stream(
    adapter: LlamaServerAdapter, llama_server: LlamaServer, mode: Mode
) -> None:
    ep = endpoint(llama_server, mode)
    request = greedy("stream me", 9)
    whole = await adapter.infer(ep, request)
    events, result = await collect(adapter.stream_infer(ep, request))

    tokens = tokens_of(events)
    assert len(tokens) == 9  # one chunk per token
    assert "".join(tokens) == result.text == whole.text
    assert result.finish_reason is FinishReason.LENGTH
    usage_events = [e for e in events if e.type is StreamEventType.USAGE]
    assert len(usage_events) == 1
    assert usage_events[0].usage == result.usage
    assert result.usage is not None
    assert whole.usage is not None
    assert result.usage.output_tokens == 9
    assert result.usage.input_tokens == whole.usage.input_tokens
    check_usage_against_timings(result)
    assert [e.type for e in events].index(StreamEventType.USAGE) > max(
        i for i, e in enumerate(events) if e.type is StreamEventType.TOKEN
    )


@pytest.mark.parametrize("mode", MODES)
async def test_stop_string_finishes_with_stop(
    adapter: LlamaServerAdapter, llama_server: LlamaServer, mode: Mode
) -> None:
    ep = endpoint(llama_server, mode)
    free = await adapter.infer(ep, greedy("stop here", 40))
    # Greedy decoding repeats itself: stop at the 2nd..4th character of the free text.
    stop = free.text[1:4]
    stopped = await adapter.infer(ep, greedy("stop here", 40, stop=(stop,)))
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.usage is not None
    assert stopped.usage.output_tokens is not None
    assert stopped.usage.output_tokens < 40
    assert stop not in stopped.text
    assert free.text.startswith(stopped.text)


# ------------------------------------------------------------------------------- count_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["infer", "stream"])
@pytest.mark.parametrize("mode", MODES)
async def test_count_tokens_equals_the_next_calls_input_tokens(
    adapter: LlamaServerAdapter, llama_server: LlamaServer, mode: Mode, stream: bool
) -> None:
    ep = endpoint(llama_server, mode)
    request = InferenceRequest(
        messages=[
            Message.user("What is two plus two?"),
            Message.assistant("Four, I think."),
            Message.user(f"And the same in {mode} mode, streamed={stream}?"),
        ],
        system="You answer in one word.",
        max_tokens=3,
        temperature=0.0,
    )
    counted = await adapter.count_tokens(ep, request)
    if stream:
        _, result = await collect(adapter.stream_infer(ep, request))
    else:
        result = await adapter.infer(ep, request)
    assert result.usage is not None
    assert result.usage.input_tokens == counted
    # /tokenize of the template's rendering, by hand: the same number.
    prompt = await adapter.render_prompt(ep, request)
    assert len(await adapter.tokenize(ep, prompt, add_special=True)) == counted


# ---------------------------------------------------------------------------- context length


def over_context_request() -> InferenceRequest:
    # The tiny model has no merge for "x": every "x" is one token.
    return greedy("x" * (DEFAULT_CTX + 16), 4)


@pytest.mark.parametrize("stream", [False, True], ids=["infer", "stream"])
@pytest.mark.parametrize("mode", MODES)
async def test_prompt_over_n_ctx_is_a_context_length_error(
    adapter: LlamaServerAdapter, llama_server: LlamaServer, mode: Mode, stream: bool
) -> None:
    ep = endpoint(llama_server, mode, retries=3)  # must not be retried anyway
    request = over_context_request()
    counted = await adapter.count_tokens(ep, request)
    assert counted > DEFAULT_CTX
    yielded: list[InferenceStreamEvent] = []

    async def call() -> None:
        if stream:
            yielded.extend([event async for event in adapter.stream_infer(ep, request)])
        else:
            await adapter.infer(ep, request)

    with pytest.raises(ContextLengthError) as info:
        await call()
    err = info.value
    assert err.category is ErrorCategory.CONTEXT_LENGTH
    assert not err.retryable
    assert err.status_code == 400  # an HTTP error even for a stream (before the first event)
    assert err.prompt_tokens == counted
    assert err.context_window == DEFAULT_CTX == await adapter.context_size(ep)
    assert err.backend == "llama_server"
    assert yielded == []


# ------------------------------------------------------------------------------ cancellation


@pytest.fixture(scope="module")
def long_server(
    llama_server_bin: Path, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """One slot with room for a long generation (the tiny model makes thousands of tokens/s)."""
    from llama_server_fixture import start_llama_server

    server = start_llama_server(
        llama_server_bin,
        tiny_model_path,
        ctx=LONG_CTX,
        parallel=1,
        log_dir=tmp_path_factory.mktemp("llama-server-long-logs"),
    )
    try:
        yield server
    finally:
        server.stop()


LONG_CTX = 8192
LONG_MAX_TOKENS = 8000


async def _cancel_mid_generation(
    adapter: LlamaServerAdapter,
    server: LlamaServer,
    mode: Mode,
    how: Literal["aclose", "cancel"],
) -> None:
    ep = endpoint(server, mode)
    request = greedy("a long story", LONG_MAX_TOKENS)
    if mode == "native":  # render (and cache) the prompt now: the pool then holds only the stream
        await adapter.render_prompt(ep, request)
        await airframe.aclose_all()
    before = await metrics(server)
    started = asyncio.Event()
    proceed = asyncio.Event()
    received: list[str] = []

    async def consume() -> None:
        stream = adapter.stream_infer(ep, request)
        try:
            async for event in stream:
                if event.type is StreamEventType.TOKEN:
                    received.append(event.content)
                    if len(received) == 3:
                        started.set()
                        await proceed.wait()  # cancelled here, or told to break
                        break
        finally:
            await stream.aclose()

    task = asyncio.create_task(consume())
    await started.wait()
    # Mid-generation: the slot is busy (the generation of 8000 tokens is far from done).
    assert await busy_slots(server) == 1
    assert open_connection_count(server.base_url) == 1  # the stream's
    if how == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        proceed.set()
        await task
    assert len(received) == 3
    await poll(lambda: slots_idle(server), "the slot to be released after cancelling")
    after = await metrics(server)
    # The generation stopped early: far fewer decode steps than the tokens it was asked for.
    assert after["n_decode_total"] - before["n_decode_total"] < LONG_MAX_TOKENS
    assert open_connection_count(server.base_url) == 0  # closed, not left in the pool
    # The freed slot serves the next request normally.
    result = await adapter.infer(ep, greedy("after the cancel", 5))
    assert result.usage is not None
    assert result.usage.output_tokens == 5


@pytest.mark.parametrize("mode", MODES)
async def test_breaking_out_of_a_stream_frees_the_slot(
    adapter: LlamaServerAdapter, long_server: LlamaServer, mode: Mode
) -> None:
    await _cancel_mid_generation(adapter, long_server, mode, "aclose")


@pytest.mark.parametrize("mode", MODES)
async def test_cancelling_the_task_frees_the_slot(
    adapter: LlamaServerAdapter, long_server: LlamaServer, mode: Mode
) -> None:
    await _cancel_mid_generation(adapter, long_server, mode, "cancel")


# ------------------------------------------------------------------------------------ health


async def test_health_while_loading(
    adapter: LlamaServerAdapter, llama_server_loading: LlamaServer
) -> None:
    ep = endpoint(llama_server_loading)
    status = await adapter.health_check(ep)
    assert status.state == "loading"
    assert not status.ok
    assert "loading" in status.detail.lower()
    # Inference while loading: 503 `unavailable_error` is `overloaded` (retryable), both modes.
    for mode in MODES:
        with pytest.raises(OverloadedError) as info:
            await adapter.infer(endpoint(llama_server_loading, mode), greedy("hi", 2))
        assert info.value.status_code == 503
        assert info.value.retryable
    with pytest.raises(OverloadedError):
        await adapter.list_models(ep)


async def test_health_from_start_to_ok_then_down(
    adapter: LlamaServerAdapter, llama_server_factory: LlamaServerFactory
) -> None:
    server = llama_server_factory(wait=False)
    ep = endpoint(server)
    states: list[str] = []

    async def ready() -> bool:
        status = await adapter.health_check(ep)
        if not states or states[-1] != status.state:
            states.append(status.state)
        return status.ok

    await poll(ready, "llama-server to become healthy")
    # Not listening yet ("down"), then loading the model, then ok; never backwards or "error"
    # (the tiny model may load before a probe lands in a state, so some states can be missing).
    order = ["down", "loading", "ok"]
    assert states[-1] == "ok"
    assert set(states) <= set(order)
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)
    status = await adapter.health_check(ep)
    assert status.ok
    assert status.state == "ok"
    assert status.latency_ms is not None

    server.stop()
    down = await adapter.health_check(ep)
    assert down.state == "down"
    assert not down.ok


# ------------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("mode", MODES)
async def test_sixteen_concurrent_streams_on_four_slots(
    adapter: LlamaServerAdapter, llama_server: LlamaServer, mode: Mode
) -> None:
    ep = endpoint(llama_server, mode)
    n = 4 * DEFAULT_PARALLEL
    requests = [greedy(f"stream number {i}", 8 + i) for i in range(n)]
    # Count first (this renders and caches each prompt), then drop the pooled keep-alive
    # connections, so only the streams themselves use connections below.
    counted = [await adapter.count_tokens(ep, r) for r in requests]
    await airframe.aclose_all()

    results = await asyncio.gather(*(collect(adapter.stream_infer(ep, r)) for r in requests))

    for i, (events, result) in enumerate(results):
        assert len(tokens_of(events)) == 8 + i
        assert "".join(tokens_of(events)) == result.text
        assert result.finish_reason is FinishReason.LENGTH
        assert result.usage is not None
        assert result.usage.output_tokens == 8 + i
        assert result.usage.input_tokens == counted[i]
    # Streams ask for `Connection: close`: nothing is left open or pooled on our side ...
    assert open_connection_count(llama_server.base_url) == 0
    # ... and nothing is still running on the server's.
    await poll(lambda: slots_idle(llama_server), "every slot to be idle")
    assert (await metrics(llama_server))["requests_processing"] == 0


async def test_shared_kv_pool_exhaustion_is_reported_in_band(
    adapter: LlamaServerAdapter, llama_server_factory: LlamaServerFactory
) -> None:
    """4 slots sharing 256 KV cells, 4 concurrent streams needing ~220 each: the server fails
    some of them with an in-band SSE error (HTTP 200, no [DONE]). Which ones, and after how
    many tokens, depends on scheduling; how each outcome is reported does not."""
    server = llama_server_factory(kv_unified=True)
    outcomes: list[tuple[list[str], InferenceResult | None, BaseException | None]] = []

    async def one(i: int) -> None:
        mode: Mode = MODES[i % 2]
        received: list[str] = []
        try:
            async for event in adapter.stream_infer(
                endpoint(server, mode), greedy("abcd"[i] * 100, 120)
            ):
                if event.type is StreamEventType.TOKEN:
                    received.append(event.content)
                elif event.type is StreamEventType.MESSAGE:
                    outcomes.append((received, event.result, None))
        except airframe.AirframeError as exc:
            outcomes.append((received, None, exc))

    await asyncio.gather(*(one(i) for i in range(4)))
    assert len(outcomes) == 4
    failures = [(received, exc) for received, _, exc in outcomes if exc is not None]
    assert failures, "4 x 220 tokens cannot fit in 256 shared cells"
    for received, exc in failures:
        assert isinstance(exc, airframe.AirframeError)
        if received:  # output had reached us: interrupted, with what we got as `partial`
            assert exc.category is ErrorCategory.INTERRUPTED
            assert exc.partial is not None
            assert exc.partial.text == "".join(received)
            assert isinstance(exc.__cause__, airframe.AirframeError)
            assert exc.__cause__.category is ErrorCategory.SERVER
        else:  # the error was the first event: its own category
            assert exc.category is ErrorCategory.SERVER
        assert "context size" in str(exc).lower()
    for received, result, exc in outcomes:
        if exc is None:
            assert result is not None
            assert result.text == "".join(received)
            assert result.usage is not None
            assert result.usage.output_tokens == len(received)


# ------------------------------------------------------------------------------ models, props


@pytest.mark.parametrize("mode", MODES)
async def test_list_models_props_and_context_size(
    adapter: LlamaServerAdapter, llama_server: LlamaServer, mode: Mode
) -> None:
    ep = endpoint(llama_server, mode)
    models = await adapter.list_models(ep)
    props = await adapter.props(ep)
    assert models == [str(llama_server.model_path)] == [props["model_path"]]
    assert props["total_slots"] == DEFAULT_PARALLEL
    assert "<|im_start|>" in props["chat_template"]
    assert await adapter.context_size(ep) == DEFAULT_CTX
    slots = await adapter.slots(ep)
    assert len(slots) == DEFAULT_PARALLEL
    assert all(s["n_ctx"] == DEFAULT_CTX for s in slots)
    result = await adapter.infer(ep, greedy("which model?", 2))
    assert result.model in ("", str(llama_server.model_path))
