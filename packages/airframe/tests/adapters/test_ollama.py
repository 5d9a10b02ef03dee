"""Ollama adapter: `/api/chat` bodies, NDJSON stream parsing, error mapping, model management.

Unit tests feed payloads and NDJSON lines straight to the adapter; the socket tests further down
run whole calls over loopback against `airframe.testing.Emulator`.
"""

from __future__ import annotations

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
    ProtocolError,
    ResponseFormat,
    RetryPolicy,
    ServerError,
    StreamEventType,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
)
from airframe._transport import http_error
from airframe.adapters import get_adapter
from airframe.adapters.ollama import (
    OllamaAdapter,
    OllamaStreamParser,
    PullProgress,
    PullStreamParser,
)
from airframe.testing import Emulator, Fault, Reply, TokenCounts

ENDPOINT = EndpointSpec("http://127.0.0.1:11434", BackendKind.OLLAMA)
ADAPTER = OllamaAdapter()
MODEL = "llama3.2"
PNG = b"\x89PNG\r\n\x1a\nfake"

FINAL: dict[str, Any] = {
    "model": MODEL,
    "created_at": "2025-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": ""},
    "done_reason": "stop",
    "done": True,
    "total_duration": 4_000_000_000,
    "load_duration": 1_000_000,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 130_000_000,
    "eval_count": 200,
    "eval_duration": 2_000_000_000,
}


def req(*messages: Message, **kwargs: Any) -> InferenceRequest:
    kwargs.setdefault("model", MODEL)
    return InferenceRequest(messages=list(messages) or [Message.user("hi")], **kwargs)


def body(request: InferenceRequest, *, stream: bool = False) -> dict[str, Any]:
    wire = ADAPTER.build_chat(ENDPOINT, request, stream=stream)
    assert (wire.method, wire.path) == ("POST", "/api/chat")
    assert isinstance(wire.json, dict)
    return wire.json


def line(obj: Any) -> str:
    return json.dumps(obj)


def chunk(**message: Any) -> str:
    return line({"model": MODEL, "message": {"role": "assistant", **message}, "done": False})


def feed(parser: Any, *items: str) -> list[InferenceStreamEvent]:
    out: list[InferenceStreamEvent] = []
    for item in items:
        out.extend(parser.feed(item))
    return out


def classify(status: int | None, message: str) -> Any:
    payload = {"error": message}
    return ADAPTER.classify_error(status, payload, json.dumps(payload))


# --------------------------------------------------------------------------------------------
# Registry, auth, checks


def test_registry_resolves_the_adapter() -> None:
    adapter = get_adapter(BackendKind.OLLAMA)
    assert isinstance(adapter, OllamaAdapter)
    assert adapter.kind is BackendKind.OLLAMA
    assert adapter.stream_format == "ndjson"
    assert adapter.capabilities.image_urls is False
    assert adapter.capabilities.tools


def test_auth_is_bearer_when_a_key_is_set() -> None:
    assert ADAPTER.auth_headers(ENDPOINT) == {}
    keyed = EndpointSpec("https://ollama.test", BackendKind.OLLAMA, api_key="k-123456")
    assert ADAPTER.auth_headers(keyed) == {"authorization": "Bearer k-123456"}


def test_a_model_name_is_required_before_any_io() -> None:
    with pytest.raises(BadRequestError, match="model name"):
        ADAPTER.stream_infer(ENDPOINT, InferenceRequest.from_prompt("hi"))


def test_image_urls_are_refused_bytes_and_data_urls_pass() -> None:
    remote = req(Message.user([TextPart("see"), ImagePart(url="https://x.test/a.png")]))
    with pytest.raises(BadRequestError, match="image bytes"):
        ADAPTER.check_request(ENDPOINT, remote)
    ADAPTER.check_request(ENDPOINT, req(Message.user([ImagePart(data=PNG)])))
    ADAPTER.check_request(
        ENDPOINT, req(Message.user([ImagePart(url="data:image/png;base64,QQ==")]))
    )


# --------------------------------------------------------------------------------------------
# Request bodies


def test_body_maps_parameters_to_options() -> None:
    request = req(
        max_tokens=64,
        temperature=0.1,
        top_p=0.8,
        stop=["\n"],
        seed=7,
        extra_body={"keep_alive": "10m", "think": True, "options": {"num_ctx": 8192}},
    )
    assert body(request, stream=True) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "options": {
            "num_predict": 64,
            "temperature": 0.1,
            "top_p": 0.8,
            "stop": ["\n"],
            "seed": 7,
            "num_ctx": 8192,
        },
        "keep_alive": "10m",
        "think": True,
    }


def test_minimal_body_has_no_options() -> None:
    assert body(req()) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }


def test_messages_images_tool_calls_and_results() -> None:
    call = ToolCall("call_0", "get_weather", {"city": "Paris"}, '{"city": "Paris"}')
    request = req(
        Message.user([TextPart("what is"), ImagePart(data=PNG), TextPart(" this?")]),
        Message.assistant("", tool_calls=[call]),
        Message.tool("sunny", "call_0", name="get_weather"),
        system="be brief",
    )
    assert body(request)["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": "what is this?",
            "images": [base64.b64encode(PNG).decode()],
        },
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]


def test_tools_and_formats() -> None:
    tool = ToolSpec("f", "does f", {"type": "object", "properties": {"x": {"type": "integer"}}})
    sent = body(req(tools=[tool]))
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "does f", "parameters": dict(tool.parameters)},
        }
    ]
    assert "tools" not in body(req(tools=[tool], tool_choice="none"))
    assert body(req(response_format=ResponseFormat.json_object()))["format"] == "json"
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert body(req(response_format=ResponseFormat.json_schema("r", schema)))["format"] == schema


# --------------------------------------------------------------------------------------------
# Non-stream responses


def test_parse_whole_answer() -> None:
    payload = {**FINAL, "message": {"role": "assistant", "content": "Hello!", "thinking": "hm"}}
    result = ADAPTER.parse_chat(ENDPOINT, payload)
    assert result.text == "Hello!"
    assert result.reasoning == "hm"
    assert result.finish_reason is FinishReason.STOP
    assert result.model == MODEL
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (26, 200)
    assert result.raw is not None
    assert result.raw["total_duration"] == 4_000_000_000
    assert result.raw["load_duration"] == 1_000_000
    assert result.raw["prompt_eval_duration"] == 130_000_000
    assert result.raw["eval_duration"] == 2_000_000_000
    assert result.raw["tokens_per_second"] == pytest.approx(100.0)
    assert result.raw["prompt_tokens_per_second"] == pytest.approx(200.0)


def test_missing_counts_are_unknown_not_zero() -> None:
    cached = {k: v for k, v in FINAL.items() if k != "prompt_eval_count"}
    result = ADAPTER.parse_chat(ENDPOINT, cached)
    assert result.usage is not None
    assert result.usage.input_tokens is None
    assert result.usage.output_tokens == 200
    bare = {"model": MODEL, "message": {"role": "assistant", "content": "x"}, "done": True}
    assert ADAPTER.parse_chat(ENDPOINT, bare).usage is None


def test_parse_tool_calls_with_object_arguments() -> None:
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
        {"id": "call_given", "function": {"index": 1, "name": "noop", "arguments": {}}},
    ]
    payload = {**FINAL, "message": {"role": "assistant", "content": "", "tool_calls": calls}}
    result = ADAPTER.parse_chat(ENDPOINT, payload)
    assert result.finish_reason is FinishReason.TOOL_CALLS
    first, second = result.tool_calls
    assert (first.id, first.name, first.arguments) == (
        "call_0",
        "get_weather",
        {"city": "Paris", "unit": "c"},
    )
    assert json.loads(first.raw_arguments) == {"city": "Paris", "unit": "c"}
    assert (second.id, second.name, second.arguments, second.raw_arguments) == (
        "call_given",
        "noop",
        {},
        "{}",
    )


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("stop", FinishReason.STOP), ("length", FinishReason.LENGTH), ("load", FinishReason.OTHER)],
)
def test_done_reasons(reason: str, finish: FinishReason) -> None:
    assert ADAPTER.parse_chat(ENDPOINT, {**FINAL, "done_reason": reason}).finish_reason is finish


def test_parse_error_body_raises() -> None:
    with pytest.raises(AirframeError) as info:
        ADAPTER.parse_chat(ENDPOINT, {"error": "model 'x' not found, try pulling it first"})
    assert info.value.category is ErrorCategory.NOT_FOUND


# --------------------------------------------------------------------------------------------
# Stream


def test_stream_text_reasoning_tool_calls_then_done() -> None:
    parser = ADAPTER.stream_parser(ENDPOINT, req())
    assert isinstance(parser, OllamaStreamParser)
    call = {"function": {"name": "f", "arguments": {"x": 1}}}
    out = feed(
        parser,
        chunk(content="", thinking="Let me"),
        chunk(content="", thinking=" think"),
        chunk(content="Hel"),
        chunk(content="lo"),
        chunk(content="", tool_calls=[call]),
        chunk(content="", tool_calls=[{"function": {"name": "g", "arguments": {}}}]),
    )
    assert [(e.type, e.content) for e in out[:4]] == [
        (StreamEventType.REASONING, "Let me"),
        (StreamEventType.REASONING, " think"),
        (StreamEventType.TOKEN, "Hel"),
        (StreamEventType.TOKEN, "lo"),
    ]
    calls = [e.tool_call for e in out[4:]]
    assert [e.type for e in out[4:]] == [StreamEventType.TOOL_CALL] * 2
    assert [(c.id, c.name, c.arguments) for c in calls if c] == [
        ("call_0", "f", {"x": 1}),
        ("call_1", "g", {}),
    ]
    assert not parser.done
    partial = parser.result()
    assert partial.text == "Hello"
    assert partial.usage is None

    out = feed(parser, line(FINAL))
    assert parser.done
    assert [e.type for e in out] == [StreamEventType.USAGE]
    result = parser.result()
    assert result.text == "Hello"
    assert result.reasoning == "Let me think"
    assert result.finish_reason is FinishReason.TOOL_CALLS
    assert len(result.tool_calls) == 2
    assert result.usage is not None
    assert result.usage.output_tokens == 200
    assert result.raw is not None
    assert result.raw["eval_duration"] == 2_000_000_000


def test_stream_done_without_prompt_count() -> None:
    parser = ADAPTER.stream_parser(ENDPOINT, req())
    final = {k: v for k, v in FINAL.items() if k != "prompt_eval_count"}
    feed(parser, chunk(content="x"), line(final))
    usage = parser.result().usage
    assert usage is not None
    assert usage.input_tokens is None
    assert usage.output_tokens == 200


def test_stream_error_line_raises_typed() -> None:
    parser = ADAPTER.stream_parser(ENDPOINT, req())
    feed(parser, chunk(content="partial"))
    with pytest.raises(AirframeError) as info:
        parser.feed(line({"error": "server busy, please try again.  maximum pending requests"}))
    assert info.value.category is ErrorCategory.OVERLOADED
    assert info.value.status_code is None
    assert info.value.backend == "ollama"


def test_pull_parser_reports_progress_until_success() -> None:
    seen: list[PullProgress] = []
    parser = PullStreamParser(ADAPTER, ENDPOINT, MODEL, seen.append)
    out = feed(
        parser,
        line({"status": "pulling manifest"}),
        line({"status": "pulling abc", "digest": "sha256:abc", "total": 100}),
        line({"status": "pulling abc", "digest": "sha256:abc", "total": 100, "completed": 40}),
        line({"status": "verifying sha256 digest"}),
    )
    assert out == []
    assert not parser.done
    feed(parser, line({"status": "success"}))
    assert parser.done
    assert [p.status for p in seen][-1] == "success"
    assert seen[1] == PullProgress("pulling abc", "sha256:abc", 100, None)
    assert seen[1].fraction is None
    assert seen[2].fraction == pytest.approx(0.4)
    with pytest.raises(AirframeError) as info:
        PullStreamParser(ADAPTER, ENDPOINT, "nope", None).feed(
            line({"error": "pull model manifest: file does not exist"})
        )
    assert info.value.category is ErrorCategory.NOT_FOUND


# --------------------------------------------------------------------------------------------
# Errors


def test_error_mapping() -> None:
    assert classify(404, "model 'x' not found, try pulling it first").category == "not_found"
    assert classify(None, 'model "x" not found, try pulling it first').category == "not_found"
    assert classify(503, "server busy, please try again.").category == "overloaded"
    assert classify(500, "server busy, please try again.").category == "overloaded"
    assert classify(500, "llama runner process has terminated").category == "server"
    assert classify(400, "invalid request").category == "bad_request"
    assert classify(401, "unauthorized").category == "auth"
    assert classify(429, "too many requests, please slow down").category == "rate_limit"
    assert classify(None, "too many requests, please slow down").category == "rate_limit"
    assert classify(429, "you have reached your usage quota").category == "quota"
    assert classify(400, "content blocked by the safety filter").category == "content_filter"
    assert classify(403, "forbidden").category == "auth"
    assert classify(408, "timed out waiting for llama runner to start").category == "timeout"
    assert classify(None, "unexpected EOF").category == "server"
    info = classify(400, "the input length exceeds the context length")
    assert info.category is ErrorCategory.CONTEXT_LENGTH
    assert (info.prompt_tokens, info.context_window) == (None, None)


def test_context_error_from_the_runner_carries_numbers() -> None:
    runner = {
        "error": {
            "code": 400,
            "message": "request (5000 tokens) exceeds the available context size (4096 tokens)",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 5000,
            "n_ctx": 4096,
        }
    }
    payload = {"error": json.dumps(runner)}
    error = http_error(ADAPTER, ENDPOINT, 400, None, json.dumps(payload).encode())
    assert isinstance(error, ContextLengthError)
    assert (error.prompt_tokens, error.context_window) == (5000, 4096)
    assert error.message.startswith("request (5000 tokens)")
    plain = classify(400, "request (10 tokens) exceeds the available context size (8 tokens)")
    assert (plain.prompt_tokens, plain.context_window) == (10, 8)


# --------------------------------------------------------------------------------------------
# Models and health


def test_models_and_health_requests() -> None:
    assert ADAPTER.models_request(ENDPOINT).path == "/api/tags"
    payload = {"models": [{"name": "a:latest", "model": "a:latest"}, {"model": "b:7b"}, {}]}
    assert ADAPTER.parse_models(payload) == ["a:latest", "b:7b"]
    assert ADAPTER.health_request(ENDPOINT).path == "/api/version"
    ok = ADAPTER.parse_health(200, {"version": "0.12.6"})
    assert (ok.ok, ok.state, ok.info) == (True, "ok", {"version": "0.12.6"})
    bad = ADAPTER.parse_health(500, {"error": "boom"})
    assert (bad.ok, bad.state, bad.detail) == (False, "error", "boom")


# --------------------------------------------------------------------------------------------
# Over loopback sockets, against the wire emulator

FAST = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.005)
EMU_MODEL = "emulator-1"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(model=EMU_MODEL) as emulator:
        yield emulator


def endpoint_of(emu: Emulator, **kwargs: Any) -> EndpointSpec:
    kwargs.setdefault("retry", FAST)
    return EndpointSpec(emu.base_url("ollama"), BackendKind.OLLAMA, **kwargs)


def ereq(*messages: Message, **kwargs: Any) -> InferenceRequest:
    kwargs.setdefault("model", EMU_MODEL)
    return req(*messages, **kwargs)


async def collect(
    agen: Any, into: list[InferenceStreamEvent] | None = None
) -> list[InferenceStreamEvent]:
    out = [] if into is None else into
    async for event in agen:
        out.append(event)
    return out


USAGE = TokenCounts(input_tokens=31, output_tokens=3)


async def test_infer_non_stream(emu: Emulator) -> None:
    emu.script(Reply.text("Hello there friend", reasoning="hmm", usage=USAGE))
    request = ereq(max_tokens=50, temperature=0.3, extra_body={"keep_alive": "5m"})
    result = await ADAPTER.infer(endpoint_of(emu), request)
    assert result.text == "Hello there friend"
    assert result.reasoning == "hmm"
    assert result.finish_reason is FinishReason.STOP
    assert result.usage == Usage(31, 3)
    assert result.model == EMU_MODEL
    assert result.raw is not None
    assert result.raw["eval_duration"] == 3_000_000
    assert result.raw["tokens_per_second"] == pytest.approx(1000.0)
    sent = emu.last_request
    assert sent.path == "/api/chat"
    assert sent.json == {
        "model": EMU_MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"num_predict": 50, "temperature": 0.3},
        "keep_alive": "5m",
    }


async def test_stream_text_reasoning_and_usage(emu: Emulator) -> None:
    emu.script(Reply.text("one two", reasoning="think first", usage=USAGE))
    events = await collect(ADAPTER.stream_infer(endpoint_of(emu), ereq()))
    kinds = [(e.type, e.content) for e in events[:-2]]
    assert kinds == [
        (StreamEventType.REASONING, "think"),
        (StreamEventType.REASONING, " first"),
        (StreamEventType.TOKEN, "one"),
        (StreamEventType.TOKEN, " two"),
    ]
    assert events[-2].type is StreamEventType.USAGE
    assert events[-2].usage == Usage(31, 3)
    result = events[-1].result
    assert result is not None
    assert (result.text, result.reasoning) == ("one two", "think first")
    assert result.usage == Usage(31, 3)
    assert emu.last_request.json["stream"] is True


async def test_stream_tool_calls(emu: Emulator) -> None:
    emu.script(Reply.tool_calls([("get_weather", {"city": "Paris"}), ("noop", {})]))
    tool = ToolSpec("get_weather", "weather", {"type": "object"})
    events = await collect(ADAPTER.stream_infer(endpoint_of(emu), ereq(tools=[tool])))
    calls = [e.tool_call for e in events if e.type is StreamEventType.TOOL_CALL]
    assert [(c.name, c.arguments) for c in calls if c] == [
        ("get_weather", {"city": "Paris"}),
        ("noop", {}),
    ]
    assert all(c is not None and c.id for c in calls)
    result = events[-1].result
    assert result is not None
    assert result.finish_reason is FinishReason.TOOL_CALLS
    assert [c.name for c in result.tool_calls] == ["get_weather", "noop"]
    assert json.loads(result.tool_calls[0].raw_arguments) == {"city": "Paris"}
    assert emu.last_request.json["tools"][0]["function"]["name"] == "get_weather"


async def test_images_are_sent_as_base64(emu: Emulator) -> None:
    await ADAPTER.infer(endpoint_of(emu), ereq(Message.user([TextPart("what"), ImagePart(PNG)])))
    message = emu.last_request.json["messages"][0]
    assert message == {
        "role": "user",
        "content": "what",
        "images": [base64.b64encode(PNG).decode()],
    }


async def test_unknown_model_is_not_found(emu: Emulator) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        await ADAPTER.infer(endpoint_of(emu), ereq(model="nope"))
    assert len(emu.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_context_error_with_numbers(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.context_length(prompt_tokens=5000, n_ctx=4096))
    endpoint = endpoint_of(emu)
    call = (
        collect(ADAPTER.stream_infer(endpoint, ereq()))
        if stream
        else ADAPTER.infer(endpoint, ereq())
    )
    with pytest.raises(ContextLengthError) as info:
        await call
    assert (info.value.prompt_tokens, info.value.context_window) == (5000, 4096)
    assert info.value.status_code == 400
    assert len(emu.requests) == 1


async def test_busy_is_retried(emu: Emulator) -> None:
    emu.script(Fault.overloaded(), Reply.text("finally"))
    result = await ADAPTER.infer(endpoint_of(emu), ereq())
    assert result.text == "finally"
    assert len(emu.requests) == 2


async def test_error_line_first_is_retried(emu: Emulator) -> None:
    emu.script(Fault.in_band_error(after_chunks=0, kind="overloaded"), Reply.text("ok then"))
    events = await collect(ADAPTER.stream_infer(endpoint_of(emu), ereq()))
    assert events[-1].result is not None
    assert events[-1].result.text == "ok then"
    assert len(emu.requests) == 2


async def test_error_line_mid_stream(emu: Emulator) -> None:
    emu.script(Fault.in_band_error(after_chunks=2, kind="server", reply=Reply.text("a b c")))
    seen: list[InferenceStreamEvent] = []
    with pytest.raises(InterruptedError) as info:
        await collect(ADAPTER.stream_infer(endpoint_of(emu), ereq()), into=seen)
    assert [e.content for e in seen] == ["a", " b"]
    cause = info.value.__cause__
    assert isinstance(cause, ServerError)
    assert "llama runner" in cause.message
    assert info.value.partial is not None
    assert info.value.partial.text == "a b"
    assert len(emu.requests) == 1


async def test_truncated_stream(emu: Emulator) -> None:
    endpoint = endpoint_of(emu)
    emu.script(Fault.no_terminator(reply=Reply.text("")))
    with pytest.raises(ProtocolError, match="terminator"):
        await collect(ADAPTER.stream_infer(endpoint, ereq()))
    emu.script(Fault.no_terminator(reply=Reply.text("cut here")))
    with pytest.raises(InterruptedError) as info:
        await collect(ADAPTER.stream_infer(endpoint, ereq()))
    assert isinstance(info.value.__cause__, ProtocolError)
    assert info.value.partial is not None
    assert info.value.partial.text == "cut here"
    emu.script(Fault.drop(after_chunks=1, reply=Reply.text("x y z")))
    with pytest.raises(InterruptedError) as info:
        await collect(ADAPTER.stream_infer(endpoint, ereq()))
    assert info.value.partial is not None
    assert info.value.partial.text == "x"


async def test_bearer_key_for_a_proxy(emu: Emulator) -> None:
    emu.api_key = "proxy-key-abcdef"
    with pytest.raises(AuthError):
        await ADAPTER.infer(endpoint_of(emu), ereq())
    result = await ADAPTER.infer(endpoint_of(emu, api_key="proxy-key-abcdef"), ereq())
    assert result.text == "echo: hi"
    assert emu.last_request.headers["authorization"] == "Bearer proxy-key-abcdef"


async def test_models_show_pull_ensure(emu: Emulator) -> None:
    endpoint = endpoint_of(emu)
    assert await ADAPTER.list_models(endpoint) == [f"{EMU_MODEL}:latest"]
    shown = await ADAPTER.show(endpoint, EMU_MODEL)
    assert shown["details"]["format"] == "gguf"
    with pytest.raises(NotFoundError):
        await ADAPTER.show(endpoint, "qwen3:0.6b")

    seen: list[PullProgress] = []
    assert await ADAPTER.ensure_model(endpoint, "qwen3:0.6b", seen.append) is True
    assert seen[0].status == "pulling manifest"
    assert seen[-1].status == "success"
    fractions = [p.fraction for p in seen if p.fraction is not None]
    assert fractions == [0.0, pytest.approx(0.25, abs=0.01), pytest.approx(0.5, abs=0.01), 1.0]
    assert all(p.digest and p.total for p in seen if p.completed is not None)
    assert "qwen3:0.6b" in await ADAPTER.list_models(endpoint)
    pulls = [r for r in emu.requests if r.path == "/api/pull"]
    assert [r.json for r in pulls] == [{"model": "qwen3:0.6b", "stream": True}]

    assert await ADAPTER.ensure_model(endpoint, "qwen3:0.6b") is False
    assert await ADAPTER.ensure_model(endpoint, EMU_MODEL) is False
    assert len([r for r in emu.requests if r.path == "/api/pull"]) == 1
    await ADAPTER.pull_model(endpoint, "tinyllama")  # no callback
    assert "tinyllama:latest" in await ADAPTER.list_models(endpoint)


async def test_health_and_availability(emu: Emulator) -> None:
    endpoint = endpoint_of(emu)
    health = await ADAPTER.health_check(endpoint)
    assert (health.ok, health.state) == (True, "ok")
    assert health.info["version"]
    assert await ADAPTER.is_available(endpoint) is True
    assert emu.last_request.path == "/api/version"
    emu.stop()
    health = await ADAPTER.health_check(endpoint)
    assert (health.ok, health.state) == (False, "down")
    assert await ADAPTER.is_available(endpoint) is False


async def test_closing_a_stream_early_releases_the_connection(emu: Emulator) -> None:
    emu.script(Reply.text("a b c d e f g h"))
    stream = ADAPTER.stream_infer(endpoint_of(emu), ereq())
    first = await anext(stream)
    assert first.content == "a"
    await stream.aclose()
    await airframe.aclose_all()
    assert await emu.await_connections(0)
