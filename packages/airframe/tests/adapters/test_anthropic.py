"""Anthropic Messages adapter: request building, response and stream parsing, error mapping.

Unit tests feed payloads and `SSEEvent`s straight to the adapter; the socket tests further down run
whole calls over loopback against `airframe.testing.Emulator`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import airframe
from airframe import (
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
    ToolCall,
    ToolSpec,
    TransportHooks,
)
from airframe._streams import SSEEvent
from airframe._transport import http_error
from airframe.adapters import get_adapter
from airframe.adapters.anthropic import (
    DEFAULT_MAX_TOKENS,
    JSON_OBJECT_INSTRUCTION,
    AnthropicAdapter,
    AnthropicStreamParser,
)
from airframe.testing import Emulator, Fault, Reply, TokenCounts

KEY = "sk-ant-canary-3f9c1d2e7b"
ENDPOINT = EndpointSpec("https://api.anthropic.com", BackendKind.ANTHROPIC, api_key=KEY)
ADAPTER = AnthropicAdapter()
MODEL = "claude-sonnet-4-5"


def req(*messages: Message, **kwargs: Any) -> InferenceRequest:
    kwargs.setdefault("model", MODEL)
    return InferenceRequest(messages=list(messages) or [Message.user("hi")], **kwargs)


def body(request: InferenceRequest, *, stream: bool = False) -> dict[str, Any]:
    wire = ADAPTER.build_chat(ENDPOINT, request, stream=stream)
    assert wire.method == "POST"
    assert wire.path == "/v1/messages"
    assert isinstance(wire.json, dict)
    return wire.json


# --------------------------------------------------------------------------------------------
# Registry and headers


def test_registry_resolves_the_adapter() -> None:
    adapter = get_adapter(BackendKind.ANTHROPIC)
    assert isinstance(adapter, AnthropicAdapter)
    assert adapter.kind is BackendKind.ANTHROPIC
    assert adapter.request_id_headers == ("request-id", "x-request-id")


def test_auth_headers_default_version() -> None:
    assert ADAPTER.auth_headers(ENDPOINT) == {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def test_auth_headers_version_override_and_no_key() -> None:
    endpoint = EndpointSpec(
        "https://api.anthropic.com", BackendKind.ANTHROPIC, api_version="2099-01-01"
    )
    assert ADAPTER.auth_headers(endpoint) == {"anthropic-version": "2099-01-01"}


def test_endpoint_repr_hides_key() -> None:
    assert KEY not in repr(ENDPOINT)


# --------------------------------------------------------------------------------------------
# Request building


def test_minimal_body() -> None:
    assert body(req(Message.user("Hello"))) == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    assert DEFAULT_MAX_TOKENS == 4096


def test_stream_flag_and_sampling_fields() -> None:
    b = body(
        req(max_tokens=77, temperature=0.2, top_p=0.9, stop=["END", "\n\n"], seed=7), stream=True
    )
    assert b["stream"] is True
    assert b["max_tokens"] == 77
    assert b["temperature"] == 0.2
    assert b["top_p"] == 0.9
    assert b["stop_sequences"] == ["END", "\n\n"]
    assert "seed" not in b  # no Anthropic equivalent
    assert "stop" not in b
    assert "stream" not in body(req())


def test_system_prompt_collects_request_system_and_system_turns() -> None:
    b = body(
        req(
            Message.system("Be brief."),
            Message.user("a"),
            Message.system("Use French."),
            Message.assistant("b"),
            system="You are terse.",
        )
    )
    assert b["system"] == "You are terse.\n\nBe brief.\n\nUse French."
    assert all(m["role"] != "system" for m in b["messages"])
    assert b["messages"] == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]


def test_no_system_field_without_system_text() -> None:
    assert "system" not in body(req(Message.user("x")))


def test_consecutive_same_role_turns_are_merged() -> None:
    b = body(req(Message.user("one"), Message.user("two"), Message.assistant("three")))
    assert b["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {"role": "assistant", "content": "three"},
    ]


def test_tool_calls_and_results_round_trip() -> None:
    calls = [
        ToolCall("toolu_1", "get_weather", {"city": "Paris"}, '{"city": "Paris"}'),
        ToolCall("toolu_2", "get_time", {}, ""),
    ]
    b = body(
        req(
            Message.user("Weather and time in Paris?"),
            Message.assistant("Checking.", tool_calls=calls),
            Message.tool("18C", "toolu_1"),
            Message.tool("12:00", "toolu_2"),
            Message.user("Thanks, and be brief."),
        ),
        stream=True,
    )
    assert b["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "12:00"},
                {"type": "text", "text": "Thanks, and be brief."},
            ],
        },
    ]


def test_tool_results_go_before_text_in_a_merged_user_turn() -> None:
    b = body(
        req(
            Message.assistant("", tool_calls=[ToolCall("t1", "f", {})]),
            Message.user("note"),
            Message.tool("done", "t1"),
        )
    )
    assert b["messages"][0] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
    }
    assert [blk["type"] for blk in b["messages"][1]["content"]] == ["tool_result", "text"]


def test_images_inline_data_url_and_remote_url() -> None:
    message = Message.user(
        [
            TextPart("What is in these?"),
            ImagePart(data=b"\x89PNG-bytes", media_type="image/png"),
            ImagePart(url="data:image/jpeg;base64,QUJD"),
            ImagePart(url="https://example.com/cat.webp"),
        ]
    )
    content = body(req(message))["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is in these?"}
    assert content[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORy1ieXRlcw=="},
    }
    assert content[2] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"},
    }
    assert content[3] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.webp"},
    }


def test_tools_and_schema() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    b = body(req(tools=[ToolSpec("get_weather", "Weather now", schema), ToolSpec("noop")]))
    assert b["tools"] == [
        {"name": "get_weather", "description": "Weather now", "input_schema": schema},
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
    ],
)
def test_tool_choice(choice: Any, wire: dict[str, Any]) -> None:
    b = body(req(tools=[ToolSpec("get_weather")], tool_choice=choice))
    assert b["tool_choice"] == wire


def test_json_schema_uses_structured_outputs() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    b = body(req(response_format=ResponseFormat.json_schema("thing", schema)))
    assert b["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in b
    assert "response_format" not in b


def test_json_object_is_a_system_instruction() -> None:
    b = body(req(system="Be exact.", response_format=ResponseFormat.json_object()))
    assert b["system"] == "Be exact.\n\n" + JSON_OBJECT_INSTRUCTION
    assert "output_config" not in b


def test_extra_body_is_merged_last() -> None:
    b = body(
        req(
            max_tokens=10,
            response_format=ResponseFormat.json_schema("x", {"type": "object"}),
            extra_body={
                "max_tokens": 99,
                "thinking": {"type": "enabled", "budget_tokens": 2048},
                "output_config": {"effort": "low"},
            },
        )
    )
    assert b["max_tokens"] == 99
    assert b["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    # `effort` joins our `format` instead of replacing it.
    assert b["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}},
        "effort": "low",
    }


def test_capabilities() -> None:
    caps = ADAPTER.capabilities
    assert caps.vision
    assert caps.tools
    assert caps.json_object
    assert caps.json_schema
    assert caps.image_urls


def test_model_is_required_before_any_io() -> None:
    with pytest.raises(airframe.BadRequestError) as info:
        ADAPTER.check_request(ENDPOINT, InferenceRequest.from_prompt("hi"))
    assert info.value.category is ErrorCategory.BAD_REQUEST
    ADAPTER.check_request(ENDPOINT, InferenceRequest.from_prompt("hi", model=MODEL))
    ADAPTER.check_request(ENDPOINT, InferenceRequest.from_prompt("hi", extra_body={"model": MODEL}))


# --------------------------------------------------------------------------------------------
# Non-streamed responses


def message_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 6},
    }
    payload.update(overrides)
    return payload


def test_parse_text() -> None:
    result = ADAPTER.parse_chat(ENDPOINT, message_payload())
    assert result.text == "Hello!"
    assert result.finish_reason is FinishReason.STOP
    assert result.model == "claude-sonnet-4-5-20250929"
    assert result.response_id == "msg_01"
    assert result.tool_calls == []
    assert result.reasoning == ""
    assert result.reasoning_signature is None
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 6)
    assert result.usage.total_tokens == 18
    assert result.raw is not None
    assert result.raw["stop_reason"] == "end_turn"


def test_parse_thinking_and_tool_use() -> None:
    payload = message_payload(
        content=[
            {"type": "thinking", "thinking": "Need the weather.", "signature": "sig-abc"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            {"type": "some_future_block", "x": 1},
        ],
        stop_reason="tool_use",
    )
    result = ADAPTER.parse_chat(ENDPOINT, payload)
    assert result.reasoning == "Need the weather."
    assert result.reasoning_signature == "sig-abc"
    assert result.text == "Let me check."
    assert result.finish_reason is FinishReason.TOOL_CALLS
    assert result.tool_calls == [
        ToolCall("toolu_1", "get_weather", {"city": "Paris"}, '{"city": "Paris"}'),
        ToolCall("toolu_2", "get_time", {}, "{}"),
    ]
    assert json.loads(result.tool_calls[0].raw_arguments) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("refusal", FinishReason.CONTENT_FILTER),
        ("pause_turn", FinishReason.OTHER),
        ("something_new", FinishReason.OTHER),
        (None, FinishReason.OTHER),
    ],
)
def test_stop_reason_mapping(stop_reason: str | None, finish: FinishReason) -> None:
    result = ADAPTER.parse_chat(ENDPOINT, message_payload(stop_reason=stop_reason))
    assert result.finish_reason is finish


def test_usage_input_includes_cache_reads_and_writes() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
    }
    result = ADAPTER.parse_chat(ENDPOINT, message_payload(usage=usage))
    assert result.usage is not None
    assert result.usage.input_tokens == 1210
    assert result.usage.cache_read_tokens == 1000
    assert result.usage.cache_write_tokens == 200
    assert result.usage.output_tokens == 5
    assert result.usage.total_tokens == 1215


def test_usage_missing_is_none_and_null_cache_is_zero() -> None:
    assert ADAPTER.parse_chat(ENDPOINT, message_payload(usage=None)).usage is None
    result = ADAPTER.parse_chat(
        ENDPOINT,
        message_payload(
            usage={
                "input_tokens": 3,
                "output_tokens": 1,
                "cache_read_input_tokens": None,
                "cache_creation_input_tokens": None,
            }
        ),
    )
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (3, 0)
    only_output = ADAPTER.parse_chat(ENDPOINT, message_payload(usage={"output_tokens": 4}))
    assert only_output.usage is not None
    assert only_output.usage.input_tokens is None  # unknown is not zero
    assert only_output.usage.output_tokens == 4


def test_parse_chat_error_body_raises_typed_error() -> None:
    payload = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(airframe.OverloadedError) as info:
        ADAPTER.parse_chat(ENDPOINT, payload)
    assert info.value.status_code is None
    assert info.value.retryable


# --------------------------------------------------------------------------------------------
# Stream parser


def sse(name: str, data: dict[str, Any] | str) -> SSEEvent:
    return SSEEvent(event=name, data=data if isinstance(data, str) else json.dumps(data))


def message_start(usage: dict[str, Any] | None = None) -> SSEEvent:
    message: dict[str, Any] = {
        "id": "msg_stream",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-5-20250929",
        "stop_reason": None,
        "stop_sequence": None,
    }
    if usage is not None:
        message["usage"] = usage
    return sse("message_start", {"type": "message_start", "message": message})


def block_start(index: int, block: dict[str, Any]) -> SSEEvent:
    return sse(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def delta(index: int, d: dict[str, Any]) -> SSEEvent:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})


def block_stop(index: int) -> SSEEvent:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str | None, usage: dict[str, Any] | None = None) -> SSEEvent:
    data: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if usage is not None:
        data["usage"] = usage
    return sse("message_delta", data)


MESSAGE_STOP = sse("message_stop", {"type": "message_stop"})
PING = sse("ping", {"type": "ping"})


def run(events: list[SSEEvent]) -> tuple[AnthropicStreamParser, list[InferenceStreamEvent]]:
    parser = AnthropicStreamParser(ADAPTER, ENDPOINT)
    out: list[InferenceStreamEvent] = []
    for event in events:
        assert not parser.done, "events after the terminator"
        out.extend(parser.feed(event))
    return parser, out


def test_stream_text() -> None:
    parser, out = run(
        [
            message_start({"input_tokens": 25, "output_tokens": 1}),
            block_start(0, {"type": "text", "text": ""}),
            PING,
            delta(0, {"type": "text_delta", "text": "Hello"}),
            delta(0, {"type": "text_delta", "text": "!"}),
            block_stop(0),
            message_delta("end_turn", {"output_tokens": 15}),
            MESSAGE_STOP,
        ]
    )
    assert parser.done
    assert [(e.type, e.content) for e in out[:2]] == [
        (StreamEventType.TOKEN, "Hello"),
        (StreamEventType.TOKEN, "!"),
    ]
    assert out[2].type is StreamEventType.USAGE
    assert out[2].usage is not None
    assert (out[2].usage.input_tokens, out[2].usage.output_tokens) == (25, 15)
    assert len(out) == 3
    result = parser.result()
    assert result.text == "Hello!"
    assert result.finish_reason is FinishReason.STOP
    assert result.response_id == "msg_stream"
    assert result.model == "claude-sonnet-4-5-20250929"
    assert result.usage == out[2].usage


def test_stream_thinking_then_text() -> None:
    parser, out = run(
        [
            message_start(),
            block_start(0, {"type": "thinking", "thinking": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "Step 1."}),
            delta(0, {"type": "thinking_delta", "thinking": " Step 2."}),
            delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAh"}),
            block_stop(0),
            block_start(1, {"type": "text", "text": ""}),
            delta(1, {"type": "text_delta", "text": "12,231"}),
            block_stop(1),
            message_delta("end_turn"),
            MESSAGE_STOP,
        ]
    )
    assert [(e.type, e.content) for e in out] == [
        (StreamEventType.REASONING, "Step 1."),
        (StreamEventType.REASONING, " Step 2."),
        (StreamEventType.TOKEN, "12,231"),
    ]
    result = parser.result()
    assert result.reasoning == "Step 1. Step 2."
    assert result.reasoning_signature == "EqQBCgIYAh"
    assert result.text == "12,231"
    assert result.usage is None  # the stream reported no counts: unknown, not zero


def test_stream_parallel_tool_use() -> None:
    parser, out = run(
        [
            message_start({"input_tokens": 472, "output_tokens": 2}),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "Checking."}),
            block_stop(0),
            block_start(
                1, {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}
            ),
            delta(1, {"type": "input_json_delta", "partial_json": ""}),
            delta(1, {"type": "input_json_delta", "partial_json": '{"location":'}),
            delta(1, {"type": "input_json_delta", "partial_json": ' "San Francisco, CA"}'}),
            block_stop(1),
            block_start(2, {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {}}),
            block_stop(2),
            message_delta("tool_use", {"output_tokens": 89}),
            MESSAGE_STOP,
        ]
    )
    calls = [e.tool_call for e in out if e.type is StreamEventType.TOOL_CALL]
    assert calls == [
        ToolCall(
            "toolu_A",
            "get_weather",
            {"location": "San Francisco, CA"},
            '{"location": "San Francisco, CA"}',
        ),
        ToolCall("toolu_B", "get_time", {}, "{}"),
    ]
    # Each call is emitted at its own content_block_stop, in order.
    assert [e.type for e in out] == [
        StreamEventType.TOKEN,
        StreamEventType.TOOL_CALL,
        StreamEventType.TOOL_CALL,
        StreamEventType.USAGE,
    ]
    result = parser.result()
    assert result.finish_reason is FinishReason.TOOL_CALLS
    assert result.tool_calls == calls
    assert result.usage is not None
    assert result.usage.output_tokens == 89


def test_stream_message_delta_usage_is_cumulative_and_carries_cache_counts() -> None:
    parser, out = run(
        [
            message_start(
                {
                    "input_tokens": 10,
                    "output_tokens": 1,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                }
            ),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "a"}),
            message_delta(None, {"output_tokens": 5}),
            delta(0, {"type": "text_delta", "text": "b"}),
            block_stop(0),
            message_delta(
                "max_tokens",
                {
                    "output_tokens": 9,
                    "input_tokens": 11,
                    "cache_read_input_tokens": 300,
                    "cache_creation_input_tokens": 40,
                },
            ),
            MESSAGE_STOP,
        ]
    )
    usage = parser.result().usage
    assert usage is not None
    assert usage.output_tokens == 9  # replaced, never 1 + 5 + 9
    assert usage.input_tokens == 11 + 300 + 40
    assert usage.cache_read_tokens == 300
    assert usage.cache_write_tokens == 40
    assert out[-1].type is StreamEventType.USAGE
    assert out[-1].usage == usage
    assert parser.result().finish_reason is FinishReason.LENGTH


def test_stream_ignores_ping_unknown_events_and_unknown_blocks() -> None:
    parser, out = run(
        [
            message_start({"input_tokens": 1, "output_tokens": 1}),
            PING,
            sse("brand_new_event", {"type": "brand_new_event", "x": [1, 2]}),
            block_start(0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}),
            delta(0, {"type": "input_json_delta", "partial_json": '{"query": "x"}'}),
            block_stop(0),
            block_start(1, {"type": "redacted_thinking", "data": "opaque"}),
            block_stop(1),
            block_start(2, {"type": "text", "text": ""}),
            delta(2, {"type": "citations_delta", "citation": {"type": "char_location"}}),
            delta(2, {"type": "some_future_delta", "x": 1}),
            delta(2, {"type": "text_delta", "text": "ok"}),
            block_stop(2),
            message_delta("end_turn", {"output_tokens": 2}),
            MESSAGE_STOP,
        ]
    )
    assert [e.type for e in out] == [StreamEventType.TOKEN, StreamEventType.USAGE]
    assert parser.result().text == "ok"
    assert parser.result().tool_calls == []


def test_stream_events_without_event_names_use_the_data_type() -> None:
    unnamed = [
        SSEEvent(data=e.data)
        for e in [
            message_start({"input_tokens": 2, "output_tokens": 1}),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "x"}),
            block_stop(0),
            message_delta("end_turn", {"output_tokens": 1}),
            MESSAGE_STOP,
        ]
    ]
    parser, _out = run(unnamed)
    assert parser.done
    assert parser.result().text == "x"


def test_stream_result_before_the_end_is_the_partial() -> None:
    parser, _ = run(
        [
            message_start({"input_tokens": 4, "output_tokens": 1}),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "partial"}),
            block_start(1, {"type": "tool_use", "id": "t", "name": "f", "input": {}}),
            delta(1, {"type": "input_json_delta", "partial_json": '{"a": '}),
        ]
    )
    assert not parser.done
    result = parser.result()
    assert result.text == "partial"
    assert result.tool_calls == []  # an unfinished call is not reported as a call
    assert result.finish_reason is FinishReason.OTHER
    assert result.usage is not None
    assert result.usage.input_tokens == 4


@pytest.mark.parametrize(
    ("error_type", "cls"),
    [
        ("overloaded_error", airframe.OverloadedError),
        ("rate_limit_error", airframe.RateLimitError),
        ("api_error", airframe.ServerError),
        ("invalid_request_error", airframe.BadRequestError),
        ("authentication_error", airframe.AuthError),
        ("permission_error", airframe.AuthError),
        ("not_found_error", airframe.NotFoundError),
        ("request_too_large", airframe.BadRequestError),
        ("billing_error", airframe.QuotaError),
        ("timeout_error", airframe.TimeoutError),
        ("never_heard_of_it", airframe.ServerError),
    ],
)
def test_stream_error_event_maps_by_error_type(
    error_type: str, cls: type[airframe.AirframeError]
) -> None:
    parser = AnthropicStreamParser(ADAPTER, ENDPOINT)
    parser.feed(message_start({"input_tokens": 1, "output_tokens": 1}))
    event = sse("error", {"type": "error", "error": {"type": error_type, "message": "boom"}})
    with pytest.raises(cls) as info:
        parser.feed(event)
    assert type(info.value) is cls
    assert info.value.status_code is None  # the event carries no code; the 200 is not it
    assert info.value.message == "boom"
    assert info.value.backend == "anthropic"
    assert not parser.done


def test_stream_error_event_without_json() -> None:
    parser = AnthropicStreamParser(ADAPTER, ENDPOINT)
    with pytest.raises(airframe.ServerError) as info:
        parser.feed(SSEEvent(event="error", data="upstream exploded"))
    assert "upstream exploded" in info.value.message


def test_stream_unnamed_error_data() -> None:
    parser = AnthropicStreamParser(ADAPTER, ENDPOINT)
    data = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(airframe.OverloadedError):
        parser.feed(SSEEvent(data=json.dumps(data)))


def test_stream_malformed_json_is_a_parse_error() -> None:
    parser = AnthropicStreamParser(ADAPTER, ENDPOINT)
    with pytest.raises(json.JSONDecodeError):  # the transport maps it to `protocol`
        parser.feed(SSEEvent(event="content_block_delta", data="{not json"))


# --------------------------------------------------------------------------------------------
# Error classification


def classify(status: int | None, error_type: str, message: str) -> Any:
    payload = {"type": "error", "error": {"type": error_type, "message": message}}
    return ADAPTER.classify_error(status, payload, json.dumps(payload))


@pytest.mark.parametrize(
    ("status", "error_type", "category"),
    [
        (400, "invalid_request_error", ErrorCategory.BAD_REQUEST),
        (401, "authentication_error", ErrorCategory.AUTH),
        (403, "permission_error", ErrorCategory.AUTH),
        (404, "not_found_error", ErrorCategory.NOT_FOUND),
        (408, "invalid_request_error", ErrorCategory.TIMEOUT),
        (409, "invalid_request_error", ErrorCategory.SERVER),  # generic type: status decides
        (413, "request_too_large", ErrorCategory.BAD_REQUEST),
        (422, "invalid_request_error", ErrorCategory.BAD_REQUEST),
        (429, "rate_limit_error", ErrorCategory.RATE_LIMIT),
        (500, "api_error", ErrorCategory.SERVER),
        (502, "api_error", ErrorCategory.SERVER),
        (503, "api_error", ErrorCategory.OVERLOADED),
        (504, "api_error", ErrorCategory.TIMEOUT),
        (529, "overloaded_error", ErrorCategory.OVERLOADED),
        (500, "overloaded_error", ErrorCategory.OVERLOADED),  # a specific type refines
        (400, "not_found_error", ErrorCategory.NOT_FOUND),
        (402, "billing_error", ErrorCategory.QUOTA),
    ],
)
def test_classify_status_refined_by_type(
    status: int, error_type: str, category: ErrorCategory
) -> None:
    assert classify(status, error_type, "something").category is category


def test_classify_without_a_json_body() -> None:
    assert ADAPTER.classify_error(529, None, "").category is ErrorCategory.OVERLOADED
    info = ADAPTER.classify_error(502, None, "<html><body>Bad gateway</body></html>")
    assert info.category is ErrorCategory.SERVER
    assert "Bad gateway" in info.message


def test_context_length_prompt_too_long() -> None:
    info = classify(
        400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
    )
    assert info.category is ErrorCategory.CONTEXT_LENGTH
    assert (info.prompt_tokens, info.context_window) == (210000, 200000)


def test_context_length_input_plus_max_tokens() -> None:
    message = (
        "input length and `max_tokens` exceed context limit: 197202 + 21333 > 200000, "
        "decrease input length or `max_tokens` and try again"
    )
    info = classify(400, "invalid_request_error", message)
    assert info.category is ErrorCategory.CONTEXT_LENGTH
    assert (info.prompt_tokens, info.context_window) == (197202, 200000)


def test_context_length_error_object_carries_the_numbers() -> None:
    payload = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 210000 tokens > 200000 maximum",
        },
    }
    headers = httpx.Headers({"request-id": "req_011ABC", "content-type": "application/json"})
    err = http_error(ADAPTER, ENDPOINT, 400, headers, json.dumps(payload).encode())
    assert isinstance(err, airframe.ContextLengthError)
    assert (err.prompt_tokens, err.context_window) == (210000, 200000)
    assert err.request_id == "req_011ABC"
    assert err.status_code == 400
    assert not err.retryable


def test_max_tokens_too_large_is_not_context_length() -> None:
    message = "max_tokens: 10000 > 4096, which is the maximum allowed number of output tokens"
    assert classify(400, "invalid_request_error", message).category is ErrorCategory.BAD_REQUEST


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        (429, "rate_limit_error", "This request would exceed your organization's spend limit."),
        (429, "rate_limit_error", "Your credit balance is too low."),
        (429, "rate_limit_error", "Billing issue: update your payment method."),
        (429, "rate_limit_error", "Usage credits are required for long context requests."),
        (
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. "
            "Please go to Plans & Billing to upgrade or purchase credits.",
        ),
        (
            400,
            "invalid_request_error",
            "You have reached your specified API usage limits. "
            "You will regain access on 2026-04-01 at 00:00 UTC.",
        ),
        (None, "rate_limit_error", "You have exceeded your monthly spend limit."),
    ],
)
def test_quota(status: int | None, error_type: str, message: str) -> None:
    assert classify(status, error_type, message).category is ErrorCategory.QUOTA


def test_plain_rate_limit_is_not_quota() -> None:
    message = (
        "This request would exceed the rate limit for your organization of 50 requests per minute."
    )
    assert classify(429, "rate_limit_error", message).category is ErrorCategory.RATE_LIMIT


def test_error_text_never_carries_the_key() -> None:
    body_text = json.dumps(
        {"type": "error", "error": {"type": "authentication_error", "message": f"bad key {KEY}"}}
    )
    err = http_error(ADAPTER, ENDPOINT, 401, httpx.Headers(), body_text.encode())
    assert isinstance(err, airframe.AuthError)
    for text in (str(err), repr(err), err.message, json.dumps(err.body)):
        assert KEY not in text


# --------------------------------------------------------------------------------------------
# Models and health


def test_models_request_and_parse() -> None:
    wire = ADAPTER.models_request(ENDPOINT)
    assert (wire.method, wire.path) == ("GET", "/v1/models")
    assert ADAPTER.health_request(ENDPOINT).path == "/v1/models"
    payload = {
        "data": [
            {
                "id": "claude-sonnet-4-5-20250929",
                "type": "model",
                "display_name": "Claude Sonnet 4.5",
            },
            {"id": "claude-haiku-4-5-20251001", "type": "model"},
            {"type": "model"},
        ],
        "has_more": False,
        "first_id": "claude-sonnet-4-5-20250929",
        "last_id": "claude-haiku-4-5-20251001",
    }
    assert ADAPTER.parse_models(payload) == [
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5-20251001",
    ]


# ============================================================================================
# Over real loopback sockets, against the wire emulator (`airframe.testing.Emulator`).
# Retries use zero backoff; a server-named delay is tiny (10 ms) and asserted through hooks,
# never by timing.

WIRE_MODEL = "claude-emulated-1"
FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.0, max_delay=0.0)


class Recorder(TransportHooks):
    """Records the attempts and retry decisions the transport reports."""

    def __init__(self) -> None:
        self.starts = 0
        self.retries: list[tuple[ErrorCategory, float]] = []
        self.errors: list[airframe.AirframeError] = []

    def on_attempt_start(self, info: AttemptInfo) -> None:
        self.starts += 1

    def on_attempt_error(self, info: AttemptInfo, error: airframe.AirframeError) -> None:
        self.errors.append(error)

    def on_retry(self, info: AttemptInfo, error: airframe.AirframeError, delay: float) -> None:
        self.retries.append((error.category, delay))


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY, model=WIRE_MODEL) as server:
        yield server


@pytest.fixture
async def ep(emu: Emulator) -> AsyncIterator[EndpointSpec]:
    yield EndpointSpec(
        emu.base_url("anthropic"),
        BackendKind.ANTHROPIC,
        api_key=KEY,
        retry=FAST_RETRY,
        timeouts=Timeouts(connect=5.0, read=10.0, total=30.0),
    )
    await airframe.aclose_all()


def wire_request(text: str = "Hello", **kwargs: Any) -> InferenceRequest:
    kwargs.setdefault("model", WIRE_MODEL)
    return InferenceRequest.from_prompt(text, **kwargs)


async def collect(
    endpoint: EndpointSpec, request: InferenceRequest, hooks: TransportHooks | None = None
) -> list[InferenceStreamEvent]:
    return [e async for e in ADAPTER.stream_infer(endpoint, request, hooks=hooks)]


async def collect_until_error(
    endpoint: EndpointSpec, request: InferenceRequest, hooks: TransportHooks | None = None
) -> tuple[list[InferenceStreamEvent], airframe.AirframeError]:
    """The events that reached the caller, then the error that ended the stream."""
    stream = ADAPTER.stream_infer(endpoint, request, hooks=hooks)
    seen: list[InferenceStreamEvent] = []
    while True:
        try:
            event = await anext(stream)
        except StopAsyncIteration:
            raise AssertionError(f"the stream ended without an error: {seen!r}") from None
        except airframe.AirframeError as exc:
            return seen, exc
        seen.append(event)


def assert_no_key(error: BaseException) -> None:
    """The API key is in no error text, nor in any error of the chain."""
    current: BaseException | None = error
    while current is not None:
        assert KEY not in str(current)
        assert KEY not in repr(current)
        if isinstance(current, airframe.AirframeError):
            assert KEY not in current.message
            assert KEY not in json.dumps(current.body, default=str)
        current = current.__cause__


def final(events: list[InferenceStreamEvent]) -> InferenceResult:
    assert events[-1].type is StreamEventType.MESSAGE
    assert all(e.type is not StreamEventType.MESSAGE for e in events[:-1])
    result = events[-1].result
    assert result is not None
    return result


async def test_wire_stream_text(emu: Emulator, ep: EndpointSpec) -> None:
    emu.script(Reply.text("Hello there, wire world"))
    events = await collect(ep, wire_request("Hi", system="Be brief.", temperature=0.5))
    tokens = [e.content for e in events if e.type is StreamEventType.TOKEN]
    assert tokens == ["Hello", " there,", " wire", " world"]
    result = final(events)
    assert result.text == "Hello there, wire world"
    assert result.finish_reason is FinishReason.STOP
    assert result.model == WIRE_MODEL
    assert result.response_id is not None
    assert result.response_id.startswith("msg_")
    assert result.usage is not None
    assert result.usage.output_tokens == 4
    assert result.usage.input_tokens is not None
    assert events[-2].type is StreamEventType.USAGE
    sent = emu.last_request
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json["stream"] is True
    assert sent.json["max_tokens"] == DEFAULT_MAX_TOKENS
    assert sent.json["system"] == "Be brief."
    assert sent.json["temperature"] == 0.5
    assert sent.json["messages"] == [{"role": "user", "content": "Hi"}]


async def test_wire_infer_text(emu: Emulator, ep: EndpointSpec) -> None:
    emu.script(Reply.text("Plain answer."))
    result = await ADAPTER.infer(ep, wire_request(max_tokens=64))
    assert result.text == "Plain answer."
    assert result.finish_reason is FinishReason.STOP
    assert result.usage is not None
    assert result.usage.output_tokens == 2
    sent = emu.last_request
    assert "stream" not in sent.json
    assert sent.json["max_tokens"] == 64


async def test_wire_api_version_override(emu: Emulator, ep: EndpointSpec) -> None:
    endpoint = EndpointSpec(
        ep.base_url, BackendKind.ANTHROPIC, api_key=KEY, api_version="2024-01-01", retry=FAST_RETRY
    )
    await ADAPTER.infer(endpoint, wire_request())
    assert emu.last_request.headers["anthropic-version"] == "2024-01-01"


async def test_wire_thinking_stream_and_infer_agree(emu: Emulator, ep: EndpointSpec) -> None:
    reply = Reply.text("It is 42.", reasoning="Six times seven is forty-two.")
    emu.script(reply, reply)
    events = await collect(ep, wire_request())
    streamed = final(events)
    reasoning = [e.content for e in events if e.type is StreamEventType.REASONING]
    assert "".join(reasoning) == "Six times seven is forty-two."
    assert len(reasoning) == 5
    first_token = next(i for i, e in enumerate(events) if e.type is StreamEventType.TOKEN)
    assert all(e.type is StreamEventType.REASONING for e in events[:first_token])
    whole = await ADAPTER.infer(ep, wire_request())
    for result in (streamed, whole):
        assert result.reasoning == "Six times seven is forty-two."
        assert result.text == "It is 42."
        assert result.reasoning_signature is not None
        assert result.reasoning_signature.startswith("EmuSig")
    assert streamed.reasoning_signature == whole.reasoning_signature


async def test_wire_parallel_tool_use(emu: Emulator, ep: EndpointSpec) -> None:
    reply = Reply.tool_calls(
        [("get_weather", {"city": "Paris", "unit": "C"}), ("get_time", {})], text="Checking both."
    )
    emu.script(reply, reply)
    tools = [ToolSpec("get_weather", "Weather", {"type": "object"}), ToolSpec("get_time")]
    request = wire_request("Weather and time?", tools=tools, tool_choice="required")
    events = await collect(ep, request)
    streamed = final(events)
    calls = [e.tool_call for e in events if e.type is StreamEventType.TOOL_CALL]
    whole = await ADAPTER.infer(ep, request)
    for result in (streamed, whole):
        assert result.text == "Checking both."
        assert result.finish_reason is FinishReason.TOOL_CALLS
        assert [(c.name, c.arguments) for c in result.tool_calls] == [
            ("get_weather", {"city": "Paris", "unit": "C"}),
            ("get_time", {}),
        ]
        assert all(c.id.startswith("toolu_") for c in result.tool_calls)
        assert [json.loads(c.raw_arguments) for c in result.tool_calls] == [
            {"city": "Paris", "unit": "C"},
            {},
        ]
    assert calls == streamed.tool_calls
    assert emu.last_request.json["tool_choice"] == {"type": "any"}
    assert emu.last_request.json["tools"][1] == {
        "name": "get_time",
        "input_schema": {"type": "object", "properties": {}},
    }


async def test_wire_tool_result_round_trip_is_accepted(emu: Emulator, ep: EndpointSpec) -> None:
    call = ToolCall("toolu_1", "get_weather", {"city": "Paris"})
    request = InferenceRequest(
        [
            Message.user("Weather?"),
            Message.assistant("", tool_calls=[call]),
            Message.tool("18C and sunny", "toolu_1"),
        ],
        model=WIRE_MODEL,
    )
    emu.script(Reply.text("It is 18C."))
    result = await ADAPTER.infer(ep, request)
    assert result.text == "It is 18C."
    assert emu.last_request.json["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C and sunny"}],
    }


async def test_wire_usage_with_cache_tokens(emu: Emulator, ep: EndpointSpec) -> None:
    counts = TokenCounts(
        input_tokens=1500, output_tokens=7, cache_read_tokens=1000, cache_write_tokens=300
    )
    emu.script(Reply.text("cached answer", usage=counts), Reply.text("cached answer", usage=counts))
    events = await collect(ep, wire_request())
    usage_events = [e.usage for e in events if e.type is StreamEventType.USAGE]
    whole = await ADAPTER.infer(ep, wire_request())
    for usage in (final(events).usage, usage_events[-1], whole.usage):
        assert usage is not None
        assert usage.input_tokens == 1500  # 200 uncached + 1000 read + 300 written
        assert usage.cache_read_tokens == 1000
        assert usage.cache_write_tokens == 300
        assert usage.output_tokens == 7
        assert usage.total_tokens == 1507
    assert len(usage_events) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_wire_429_with_retry_after_is_retried(
    emu: Emulator, ep: EndpointSpec, stream: bool
) -> None:
    emu.script(Fault.rate_limit(retry_after=0.01), Reply.text("after the wait"))
    hooks = Recorder()
    if stream:
        result = final(await collect(ep, wire_request(), hooks))
    else:
        result = await ADAPTER.infer(ep, wire_request(), hooks=hooks)
    assert result.text == "after the wait"
    assert len(emu.requests) == 2
    # The server-named delay is waited in full, without jitter.
    assert hooks.retries == [(ErrorCategory.RATE_LIMIT, 0.01)]
    assert hooks.errors[0].retry_after == 0.01
    assert hooks.errors[0].request_id is not None
    assert hooks.errors[0].request_id.startswith("req_")


@pytest.mark.parametrize("stream", [False, True])
async def test_wire_529_overloaded_is_retried(
    emu: Emulator, ep: EndpointSpec, stream: bool
) -> None:
    emu.script(Fault.overloaded(), Reply.text("recovered"))
    hooks = Recorder()
    if stream:
        result = final(await collect(ep, wire_request(), hooks))
    else:
        result = await ADAPTER.infer(ep, wire_request(), hooks=hooks)
    assert result.text == "recovered"
    assert len(emu.requests) == 2
    assert [c for c, _ in hooks.retries] == [ErrorCategory.OVERLOADED]
    assert hooks.errors[0].status_code == 529


async def test_wire_overloaded_until_retries_run_out(emu: Emulator, ep: EndpointSpec) -> None:
    emu.script(Fault.overloaded(), Fault.overloaded(), Fault.overloaded())
    with pytest.raises(airframe.OverloadedError) as info:
        await ADAPTER.infer(ep, wire_request())
    assert len(emu.requests) == 3  # 1 + max_retries
    assert info.value.retryable  # still retryable: avionics may fall back
    assert info.value.status_code == 529
    assert_no_key(info.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_wire_spend_limit_429_is_quota_and_not_retried(
    emu: Emulator, ep: EndpointSpec, stream: bool
) -> None:
    spend = {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed your organization's monthly spend limit.",
        },
    }
    emu.script(
        Fault.status(429, body=spend, headers={"retry-after": "0.01"}), Reply.text("never sent")
    )
    hooks = Recorder()
    if stream:
        _, error = await collect_until_error(ep, wire_request(), hooks)
    else:
        with pytest.raises(airframe.AirframeError) as info:
            await ADAPTER.infer(ep, wire_request(), hooks=hooks)
        error = info.value
    assert isinstance(error, airframe.QuotaError)
    assert not error.retryable
    assert error.status_code == 429
    assert len(emu.requests) == 1
    assert hooks.retries == []
    assert_no_key(error)


async def test_wire_credit_balance_is_quota(emu: Emulator, ep: EndpointSpec) -> None:
    emu.script(Fault.quota(), Fault.quota(status=429))
    for status in (400, 429):
        with pytest.raises(airframe.QuotaError) as info:
            await ADAPTER.infer(ep, wire_request())
        assert info.value.status_code == status
        assert "credit balance" in info.value.message
    assert len(emu.requests) == 2


@pytest.mark.parametrize("after_chunks", [0, 1])
async def test_wire_inband_overloaded_before_output_is_retried(
    emu: Emulator, ep: EndpointSpec, after_chunks: int
) -> None:
    # after_chunks=1: message_start arrived, but it yields nothing to the caller.
    emu.script(Fault.in_band_error(after_chunks, "overloaded"), Reply.text("second try"))
    hooks = Recorder()
    result = final(await collect(ep, wire_request(), hooks))
    assert result.text == "second try"
    assert len(emu.requests) == 2
    assert [c for c, _ in hooks.retries] == [ErrorCategory.OVERLOADED]
    assert hooks.errors[0].status_code is None  # the 200 is not the error's status


async def test_wire_inband_error_after_output_interrupts(emu: Emulator, ep: EndpointSpec) -> None:
    # Frames: message_start, content_block_start, ping, "one", " two" | error event.
    emu.script(
        Fault.in_band_error(5, "overloaded", reply=Reply.text("one two three four")),
        Reply.text("never requested"),
    )
    events, error = await collect_until_error(ep, wire_request())
    assert [e.content for e in events] == ["one", " two"]
    assert isinstance(error, airframe.InterruptedError)
    assert error.category is ErrorCategory.INTERRUPTED
    assert error.partial is not None
    assert error.partial.text == "one two"
    assert error.partial.usage is not None
    assert error.partial.usage.input_tokens is not None
    cause = error.__cause__
    assert isinstance(cause, airframe.OverloadedError)
    assert cause.status_code is None
    assert cause.message == "Overloaded"
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert len(emu.requests) == 1  # never retried once output reached the caller
    assert_no_key(error)


async def test_wire_inband_rate_limit_maps_by_type(emu: Emulator, ep: EndpointSpec) -> None:
    no_retry = EndpointSpec(
        ep.base_url, BackendKind.ANTHROPIC, api_key=KEY, retry=RetryPolicy(max_retries=0)
    )
    emu.script(Fault.in_band_error(0, "rate_limit"))
    _, error = await collect_until_error(no_retry, wire_request())
    assert isinstance(error, airframe.RateLimitError)
    assert error.status_code is None


async def test_wire_truncated_stream_is_protocol_error(emu: Emulator, ep: EndpointSpec) -> None:
    # Nothing reached the caller (an empty answer), then the body ends without message_stop.
    emu.script(Fault.no_terminator(reply=Reply.text("")), Reply.text("never requested"))
    events, error = await collect_until_error(ep, wire_request())
    assert events == []
    assert isinstance(error, airframe.ProtocolError)
    assert "terminator" in error.message
    assert len(emu.requests) == 1  # protocol errors are not retried
    assert_no_key(error)


async def test_wire_truncated_stream_after_output(emu: Emulator, ep: EndpointSpec) -> None:
    # After output began the truncation surfaces as `interrupted`, the protocol error its cause.
    emu.script(Fault.no_terminator(reply=Reply.text("all of it")))
    events, error = await collect_until_error(ep, wire_request())
    assert "".join(e.content for e in events) == "all of it"
    assert isinstance(error, airframe.InterruptedError)
    assert isinstance(error.__cause__, airframe.ProtocolError)
    assert error.partial is not None
    assert error.partial.text == "all of it"
    assert len(emu.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_wire_html_200_is_protocol_error(
    emu: Emulator, ep: EndpointSpec, stream: bool
) -> None:
    emu.script(Fault.html_200(), Reply.text("never requested"))
    if stream:
        events, error = await collect_until_error(ep, wire_request())
        assert events == []
    else:
        with pytest.raises(airframe.AirframeError) as info:
            await ADAPTER.infer(ep, wire_request())
        error = info.value
    assert isinstance(error, airframe.ProtocolError)
    assert "text/html" in error.message
    assert error.status_code == 200
    assert len(emu.requests) == 1
    assert_no_key(error)


async def test_wire_connection_drop_before_output_is_retried(
    emu: Emulator, ep: EndpointSpec
) -> None:
    emu.script(Fault.drop(after_chunks=1), Reply.text("fresh connection"))
    hooks = Recorder()
    result = final(await collect(ep, wire_request(), hooks))
    assert result.text == "fresh connection"
    assert [c for c, _ in hooks.retries] == [ErrorCategory.CONNECTION]


async def test_wire_context_length(emu: Emulator, ep: EndpointSpec) -> None:
    emu.script(Fault.context_length(prompt_tokens=210000, n_ctx=200000))
    with pytest.raises(airframe.ContextLengthError) as info:
        await ADAPTER.infer(ep, wire_request())
    assert (info.value.prompt_tokens, info.value.context_window) == (210000, 200000)
    assert info.value.status_code == 400
    assert len(emu.requests) == 1


async def test_wire_wrong_key_is_auth_and_key_never_leaks(emu: Emulator, ep: EndpointSpec) -> None:
    emu.api_key = "sk-ant-the-right-one"
    with pytest.raises(airframe.AuthError) as info:
        await ADAPTER.infer(ep, wire_request())
    assert info.value.status_code == 401
    assert len(emu.requests) == 1
    assert emu.last_request.headers["x-api-key"] == KEY
    assert_no_key(info.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_wire_key_echoed_by_server_is_redacted(
    emu: Emulator, ep: EndpointSpec, stream: bool
) -> None:
    echo = {
        "type": "error",
        "error": {"type": "authentication_error", "message": f"invalid x-api-key: {KEY}"},
    }
    emu.script(Fault.status(401, body=echo))
    if stream:
        _, error = await collect_until_error(ep, wire_request())
    else:
        with pytest.raises(airframe.AirframeError) as info:
            await ADAPTER.infer(ep, wire_request())
        error = info.value
    assert isinstance(error, airframe.AuthError)
    assert "[REDACTED]" in error.message
    assert_no_key(error)


async def test_wire_list_models_and_health(emu: Emulator, ep: EndpointSpec) -> None:
    assert await ADAPTER.list_models(ep) == [WIRE_MODEL]
    assert emu.last_request.path == "/v1/models"
    assert emu.last_request.headers["x-api-key"] == KEY
    health = await ADAPTER.health_check(ep)
    assert health.ok
    assert health.state == "ok"
    emu.api_key = "sk-ant-another"
    unhealthy = await ADAPTER.health_check(ep)
    assert not unhealthy.ok
    assert unhealthy.state == "error"
    assert KEY not in unhealthy.detail


async def test_wire_public_entry_points(emu: Emulator, ep: EndpointSpec) -> None:
    emu.script(Reply.text("via airframe.infer"), Reply.text("via airframe.stream_infer"))
    result = await airframe.infer(ep, wire_request())
    assert result.text == "via airframe.infer"
    events = [e async for e in airframe.stream_infer(ep, wire_request())]
    assert final(events).text == "via airframe.stream_infer"


async def test_wire_early_close_returns_the_connection(emu: Emulator, ep: EndpointSpec) -> None:
    emu.script(Reply.text("many words " * 50))
    stream = ADAPTER.stream_infer(ep, wire_request())
    first = await anext(stream)
    assert first.type is StreamEventType.TOKEN
    await stream.aclose()
    await airframe.aclose_all()
    assert await emu.await_connections(0)


@pytest.mark.parametrize("stream", [False, True])
async def test_wire_refusal_and_length_finish_reasons(
    emu: Emulator, ep: EndpointSpec, stream: bool
) -> None:
    emu.script(Reply.refusal("I can't help with that."), Reply.length("cut short here"))
    results: list[InferenceResult] = []
    for _ in range(2):
        if stream:
            results.append(final(await collect(ep, wire_request())))
        else:
            results.append(await ADAPTER.infer(ep, wire_request()))
    refused, cut = results
    assert refused.finish_reason is FinishReason.CONTENT_FILTER
    assert refused.text == "I can't help with that."
    assert cut.finish_reason is FinishReason.LENGTH
    assert cut.text == "cut short here"


async def test_wire_structured_output_request_shapes(emu: Emulator, ep: EndpointSpec) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    emu.script(Reply.text('{"n": 1}'), Reply.text('{"n": 2}'))
    first = await ADAPTER.infer(
        ep, wire_request(response_format=ResponseFormat.json_schema("count", schema))
    )
    assert json.loads(first.text) == {"n": 1}
    assert emu.last_request.json["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }
    second = await ADAPTER.infer(ep, wire_request(response_format=ResponseFormat.json_object()))
    assert json.loads(second.text) == {"n": 2}
    assert emu.last_request.json["system"] == JSON_OBJECT_INSTRUCTION
    assert "output_config" not in emu.last_request.json
