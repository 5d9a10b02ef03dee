"""The application side of observability: configure(), configure_logging(), the structlog
processors, the semconv tables, and a process without the SDK."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from airframe import BackendKind, FinishReason
from avionics.observability import (
    ObservabilityHandle,
    Telemetry,
    add_trace_context,
    configure,
    configure_logging,
    redact_secrets,
    semconv,
)
from avionics.observability.app import _signal_urls
from avionics.observability.logs import redact_text, trace_ids
from avionics.settings import AvionicsSettings

# -- redaction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        "gsk_abcdefghijklmnopqrstuvwxyz",
        "xai-abcdefghijklmnopqrstuvwxyz",
        "hf_abcdefghijklmnopqrstuvwxyz",
        "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
    ],
)
def test_provider_key_formats_are_masked_in_any_string(secret: str) -> None:
    text = redact_text(f"calling with {secret} now")
    assert secret not in text
    assert text.startswith("calling with ")
    assert "***" in text


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "Bearer ***"),
        ("x-api-key: 0123456789abcdef", "x-api-key: ***"),
        ('{"api_key": "plainsecretvalue"}', '"api_key": "***'),
        ("redis://user:hunter2pass@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("password=correct-horse", "password=***"),
    ],
)
def test_credential_shapes_are_masked(raw: str, kept: str) -> None:
    masked = redact_text(raw)
    assert kept in masked
    assert "hunter2" not in masked
    assert "correct-horse" not in masked


def test_redact_secrets_masks_secret_keys_and_nested_values_only() -> None:
    event = {
        "event": "request sent with sk-abcdefghijklmnopqrstu",
        "api_key": "anything at all",
        "Authorization": "Basic dXNlcjpwYXNz",
        "headers": {"x-api-key": "abc", "accept": "json"},
        "attempts": [{"reason": "token gsk_abcdefghijklmnopqrstuv rejected"}],
        "input_tokens": 12,
        "output_tokens": 3,
        "model": "gpt-4o-mini",
        "none": None,
    }
    out = redact_secrets(None, "info", dict(event))
    assert out["api_key"] == "***"
    assert out["Authorization"] == "***"
    assert out["headers"] == {"x-api-key": "***", "accept": "json"}
    assert out["attempts"] == [{"reason": "token gsk_*** rejected"}]
    assert out["event"] == "request sent with sk-***"
    assert (out["input_tokens"], out["output_tokens"], out["model"]) == (12, 3, "gpt-4o-mini")
    assert out["none"] is None


def test_text_without_secrets_is_returned_as_is() -> None:
    text = "llm_call_complete agent=planner model=gpt-4o tokens=12"
    assert redact_text(text) is text


# -- trace context in logs -------------------------------------------------------------------------


def test_add_trace_context_uses_the_current_span() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}  # no span
    with tracer.start_as_current_span("work") as span:
        event = add_trace_context(None, "info", {"event": "x"})
        ids = trace_ids()
    ctx = span.get_span_context()
    assert ids == (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
    assert (event["trace_id"], event["span_id"]) == ids
    own = {"event": "x", "trace_id": "given"}
    with tracer.start_as_current_span("work"):
        assert add_trace_context(None, "info", own)["trace_id"] == "given"


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_structlog")
def test_configure_logging_renders_json_with_trace_ids_and_masked_secrets() -> None:
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out)
    provider = TracerProvider()
    log = structlog.get_logger("app")
    with provider.get_tracer("t").start_as_current_span("step") as span:
        log.info("calling", api_key="sk-abcdefghijklmnopqrstuvwx", detail="Bearer abcdefgh12345")
        log.debug("quiet")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["calling", "quiet"]
    first = lines[0]
    assert first["api_key"] == "***"
    assert first["detail"] == "Bearer ***"
    assert first["level"] == "info"
    assert first["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "timestamp" in first


@pytest.mark.usefixtures("restore_structlog")
def test_configure_logging_filters_by_level_and_masks_tracebacks() -> None:
    out = io.StringIO()
    configure_logging("warning", stream=out)
    log = structlog.get_logger("app")
    log.info("hidden")
    try:
        raise RuntimeError("upstream said sk-abcdefghijklmnopqrstuvwx is invalid")
    except RuntimeError:
        log.exception("failed")
    text = out.getvalue()
    assert "hidden" not in text
    assert "failed" in text
    assert "RuntimeError" in text
    assert "sk-abcdefghijklmnop" not in text
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud")


# -- configure() ----------------------------------------------------------------------------------


def test_signal_urls_of_an_otlp_base_url() -> None:
    assert _signal_urls("http://collector:4318") == (
        "http://collector:4318/v1/traces",
        "http://collector:4318/v1/metrics",
    )
    assert _signal_urls("https://otel.example.com/v1/traces/") == (
        "https://otel.example.com/v1/traces",
        "https://otel.example.com/v1/metrics",
    )


def _resource_name(handle: ObservabilityHandle) -> Any:
    return handle.tracer_provider.resource.attributes["service.name"]


def test_configure_builds_providers_without_touching_globals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    before = trace.get_tracer_provider()
    settings = AvionicsSettings(observability={"otlp_endpoint": "http://127.0.0.1:9"})
    with configure(settings, set_global=False) as handle:
        assert trace.get_tracer_provider() is before
        assert handle.endpoint == "http://127.0.0.1:9"
        assert handle.console is False
        assert _resource_name(handle) == "from-env"  # settings left service_name unset
    assert handle._closed

    named = AvionicsSettings(observability={"service_name": "billing-agents"})
    with configure(named, set_global=False, otlp_endpoint="http://127.0.0.1:9") as handle:
        assert _resource_name(handle) == "billing-agents"
    with configure(set_global=False, service_name="explicit") as handle:
        assert handle.endpoint is None  # nothing to export to
        assert _resource_name(handle) == "explicit"


def test_configure_with_console_prints_spans() -> None:
    out = io.StringIO()
    handle = configure(console=True, set_global=False, service_name="demo", console_stream=out)
    try:
        telemetry = Telemetry(
            tracer_provider=handle.tracer_provider, meter_provider=handle.meter_provider
        )
        from airframe import InferenceRequest, Message

        call = telemetry.start_call(
            "planner", InferenceRequest([Message.user("x")]), stream=False, request_id="r1"
        )
        call.finish(None, RuntimeError("boom"))
    finally:
        handle.shutdown()
    printed = out.getvalue()
    assert '"name": "invoke_agent planner"' in printed
    assert '"error.type": "RuntimeError"' in printed


def test_telemetry_uses_the_given_tracer_provider() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider=provider)
    from airframe import InferenceRequest, Message

    call = telemetry.start_call(
        "a", InferenceRequest([Message.user("x")]), stream=True, request_id="r"
    )
    assert call.recording
    call.finish(None, GeneratorExit())
    call.finish(None, RuntimeError("ignored: the call already ended"))
    (span,) = exporter.get_finished_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "avionics"
    assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.41.0"
    assert (span.attributes or {})["avionics.stream.closed_early"] is True
    assert "error.type" not in (span.attributes or {})


# -- semconv tables -------------------------------------------------------------------------------


def test_every_backend_kind_has_a_provider_name() -> None:
    assert set(semconv.PROVIDER_NAMES) == set(BackendKind)
    assert semconv.provider_name(BackendKind.AZURE_OPENAI) == "azure.ai.openai"
    assert semconv.provider_name(BackendKind.LLAMA_SERVER) == "llama.cpp"
    assert semconv.provider_name(BackendKind.OLLAMA) == "ollama"
    assert semconv.provider_name("something_else") == "something_else"


def test_finish_reasons_use_the_spec_values() -> None:
    assert [semconv.finish_reason(r) for r in FinishReason] == [
        "stop",
        "length",
        "tool_call",
        "content_filter",
        "other",
    ]


def test_every_emitted_name_is_in_semconv() -> None:
    """No telemetry name is spelled outside semconv.py."""
    import avionics.observability as pkg

    root = os.path.dirname(pkg.__file__)
    names = {
        value
        for key, value in vars(semconv).items()
        if key.isupper() and isinstance(value, str) and "." in value and " " not in value
    }
    for module in ("telemetry.py", "spans.py", "metrics.py", "content.py"):
        with open(os.path.join(root, module), encoding="utf-8") as f:
            source = f.read()
        leaked = sorted(n for n in names if f'"{n}"' in source)
        assert leaked == [], f"{module} spells {leaked}; use semconv constants"


# -- without the SDK ------------------------------------------------------------------------------

_NO_SDK = textwrap.dedent(
    """
    import asyncio, importlib.abc, sys

    class NoSDK(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry.sdk" or name.startswith(("opentelemetry.sdk.",
                                                                 "opentelemetry.exporter")):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoSDK())

    from opentelemetry import trace
    from airframe.testing import Emulator, Fault, Reply
    from avionics import LLMGateway
    from avionics.observability import configure
    from avionics.settings import AvionicsSettings

    async def main():
        with Emulator() as emu:
            settings = AvionicsSettings(
                providers={
                    "a": {"kind": "openai", "base_url": emu.base_url("openai"), "api_key": "k",
                          "retry": {"max_retries": 0}},
                    "b": {"kind": "openai", "base_url": emu.base_url("openai"),
                          "api_key": "k", "default_model": "m2"},
                },
                agents={"x": {"provider": "a", "model": "m"}},
            )
            gw = LLMGateway(settings, fallback_providers=["b"])
            assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
            emu.script(Fault.server_error(), Reply.text("fine"))
            response = await gw.complete("hi", agent_name="x")
            assert response.text == "fine", response.text
            stream = await gw.complete_stream("hi", agent_name="x")
            text = "".join([c.text async for c in stream])
            assert text == "echo: hi", text
        try:
            configure()
        except ImportError as exc:
            print("IMPORT-ERROR", exc)
        assert "opentelemetry.sdk" not in sys.modules
        print("OK")

    asyncio.run(main())
    """
)


def test_without_the_sdk_calls_work_and_configure_says_what_to_install() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AVIONICS"))}
    done = subprocess.run(
        [sys.executable, "-c", _NO_SDK],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "OK"
    assert "IMPORT-ERROR" in done.stdout
    assert "pip install 'jeeves-avionics[otel]'" in done.stdout
    # Unconfigured structlog prints to stdout: the library printed only the fallback warning.
    assert not [line for line in lines if "llm_call_start" in line or "llm_call_complete" in line]


_LATE_SDK = textwrap.dedent(
    """
    import asyncio, io
    from airframe.testing import Emulator
    from avionics import LLMGateway
    from avionics.observability import configure
    from avionics.settings import AvionicsSettings

    async def main():
        with Emulator() as emu:
            settings = AvionicsSettings(
                providers={"a": {"kind": "openai", "base_url": emu.base_url("openai"),
                                 "api_key": "k"}},
                agents={"x": {"provider": "a", "model": "m"}},
            )
            gw = LLMGateway(settings)                    # built before any SDK exists
            await gw.complete("before", agent_name="x")   # nothing to record
            out = io.StringIO()
            handle = configure(console=True, console_stream=out, service_name="late")
            await gw.complete("after", agent_name="x")
            handle.shutdown()
        text = out.getvalue()
        print(text.count('"name": "invoke_agent x"'), text.count('"name": "chat m"'))

    asyncio.run(main())
    """
)


def test_a_gateway_built_before_configure_reports_to_the_global_sdk() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AVIONICS"))}
    done = subprocess.run(
        [sys.executable, "-c", _LATE_SDK],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "1 1"  # the second call only


def test_error_type_values() -> None:
    import asyncio

    from airframe import RateLimitError, ServerError
    from avionics.errors import (
        AttemptFailed,
        AttemptSummary,
        BudgetExceededError,
        GatewayError,
        LimitKind,
        RateLimitedLocally,
    )
    from avionics.observability.spans import error_type

    limited = RateLimitedLocally("oa", LimitKind.RPM, 1.0, limit=1)
    budget = BudgetExceededError(
        "a", budget_usd=Decimal(1), spent_usd=Decimal(1), estimate_usd=Decimal(1), period="day"
    )
    assert error_type(RateLimitError("slow down")) == "rate_limit"
    assert error_type(limited) == "rate_limited_locally"
    assert error_type(budget) == "budget"
    assert error_type(asyncio.CancelledError()) == "cancelled"
    assert error_type(KeyError("x")) == "KeyError"
    ends_limited = GatewayError("all failed", errors=[ServerError("boom"), limited])
    assert error_type(ends_limited) == "rate_limited_locally"
    skipped = AttemptFailed(AttemptSummary("oa", "m", category="skipped", reason="no vision"))
    assert error_type(GatewayError("no route", errors=[skipped])) == "skipped"
