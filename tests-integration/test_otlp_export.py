"""Gateway calls reach an OTLP/HTTP collector: the real `OTLPSpanExporter` behind a
`BatchSpanProcessor` (set up by `avionics.observability.configure`) posts protobuf batches to a
small receiver that decodes them. Backends are the wire emulator; nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from otlp_receiver import OTLPReceiver, ReceivedSpan, attributes

from airframe.testing import Emulator, Fault, Reply, TokenCounts
from avionics import LLMGateway
from avionics.observability import ObservabilityHandle, Telemetry, configure, semconv
from avionics.settings import AvionicsSettings


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        yield rx


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def settings_for(emu: Emulator, endpoint: str | None) -> AvionicsSettings:
    observability = {"service_name": "otlp-it", "capture_content": True}
    if endpoint is not None:
        observability["otlp_endpoint"] = endpoint
    return AvionicsSettings(
        providers={
            "primary": {
                "kind": "openai",
                "base_url": emu.base_url("openai"),
                "api_key": "sk-it-primary-0000000000000000",
                "retry": {"max_retries": 0},
            },
            "backup": {
                "kind": "anthropic",
                "base_url": emu.base_url("anthropic"),
                "api_key": "sk-ant-it-backup-000000000000",
            },
        },
        profiles={
            "main": {"provider": "primary", "model": "gpt-4o-mini"},
            "backup": {"provider": "backup", "model": "claude-haiku-4-5"},
        },
        agents={"planner": {"profile": "main", "fallbacks": ["backup"], "max_tokens": 32}},
        observability=observability,
    )


def gateway_for(settings: AvionicsSettings, handle: ObservabilityHandle) -> LLMGateway:
    telemetry = Telemetry.from_settings(
        settings, tracer_provider=handle.tracer_provider, meter_provider=handle.meter_provider
    )
    return LLMGateway(settings, telemetry=telemetry)


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


async def test_a_fallback_call_arrives_as_one_trace_with_linked_spans(
    receiver: OTLPReceiver, emulator: Emulator
) -> None:
    settings = settings_for(emulator, receiver.endpoint)
    handle = configure(settings, set_global=False)
    try:
        assert handle.endpoint == receiver.endpoint
        gw = gateway_for(settings, handle)
        emulator.script(Fault.server_error(), Reply.text("Backup answer.", usage=TokenCounts(9, 2)))
        response = await gw.complete("Plan it", agent_name="planner")
        assert response.provider == "backup"
        assert handle.force_flush()
    finally:
        handle.shutdown()

    spans = receiver.spans()
    assert sorted(s.name for s in spans) == [
        "chat claude-haiku-4-5",
        "chat gpt-4o-mini",
        "invoke_agent planner",
    ]
    (call,) = by_name(spans, "invoke_agent planner")
    (failed,) = by_name(spans, "chat gpt-4o-mini")
    (served,) = by_name(spans, "chat claude-haiku-4-5")

    assert call.resource["service.name"] == "otlp-it"
    assert {s.scope for s in spans} == {"avionics"}
    assert {s.schema_url for s in spans} == {"https://opentelemetry.io/schemas/1.41.0"}
    assert len({s.trace_id for s in spans}) == 1
    assert call.parent_span_id == ""
    assert failed.parent_span_id == served.parent_span_id == call.span_id

    assert call.span.kind == Span.SPAN_KIND_INTERNAL
    assert failed.span.kind == served.span.kind == Span.SPAN_KIND_CLIENT
    assert failed.span.status.code == Status.STATUS_CODE_ERROR
    assert served.span.status.code == Status.STATUS_CODE_UNSET
    assert call.span.status.code == Status.STATUS_CODE_UNSET

    c = call.attributes
    assert c["gen_ai.operation.name"] == "invoke_agent"
    assert c["gen_ai.agent.name"] == "planner"
    assert c["avionics.fallback"] is True
    assert c["avionics.attempt"] == 2
    assert c["avionics.cost_usd"] == pytest.approx(response.cost_usd)

    f = failed.attributes
    assert f["error.type"] == "server"
    assert f["gen_ai.provider.name"] == "openai"
    assert f["gen_ai.request.model"] == "gpt-4o-mini"
    assert f["avionics.fallback"] is False

    s = served.attributes
    assert s["gen_ai.operation.name"] == "chat"
    assert s["gen_ai.provider.name"] == "anthropic"
    assert s["gen_ai.request.model"] == "claude-haiku-4-5"
    assert s["gen_ai.request.max_tokens"] == 32
    assert s["gen_ai.response.model"] == "claude-haiku-4-5"
    assert s["gen_ai.response.finish_reasons"] == ("stop",)
    assert s["gen_ai.usage.input_tokens"] == 9
    assert s["gen_ai.usage.output_tokens"] == 2
    assert s["server.address"] == "127.0.0.1"
    assert s["server.port"] == emulator.port
    assert s["avionics.fallback"] is True
    assert s["avionics.attempt"] == 2
    assert '"content":"Plan it"' in s["gen_ai.input.messages"]
    assert '"content":"Backup answer."' in s["gen_ai.output.messages"]

    metrics = receiver.metrics()
    assert {
        semconv.METRIC_OPERATION_DURATION,
        semconv.METRIC_TOKEN_USAGE,
        semconv.METRIC_COST,
    } <= set(metrics)
    duration = metrics[semconv.METRIC_OPERATION_DURATION]
    assert duration.unit == "s"
    points = duration.histogram.data_points
    assert tuple(points[0].explicit_bounds) == semconv.DURATION_BUCKETS
    assert {attributes(p.attributes).get("error.type") for p in points} == {"server", None}
    assert all(path in ("/v1/traces", "/v1/metrics") for path, _ in receiver.posts)
    assert all(h["content-type"] == "application/x-protobuf" for _, h in receiver.posts)


async def test_a_stream_exports_through_the_standard_env_variables(
    receiver: OTLPReceiver, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=agents")
    settings = settings_for(emulator, None)
    handle = configure(settings, set_global=False)
    try:
        emulator.script(Reply.text("one two three"))
        stream = await gateway_for(settings, handle).complete_stream("Count", agent_name="planner")
        assert "".join([chunk.text async for chunk in stream]) == "one two three"
        assert handle.force_flush()
    finally:
        handle.shutdown()

    spans = receiver.spans()
    (call,) = by_name(spans, "invoke_agent planner")
    (chat,) = by_name(spans, "chat gpt-4o-mini")
    assert chat.parent_span_id == call.span_id
    assert call.attributes["gen_ai.request.stream"] is True
    assert chat.attributes["gen_ai.request.stream"] is True
    assert chat.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert chat.span.end_time_unix_nano >= chat.span.start_time_unix_nano
    assert call.span.end_time_unix_nano >= chat.span.end_time_unix_nano
    ttfc = receiver.metrics()[semconv.METRIC_TIME_TO_FIRST_CHUNK]
    assert ttfc.histogram.data_points[0].count == 1
    assert all(h.get("content-encoding") == "gzip" for _, h in receiver.posts)
    assert all(h.get("x-tenant") == "agents" for _, h in receiver.posts)
