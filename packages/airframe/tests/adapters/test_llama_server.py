"""llama-server adapter: native `/completion` (rendered by `/apply-template`) and OpenAI `/v1`.

Unit tests feed payloads and `SSEEvent`s straight to the adapter; the socket tests further down run
whole calls over loopback against `airframe.testing.Emulator`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

import airframe
from airframe import (
    AirframeError,
    AuthError,
    BackendKind,
    BadRequestError,
    ContextLengthError,
    EndpointSpec,
    ErrorCategory,
    FinishReason,
    ImagePart,
    InferenceRequest,
    InferenceStreamEvent,
    InterruptedError,
    Message,
    NotFoundError,
    OverloadedError,
    ProtocolError,
    ResponseFormat,
    RetryPolicy,
    ServerError,
    StreamEventType,
    TextPart,
    ToolSpec,
    Usage,
)
from airframe._streams import SSEEvent
from airframe._transport import http_error
from airframe.adapters import get_adapter
from airframe.adapters.llama_server import (
    NATIVE_CAPABILITIES,
    LlamaCompletionStreamParser,
    LlamaServerAdapter,
    completion_usage,
)
from airframe.adapters.openai import OpenAIAdapter, OpenAIStreamParser
from airframe.testing import Emulator, Fault, Reply, TokenCounts
from airframe.testing.protocols.llama_server import chatml

KEY = "llama-canary-key-5e1f"
NATIVE = EndpointSpec("http://127.0.0.1:8080", BackendKind.LLAMA_SERVER, api_key=KEY)
OPENAI = EndpointSpec("http://127.0.0.1:8080", BackendKind.LLAMA_SERVER, api_type="openai")
ADAPTER = LlamaServerAdapter()
PNG = b"\x89PNG\r\n\x1a\nfake"

TIMINGS = {
    "cache_n": 3,
    "prompt_n": 9,
    "prompt_ms": 12.5,
    "prompt_per_token_ms": 1.38,
    "prompt_per_second": 720.0,
    "predicted_n": 4,
    "predicted_ms": 20.0,
    "predicted_per_token_ms": 5.0,
    "predicted_per_second": 200.0,
}
FINAL: dict[str, Any] = {
    "index": 0,
    "content": "",
    "tokens": [],
    "id_slot": 0,
    "stop": True,
    "model": "tiny",
    "tokens_predicted": 4,
    "tokens_evaluated": 12,
    "generation_settings": {"n_predict": 4, "temperature": 0.0},
    "prompt": "<|user|>hi<|assistant|>",
    "has_new_line": False,
    "truncated": False,
    "stop_type": "limit",
    "stopping_word": "",
    "tokens_cached": 15,
    "timings": TIMINGS,
}


def req(*messages: Message, **kwargs: Any) -> InferenceRequest:
    return InferenceRequest(messages=list(messages) or [Message.user("hi")], **kwargs)


def completion(request: InferenceRequest, prompt: Any = "PROMPT", *, stream: bool = False) -> Any:
    return ADAPTER.completion_body(NATIVE, request, prompt, stream=stream)


def events(parser: Any, *items: SSEEvent) -> list[InferenceStreamEvent]:
    out: list[InferenceStreamEvent] = []
    for item in items:
        out.extend(parser.feed(item))
    return out


def data(obj: Any) -> SSEEvent:
    return SSEEvent(data=obj if isinstance(obj, str) else json.dumps(obj))


def classify(status: int | None, payload: Any) -> Any:
    return ADAPTER.classify_error(status, payload, json.dumps(payload))


# --------------------------------------------------------------------------------------------
# Registry, auth, capabilities


def test_registry_resolves_the_adapter() -> None:
    adapter = get_adapter(BackendKind.LLAMA_SERVER)
    assert isinstance(adapter, LlamaServerAdapter)
    assert adapter.kind is BackendKind.LLAMA_SERVER
    assert adapter.stream_format == "sse"


def test_bearer_auth_only_with_a_key() -> None:
    assert ADAPTER.auth_headers(NATIVE) == {"authorization": f"Bearer {KEY}"}
    assert ADAPTER.auth_headers(OPENAI) == {}


def test_capabilities_per_api_type() -> None:
    assert ADAPTER.capabilities is NATIVE_CAPABILITIES
    assert not NATIVE_CAPABILITIES.tools
    assert not NATIVE_CAPABILITIES.image_urls
    assert ADAPTER.capabilities_for(NATIVE) is NATIVE_CAPABILITIES
    assert ADAPTER.capabilities_for(OPENAI).tools


def test_native_refuses_tools_before_any_io() -> None:
    request = req(tools=[ToolSpec("f")])
    with pytest.raises(BadRequestError, match='api_type="openai"') as info:
        ADAPTER.stream_infer(NATIVE, request)
    assert info.value.backend == "llama_server"
    assert info.value.category is ErrorCategory.BAD_REQUEST
    ADAPTER.check_request(OPENAI, request)  # the OpenAI mode carries tools


def test_native_refuses_remote_image_urls() -> None:
    request = req(Message.user([TextPart("see"), ImagePart(url="https://x.test/a.png")]))
    with pytest.raises(BadRequestError, match="image bytes"):
        ADAPTER.check_request(NATIVE, request)
    ADAPTER.check_request(OPENAI, request)
    ADAPTER.check_request(NATIVE, req(Message.user([TextPart("see"), ImagePart(data=PNG)])))


def test_empty_messages_refused_in_both_modes() -> None:
    with pytest.raises(BadRequestError, match="no messages"):
        ADAPTER.check_request(NATIVE, InferenceRequest(messages=[]))
    with pytest.raises(BadRequestError, match="no messages"):
        ADAPTER.check_request(OPENAI, InferenceRequest(messages=[]))


# --------------------------------------------------------------------------------------------
# Native request bodies


def test_completion_body_maps_every_parameter() -> None:
    request = req(
        model="tiny",
        max_tokens=7,
        temperature=0.2,
        top_p=0.9,
        stop=["</s>", "\n\n"],
        seed=42,
        extra_body={"top_k": 5, "cache_prompt": False},
    )
    assert completion(request, stream=True) == {
        "prompt": "PROMPT",
        "stream": True,
        "model": "tiny",
        "n_predict": 7,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["</s>", "\n\n"],
        "seed": 42,
        "top_k": 5,
        "cache_prompt": False,
    }


def test_completion_body_minimal() -> None:
    assert completion(req()) == {"prompt": "PROMPT", "stream": False}


def test_response_format_becomes_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = completion(req(response_format=ResponseFormat.json_schema("r", schema)))
    assert body["json_schema"] == schema
    body = completion(req(response_format=ResponseFormat.json_object()))
    assert body["json_schema"] == {"type": "object"}


def test_images_go_as_multimodal_data_in_order() -> None:
    second = b"second-image"
    request = req(
        Message.user([ImagePart(data=PNG), TextPart("and")]),
        Message.assistant("ok"),
        Message.user([TextPart("this"), ImagePart(url="data:image/png;base64,QUJD")]),
        Message.user([ImagePart(data=second)]),
    )
    body = completion(request, "P <__media__> <__media__> <__media__>")
    assert body["prompt"] == {
        "prompt_string": "P <__media__> <__media__> <__media__>",
        "multimodal_data": [
            base64.b64encode(PNG).decode(),
            "QUJD",
            base64.b64encode(second).decode(),
        ],
    }


def test_build_chat_native_needs_a_rendered_or_raw_prompt() -> None:
    with pytest.raises(BadRequestError, match="chat template"):
        ADAPTER.build_chat(NATIVE, req(), stream=False)
    wire = ADAPTER.build_chat(NATIVE, req(extra_body={"prompt": "raw text"}), stream=True)
    assert (wire.method, wire.path) == ("POST", "/completion")
    assert wire.json == {"prompt": "raw text", "stream": True}


def test_template_keys_go_to_the_template_not_the_completion() -> None:
    request = req(
        Message.user("hi"),
        system="be brief",
        extra_body={"chat_template_kwargs": {"enable_thinking": False}, "top_k": 1},
    )
    assert ADAPTER.template_body(NATIVE, request) == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "chat_template_kwargs": {"enable_thinking": False},
    }
    assert completion(request) == {"prompt": "PROMPT", "stream": False, "top_k": 1}


def test_openai_mode_template_body_is_the_chat_body() -> None:
    request = req(tools=[ToolSpec("f", "does f")], max_tokens=3)
    body = ADAPTER.template_body(OPENAI, request)
    assert body == OpenAIAdapter().chat_body(OPENAI, request, stream=False)
    assert body["tools"][0]["function"]["name"] == "f"


# --------------------------------------------------------------------------------------------
# OpenAI mode: the OpenAI adapter against /v1


def test_openai_mode_builds_the_openai_request_under_v1() -> None:
    request = req(model="m", max_tokens=5, tools=[ToolSpec("f")])
    wire = ADAPTER.build_chat(OPENAI, request, stream=True)
    assert (wire.method, wire.path) == ("POST", "/v1/chat/completions")
    assert wire.json == OpenAIAdapter().chat_body(OPENAI, request, stream=True)
    assert wire.json["max_tokens"] == 5
    assert ADAPTER.models_request(OPENAI).path == "/v1/models"
    assert ADAPTER.models_request(NATIVE).path == "/v1/models"


def test_openai_mode_parse_keeps_timings() -> None:
    payload = {
        "id": "chatcmpl-1",
        "model": "tiny",
        "choices": [{"index": 0, "message": {"content": "hey"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        "timings": TIMINGS,
    }
    result = ADAPTER.parse_chat(OPENAI, payload)
    assert result.text == "hey"
    assert result.usage is not None
    assert result.usage.input_tokens == 9
    assert result.raw is not None
    assert result.raw["timings"] == TIMINGS


def test_openai_mode_stream_parser_keeps_timings_and_errors_are_llama_server() -> None:
    parser = ADAPTER.stream_parser(OPENAI, req())
    assert isinstance(parser, OpenAIStreamParser)
    chunk = {"id": "c", "model": "tiny", "choices": [{"index": 0, "delta": {"content": "x"}}]}
    last = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    last["timings"] = TIMINGS
    events(parser, data(chunk), data(last), data("[DONE]"))
    assert parser.done
    result = parser.result()
    assert result.finish_reason is FinishReason.LENGTH
    assert result.raw == {"timings": TIMINGS}

    parser = ADAPTER.stream_parser(OPENAI, req())
    error = {"code": 400, "type": "exceed_context_size_error", "message": "too long"}
    error |= {"n_prompt_tokens": 300, "n_ctx": 256}
    with pytest.raises(ContextLengthError) as info:
        parser.feed(data({"error": error}))
    assert (info.value.prompt_tokens, info.value.context_window) == (300, 256)
    assert info.value.backend == "llama_server"


def test_openai_mode_http_context_error() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "request (300 tokens) exceeds the available context size (256 tokens)",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 300,
            "n_ctx": 256,
        }
    }
    error = http_error(ADAPTER._openai, OPENAI, 400, None, json.dumps(body).encode())
    assert isinstance(error, ContextLengthError)
    assert (error.prompt_tokens, error.context_window, error.status_code) == (300, 256, 400)


# --------------------------------------------------------------------------------------------
# Native responses


def test_parse_native_result() -> None:
    result = ADAPTER.parse_chat(NATIVE, {**FINAL, "content": "a b c d"})
    assert result.text == "a b c d"
    assert result.finish_reason is FinishReason.LENGTH
    assert result.model == "tiny"
    assert result.response_id is None
    assert result.tool_calls == []
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 4)
    assert result.usage.cache_read_tokens == 3
    assert result.raw is not None
    assert result.raw["timings"] == TIMINGS
    assert result.raw["stop_type"] == "limit"
    assert result.raw["tokens_cached"] == 15
    assert result.raw["generation_settings"] == {"n_predict": 4, "temperature": 0.0}


@pytest.mark.parametrize(
    ("stop_type", "finish"),
    [
        ("eos", FinishReason.STOP),
        ("word", FinishReason.STOP),
        ("limit", FinishReason.LENGTH),
        ("none", FinishReason.OTHER),
    ],
)
def test_stop_types(stop_type: str, finish: FinishReason) -> None:
    assert ADAPTER.parse_chat(NATIVE, {**FINAL, "stop_type": stop_type}).finish_reason is finish


def test_old_servers_stop_booleans() -> None:
    old = {"content": "x", "stop": True, "tokens_predicted": 1, "tokens_evaluated": 2}
    assert ADAPTER.parse_chat(NATIVE, {**old, "stopped_limit": True}).finish_reason == "length"
    assert ADAPTER.parse_chat(NATIVE, {**old, "stopped_eos": True}).finish_reason == "stop"
    assert ADAPTER.parse_chat(NATIVE, {**old, "stopped_word": True}).finish_reason == "stop"


def test_usage_rules() -> None:
    assert completion_usage({}) is None
    usage = completion_usage({"tokens_predicted": 3})
    assert usage is not None
    assert usage.input_tokens is None
    assert usage.output_tokens == 3
    # No cache_n (older servers): the reused part is what prompt processing skipped.
    usage = completion_usage({"tokens_evaluated": 10, "timings": {"prompt_n": 4}})
    assert usage is not None
    assert usage.cache_read_tokens == 6
    # tokens_cached is the slot position after the call, never a cache-read count.
    usage = completion_usage({"tokens_evaluated": 10, "tokens_predicted": 5, "tokens_cached": 14})
    assert usage is not None
    assert usage.cache_read_tokens == 0
    assert usage.total_tokens == 15


def test_parse_native_in_band_error_body() -> None:
    body = {"error": {"code": 500, "message": "boom", "type": "server_error"}}
    with pytest.raises(AirframeError) as info:
        ADAPTER.parse_chat(NATIVE, body)
    assert info.value.category is ErrorCategory.SERVER
    assert info.value.status_code == 500


# --------------------------------------------------------------------------------------------
# Native stream


def test_stream_tokens_then_stop_chunk() -> None:
    parser = ADAPTER.stream_parser(NATIVE, req())
    assert isinstance(parser, LlamaCompletionStreamParser)
    out = events(
        parser,
        data({"index": 0, "content": "Hel", "tokens": [1], "stop": False, "id_slot": 0}),
        data({"index": 0, "content": "lo", "tokens": [2], "stop": False, "id_slot": 0}),
        data({"index": 0, "content": "", "tokens": [], "stop": False}),  # e.g. a held-back piece
    )
    assert [(e.type, e.content) for e in out] == [
        (StreamEventType.TOKEN, "Hel"),
        (StreamEventType.TOKEN, "lo"),
    ]
    assert not parser.done
    partial = parser.result()
    assert partial.text == "Hello"
    assert partial.usage is None  # these chunks carry no counts
    assert partial.finish_reason is FinishReason.OTHER

    out = events(parser, data(FINAL))
    assert parser.done
    assert [e.type for e in out] == [StreamEventType.USAGE]
    assert out[0].usage is not None
    assert out[0].usage.output_tokens == 4
    result = parser.result()
    assert result.text == "Hello"
    assert result.finish_reason is FinishReason.LENGTH
    assert result.model == "tiny"
    assert result.raw is not None
    assert result.raw["timings"] == TIMINGS


def test_partial_chunks_with_counts_give_partial_usage() -> None:
    parser = ADAPTER.stream_parser(NATIVE, req())
    partial = {"content": "a", "stop": False, "tokens_predicted": 1, "tokens_evaluated": 9}
    events(parser, data(partial), data({**partial, "content": " b", "tokens_predicted": 2}))
    assert parser.result().usage == Usage(9, 2)


def test_stream_final_chunk_with_content() -> None:
    parser = ADAPTER.stream_parser(NATIVE, req())
    out = events(parser, data({**FINAL, "content": "all", "stop_type": "eos"}))
    assert [e.type for e in out] == [StreamEventType.TOKEN, StreamEventType.USAGE]
    assert parser.result().text == "all"
    assert parser.result().finish_reason is FinishReason.STOP


def test_stream_done_marker_also_ends() -> None:
    parser = ADAPTER.stream_parser(NATIVE, req())
    events(parser, data({"content": "x", "stop": False}), data("[DONE]"))
    assert parser.done


def test_stream_error_in_data_with_context_numbers() -> None:
    parser = ADAPTER.stream_parser(NATIVE, req())
    error = {
        "code": 400,
        "message": "request (900 tokens) exceeds the available context size (512 tokens)",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 900,
        "n_ctx": 512,
    }
    with pytest.raises(ContextLengthError) as info:
        parser.feed(data({"error": error}))
    assert (info.value.prompt_tokens, info.value.context_window) == (900, 512)
    assert info.value.status_code == 400
    assert info.value.backend == "llama_server"


def test_stream_error_as_old_sse_error_field() -> None:
    parser = ADAPTER.stream_parser(NATIVE, req())
    error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
    with pytest.raises(AirframeError) as info:
        parser.feed(SSEEvent(event="error", data=json.dumps(error)))
    assert info.value.category is ErrorCategory.OVERLOADED
    assert info.value.status_code == 503
    assert str(info.value).startswith("overloaded: Loading model")


def test_stream_error_field_that_is_not_json() -> None:
    parser = ADAPTER.stream_parser(NATIVE, req())
    with pytest.raises(AirframeError) as info:
        parser.feed(SSEEvent(event="error", data="something broke"))
    assert info.value.category is ErrorCategory.SERVER
    assert "something broke" in str(info.value)


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("etype", "code", "category"),
    [
        ("invalid_request_error", 400, ErrorCategory.BAD_REQUEST),
        ("not_supported_error", 501, ErrorCategory.BAD_REQUEST),
        ("authentication_error", 401, ErrorCategory.AUTH),
        ("permission_error", 403, ErrorCategory.AUTH),
        ("not_found_error", 404, ErrorCategory.NOT_FOUND),
        ("unavailable_error", 503, ErrorCategory.OVERLOADED),
        ("server_error", 500, ErrorCategory.SERVER),
    ],
)
def test_error_types(etype: str, code: int, category: ErrorCategory) -> None:
    payload = {"error": {"code": code, "message": "m", "type": etype}}
    assert classify(code, payload).category is category
    assert classify(None, payload).category is category  # in-band: the type still decides


def test_context_error_numbers_from_fields_or_message() -> None:
    payload = {
        "error": {
            "code": 400,
            "message": "request (300 tokens) exceeds the available context size (256 tokens)",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 301,
            "n_ctx": 257,
        }
    }
    info = classify(400, payload)
    assert info.category is ErrorCategory.CONTEXT_LENGTH
    assert (info.prompt_tokens, info.context_window) == (301, 257)
    del payload["error"]["n_prompt_tokens"], payload["error"]["n_ctx"]
    info = classify(400, payload)
    assert (info.prompt_tokens, info.context_window) == (300, 256)
    old = {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "invalid_request_error",
        }
    }
    info = classify(400, old)
    assert info.category is ErrorCategory.CONTEXT_LENGTH
    assert (info.prompt_tokens, info.context_window) == (None, None)


def test_quota_rate_limit_and_filter_wording() -> None:
    quota = {"error": {"code": 429, "message": "over quota", "type": "insufficient_quota"}}
    assert classify(429, quota).category is ErrorCategory.QUOTA
    limited = {"error": {"code": 429, "message": "slow down", "type": "rate_limit_error"}}
    assert classify(None, limited).category is ErrorCategory.RATE_LIMIT
    blocked = {
        "error": {
            "code": 400,
            "message": "Content blocked by the moderation filter",
            "type": "invalid_request_error",
        }
    }
    assert classify(400, blocked).category is ErrorCategory.CONTENT_FILTER


def test_unknown_shapes_fall_back_to_status() -> None:
    assert classify(429, {"error": {"message": "slow"}}).category is ErrorCategory.RATE_LIMIT
    assert ADAPTER.classify_error(502, None, "<html>").category is ErrorCategory.SERVER
    assert classify(None, {"error": {"code": 404, "message": "x"}}).category == "not_found"
    assert classify(None, {"error": {"message": "x"}}).category is ErrorCategory.SERVER


def test_http_error_carries_the_numbers_and_hides_the_key() -> None:
    body = {
        "error": {
            "code": 400,
            "message": f"too long for {KEY}",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 5000,
            "n_ctx": 4096,
        }
    }
    error = http_error(ADAPTER, NATIVE, 400, None, json.dumps(body).encode())
    assert isinstance(error, ContextLengthError)
    assert (error.prompt_tokens, error.context_window) == (5000, 4096)
    assert KEY not in str(error)
    assert KEY not in repr(error)


# --------------------------------------------------------------------------------------------
# Health


def test_health_states() -> None:
    ok = ADAPTER.parse_health(200, {"status": "ok"})
    assert (ok.ok, ok.state) == (True, "ok")
    loading = ADAPTER.parse_health(
        503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    )
    assert (loading.ok, loading.state, loading.detail) == (False, "loading", "Loading model")
    old_loading = ADAPTER.parse_health(503, {"status": "loading model"})
    assert old_loading.state == "loading"
    failed = ADAPTER.parse_health(
        500, {"error": {"code": 500, "message": "Model failed to load", "type": "server_error"}}
    )
    assert (failed.ok, failed.state) == (False, "error")
    assert ADAPTER.health_request(NATIVE).path == "/health"
    assert ADAPTER.health_request(OPENAI).path == "/health"


# --------------------------------------------------------------------------------------------
# Over loopback sockets, against the wire emulator

FAST = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.005)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(model="tiny-llama") as emulator:
        yield emulator


def native(emu: Emulator, **kwargs: Any) -> EndpointSpec:
    kwargs.setdefault("retry", FAST)
    return EndpointSpec(emu.base_url("llama_server"), BackendKind.LLAMA_SERVER, **kwargs)


def openai_mode(emu: Emulator, **kwargs: Any) -> EndpointSpec:
    emu.openai_dialect = "llama_server"
    return native(emu, api_type="openai", **kwargs)


async def collect(
    agen: Any, into: list[InferenceStreamEvent] | None = None
) -> list[InferenceStreamEvent]:
    out = [] if into is None else into
    async for event in agen:
        out.append(event)
    return out


def paths(emu: Emulator) -> list[str]:
    return [r.path for r in emu.requests]


USAGE = TokenCounts(input_tokens=17, output_tokens=2)


async def test_native_infer_renders_then_completes(emu: Emulator) -> None:
    emu.script(Reply.text("Hello there", usage=USAGE))
    endpoint = native(emu, api_key=KEY)
    emu.api_key = KEY
    request = req(
        Message.user("hi"), system="be brief", max_tokens=8, temperature=0.0, stop=["\n"], seed=3
    )
    result = await ADAPTER.infer(endpoint, request)
    assert result.text == "Hello there"
    assert result.finish_reason is FinishReason.STOP
    assert result.usage == Usage(17, 2)
    assert result.model == "tiny-llama"
    assert result.raw is not None
    assert result.raw["timings"]["prompt_n"] == 17
    assert result.raw["stop_type"] == "eos"
    template, completion_request = emu.requests
    assert (template.path, completion_request.path) == ("/apply-template", "/completion")
    assert template.json == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ]
    }
    assert completion_request.headers["authorization"] == f"Bearer {KEY}"
    assert completion_request.json == {
        "prompt": chatml(template.json["messages"]),
        "stream": False,
        "n_predict": 8,
        "temperature": 0.0,
        "stop": ["\n"],
        "seed": 3,
    }


async def test_native_stream(emu: Emulator) -> None:
    emu.script(Reply.text("one two three", usage=USAGE))
    events_ = await collect(ADAPTER.stream_infer(native(emu), req()))
    tokens = [e.content for e in events_ if e.type is StreamEventType.TOKEN]
    assert tokens == ["one", " two", " three"]
    assert [e.type for e in events_[-2:]] == [StreamEventType.USAGE, StreamEventType.MESSAGE]
    result = events_[-1].result
    assert result is not None
    assert result.text == "one two three"
    assert result.usage == Usage(17, 2)
    assert result.raw is not None
    assert result.raw["timings"]["predicted_n"] == 2
    assert emu.requests[-1].json["stream"] is True


async def test_native_length_finish(emu: Emulator) -> None:
    result = await ADAPTER.infer(native(emu), req(Message.user("a b c d e f"), max_tokens=2))
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage is not None
    assert result.usage.output_tokens == 2
    assert emu.requests[-1].json["n_predict"] == 2


async def test_raw_prompt_skips_the_template(emu: Emulator) -> None:
    request = req(extra_body={"prompt": "Once upon a time", "n_probs": 0})
    result = await ADAPTER.infer(native(emu), request)
    assert result.text == "echo: Once upon a time"
    assert paths(emu) == ["/completion"]
    assert emu.requests[0].json == {"prompt": "Once upon a time", "stream": False, "n_probs": 0}


async def test_count_tokens_matches_the_server_and_reuses_the_rendering(emu: Emulator) -> None:
    endpoint = native(emu)
    request = req(Message.user("how many tokens is this"))
    ADAPTER.clear_template_cache()
    counted = await ADAPTER.count_tokens(endpoint, request)
    prompt = chatml([{"role": "user", "content": "how many tokens is this"}])
    assert counted == len(await ADAPTER.tokenize(endpoint, prompt, add_special=True))
    assert (
        await ADAPTER.tokenize(endpoint, prompt)
        == (await ADAPTER.tokenize(endpoint, prompt, add_special=True))[1:]
    )
    result = await ADAPTER.infer(endpoint, request)
    # The emulator's /tokenize always adds a BOS with add_special (a real server adds it only
    # when the model asks for one, as /completion does); its completion counts words only.
    assert result.usage is not None
    assert result.usage.input_tokens == counted - 1
    # count_tokens, two tokenize calls, then the completion: one rendering for both.
    assert paths(emu).count("/apply-template") == 1
    assert emu.requests[1].json == {"content": prompt, "add_special": True}
    ADAPTER.clear_template_cache()
    await ADAPTER.render_prompt(endpoint, request)
    assert paths(emu).count("/apply-template") == 2


async def test_props_context_size_slots_models(emu: Emulator) -> None:
    emu.context_window = 2048
    endpoint = native(emu)
    props = await ADAPTER.props(endpoint)
    assert props["default_generation_settings"]["n_ctx"] == 2048
    assert await ADAPTER.context_size(endpoint) == 2048
    slots = await ADAPTER.slots(endpoint)
    assert slots[0]["n_ctx"] == 2048
    emu.openai_dialect = "llama_server"
    assert await ADAPTER.list_models(endpoint) == ["tiny-llama"]
    assert paths(emu) == ["/props", "/props", "/slots", "/v1/models"]


async def test_health_ok_loading_down(emu: Emulator) -> None:
    endpoint = native(emu)
    health = await ADAPTER.health_check(endpoint)
    assert (health.ok, health.state) == (True, "ok")
    assert health.latency_ms is not None
    emu.loading = True
    health = await ADAPTER.health_check(endpoint)
    assert (health.ok, health.state, health.detail) == (False, "loading", "Loading model")
    with pytest.raises(OverloadedError):  # inference while loading: retried, then overloaded
        await ADAPTER.infer(endpoint, req())
    emu.loading = False
    emu.stop()
    health = await ADAPTER.health_check(endpoint)
    assert (health.ok, health.state) == (False, "down")


@pytest.mark.parametrize("stream", [False, True])
async def test_context_error_with_numbers(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.context_length(prompt_tokens=5000, n_ctx=4096))
    endpoint = native(emu)
    call = (
        collect(ADAPTER.stream_infer(endpoint, req())) if stream else ADAPTER.infer(endpoint, req())
    )
    with pytest.raises(ContextLengthError) as info:
        await call
    assert (info.value.prompt_tokens, info.value.context_window) == (5000, 4096)
    assert info.value.status_code == 400
    assert info.value.backend == "llama_server"
    assert paths(emu).count("/completion") == 1  # not retried


async def test_prompt_over_the_window_is_a_context_error(emu: Emulator) -> None:
    emu.context_window = 8
    with pytest.raises(ContextLengthError) as info:
        await ADAPTER.infer(native(emu), req(Message.user("one two three four five six seven")))
    assert info.value.context_window == 8
    assert info.value.prompt_tokens is not None
    assert info.value.prompt_tokens > 8


async def test_truncated_stream(emu: Emulator) -> None:
    endpoint = native(emu)
    emu.script(Fault.no_terminator(reply=Reply.text("")))
    with pytest.raises(ProtocolError, match="terminator"):
        await collect(ADAPTER.stream_infer(endpoint, req()))
    emu.script(Fault.no_terminator(reply=Reply.text("cut short here")))
    with pytest.raises(InterruptedError) as info:
        await collect(ADAPTER.stream_infer(endpoint, req()))
    assert isinstance(info.value.__cause__, ProtocolError)
    assert info.value.partial is not None
    assert info.value.partial.text == "cut short here"
    emu.script(Fault.drop(after_chunks=2, reply=Reply.text("a b c d", usage=USAGE)))
    with pytest.raises(InterruptedError) as info:
        await collect(ADAPTER.stream_infer(endpoint, req()))
    assert info.value.partial is not None
    assert info.value.partial.text == "a b"
    # Partial chunks carry the running counts: what arrived can still be billed.
    assert info.value.partial.usage == Usage(17, 2)


@pytest.mark.parametrize("style", ["data", "field"])
async def test_in_band_error_first_is_retried(emu: Emulator, style: Any) -> None:
    emu.script(Fault.in_band_error(after_chunks=0, kind="overloaded", style=style))
    events_ = await collect(ADAPTER.stream_infer(native(emu), req(Message.user("again"))))
    assert events_[-1].result is not None
    assert events_[-1].result.text == "echo: again"
    assert paths(emu).count("/completion") == 2


@pytest.mark.parametrize("api", ["native", "openai"])
@pytest.mark.parametrize("style", ["data", "field"])
async def test_in_band_error_mid_stream(emu: Emulator, style: Any, api: str) -> None:
    emu.script(
        Fault.in_band_error(after_chunks=2, kind="server", style=style, reply=Reply.text("x y z"))
    )
    endpoint = openai_mode(emu) if api == "openai" else native(emu)
    seen: list[InferenceStreamEvent] = []
    with pytest.raises(InterruptedError) as info:
        await collect(ADAPTER.stream_infer(endpoint, req()), into=seen)
    # The OpenAI stream spends its first chunk on the role delta.
    expected = ["x"] if api == "openai" else ["x", " y"]
    assert [e.content for e in seen if e.type is StreamEventType.TOKEN] == expected
    cause = info.value.__cause__
    assert isinstance(cause, ServerError)
    assert cause.status_code == 500  # the code inside the event, in either form
    assert cause.backend == "llama_server"
    assert info.value.partial is not None
    assert info.value.partial.text == "".join(expected)


async def test_closing_a_stream_early_releases_the_connection(emu: Emulator) -> None:
    emu.script(Reply.text("a b c d e f g h"))
    stream = ADAPTER.stream_infer(native(emu), req())
    first = await anext(stream)
    assert first.content == "a"
    await stream.aclose()
    await airframe.aclose_all()
    assert await emu.await_connections(0)


async def test_tools_refused_natively_without_io(emu: Emulator) -> None:
    with pytest.raises(BadRequestError):
        await ADAPTER.infer(native(emu), req(tools=[ToolSpec("f")]))
    assert emu.requests == []


async def test_openai_mode_stream_and_infer(emu: Emulator) -> None:
    endpoint = openai_mode(emu)
    emu.script(Reply.text("Hi you", usage=USAGE), Reply.text("Hi again", usage=USAGE))
    events_ = await collect(ADAPTER.stream_infer(endpoint, req(model="tiny-llama")))
    result = events_[-1].result
    assert result is not None
    assert result.text == "Hi you"
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (17, 2)
    assert result.raw is not None
    assert result.raw["timings"]["prompt_n"] == 17
    result = await ADAPTER.infer(endpoint, req(tools=[ToolSpec("f")]))
    assert result.text == "Hi again"
    assert result.raw is not None
    assert "timings" in result.raw
    assert paths(emu) == ["/v1/chat/completions", "/v1/chat/completions"]
    assert emu.requests[-1].json["tools"][0]["function"]["name"] == "f"


async def test_openai_mode_context_error(emu: Emulator) -> None:
    emu.script(Fault.context_length(prompt_tokens=300, n_ctx=256))
    with pytest.raises(ContextLengthError) as info:
        await collect(ADAPTER.stream_infer(openai_mode(emu), req()))
    assert (info.value.prompt_tokens, info.value.context_window) == (300, 256)
    assert info.value.backend == "llama_server"


async def test_auth_error(emu: Emulator) -> None:
    emu.api_key = KEY
    with pytest.raises(AuthError):
        await ADAPTER.infer(native(emu, api_key="wrong-key-123"), req())
    assert paths(emu) == ["/apply-template"]


async def _fixed_server(status: int, payload: Any) -> tuple[asyncio.Server, str]:
    """A one-answer HTTP server (for server states the emulator does not play)."""
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_slots_disabled_is_not_found() -> None:
    error = {
        "code": 501,
        "message": "This server does not support slots endpoint. Start it with `--slots`",
        "type": "not_supported_error",
    }
    server, url = await _fixed_server(501, {"error": error})
    async with server:
        with pytest.raises(NotFoundError, match="--slots") as info:
            await ADAPTER.slots(EndpointSpec(url, BackendKind.LLAMA_SERVER, retry=FAST))
    assert info.value.status_code == 501
    assert isinstance(info.value.__cause__, BadRequestError)
