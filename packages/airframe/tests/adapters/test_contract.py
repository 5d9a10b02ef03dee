"""One contract, every backend: the same features and faults over real sockets for each adapter.

A new backend gets this whole suite by adding one entry to `BACKENDS` (and its protocol to the
emulator). Backend-specific wire details live in each adapter's own test module.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

import airframe
from airframe import (
    EndpointSpec,
    ErrorCategory,
    ImagePart,
    InferenceRequest,
    Message,
    ResponseFormat,
    RetryPolicy,
    StreamEventType,
    Timeouts,
    ToolSpec,
    get_adapter,
)
from airframe.testing import Emulator, Fault, Reply

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.002)
MODEL = "emulator-1"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@dataclass(frozen=True)
class Backend:
    id: str
    endpoint: Callable[[Emulator], EndpointSpec]


def _spec(kind: str, **kwargs: object) -> Callable[[Emulator], EndpointSpec]:
    def make(emu: Emulator) -> EndpointSpec:
        return EndpointSpec(
            emu.base_url(kind),
            kind,  # type: ignore[arg-type]
            retry=FAST_RETRY,
            timeouts=Timeouts(read=5.0),
            **kwargs,  # type: ignore[arg-type]
        )

    return make


BACKENDS = [
    Backend("openai", _spec("openai", api_key="sk-contract")),
    Backend("azure_openai", _spec("azure_openai", api_key="az-contract", deployment=MODEL)),
    Backend("anthropic", _spec("anthropic", api_key="ant-contract")),
    Backend("llama_server-native", _spec("llama_server")),
    Backend("llama_server-openai", _spec("llama_server", api_type="openai")),
    Backend("ollama", _spec("ollama")),
]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as server:
        yield server


@pytest.fixture(params=BACKENDS, ids=lambda b: b.id)
def endpoint(request: pytest.FixtureRequest, emu: Emulator) -> EndpointSpec:
    emu.reset()
    backend: Backend = request.param
    return backend.endpoint(emu)


_HELPER_PATHS = ("/apply-template", "/tokenize", "/detokenize")


def _inferences(emu: Emulator) -> int:
    """Inference requests received (llama-server's native mode also renders its template)."""
    return sum(1 for r in emu.requests if not r.path.endswith(_HELPER_PATHS))


def _request(text: str = "hello contract", **kwargs: object) -> InferenceRequest:
    return InferenceRequest(messages=[Message.user(text)], model=MODEL, **kwargs)  # type: ignore[arg-type]


async def _collect(
    endpoint: EndpointSpec, request: InferenceRequest
) -> list[airframe.InferenceStreamEvent]:
    adapter = get_adapter(endpoint.backend_kind)
    async with contextlib.aclosing(adapter.stream_infer(endpoint, request)) as stream:
        return [event async for event in stream]


def _caps(endpoint: EndpointSpec) -> airframe.adapters.Capabilities:
    return get_adapter(endpoint.backend_kind).capabilities_for(endpoint)


# -- features --------------------------------------------------------------------------------


async def test_stream_and_whole_answers_agree(emu: Emulator, endpoint: EndpointSpec) -> None:
    adapter = get_adapter(endpoint.backend_kind)
    emu.script(Reply.text("The quick brown fox"), Reply.text("The quick brown fox"))
    whole = await adapter.infer(endpoint, _request())
    events = await _collect(endpoint, _request())
    assert events[-1].type is StreamEventType.MESSAGE
    assert all(e.type is not StreamEventType.MESSAGE for e in events[:-1])
    streamed = "".join(e.content for e in events if e.type is StreamEventType.TOKEN)
    final = events[-1].result
    assert final is not None
    assert streamed == final.text == whole.text == "The quick brown fox"
    assert final.finish_reason is whole.finish_reason is airframe.FinishReason.STOP
    assert final.usage is not None
    assert whole.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens == 4
    assert final.usage.input_tokens == whole.usage.input_tokens


async def test_system_prompt_and_params_reach_the_wire(
    emu: Emulator, endpoint: EndpointSpec
) -> None:
    request = _request(system="Be terse.", max_tokens=64, temperature=0.25)
    await get_adapter(endpoint.backend_kind).infer(endpoint, request)
    body = emu.last_request.json
    assert "Be terse." in str(body)
    assert "0.25" in str(body)
    assert "64" in str(body)


async def test_tool_call_round_trip(emu: Emulator, endpoint: EndpointSpec) -> None:
    if not _caps(endpoint).tools:
        with pytest.raises(airframe.BadRequestError):
            await get_adapter(endpoint.backend_kind).infer(
                endpoint, _request(tools=[ToolSpec("get_weather")])
            )
        assert emu.requests == []
        return
    tool = ToolSpec(
        "get_weather", "Weather for a city", {"type": "object", "properties": {"city": {}}}
    )
    emu.script(Reply.tool_calls([("get_weather", {"city": "Paris"})]), Reply.text("Sunny."))
    events = await _collect(endpoint, _request("weather?", tools=[tool]))
    calls = [e.tool_call for e in events if e.type is StreamEventType.TOOL_CALL]
    assert len(calls) == 1
    assert calls[0] is not None
    assert calls[0].name == "get_weather"
    assert calls[0].arguments == {"city": "Paris"}
    result = events[-1].result
    assert result is not None
    assert result.finish_reason is airframe.FinishReason.TOOL_CALLS
    follow_up = InferenceRequest(
        messages=[
            Message.user("weather?"),
            Message.assistant("", result.tool_calls),
            Message.tool('{"sky": "clear"}', calls[0].id, "get_weather"),
        ],
        model=MODEL,
        tools=[tool],
    )
    answer = await get_adapter(endpoint.backend_kind).infer(endpoint, follow_up)
    assert answer.text == "Sunny."
    assert "clear" in str(emu.last_request.json)


async def test_images_are_sent_or_refused_before_io(emu: Emulator, endpoint: EndpointSpec) -> None:
    request = InferenceRequest(
        messages=[Message.user([airframe.TextPart("what is this?"), ImagePart(data=PNG)])],
        model=MODEL,
    )
    adapter = get_adapter(endpoint.backend_kind)
    if not _caps(endpoint).vision:
        with pytest.raises(airframe.BadRequestError):
            await adapter.infer(endpoint, request)
        assert emu.requests == []
        return
    await adapter.infer(endpoint, request)
    assert base64.b64encode(PNG).decode() in emu.last_request.body.decode()


@pytest.mark.parametrize(
    "fmt",
    [ResponseFormat.json_object(), ResponseFormat.json_schema("answer", {"type": "object"})],
    ids=["json_object", "json_schema"],
)
async def test_structured_output(
    emu: Emulator, endpoint: EndpointSpec, fmt: ResponseFormat
) -> None:
    caps = _caps(endpoint)
    supported = caps.json_schema if fmt.type == "json_schema" else caps.json_object
    adapter = get_adapter(endpoint.backend_kind)
    emu.script(Reply.text('{"ok": true}'))
    if not supported:
        with pytest.raises(airframe.BadRequestError):
            await adapter.infer(endpoint, _request(response_format=fmt))
        return
    result = await adapter.infer(endpoint, _request(response_format=fmt))
    assert result.text == '{"ok": true}'


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.rate_limit(retry_after=0.001),
        Fault.server_error(),
        Fault.overloaded(),
        Fault.drop(after_chunks=0),
        Fault.in_band_error(after_chunks=0, kind="overloaded"),
    ],
    ids=["429", "500", "overloaded", "drop-before-output", "in-band-overloaded-first"],
)
async def test_retryable_failures_before_output_are_retried(
    emu: Emulator, endpoint: EndpointSpec, fault: Fault
) -> None:
    emu.script(fault, Reply.text("recovered fine"))
    events = await _collect(endpoint, _request())
    result = events[-1].result
    assert result is not None
    assert result.text == "recovered fine"
    assert _inferences(emu) == 2


async def test_failure_after_output_is_interrupted_with_partial(
    emu: Emulator, endpoint: EndpointSpec
) -> None:
    emu.script(Fault.drop(after_chunks=6, reply=Reply.text("one two three four five six seven")))
    received: list[str] = []

    async def consume() -> None:
        stream = get_adapter(endpoint.backend_kind).stream_infer(endpoint, _request())
        async with contextlib.aclosing(stream):
            async for event in stream:  # appended one by one: the failure comes mid-stream
                if event.type is StreamEventType.TOKEN:
                    received.append(event.content)  # noqa: PERF401

    with pytest.raises(airframe.InterruptedError) as info:
        await consume()
    err = info.value
    assert received, "some output arrived before the drop"
    assert err.partial is not None
    assert err.partial.text == "".join(received)
    assert isinstance(err.__cause__, airframe.AirframeError)
    assert err.__cause__.category in (ErrorCategory.CONNECTION, ErrorCategory.PROTOCOL)
    assert _inferences(emu) == 1, "never retried after output began"


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        (Fault.no_terminator(reply=Reply.text("x")), ErrorCategory.INTERRUPTED),
        (Fault.malformed_chunk(after_chunks=0), ErrorCategory.PROTOCOL),
        (Fault.html_200(), ErrorCategory.PROTOCOL),
        (Fault.auth(), ErrorCategory.AUTH),
        (Fault.context_length(prompt_tokens=9000, n_ctx=4096), ErrorCategory.CONTEXT_LENGTH),
        (Fault.quota(), ErrorCategory.QUOTA),
        (Fault.content_filter(), ErrorCategory.CONTENT_FILTER),
    ],
    ids=["no-terminator", "malformed", "html-200", "auth", "context-length", "quota", "filter"],
)
async def test_failures_that_are_not_retried(
    emu: Emulator, endpoint: EndpointSpec, fault: Fault, category: ErrorCategory
) -> None:
    emu.script(fault, Reply.text("must not be reached"))
    with pytest.raises(airframe.AirframeError) as info:
        await _collect(endpoint, _request())
    assert info.value.category is category
    assert _inferences(emu) == 1
    assert info.value.backend == endpoint.backend_kind.value
    if category is ErrorCategory.CONTEXT_LENGTH:
        err = info.value
        assert isinstance(err, airframe.ContextLengthError)
        assert err.context_window == 4096


async def test_retries_run_out_and_keep_the_category(emu: Emulator, endpoint: EndpointSpec) -> None:
    emu.script(*[Fault.server_error()] * 3)
    with pytest.raises(airframe.ServerError) as info:
        await get_adapter(endpoint.backend_kind).infer(endpoint, _request())
    assert info.value.retryable is True
    assert _inferences(emu) == FAST_RETRY.max_retries + 1


async def test_early_close_releases_the_connection(emu: Emulator, endpoint: EndpointSpec) -> None:
    adapter = get_adapter(endpoint.backend_kind)
    for _ in range(5):
        emu.script(Reply.text("a b c d e f g h i j"))
        async with contextlib.aclosing(adapter.stream_infer(endpoint, _request())) as stream:
            async for event in stream:
                if event.type is StreamEventType.TOKEN:
                    break
    assert await emu.await_connections(1)
    assert airframe._pool.open_connection_count(endpoint.base_url) <= 1


async def test_health_and_models(emu: Emulator, endpoint: EndpointSpec) -> None:
    adapter = get_adapter(endpoint.backend_kind)
    status = await adapter.health_check(endpoint)
    assert status.ok
    assert status.state == "ok"
    assert any(m.split(":")[0] == MODEL for m in await adapter.list_models(endpoint))


async def test_unreachable_server_is_a_connection_error() -> None:
    for kind in airframe.BackendKind:
        spec = EndpointSpec("http://127.0.0.1:9", kind, retry=RetryPolicy(max_retries=0))
        with pytest.raises(airframe.ConnectionError):
            await get_adapter(spec.backend_kind).infer(spec, _request())
        health = await get_adapter(spec.backend_kind).health_check(spec)
        assert health.state == "down"
