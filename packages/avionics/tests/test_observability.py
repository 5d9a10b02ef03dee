"""Spans, metrics and log events of gateway calls, against the wire emulator.

An in-memory span exporter and metric reader stand in for a collector; the providers are passed to
`Telemetry` explicitly, so no global OpenTelemetry state is touched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from structlog.testing import capture_logs

from airframe import BackendKind, InferenceRequest, Message, ToolCall
from airframe.testing import Emulator, Fault, Reply, TokenCounts
from avionics import GatewayError, LLMGateway, MockProvider
from avionics.observability import Telemetry, semconv
from avionics.settings import AvionicsSettings

KEY_A = "sk-canary-aaaaaaaaaaaaaaaaaaaa1111"
KEY_B = "sk-ant-canary-bbbbbbbbbbbbbbbbbb2222"


class Otel:
    """In-memory SDK providers and what they collected."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self, **kwargs: Any) -> Telemetry:
        return Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **kwargs
        )

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def call_span(self) -> ReadableSpan:
        (span,) = self.named("invoke_agent")
        return span

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def metric(self, name: str) -> Any:
        data = self.reader.get_metrics_data()
        assert data is not None
        found = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
        return next(m for m in found if m.name == name)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as server:
        yield server


@pytest.fixture
def emulator(emu: Emulator) -> Iterator[Emulator]:
    emu.reset()
    emu.api_key = None
    emu.set_default(Reply.echo())
    yield emu
    emu.reset()


@pytest.fixture
def otel() -> Otel:
    return Otel()


def settings_for(
    emu: Emulator, *, retries: int = 0, rpm: int | None = None, **observability: Any
) -> AvionicsSettings:
    """Agent `planner`: profile `main` (OpenAI dialect) falling back to `backup` (Anthropic).
    `rpm` limits the primary locally, refusing at once when full."""
    limits = {} if rpm is None else {"rpm": rpm}
    return AvionicsSettings(
        providers={
            "primary": {
                "kind": "openai",
                "base_url": emu.base_url("openai"),
                "api_key": KEY_A,
                "retry": {"max_retries": retries, "initial_delay": 0.0, "max_delay": 0.0},
                **limits,
            },
            "backup": {
                "kind": "anthropic",
                "base_url": emu.base_url("anthropic"),
                "api_key": KEY_B,
                "retry": {"max_retries": 0},
            },
        },
        profiles={
            "main": {"provider": "primary", "model": "gpt-4o-mini", "temperature": 0.2},
            "backup": {"provider": "backup", "model": "claude-haiku-4-5"},
        },
        agents={
            "planner": {"profile": "main", "fallbacks": ["backup"], "max_tokens": 64},
            "solo": {"profile": "main"},
        },
        observability=observability,
        gateway={"rate_limit_max_wait": 0.0},
    )


def gateway(emu: Emulator, otel: Otel, *, retries: int = 0, **telemetry: Any) -> LLMGateway:
    return LLMGateway(settings_for(emu, retries=retries), telemetry=otel.telemetry(**telemetry))


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


# -- spans of one call ----------------------------------------------------------------------------


async def test_a_call_is_an_internal_span_with_a_client_span_per_http_attempt(
    emulator: Emulator, otel: Otel
) -> None:
    emulator.script(Reply.text("Ship it on Friday.", usage=TokenCounts(12, 5)))
    gw = gateway(emulator, otel)
    response = await gw.complete("When do we ship?", agent_name="planner", top_p=0.9)

    call = otel.call_span()
    (chat,) = otel.named("chat")
    assert call.kind is SpanKind.INTERNAL
    assert call.name == "invoke_agent planner"
    assert chat.kind is SpanKind.CLIENT
    assert chat.name == "chat gpt-4o-mini"
    assert parent_of(chat) == span_id(call)
    assert chat.context is not None
    assert call.context is not None
    assert chat.context.trace_id == call.context.trace_id
    assert call.status.status_code is StatusCode.UNSET
    assert chat.status.status_code is StatusCode.UNSET

    a = dict(chat.attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert a["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert a["gen_ai.request.stream"] is False
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.id"].startswith("chatcmpl-")
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == 12
    assert a["gen_ai.usage.output_tokens"] == 5
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == emulator.port
    assert a["avionics.agent"] == "planner"
    assert a["avionics.provider"] == "primary"
    assert a["avionics.profile"] == "main"
    assert a["avionics.attempt"] == 1
    assert a["avionics.fallback"] is False
    assert a["avionics.cost_usd"] == pytest.approx(response.cost_usd)
    assert "error.type" not in a
    assert "gen_ai.response.time_to_first_chunk" not in a  # not a stream

    c = dict(call.attributes or {})
    assert c["gen_ai.operation.name"] == "invoke_agent"
    assert c["gen_ai.agent.name"] == "planner"
    assert c["avionics.agent"] == "planner"
    assert c["avionics.request_id"] == response.request_id
    assert c["gen_ai.provider.name"] == "openai"
    assert c["gen_ai.request.model"] == "gpt-4o-mini"
    assert c["gen_ai.request.stream"] is False
    assert c["gen_ai.response.model"] == "gpt-4o-mini"
    assert c["gen_ai.usage.input_tokens"] == 12
    assert c["gen_ai.usage.output_tokens"] == 5
    assert c["avionics.cost_usd"] == pytest.approx(response.cost_usd)
    assert c["avionics.attempt"] == 1
    assert c["avionics.fallback"] is False


async def test_the_call_span_is_a_child_of_the_callers_span(emulator: Emulator, otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("agent-code")
    with tracer.start_as_current_span("plan release") as outer:
        await gateway(emulator, otel).complete("Hi", agent_name="planner")
    assert parent_of(otel.call_span()) == outer.get_span_context().span_id


@pytest.mark.parametrize(
    ("kind", "model", "cache_key", "provider_name"),
    [
        (BackendKind.OPENAI, "gpt-4o", "gen_ai.usage.cache_read.input_tokens", "openai"),
        (
            BackendKind.ANTHROPIC,
            "claude-sonnet-4-5",
            "gen_ai.usage.cache_creation.input_tokens",
            "anthropic",
        ),
    ],
)
async def test_cache_and_reasoning_tokens(
    emulator: Emulator, otel: Otel, kind: BackendKind, model: str, cache_key: str,
    provider_name: str,
) -> None:  # fmt: skip
    counts = TokenCounts(100, 40, cache_read_tokens=60, cache_write_tokens=30, reasoning_tokens=8)
    emulator.script(Reply.text("Done.", reasoning="Think first.", usage=counts))
    settings = AvionicsSettings(
        providers={"p": {"kind": kind.value, "base_url": emulator.base_url(kind), "api_key": "k"}},
        agents={"a": {"provider": "p", "model": model}},
    )
    await LLMGateway(settings, telemetry=otel.telemetry()).complete("Hi", agent_name="a")
    (chat,) = otel.named("chat")
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.provider.name"] == provider_name
    assert attrs["gen_ai.usage.input_tokens"] == 100
    assert attrs[cache_key] > 0
    call = dict(otel.call_span().attributes or {})
    assert call[cache_key] == attrs[cache_key]
    if kind is BackendKind.OPENAI:
        assert attrs["gen_ai.usage.reasoning.output_tokens"] == 8


async def test_fallback_after_a_failed_attempt_leaves_the_call_span_ok(
    emulator: Emulator, otel: Otel
) -> None:
    emulator.script(Fault.server_error(), Reply.text("From the backup."))
    response = await gateway(emulator, otel).complete("Hi", agent_name="planner")
    assert response.provider == "backup"

    call = otel.call_span()
    failed, served = sorted(otel.named("chat"), key=lambda s: s.start_time or 0)
    assert parent_of(failed) == parent_of(served) == span_id(call)

    assert failed.name == "chat gpt-4o-mini"
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "server"
    assert (failed.attributes or {})["avionics.fallback"] is False
    assert (failed.attributes or {})["avionics.attempt"] == 1

    assert served.name == "chat claude-haiku-4-5"
    assert served.status.status_code is StatusCode.UNSET
    s = dict(served.attributes or {})
    assert s["gen_ai.provider.name"] == "anthropic"
    assert s["avionics.fallback"] is True
    assert s["avionics.attempt"] == 2
    assert "error.type" not in s

    assert call.status.status_code is not StatusCode.ERROR
    c = dict(call.attributes or {})
    assert "error.type" not in c
    assert c["avionics.fallback"] is True
    assert c["avionics.attempt"] == 2
    assert c["gen_ai.provider.name"] == "anthropic"
    assert c["avionics.provider"] == "backup"
    assert c["gen_ai.request.model"] == "gpt-4o-mini"  # what the agent asked for first


async def test_each_http_retry_is_its_own_client_span_in_one_attempt(
    emulator: Emulator, otel: Otel
) -> None:
    emulator.script(Fault.rate_limit(retry_after=0), Reply.text("Second time lucky."))
    await gateway(emulator, otel, retries=2).complete("Hi", agent_name="planner")
    first, second = sorted(otel.named("chat"), key=lambda s: s.start_time or 0)
    assert (first.attributes or {})["error.type"] == "rate_limit"
    assert first.status.status_code is StatusCode.ERROR
    assert "http.request.resend_count" not in (first.attributes or {})
    assert (second.attributes or {})["http.request.resend_count"] == 1
    assert (first.attributes or {})["avionics.attempt"] == 1
    assert (second.attributes or {})["avionics.attempt"] == 1
    assert second.status.status_code is StatusCode.UNSET
    assert otel.call_span().status.status_code is StatusCode.UNSET


async def test_a_failed_call_marks_every_span_and_logs_it(emulator: Emulator, otel: Otel) -> None:
    emulator.script(Fault.server_error(), Fault.overloaded())
    gw = gateway(emulator, otel)
    with capture_logs() as logs, pytest.raises(GatewayError):
        await gw.complete("Hi", agent_name="planner")

    call = otel.call_span()
    assert call.status.status_code is StatusCode.ERROR
    assert (call.attributes or {})["error.type"] == "overloaded"  # how the call ended
    chats = sorted(otel.named("chat"), key=lambda s: s.start_time or 0)
    assert [(s.attributes or {})["error.type"] for s in chats] == ["server", "overloaded"]
    assert all(s.status.status_code is StatusCode.ERROR for s in chats)

    (failed,) = [e for e in logs if e["event"] == "llm_call_failed"]
    assert failed["log_level"] == "warning"
    assert failed["agent"] == "planner"
    assert failed["error_type"] == "overloaded"
    assert failed["attempts"] == 2
    assert call.context is not None
    assert failed["trace_id"] == format(call.context.trace_id, "032x")
    assert failed["span_id"] == format(call.context.span_id, "016x")


async def test_an_attempt_without_http_hooks_still_gets_a_span(otel: Otel) -> None:
    settings = AvionicsSettings(
        providers={"local": {"kind": "llama_server", "base_url": "http://127.0.0.1:9"}},
        agents={"a": {"provider": "local", "model": "qwen"}},
    )
    gw = LLMGateway(
        settings, providers={"local": MockProvider(["Fine."])}, telemetry=otel.telemetry()
    )
    await gw.complete("Hi", agent_name="a")
    (chat,) = otel.named("chat")
    assert chat.name == "chat qwen"
    assert chat.kind is SpanKind.INTERNAL  # no HTTP was observed
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.provider.name"] == "llama.cpp"
    assert attrs["gen_ai.usage.output_tokens"] == 1
    assert attrs["avionics.cost_usd"] == 0.0
    assert parent_of(chat) == span_id(otel.call_span())
    assert chat.start_time is not None
    assert chat.end_time is not None
    assert chat.end_time >= chat.start_time


async def test_an_attempt_refused_by_a_local_limit_is_a_span_without_io(
    emulator: Emulator, otel: Otel
) -> None:
    gw = LLMGateway(settings_for(emulator, rpm=1), telemetry=otel.telemetry())
    await gw.complete("one", agent_name="planner")
    otel.exporter.clear()
    response = await gw.complete("two", agent_name="planner")
    assert response.provider == "backup"
    refused, served = sorted(otel.named("chat"), key=lambda s: s.start_time or 0)
    assert refused.name == "chat gpt-4o-mini"
    assert refused.kind is SpanKind.INTERNAL  # no HTTP request left the process
    assert refused.status.status_code is StatusCode.ERROR
    assert (refused.attributes or {})["error.type"] == "rate_limited_locally"
    assert "server.address" not in (refused.attributes or {})
    assert served.kind is SpanKind.CLIENT
    assert (otel.call_span().attributes or {})["avionics.fallback"] is True


# -- streaming ------------------------------------------------------------------------------------


async def test_a_stream_ends_its_spans_when_it_ends(emulator: Emulator, otel: Otel) -> None:
    emulator.script(Reply.text("one two three four"))
    gw = gateway(emulator, otel)
    stream = await gw.complete_stream("Count", agent_name="planner")
    seen: list[str] = []
    async for chunk in stream:
        seen.append(chunk.text)
        if not chunk.is_final:
            assert otel.spans == []  # nothing ends while the stream runs
    assert "".join(seen) == "one two three four"

    call = otel.call_span()
    (chat,) = otel.named("chat")
    a = dict(chat.attributes or {})
    assert a["gen_ai.request.stream"] is True
    assert (call.attributes or {})["gen_ai.request.stream"] is True
    ttfc = a["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttfc, float)
    assert ttfc > 0
    assert chat.start_time is not None
    assert chat.end_time is not None
    assert ttfc <= (chat.end_time - chat.start_time) / 1e9
    assert a["gen_ai.usage.output_tokens"] == 4
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert call.status.status_code is StatusCode.UNSET


async def test_a_stream_closed_early_ends_its_spans_without_an_error(
    emulator: Emulator, otel: Otel
) -> None:
    emulator.script(Reply.text("one two three four five six"))
    stream = await gateway(emulator, otel).complete_stream("Count", agent_name="planner")
    async for _chunk in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]

    call = otel.call_span()
    (chat,) = otel.named("chat")
    for span in (call, chat):
        assert span.end_time is not None
        assert span.status.status_code is not StatusCode.ERROR
        assert (span.attributes or {})["avionics.stream.closed_early"] is True
        assert "error.type" not in (span.attributes or {})
    assert "gen_ai.response.time_to_first_chunk" in (chat.attributes or {})


async def test_a_cancelled_stream_ends_its_spans_as_cancelled(
    emulator: Emulator, otel: Otel
) -> None:
    emulator.script(Fault.stall(30, after_chunks=2, reply=Reply.text("one two three")))
    stream = await gateway(emulator, otel).complete_stream("Count", agent_name="planner")
    first = asyncio.Event()

    async def consume() -> None:
        async for _chunk in stream:
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    call = otel.call_span()
    (chat,) = otel.named("chat")
    for span in (call, chat):
        assert span.end_time is not None
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "cancelled"


async def test_a_stream_falls_back_before_its_first_chunk(emulator: Emulator, otel: Otel) -> None:
    emulator.script(Fault.overloaded(), Reply.text("backup streams"))
    stream = await gateway(emulator, otel).complete_stream("Hi", agent_name="planner")
    text = "".join([chunk.text async for chunk in stream])
    assert text == "backup streams"
    failed, served = sorted(otel.named("chat"), key=lambda s: s.start_time or 0)
    assert (failed.attributes or {})["error.type"] == "overloaded"
    assert "gen_ai.response.time_to_first_chunk" not in (failed.attributes or {})
    assert "gen_ai.response.time_to_first_chunk" in (served.attributes or {})
    assert (served.attributes or {})["avionics.fallback"] is True
    assert otel.call_span().status.status_code is StatusCode.UNSET


# -- metrics --------------------------------------------------------------------------------------


async def test_metrics_have_spec_names_units_and_buckets(emulator: Emulator, otel: Otel) -> None:
    emulator.script(Fault.server_error(), Reply.text("ok then", usage=TokenCounts(10, 3)))
    gw = gateway(emulator, otel)
    await gw.complete("Hi", agent_name="planner")
    emulator.script(Reply.text("streamed answer", usage=TokenCounts(7, 2)))
    async for _ in await gw.complete_stream("Hi", agent_name="solo"):
        pass

    duration = otel.metric("gen_ai.client.operation.duration")
    tokens = otel.metric("gen_ai.client.token.usage")
    ttfc = otel.metric("gen_ai.client.operation.time_to_first_chunk")
    cost = otel.metric("avionics.client.cost")
    assert (duration.unit, tokens.unit, ttfc.unit, cost.unit) == ("s", "{token}", "s", "USD")
    assert tuple(duration.data.data_points[0].explicit_bounds) == semconv.DURATION_BUCKETS
    assert tuple(ttfc.data.data_points[0].explicit_bounds) == semconv.DURATION_BUCKETS
    assert tuple(tokens.data.data_points[0].explicit_bounds) == semconv.TOKEN_BUCKETS
    assert semconv.TOKEN_BUCKETS[-1] == 67108864
    assert semconv.DURATION_BUCKETS == (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    )  # fmt: skip

    durations = {
        (p.attributes.get("avionics.agent"), p.attributes.get("error.type")): p
        for p in duration.data.data_points
    }
    assert set(durations) == {("planner", "server"), ("planner", None), ("solo", None)}
    failed = durations[("planner", "server")]
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert failed.attributes["gen_ai.operation.name"] == "chat"
    assert failed.attributes["server.address"] == "127.0.0.1"
    assert failed.attributes["server.port"] == emulator.port
    assert all(p.count == 1 and p.sum > 0 for p in durations.values())

    usage = {
        (p.attributes["avionics.agent"], p.attributes["gen_ai.token.type"]): p.sum
        for p in tokens.data.data_points
    }
    assert usage == {
        ("planner", "input"): 10,
        ("planner", "output"): 3,
        ("solo", "input"): 7,
        ("solo", "output"): 2,
    }
    assert all(
        p.attributes["gen_ai.provider.name"] == "anthropic"
        for p in tokens.data.data_points
        if p.attributes["avionics.agent"] == "planner"
    )

    (first_chunk,) = ttfc.data.data_points  # the stream only
    assert first_chunk.attributes["avionics.agent"] == "solo"
    assert first_chunk.count == 1

    by_route = {
        (
            p.attributes["avionics.agent"],
            p.attributes["avionics.provider"],
            p.attributes["gen_ai.request.model"],
        ): p.value
        for p in cost.data.data_points
    }
    assert set(by_route) == {
        ("planner", "backup", "claude-haiku-4-5"),  # the failed attempt cost nothing
        ("solo", "primary", "gpt-4o-mini"),
    }
    assert all(value > 0 for value in by_route.values())
    assert all("error.type" not in p.attributes for p in cost.data.data_points)


# -- content capture ------------------------------------------------------------------------------


async def test_content_is_not_recorded_by_default(
    emulator: Emulator, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(semconv.CAPTURE_CONTENT_ENV, raising=False)
    emulator.script(Reply.text("Secret plans."))
    gw = LLMGateway(settings_for(emulator), telemetry=None)
    assert gw.telemetry.capture_content is False
    await gateway(emulator, otel).complete(
        "Top secret prompt", system="Be brief", agent_name="solo"
    )
    for span in otel.spans:
        keys = set(span.attributes or {})
        assert not keys & {
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.system_instructions",
        }
        assert "Top secret" not in json.dumps(dict(span.attributes or {}), default=str)


@pytest.mark.parametrize("how", ["env", "settings", "argument"])
async def test_content_capture_records_messages_in_the_spec_shape(
    emulator: Emulator, otel: Otel, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.delenv(semconv.CAPTURE_CONTENT_ENV, raising=False)
    if how == "env":
        monkeypatch.setenv(semconv.CAPTURE_CONTENT_ENV, "true")
        telemetry = Telemetry.from_settings(
            settings_for(emulator),
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        )
    elif how == "settings":
        telemetry = Telemetry.from_settings(
            settings_for(emulator, capture_content=True),
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        )
    else:
        telemetry = otel.telemetry(capture_content=True)
    assert telemetry.capture_content is True
    emulator.script(Reply.tool_calls([("get_weather", {"city": "Paris"})], text="Let me check."))
    history = [
        Message.user("Weather in Paris?"),
        Message.assistant("", tool_calls=[ToolCall("call_1", "lookup", {"q": "Paris"}, "")]),
        Message.tool("rainy", "call_1"),
    ]
    gw = LLMGateway(settings_for(emulator), telemetry=telemetry)
    await gw.complete(messages=history, system="You are terse.", agent_name="solo")

    (chat,) = otel.named("chat")
    attrs = dict(chat.attributes or {})
    assert json.loads(attrs["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "You are terse."}
    ]
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "call_1", "name": "lookup", "arguments": {"q": "Paris"}}
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy"}],
        },
    ]
    (output,) = json.loads(attrs["gen_ai.output.messages"])
    assert output["role"] == "assistant"
    assert output["finish_reason"] == "tool_call"
    assert output["parts"][0] == {"type": "text", "content": "Let me check."}
    call_part = output["parts"][1]
    assert (call_part["type"], call_part["name"], call_part["arguments"]) == (
        "tool_call",
        "get_weather",
        {"city": "Paris"},
    )
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_call",)


# -- secrets --------------------------------------------------------------------------------------


async def test_api_keys_never_reach_spans_or_log_events(emulator: Emulator, otel: Otel) -> None:
    """A canary: the backup's key is the one the emulator accepts, so the primary fails auth and
    the call falls back; content capture is on; debug events are captured too."""
    emulator.api_key = KEY_B
    gw = gateway(emulator, otel, capture_content=True)
    with capture_logs() as logs:
        await gw.complete("Hi there", agent_name="planner")
        emulator.script(Fault.server_error())  # the primary fails auth, the backup this
        with pytest.raises(GatewayError):
            await gw.complete("Again", agent_name="planner")
        stream = await gw.complete_stream("Stream", agent_name="planner")
        async for _ in stream:
            pass
    chats = otel.named("chat")
    assert any((s.attributes or {}).get("error.type") == "auth" for s in chats)
    dumped = [
        json.dumps(
            {
                "name": s.name,
                "attributes": dict(s.attributes or {}),
                "status": s.status.description,
                "events": [(e.name, dict(e.attributes or {})) for e in s.events],
                "resource": dict(s.resource.attributes),
            },
            default=str,
        )
        for s in otel.spans
    ]
    assert len(dumped) >= 6
    assert {e["event"] for e in logs} >= {"llm_call_start", "llm_call_complete", "llm_fallback"}
    text = "\n".join(dumped) + "\n".join(repr(e) for e in logs)
    for key in (KEY_A, KEY_B, KEY_A[10:], KEY_B[14:]):
        assert key not in text


# -- log events -----------------------------------------------------------------------------------


async def test_call_events_carry_tokens_cost_latency_and_trace_ids(
    emulator: Emulator, otel: Otel
) -> None:
    emulator.script(Fault.server_error(), Reply.text("fine", usage=TokenCounts(9, 4)))
    gw = gateway(emulator, otel)
    with capture_logs() as logs:
        response = await gw.complete("Hi", agent_name="planner")
    call = otel.call_span()
    assert call.context is not None
    ids = {"trace_id": format(call.context.trace_id, "032x"),
           "span_id": format(call.context.span_id, "016x")}  # fmt: skip
    events = {e["event"]: e for e in logs}
    assert [e["event"] for e in logs] == ["llm_call_start", "llm_fallback", "llm_call_complete"]

    start = events["llm_call_start"]
    assert start["log_level"] == "debug"
    assert start.items() >= {"agent": "planner", "stream": False, **ids}.items()

    fallback = events["llm_fallback"]
    assert (
        fallback.items()
        >= {
            "agent": "planner",
            "provider": "primary",
            "model": "gpt-4o-mini",
            "error_type": "server",
            "attempt": 1,
            **ids,
        }.items()
    )

    done = events["llm_call_complete"]
    assert done["log_level"] == "debug"
    assert (
        done.items()
        >= {
            "agent": "planner",
            "provider": "backup",
            "model": "claude-haiku-4-5",
            "input_tokens": 9,
            "output_tokens": 4,
            "cost_usd": response.cost_usd,
            "attempts": 2,
            "fallback": True,
            "request_id": response.request_id,
            **ids,
        }.items()
    )
    assert done["latency_ms"] > 0


def test_debug_events_are_skipped_while_structlog_is_unconfigured() -> None:
    structlog.reset_defaults()
    try:
        assert Telemetry().verbose() is False
        assert Telemetry(logger=structlog.get_logger("mine")).verbose() is True
        with capture_logs():
            assert Telemetry().verbose() is True
    finally:
        structlog.reset_defaults()


# -- without an SDK -------------------------------------------------------------------------------


async def test_with_no_op_providers_nothing_breaks_and_no_hooks_are_built(
    emulator: Emulator,
) -> None:
    telemetry = Telemetry(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
    )
    gw = LLMGateway(settings_for(emulator), telemetry=telemetry)
    emulator.script(Fault.server_error(), Reply.text("fine"))
    response = await gw.complete("Hi", agent_name="planner")
    assert response.text == "fine"
    stream = await gw.complete_stream("Hi", agent_name="planner")
    assert "".join([c.text async for c in stream]) == "echo: Hi"

    request = InferenceRequest([Message.user("Hi")])
    call = telemetry.start_call("planner", request, stream=False, request_id="r")
    assert call.recording is False
    record = SimpleNamespace(attempt=1, route=gw._chain("planner")[0])
    assert call.attempt_hooks(record) is None  # type: ignore[arg-type]  # zero work in airframe
    fields: dict[str, Any] = {}
    call.add_trace_ids(fields)
    assert fields == {}  # no trace, no ids
    call.finish(None, None)
