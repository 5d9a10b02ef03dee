"""OpenAI Chat Completions adapter over real loopback sockets, against `airframe.testing.Emulator`.

Every test sends real HTTP through the shared transport and pool: wire shape, streaming and
non-streaming parsing, every retry rule of DESIGN.md, stream failure semantics, connection
release, and the API key canary. Retries use tiny delays; nothing sleeps to wait and nothing
asserts on timing (small timeouts only bound how long a stalled server is waited for).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import airframe
from airframe import (
    AirframeError,
    AttemptInfo,
    BackendKind,
    EndpointSpec,
    ErrorCategory,
    FinishReason,
    ImagePart,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    Message,
    ResponseFormat,
    RetryPolicy,
    StreamEventType,
    TextPart,
    Timeouts,
    ToolSpec,
    TransportHooks,
)
from airframe._pool import open_connection_count
from airframe.adapters import get_adapter
from airframe.adapters.openai import OpenAIAdapter
from airframe.testing import Emulator, Fault, Reply, TokenCounts, ToolCallSpec

KEY = "sk-canary-5b2e9d7f41c3a8"
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.01)
TIMEOUTS = Timeouts(connect=5.0, read=5.0, write=5.0, pool=5.0)
ADAPTER = get_adapter(BackendKind.OPENAI)
MAX_ATTEMPTS = FAST.max_retries + 1

TOKEN = StreamEventType.TOKEN
USAGE = StreamEventType.USAGE
MESSAGE = StreamEventType.MESSAGE


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY) as emulator:
        yield emulator


def endpoint(emu: Emulator, **kwargs: Any) -> EndpointSpec:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeouts", TIMEOUTS)
    return EndpointSpec(emu.base_url("openai"), BackendKind.OPENAI, **kwargs)


def prompt(text: str = "Hi", **kwargs: Any) -> InferenceRequest:
    kwargs.setdefault("model", "gpt-4o-mini")
    return InferenceRequest.from_prompt(text, **kwargs)


class Recorder(TransportHooks):
    """Attempts and retries as the transport reports them."""

    def __init__(self) -> None:
        self.attempts = 0
        self.retries: list[tuple[ErrorCategory, float]] = []
        self.errors: list[AirframeError] = []
        self.first_tokens = 0

    def on_attempt_start(self, info: AttemptInfo) -> None:
        self.attempts += 1

    def on_attempt_error(self, info: AttemptInfo, error: AirframeError) -> None:
        self.errors.append(error)

    def on_retry(self, info: AttemptInfo, error: AirframeError, delay: float) -> None:
        self.retries.append((error.category, delay))

    def on_first_token(self, info: AttemptInfo) -> None:
        self.first_tokens += 1


async def events(
    ep: EndpointSpec, request: InferenceRequest, hooks: TransportHooks | None = None
) -> list[InferenceStreamEvent]:
    adapter = get_adapter(ep.backend_kind)
    async with contextlib.aclosing(adapter.stream_infer(ep, request, hooks=hooks)) as stream:
        return [event async for event in stream]


async def run(
    ep: EndpointSpec,
    request: InferenceRequest,
    stream: bool,
    hooks: TransportHooks | None = None,
) -> InferenceResult:
    """One call, streamed or not; the result either way."""
    if stream:
        got = await events(ep, request, hooks)
        assert got[-1].type is MESSAGE
        assert [e.type for e in got].count(MESSAGE) == 1
        result = got[-1].result
        assert result is not None
        return result
    return await get_adapter(ep.backend_kind).infer(ep, request, hooks=hooks)


async def failure(
    ep: EndpointSpec,
    request: InferenceRequest,
    stream: bool,
    hooks: TransportHooks | None = None,
) -> AirframeError:
    """The error a call raises (it must raise an AirframeError)."""
    with pytest.raises(AirframeError) as caught:
        await run(ep, request, stream, hooks)
    return caught.value


async def stream_until_error(
    ep: EndpointSpec, request: InferenceRequest, hooks: TransportHooks | None = None
) -> tuple[list[str], AirframeError]:
    """Consume a stream that must fail: the text tokens the caller saw, and the error."""
    seen: list[str] = []
    adapter = get_adapter(ep.backend_kind)
    try:
        async with contextlib.aclosing(adapter.stream_infer(ep, request, hooks=hooks)) as stream:
            async for event in stream:
                if event.type is TOKEN:
                    seen.append(event.content)  # noqa: PERF401 - the list must survive the raise
    except AirframeError as exc:
        return seen, exc
    raise AssertionError("the stream did not fail")


def tokens(got: list[InferenceStreamEvent]) -> list[str]:
    return [e.content for e in got if e.type is TOKEN]


both = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --------------------------------------------------------------------------------------------
# Text, streamed and not


def test_registry_gives_the_openai_adapter() -> None:
    assert isinstance(ADAPTER, OpenAIAdapter)
    assert ADAPTER.kind is BackendKind.OPENAI


async def test_non_streamed_text(emu: Emulator) -> None:
    emu.script(Reply.text("Hello there"))
    result = await airframe.infer(endpoint(emu), prompt("Hi", temperature=0.5, seed=7))

    assert result.text == "Hello there"
    assert result.finish_reason is FinishReason.STOP
    assert result.model == "gpt-4o-mini"
    assert result.response_id
    assert result.response_id.startswith("chatcmpl-")
    assert result.usage is not None
    assert result.usage.input_tokens == 2  # "Hi" + 1 per message
    assert result.usage.output_tokens == 2
    assert result.tool_calls == []

    sent = emu.last_request
    assert sent.method == "POST"
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "messages": [{"role": "user", "content": "Hi"}],
        "model": "gpt-4o-mini",
        "temperature": 0.5,
        "seed": 7,
    }


async def test_streamed_text(emu: Emulator) -> None:
    emu.script(Reply.text("Hello there, friend"))
    recorder = Recorder()
    got = await events(endpoint(emu), prompt(), recorder)

    assert tokens(got) == ["Hello", " there,", " friend"]
    assert got[-1].type is MESSAGE
    result = got[-1].result
    assert result is not None
    assert result.text == "Hello there, friend"
    assert result.finish_reason is FinishReason.STOP
    assert result.model == "gpt-4o-mini"
    assert result.response_id
    assert result.response_id.startswith("chatcmpl-")
    assert recorder.attempts == 1
    assert recorder.first_tokens == 1
    assert emu.last_request.json["stream"] is True


async def test_system_prompt_and_conversation_on_the_wire(emu: Emulator) -> None:
    request = InferenceRequest(
        messages=[Message.user("one"), Message.assistant("two"), Message.user("three")],
        system="Be brief.",
        model="m",
        max_tokens=64,
        top_p=0.9,
        stop=["\n\n"],
    )
    await airframe.infer(endpoint(emu), request)
    body = emu.last_request.json
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    # Not api.openai.com: compatible servers only know `max_tokens`.
    assert body["max_tokens"] == 64
    assert "max_completion_tokens" not in body
    assert body["top_p"] == 0.9
    assert body["stop"] == ["\n\n"]


async def test_include_usage_sent_and_usage_chunk_with_empty_choices_captured(
    emu: Emulator,
) -> None:
    usage = TokenCounts(
        input_tokens=120, output_tokens=3, cache_read_tokens=100, reasoning_tokens=1
    )
    emu.script(Reply.text("a b c", usage=usage))
    got = await events(endpoint(emu), prompt())

    assert emu.last_request.json["stream_options"] == {"include_usage": True}
    usage_events = [e for e in got if e.type is USAGE]
    assert len(usage_events) == 1
    reported = usage_events[0].usage
    assert reported is not None
    assert (reported.input_tokens, reported.output_tokens) == (120, 3)
    assert reported.cache_read_tokens == 100
    assert reported.reasoning_tokens == 1
    assert reported.total_tokens == 123
    # The usage chunk (empty choices) comes after the finish chunk, before MESSAGE.
    assert [e.type for e in got][-2:] == [USAGE, MESSAGE]
    result = got[-1].result
    assert result is not None
    assert result.usage == reported
    assert result.text == "a b c"


async def test_reasoning_deltas(emu: Emulator) -> None:
    emu.script(Reply.text("42", reasoning="think hard"))
    got = await events(endpoint(emu), prompt())
    assert [e.content for e in got if e.type is StreamEventType.REASONING] == ["think", " hard"]
    result = got[-1].result
    assert result is not None
    assert (result.reasoning, result.text) == ("think hard", "42")


# --------------------------------------------------------------------------------------------
# Tools, refusal, finish reasons


TOOLS = [
    ToolSpec("get_weather", "Weather in a city", {"type": "object", "properties": {}}),
    ToolSpec("get_time", "Time in a zone", {"type": "object", "properties": {}}),
]


async def test_parallel_tool_calls_assembled_from_interleaved_deltas(emu: Emulator) -> None:
    emu.script(
        Reply.tool_calls(
            [
                ("get_weather", {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}),
                ToolCallSpec("get_time", {"zone": "Europe/Paris"}, id="call_fixed"),
            ]
        )
    )
    request = prompt("weather and time?", tools=TOOLS, tool_choice="auto")
    got = await events(endpoint(emu), request)

    calls = [e.tool_call for e in got if e.type is StreamEventType.TOOL_CALL]
    assert [c.name for c in calls if c] == ["get_weather", "get_time"]
    first, second = calls
    assert first is not None
    assert second is not None
    assert first.arguments == {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}
    assert second.arguments == {"zone": "Europe/Paris"}
    assert second.id == "call_fixed"
    assert first.id
    assert first.id != second.id
    result = got[-1].result
    assert result is not None
    assert result.finish_reason is FinishReason.TOOL_CALLS
    assert result.tool_calls == [first, second]
    assert tokens(got) == []

    body = emu.last_request.json
    assert body["tool_choice"] == "auto"
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {}},
        },
    }


async def test_tool_calls_non_streamed_and_named_tool_choice(emu: Emulator) -> None:
    emu.script(Reply.tool_calls([("get_weather", {"city": "Oslo"})], text="Let me check."))
    result = await airframe.infer(
        endpoint(emu), prompt("weather?", tools=TOOLS, tool_choice="get_weather")
    )
    assert result.finish_reason is FinishReason.TOOL_CALLS
    assert result.text == "Let me check."
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert emu.last_request.json["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }


async def test_tool_round_trip_messages_on_the_wire(emu: Emulator) -> None:
    emu.script(Reply.tool_calls([("get_weather", {"city": "Oslo"})]), Reply.text("Sunny."))
    ep = endpoint(emu)
    first = await airframe.infer(ep, prompt("weather?", tools=TOOLS))
    call = first.tool_calls[0]
    follow_up = InferenceRequest(
        messages=[
            Message.user("weather?"),
            Message.assistant(tool_calls=[call]),
            Message.tool('{"sky": "clear"}', tool_call_id=call.id),
        ],
        model="m",
        tools=TOOLS,
    )
    second = await airframe.infer(ep, follow_up)
    assert second.text == "Sunny."
    messages = emu.last_request.json["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": call.raw_arguments},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "content": '{"sky": "clear"}', "tool_call_id": call.id}


@both
async def test_refusal(emu: Emulator, stream: bool) -> None:
    emu.script(Reply.refusal("I can't help with that."))
    result = await run(endpoint(emu), prompt(), stream)
    assert result.refusal == "I can't help with that."
    assert result.text == ""
    assert result.finish_reason is FinishReason.STOP


@both
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply.text("done"), FinishReason.STOP),
        (Reply.length("cut short here"), FinishReason.LENGTH),
        (Reply.text("blocked", finish_reason="content_filter"), FinishReason.CONTENT_FILTER),
        (Reply.tool_calls([("get_time", {})]), FinishReason.TOOL_CALLS),
        (Reply.text("odd", finish_reason="something_new"), FinishReason.OTHER),
    ],
    ids=["stop", "length", "content_filter", "tool_calls", "unknown"],
)
async def test_finish_reasons(
    emu: Emulator, stream: bool, reply: Reply, expected: FinishReason
) -> None:
    emu.script(reply)
    result = await run(endpoint(emu), prompt(tools=TOOLS), stream)
    assert result.finish_reason is expected


@both
async def test_max_tokens_truncation_is_length(emu: Emulator, stream: bool) -> None:
    emu.script(Reply.text("one two three four five"))
    result = await run(endpoint(emu), prompt(max_tokens=2), stream)
    assert result.text == "one two"
    assert result.finish_reason is FinishReason.LENGTH


# --------------------------------------------------------------------------------------------
# Images and structured output on the wire


async def test_images_sent_as_content_parts(emu: Emulator) -> None:
    png = b"\x89PNG\r\n\x1a\n-not-really-an-image"
    request = InferenceRequest(
        messages=[
            Message.user(
                [
                    TextPart("What is in these?"),
                    ImagePart(data=png, media_type="image/png"),
                    ImagePart(url="https://example.com/cat.jpg"),
                ]
            )
        ],
        model="gpt-4o",
    )
    await airframe.infer(endpoint(emu), request)
    content = emu.last_request.json["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "What is in these?"},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()},
        },
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


async def test_response_format_json_object_on_the_wire(emu: Emulator) -> None:
    emu.script(Reply.text('{"ok": true}'))
    result = await airframe.infer(
        endpoint(emu), prompt("JSON please", response_format=ResponseFormat.json_object())
    )
    assert emu.last_request.json["response_format"] == {"type": "json_object"}
    assert result.text == '{"ok": true}'


async def test_response_format_json_schema_on_the_wire(emu: Emulator) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    request = prompt("city?", response_format=ResponseFormat.json_schema("place", schema))
    await events(endpoint(emu), request)
    assert emu.last_request.json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }


async def test_endpoint_headers_are_sent(emu: Emulator) -> None:
    await airframe.infer(endpoint(emu, headers={"x-tenant": "t-1"}), prompt())
    assert emu.last_request.headers["x-tenant"] == "t-1"


async def test_endpoint_headers_override_defaults_whatever_their_case(emu: Emulator) -> None:
    await airframe.infer(endpoint(emu, headers={"User-Agent": "my-app/1.0"}), prompt())
    # The emulator joins repeated headers with ", ": one value means one header.
    assert emu.last_request.headers["user-agent"] == "my-app/1.0"


async def test_extra_body_merged_last(emu: Emulator) -> None:
    await airframe.infer(
        endpoint(emu), prompt(extra_body={"user": "u-1", "temperature": 0.0}, temperature=1.0)
    )
    body = emu.last_request.json
    assert body["user"] == "u-1"
    assert body["temperature"] == 0.0


# --------------------------------------------------------------------------------------------
# list_models and health


async def test_list_models(emu: Emulator) -> None:
    assert await ADAPTER.list_models(endpoint(emu)) == ["emulator-1"]
    sent = emu.last_request
    assert (sent.method, sent.path) == ("GET", "/v1/models")
    assert sent.headers["authorization"] == f"Bearer {KEY}"


async def test_list_models_bad_key_is_auth(emu: Emulator) -> None:
    with pytest.raises(airframe.AuthError):
        await ADAPTER.list_models(endpoint(emu, api_key="sk-wrong-0000"))
    assert len(emu.requests) == 1


async def test_health_ok(emu: Emulator) -> None:
    health = await ADAPTER.health_check(endpoint(emu))
    assert health.ok
    assert health.state == "ok"
    assert health.latency_ms is not None
    assert health.latency_ms >= 0


async def test_health_bad_key_is_error(emu: Emulator) -> None:
    health = await ADAPTER.health_check(endpoint(emu, api_key="sk-wrong-0000"))
    assert not health.ok
    assert health.state == "error"
    assert len(emu.requests) == 1  # a probe is never retried


async def test_health_unreachable_is_down() -> None:
    ep = EndpointSpec(
        f"http://127.0.0.1:{free_port()}/v1", BackendKind.OPENAI, api_key=KEY, retry=FAST
    )
    health = await ADAPTER.health_check(ep)
    assert not health.ok
    assert health.state == "down"
    assert KEY not in health.detail


# --------------------------------------------------------------------------------------------
# Retry rules (DESIGN.md)


@both
async def test_429_with_retry_after_is_retried_after_exactly_that_delay(
    emu: Emulator, stream: bool
) -> None:
    emu.script(Fault.rate_limit(retry_after=0.002), Reply.text("ok"))
    recorder = Recorder()
    result = await run(endpoint(emu), prompt(), stream, recorder)
    assert result.text == "ok"
    assert len(emu.requests) == 2
    # An honoured server delay is waited in full, without jitter.
    assert recorder.retries == [(ErrorCategory.RATE_LIMIT, 0.002)]


@both
async def test_retry_after_ms_wins_over_retry_after(emu: Emulator, stream: bool) -> None:
    # retry-after alone (1000 s) is above max_retry_after and would surface at once.
    emu.script(Fault.rate_limit(retry_after=1000, retry_after_ms=3), Reply.text("ok"))
    recorder = Recorder()
    result = await run(endpoint(emu), prompt(), stream, recorder)
    assert result.text == "ok"
    assert recorder.retries == [(ErrorCategory.RATE_LIMIT, 0.003)]


async def test_retry_after_http_date_is_parsed(emu: Emulator) -> None:
    # A date an hour ahead is above max_retry_after: it surfaces at once, carrying the delay.
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    emu.script(Fault.rate_limit(retry_after=when))
    err = await failure(endpoint(emu), prompt(), False)
    assert isinstance(err, airframe.RateLimitError)
    assert err.retry_after is not None
    assert 3000 < err.retry_after <= 3600
    assert len(emu.requests) == 1


async def test_retry_after_http_date_in_the_past_falls_back_to_backoff(emu: Emulator) -> None:
    # A past date is no delay at all: backoff applies (and the call is retried).
    when = email.utils.format_datetime(datetime.now(UTC) - timedelta(minutes=5), usegmt=True)
    emu.script(Fault.rate_limit(retry_after=when), Reply.text("ok"))
    recorder = Recorder()
    result = await run(endpoint(emu), prompt(), True, recorder)
    assert result.text == "ok"
    assert len(recorder.retries) == 1
    assert 0 < recorder.retries[0][1] <= FAST.max_delay


@both
@pytest.mark.parametrize("value", ["soon", "-5", "0", "nan", "1e999x", ""])
async def test_malformed_retry_after_falls_back_to_backoff(
    emu: Emulator, stream: bool, value: str
) -> None:
    emu.script(Fault.rate_limit(headers={"retry-after": value}), Reply.text("ok"))
    recorder = Recorder()
    result = await run(endpoint(emu), prompt(), stream, recorder)
    assert result.text == "ok"
    assert len(recorder.retries) == 1
    category, delay = recorder.retries[0]
    assert category is ErrorCategory.RATE_LIMIT
    assert 0 < delay <= FAST.max_delay


@both
@pytest.mark.parametrize("value", ["500", "inf"])
async def test_retry_after_above_max_retry_after_surfaces_at_once(
    emu: Emulator, stream: bool, value: str
) -> None:
    emu.script(Fault.rate_limit(retry_after=value), Reply.text("never sent"))
    recorder = Recorder()
    err = await failure(endpoint(emu), prompt(), stream, recorder)
    assert isinstance(err, airframe.RateLimitError)
    assert err.retry_after == float(value)
    assert err.retryable  # the category is retryable: avionics may fall back
    assert err.status_code == 429
    assert recorder.retries == []
    assert len(emu.requests) == 1


async def test_retry_after_within_a_custom_max_retry_after_is_honoured(emu: Emulator) -> None:
    policy = RetryPolicy(initial_delay=0.001, max_delay=0.01, max_retry_after=0.005)
    emu.script(Fault.rate_limit(retry_after=0.004), Fault.rate_limit(retry_after=0.006))
    recorder = Recorder()
    err = await failure(endpoint(emu, retry=policy), prompt(), False, recorder)
    assert isinstance(err, airframe.RateLimitError)
    assert recorder.retries == [(ErrorCategory.RATE_LIMIT, 0.004)]
    assert len(emu.requests) == 2


@both
async def test_x_should_retry_false_is_not_retried(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.server_error(headers={"x-should-retry": "false"}), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.ServerError)
    assert err.retryable
    assert len(emu.requests) == 1


@both
async def test_x_should_retry_true_is_retried_even_for_a_4xx(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.status(400, headers={"x-should-retry": "true"}), Reply.text("ok"))
    recorder = Recorder()
    result = await run(endpoint(emu), prompt(), stream, recorder)
    assert result.text == "ok"
    assert [c for c, _ in recorder.retries] == [ErrorCategory.BAD_REQUEST]
    assert len(emu.requests) == 2


@both
async def test_quota_429_is_never_retried(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.quota(headers={"retry-after": "1"}), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.QuotaError)
    assert err.category is ErrorCategory.QUOTA
    assert not err.retryable
    assert err.status_code == 429
    assert len(emu.requests) == 1


@both
@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (408, airframe.TimeoutError),
        (409, airframe.ServerError),
        (500, airframe.ServerError),
        (502, airframe.ServerError),
        (503, airframe.OverloadedError),
        (504, airframe.TimeoutError),
        (529, airframe.OverloadedError),
    ],
)
async def test_retryable_statuses_are_retried_then_surface_retryable(
    emu: Emulator, stream: bool, status: int, error_type: type[AirframeError]
) -> None:
    emu.script(*[Fault.status(status)] * MAX_ATTEMPTS, Reply.text("never"))
    recorder = Recorder()
    err = await failure(endpoint(emu), prompt(), stream, recorder)
    assert type(err) is error_type
    assert err.status_code == status
    assert err.retryable
    assert len(emu.requests) == MAX_ATTEMPTS
    assert len(recorder.retries) == FAST.max_retries
    assert all(0 < delay <= FAST.max_delay for _, delay in recorder.retries)
    assert emu.pending == 1


@both
@pytest.mark.parametrize("status", [500, 503, 529])
async def test_retryable_status_then_success(emu: Emulator, stream: bool, status: int) -> None:
    emu.script(Fault.status(status), Fault.status(status), Reply.text("third time"))
    result = await run(endpoint(emu), prompt(), stream)
    assert result.text == "third time"
    assert len(emu.requests) == 3


async def test_max_retries_zero_means_one_attempt(emu: Emulator) -> None:
    emu.script(Fault.status(503), Reply.text("never"))
    err = await failure(endpoint(emu, retry=RetryPolicy(max_retries=0)), prompt(), True)
    assert isinstance(err, airframe.OverloadedError)
    assert len(emu.requests) == 1


@both
@pytest.mark.parametrize(
    ("fault", "error_type", "category"),
    [
        (Fault.status(400), airframe.BadRequestError, ErrorCategory.BAD_REQUEST),
        (Fault.auth(), airframe.AuthError, ErrorCategory.AUTH),
        (Fault.status(403), airframe.AuthError, ErrorCategory.AUTH),
        (Fault.status(404), airframe.NotFoundError, ErrorCategory.NOT_FOUND),
        (Fault.status(413), airframe.BadRequestError, ErrorCategory.BAD_REQUEST),
        (Fault.status(422), airframe.BadRequestError, ErrorCategory.BAD_REQUEST),
    ],
    ids=["400", "401", "403", "404", "413", "422"],
)
async def test_client_errors_are_not_retried(
    emu: Emulator,
    stream: bool,
    fault: Fault,
    error_type: type[AirframeError],
    category: ErrorCategory,
) -> None:
    emu.script(fault, Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), stream)
    assert type(err) is error_type
    assert err.category is category
    assert not err.retryable
    assert len(emu.requests) == 1
    assert err.request_id
    assert err.request_id.startswith("req_emu")
    assert err.backend == "openai"
    assert err.endpoint == endpoint(emu).name


async def test_openai_invalid_prompt_is_content_filter(emu: Emulator) -> None:
    emu.script(Fault.content_filter(), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), False)
    assert len(emu.requests) == 1  # not retried either way
    assert isinstance(err, airframe.ContentFilterError)


async def test_wrong_key_is_auth_and_not_retried(emu: Emulator) -> None:
    err = await failure(endpoint(emu, api_key="sk-wrong-1234"), prompt(), True)
    assert isinstance(err, airframe.AuthError)
    assert err.status_code == 401
    assert len(emu.requests) == 1


@both
async def test_context_length_carries_the_numbers(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.context_length(prompt_tokens=5000, n_ctx=4096))
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.ContextLengthError)
    assert (err.prompt_tokens, err.context_window) == (5000, 4096)
    assert not err.retryable
    assert len(emu.requests) == 1


# --------------------------------------------------------------------------------------------
# Connection and stream failures


async def test_connection_dropped_after_headers_before_any_event_is_retried(
    emu: Emulator,
) -> None:
    emu.script(Fault.drop(after_chunks=0), Fault.drop(after_chunks=1), Reply.text("ok"))
    recorder = Recorder()
    got = await events(endpoint(emu), prompt(), recorder)
    assert tokens(got) == ["ok"]
    assert [c for c, _ in recorder.retries] == [ErrorCategory.CONNECTION] * 2
    assert len(emu.requests) == 3


async def test_non_streamed_body_cut_short_is_retried(emu: Emulator) -> None:
    emu.script(Fault.drop(after_chunks=0), Fault.drop(after_chunks=1), Reply.text("ok"))
    recorder = Recorder()
    result = await run(endpoint(emu), prompt(), False, recorder)
    assert result.text == "ok"
    assert len(emu.requests) == 3
    assert [c for c, _ in recorder.retries] == [ErrorCategory.CONNECTION] * 2


async def test_connection_drops_every_time_surface_as_connection_error(emu: Emulator) -> None:
    emu.script(*[Fault.drop(after_chunks=0)] * MAX_ATTEMPTS)
    err = await failure(endpoint(emu), prompt(), True)
    assert isinstance(err, airframe.ConnectionError)
    assert err.retryable
    assert len(emu.requests) == MAX_ATTEMPTS


async def test_unreachable_server_is_connection_error_after_retries() -> None:
    ep = EndpointSpec(
        f"http://127.0.0.1:{free_port()}/v1", BackendKind.OPENAI, api_key=KEY, retry=FAST
    )
    recorder = Recorder()
    err = await failure(ep, prompt(), True, recorder)
    assert isinstance(err, airframe.ConnectionError)
    assert recorder.attempts == MAX_ATTEMPTS
    assert KEY not in str(err)


@pytest.mark.parametrize("kind", ["overloaded", "server", "rate_limit"])
async def test_retryable_in_band_error_first_thing_is_retried(emu: Emulator, kind: Any) -> None:
    emu.script(Fault.in_band_error(after_chunks=0, kind=kind), Reply.text("recovered"))
    recorder = Recorder()
    got = await events(endpoint(emu), prompt(), recorder)
    assert tokens(got) == ["recovered"]
    assert len(recorder.retries) == 1
    assert recorder.retries[0][0] in (
        ErrorCategory.OVERLOADED,
        ErrorCategory.SERVER,
        ErrorCategory.RATE_LIMIT,
    )
    assert len(emu.requests) == 2


async def test_in_band_error_after_the_role_chunk_is_still_before_any_event(
    emu: Emulator,
) -> None:
    # The role chunk yields no event: an error right after it is still retried.
    emu.script(Fault.in_band_error(after_chunks=1, kind="server"), Reply.text("ok"))
    got = await events(endpoint(emu), prompt())
    assert tokens(got) == ["ok"]
    assert len(emu.requests) == 2


async def test_non_retryable_in_band_error_keeps_its_category(emu: Emulator) -> None:
    emu.script(Fault.in_band_error(after_chunks=0, kind="bad_request"), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), True)
    assert isinstance(err, airframe.BadRequestError)
    assert err.status_code is None  # the event carries no numeric code
    assert err.request_id
    assert err.request_id.startswith("req_emu")
    assert len(emu.requests) == 1


async def test_in_band_error_after_output_is_interrupted(emu: Emulator) -> None:
    emu.script(Fault.in_band_error(after_chunks=3, kind="server", reply=Reply.text("a b c d e")))
    seen, err = await stream_until_error(endpoint(emu), prompt())
    assert isinstance(err, airframe.InterruptedError)
    assert seen == ["a", " b"]
    assert err.partial is not None
    assert err.partial.text == "a b"
    assert isinstance(err.__cause__, airframe.ServerError)
    assert not err.retryable
    assert len(emu.requests) == 1


async def test_drop_after_chunks_is_interrupted_with_partial_and_typed_cause(
    emu: Emulator,
) -> None:
    emu.script(Fault.drop(after_chunks=4, reply=Reply.text("one two three four five six")))
    recorder = Recorder()
    seen, err = await stream_until_error(endpoint(emu), prompt(), recorder)
    assert isinstance(err, airframe.InterruptedError)
    assert "".join(seen) == "one two three"
    assert err.partial is not None
    assert err.partial.text == "".join(seen)
    assert err.category is ErrorCategory.INTERRUPTED
    assert not err.retryable
    assert isinstance(err.__cause__, airframe.ConnectionError)
    assert err.__cause__.partial is err.partial
    assert err.backend == "openai"
    assert recorder.retries == []  # never retried once output reached the caller
    assert len(emu.requests) == 1
    assert open_connection_count() == 0


async def test_drop_mid_tool_call_keeps_partial_calls(emu: Emulator) -> None:
    reply = Reply.tool_calls([("get_weather", {"city": "Paris"})], text="Checking now")
    emu.script(Fault.drop(after_chunks=4, reply=reply))
    with pytest.raises(airframe.InterruptedError) as caught:
        await events(endpoint(emu), prompt(tools=TOOLS))
    partial = caught.value.partial
    assert partial is not None
    assert partial.text == "Checking now"
    assert [c.name for c in partial.tool_calls] == ["get_weather"]


async def test_stream_without_done_after_output_is_interrupted_by_a_protocol_error(
    emu: Emulator,
) -> None:
    emu.script(Fault.no_terminator(reply=Reply.text("all of it")), Reply.text("never"))
    with pytest.raises(airframe.InterruptedError) as caught:
        await events(endpoint(emu), prompt())
    err = caught.value
    assert isinstance(err.__cause__, airframe.ProtocolError)
    assert "terminator" in err.__cause__.message
    assert err.partial is not None
    assert err.partial.text == "all of it"
    assert len(emu.requests) == 1


async def test_stream_without_done_before_any_event_is_a_protocol_error(emu: Emulator) -> None:
    # No text and no usage chunk: nothing reaches the caller, so the error keeps its category.
    emu.script(Fault.no_terminator(reply=Reply.text("")), Reply.text("never"))
    request = prompt(extra_body={"stream_options": {"include_usage": False}})
    err = await failure(endpoint(emu), request, True)
    assert type(err) is airframe.ProtocolError
    assert not err.retryable
    assert err.request_id
    assert err.request_id.startswith("req_emu")
    assert len(emu.requests) == 1


async def test_malformed_chunk_first_is_a_protocol_error_not_retried(emu: Emulator) -> None:
    emu.script(Fault.malformed_chunk(after_chunks=0), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), True)
    assert type(err) is airframe.ProtocolError
    assert len(emu.requests) == 1


async def test_malformed_chunk_after_output_is_interrupted(emu: Emulator) -> None:
    emu.script(Fault.malformed_chunk(after_chunks=2, reply=Reply.text("x y z")))
    with pytest.raises(airframe.InterruptedError) as caught:
        await events(endpoint(emu), prompt())
    assert isinstance(caught.value.__cause__, airframe.ProtocolError)
    assert caught.value.partial is not None
    assert caught.value.partial.text == "x"


async def test_malformed_json_body_is_a_protocol_error(emu: Emulator) -> None:
    emu.script(Fault.malformed_chunk(), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), False)
    assert type(err) is airframe.ProtocolError
    assert len(emu.requests) == 1


@both
async def test_html_200_is_a_protocol_error(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.html_200(), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), stream)
    assert type(err) is airframe.ProtocolError
    assert err.status_code == 200
    assert "text/html" in err.message
    assert len(emu.requests) == 1


async def test_json_200_for_a_stream_is_a_protocol_error(emu: Emulator) -> None:
    emu.script(Fault.json_200_for_stream(), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), True)
    assert type(err) is airframe.ProtocolError
    assert "text/event-stream" in err.message
    assert len(emu.requests) == 1


@both
async def test_invalid_utf8_is_a_protocol_error(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.invalid_utf8(after_chunks=0), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), stream)
    assert type(err) is airframe.ProtocolError
    assert len(emu.requests) == 1


async def test_invalid_utf8_after_output_is_interrupted(emu: Emulator) -> None:
    emu.script(Fault.invalid_utf8(after_chunks=2, reply=Reply.text("p q r")))
    with pytest.raises(airframe.InterruptedError) as caught:
        await events(endpoint(emu), prompt())
    assert isinstance(caught.value.__cause__, airframe.ProtocolError)


# --------------------------------------------------------------------------------------------
# Timeouts


STALL = 30.0  # longer than any bound below; the emulator stops stalling when the client leaves


@both
@pytest.mark.parametrize("after_chunks", [None, 1], ids=["before-headers", "after-role-chunk"])
async def test_read_timeout_is_retried_then_surfaces(
    emu: Emulator, stream: bool, after_chunks: int | None
) -> None:
    if not stream and after_chunks is not None:
        after_chunks = 0  # the non-stream stall point: after the headers
    emu.script(*[Fault.stall(STALL, after_chunks=after_chunks)] * MAX_ATTEMPTS)
    ep = endpoint(emu, timeouts=Timeouts(connect=5.0, read=0.1))
    recorder = Recorder()
    err = await failure(ep, prompt(), stream, recorder)
    assert type(err) is airframe.TimeoutError
    assert err.retryable
    assert [c for c, _ in recorder.retries] == [ErrorCategory.TIMEOUT] * FAST.max_retries
    assert len(emu.requests) == MAX_ATTEMPTS
    assert open_connection_count() == 0
    assert await emu.await_connections(0)


@both
async def test_read_timeout_then_success(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.stall(STALL, after_chunks=None), Reply.text("finally"))
    ep = endpoint(emu, timeouts=Timeouts(connect=5.0, read=0.5))
    result = await run(ep, prompt(), stream)
    assert result.text == "finally"
    assert len(emu.requests) == 2


async def test_first_token_timeout_is_enforced_and_retried(emu: Emulator) -> None:
    # Bytes keep the read timeout happy (the role chunk arrives), but no event reaches the caller.
    emu.script(Fault.stall(STALL, after_chunks=1), Reply.text("here"))
    ep = endpoint(emu, timeouts=Timeouts(read=10.0, first_token=0.5))
    recorder = Recorder()
    got = await events(ep, prompt(), recorder)
    assert tokens(got) == ["here"]
    assert [c for c, _ in recorder.retries] == [ErrorCategory.TIMEOUT]
    assert len(emu.requests) == 2


async def test_first_token_timeout_surfaces_after_retries(emu: Emulator) -> None:
    emu.script(*[Fault.stall(STALL, after_chunks=None)] * MAX_ATTEMPTS)
    ep = endpoint(emu, timeouts=Timeouts(read=10.0, first_token=0.1))
    err = await failure(ep, prompt(), True)
    assert type(err) is airframe.TimeoutError
    assert err.retryable
    assert len(emu.requests) == MAX_ATTEMPTS


async def test_first_token_bound_does_not_apply_after_the_first_event(emu: Emulator) -> None:
    # A pause after output began is bounded by `read`, not by `first_token`.
    emu.script(Fault.stall(1.5, after_chunks=2, reply=Reply.text("slow but fine")))
    ep = endpoint(emu, timeouts=Timeouts(read=10.0, first_token=1.0))
    got = await events(ep, prompt())
    assert "".join(tokens(got)) == "slow but fine"
    assert len(emu.requests) == 1


async def test_stall_after_output_is_interrupted_with_a_timeout_cause(emu: Emulator) -> None:
    emu.script(Fault.stall(STALL, after_chunks=2, reply=Reply.text("x y z")))
    ep = endpoint(emu, timeouts=Timeouts(read=0.5))
    with pytest.raises(airframe.InterruptedError) as caught:
        await events(ep, prompt())
    assert isinstance(caught.value.__cause__, airframe.TimeoutError)
    assert caught.value.partial is not None
    assert caught.value.partial.text == "x"
    assert len(emu.requests) == 1


# --------------------------------------------------------------------------------------------
# Connection release


async def test_cancellation_releases_the_connection(emu: Emulator) -> None:
    emu.script(Fault.stall(STALL, after_chunks=2, reply=Reply.text("first then nothing")))
    ep = endpoint(emu)
    first = asyncio.Event()
    seen: list[str] = []

    async def consume() -> None:
        async with contextlib.aclosing(ADAPTER.stream_infer(ep, prompt())) as stream:
            async for event in stream:
                if event.type is TOKEN:
                    seen.append(event.content)
                    first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    assert open_connection_count(ep.base_url) == 1
    assert emu.open_connections == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["first"]
    assert open_connection_count(ep.base_url) == 0
    assert await emu.await_connections(0)

    # The pool still works afterwards.
    emu.script(Reply.text("again"))
    assert (await airframe.infer(ep, prompt())).text == "again"


async def test_early_break_with_aclosing_releases_the_connection(emu: Emulator) -> None:
    emu.script(Fault.stall(STALL, after_chunks=3, reply=Reply.text("one two three four")))
    ep = endpoint(emu)
    seen: list[str] = []
    async with contextlib.aclosing(ADAPTER.stream_infer(ep, prompt())) as stream:
        async for event in stream:
            if event.type is TOKEN:
                seen.append(event.content)
                break
    assert seen == ["one"]
    assert open_connection_count(ep.base_url) == 0
    assert await emu.await_connections(0)


async def test_early_break_on_a_finished_stream_keeps_or_closes_the_connection(
    emu: Emulator,
) -> None:
    # The whole body may already be buffered: either way no connection stays in use.
    emu.script(Reply.text(" ".join(["word"] * 200)))
    ep = endpoint(emu)
    async with contextlib.aclosing(ADAPTER.stream_infer(ep, prompt())) as stream:
        async for _ in stream:
            break
    assert open_connection_count(ep.base_url) <= 1
    emu.script(Reply.text("next"))
    assert (await airframe.infer(ep, prompt())).text == "next"
    assert open_connection_count(ep.base_url) == 1


async def test_timeout_closes_the_connection(emu: Emulator) -> None:
    emu.script(Fault.stall(STALL, after_chunks=1), Reply.text("ok"))
    ep = endpoint(emu, timeouts=Timeouts(read=0.1), retry=RetryPolicy(max_retries=0))
    await failure(ep, prompt(), True)
    assert open_connection_count(ep.base_url) == 0
    assert await emu.await_connections(0)


async def test_a_thousand_sequential_requests_reuse_one_connection(emu: Emulator) -> None:
    ep = endpoint(emu)
    emu.set_default(Reply.text("pong"))
    for i in range(1000):
        result = await run(ep, prompt("ping"), stream=i % 2 == 0)
        assert result.text == "pong"
        assert open_connection_count(ep.base_url) <= 1
    assert len(emu.requests) == 1000
    assert open_connection_count(ep.base_url) == 1
    assert emu.open_connections == 1
    assert emu.total_connections == 1


async def test_retries_do_not_leak_connections(emu: Emulator) -> None:
    ep = endpoint(emu)
    for _ in range(20):
        emu.script(
            Fault.drop(after_chunks=1),
            Fault.status(503),
            Fault.in_band_error(after_chunks=0),
            Reply.text("ok"),
        )
        assert (await events(ep, prompt()))[-1].result is not None
        assert open_connection_count(ep.base_url) <= 1
    assert emu.open_connections <= 1


async def test_errors_after_output_do_not_leak_connections(emu: Emulator) -> None:
    ep = endpoint(emu)
    for _ in range(20):
        emu.script(Fault.malformed_chunk(after_chunks=2, reply=Reply.text("x y z")))
        with pytest.raises(airframe.InterruptedError):
            await events(ep, prompt())
    assert open_connection_count(ep.base_url) <= 1
    assert await emu.await_connections(1)


# --------------------------------------------------------------------------------------------
# The API key canary


def test_key_not_in_endpoint_repr() -> None:
    ep = EndpointSpec("https://api.openai.com/v1", BackendKind.OPENAI, api_key=KEY)
    assert KEY not in repr(ep)
    assert KEY not in str(ep)
    assert "sk-canary" not in repr(ep)


def _echo_body() -> dict[str, Any]:
    return {
        "error": {
            "message": f"Incorrect API key provided: {KEY}. You can find your API key at ...",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def _assert_clean(err: BaseException) -> None:
    for text in (str(err), repr(err), repr(vars(err)), repr(err.args)):
        assert KEY not in text
    cause = err.__cause__
    if isinstance(cause, AirframeError):
        _assert_clean(cause)


def _assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.args)
        if record.exc_info:
            assert KEY not in repr(record.exc_info[1])


@both
async def test_key_echoed_in_an_error_body_is_redacted(
    emu: Emulator, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airframe")
    emu.script(Fault.status(401, body=_echo_body()))
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.AuthError)
    assert "[REDACTED]" in err.message
    _assert_clean(err)
    _assert_logs_clean(caplog)


@both
async def test_key_echoed_in_retried_errors_never_reaches_logs(
    emu: Emulator, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airframe")
    echo = {"error": {"message": f"upstream failed for key {KEY}", "type": "server_error"}}
    emu.script(*[Fault.status(500, body=echo)] * MAX_ATTEMPTS)
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.ServerError)
    _assert_clean(err)
    assert any(r.name == "airframe" for r in caplog.records)  # retries were logged
    _assert_logs_clean(caplog)


async def test_key_echoed_in_an_in_band_stream_error_is_redacted(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airframe")
    error = {"message": f"bad key {KEY}", "type": "invalid_request_error", "code": None}
    event = b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
    emu.script(
        Fault.status(200, body=event, headers={"content-type": "text/event-stream"}),
    )
    err = await failure(endpoint(emu), prompt(), True)
    assert isinstance(err, airframe.BadRequestError)
    assert "[REDACTED]" in err.message
    _assert_clean(err)
    _assert_logs_clean(caplog)


async def test_key_in_plain_text_error_body_is_redacted(emu: Emulator) -> None:
    emu.script(Fault.status(502, body=f"<html>bad gateway for {KEY}</html>"))
    err = await failure(endpoint(emu, retry=RetryPolicy(max_retries=0)), prompt(), False)
    assert isinstance(err, airframe.ServerError)
    _assert_clean(err)
