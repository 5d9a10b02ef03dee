"""Azure OpenAI adapter: URLs, auth, versions, content filters and errors.

A few unit tests call the adapter's translation methods directly; everything else runs whole
calls over real loopback sockets against `airframe.testing.Emulator`, through the shared
transport. Retries use tiny delays; nothing sleeps to wait and nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator
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
    TransportHooks,
)
from airframe._pool import open_connection_count
from airframe._streams import SSEEvent
from airframe.adapters import get_adapter
from airframe.adapters.azure import (
    DEFAULT_API_VERSION,
    AzureOpenAIAdapter,
    AzureOpenAIStreamParser,
)
from airframe.adapters.openai import OpenAIAdapter
from airframe.testing import Emulator, Fault, Reply

KEY = "sk-canary-azure-8c41f0e2d9"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.canary-entra-token"
DEPLOYMENT = "gpt-4o-prod"
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.01)
TIMEOUTS = Timeouts(connect=5.0, read=5.0, write=5.0, pool=5.0)
ADAPTER = get_adapter(BackendKind.AZURE_OPENAI)
AZURE = AzureOpenAIAdapter()
MAX_ATTEMPTS = FAST.max_retries + 1

TEXT = StreamEventType.TOKEN
MESSAGE = StreamEventType.MESSAGE


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(api_key=KEY) as emulator:
        yield emulator


def endpoint(emu: Emulator, *, suffix: str = "", **kwargs: Any) -> EndpointSpec:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("deployment", DEPLOYMENT)
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeouts", TIMEOUTS)
    return EndpointSpec(emu.base_url("azure_openai") + suffix, BackendKind.AZURE_OPENAI, **kwargs)


def prompt(text: str = "Hi", **kwargs: Any) -> InferenceRequest:
    return InferenceRequest.from_prompt(text, **kwargs)


class Recorder(TransportHooks):
    def __init__(self) -> None:
        self.retries: list[tuple[ErrorCategory, float]] = []

    def on_retry(self, info: AttemptInfo, error: AirframeError, delay: float) -> None:
        self.retries.append((error.category, delay))


async def events(
    ep: EndpointSpec, request: InferenceRequest, hooks: TransportHooks | None = None
) -> list[InferenceStreamEvent]:
    async with contextlib.aclosing(ADAPTER.stream_infer(ep, request, hooks=hooks)) as stream:
        return [event async for event in stream]


async def run(
    ep: EndpointSpec, request: InferenceRequest, stream: bool, hooks: TransportHooks | None = None
) -> InferenceResult:
    if stream:
        got = await events(ep, request, hooks)
        assert got[-1].type is MESSAGE
        result = got[-1].result
        assert result is not None
        return result
    return await ADAPTER.infer(ep, request, hooks=hooks)


async def failure(
    ep: EndpointSpec, request: InferenceRequest, stream: bool, hooks: TransportHooks | None = None
) -> AirframeError:
    with pytest.raises(AirframeError) as caught:
        await run(ep, request, stream, hooks)
    return caught.value


def tokens(got: list[InferenceStreamEvent]) -> list[str]:
    return [e.content for e in got if e.type is TEXT]


def is_uuid(value: str | None) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


both = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


# --------------------------------------------------------------------------------------------
# Unit: registry, URLs, headers (no I/O)

ROOT = "https://contoso.openai.azure.com"


def spec(**kwargs: Any) -> EndpointSpec:
    base = kwargs.pop("base_url", ROOT)
    return EndpointSpec(base, BackendKind.AZURE_OPENAI, **kwargs)


def test_registry_gives_the_azure_adapter() -> None:
    assert isinstance(ADAPTER, AzureOpenAIAdapter)
    assert isinstance(ADAPTER, OpenAIAdapter)
    assert ADAPTER.kind is BackendKind.AZURE_OPENAI
    assert ADAPTER.request_id_headers == ("apim-request-id", "x-request-id", "x-ms-request-id")


def test_classic_url_deployment_from_endpoint_wins() -> None:
    wire = ADAPTER.build_chat(spec(deployment="dep-a"), prompt(model="gpt-4o"), stream=False)
    assert (wire.method, wire.path) == ("POST", "/openai/deployments/dep-a/chat/completions")
    assert wire.params == {"api-version": DEFAULT_API_VERSION}
    assert DEFAULT_API_VERSION == "2024-10-21"


def test_classic_url_deployment_from_model_and_quoted() -> None:
    wire = ADAPTER.build_chat(
        spec(api_version="2025-01-01-preview"), prompt(model="my dep/1"), stream=True
    )
    assert wire.path == "/openai/deployments/my%20dep%2F1/chat/completions"
    assert wire.params == {"api-version": "2025-01-01-preview"}


@pytest.mark.parametrize(
    ("kwargs", "path", "params"),
    [
        ({"api_version": "v1"}, "/openai/v1/chat/completions", None),
        ({"base_url": ROOT + "/openai/v1"}, "/chat/completions", None),
        ({"base_url": ROOT + "/openai/v1/"}, "/chat/completions", None),
        (
            {"base_url": ROOT + "/openai/v1", "api_version": "preview"},
            "/chat/completions",
            {"api-version": "preview"},
        ),
        ({"base_url": ROOT + "/openai/v1", "api_version": "2024-10-21"}, "/chat/completions", None),
    ],
    ids=["api_version-v1", "base-url-v1", "trailing-slash", "preview", "dated-ignored"],
)
def test_v1_url(kwargs: dict[str, Any], path: str, params: dict[str, str] | None) -> None:
    wire = ADAPTER.build_chat(spec(deployment="dep-b", **kwargs), prompt(), stream=False)
    assert wire.path == path
    assert wire.params == params
    assert wire.json["model"] == "dep-b"


def test_v1_model_from_request_when_no_deployment() -> None:
    wire = ADAPTER.build_chat(spec(api_version="v1"), prompt(model="gpt-4.1-nano"), stream=False)
    assert wire.json["model"] == "gpt-4.1-nano"


@pytest.mark.parametrize("kwargs", [{}, {"api_version": "v1"}], ids=["classic", "v1"])
def test_no_deployment_and_no_model_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(airframe.BadRequestError, match="deployment") as caught:
        ADAPTER.build_chat(spec(**kwargs), prompt(), stream=False)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert caught.value.backend == "azure_openai"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"api_key": KEY}, {"api-key": KEY}),
        ({"api_key": f"Bearer {TOKEN}"}, {"authorization": f"Bearer {TOKEN}"}),
        ({"api_key": f"bearer {TOKEN}"}, {"authorization": f"bearer {TOKEN}"}),
        ({"api_key": KEY, "headers": {"Authorization": f"Bearer {TOKEN}"}}, {}),
        ({"headers": {"authorization": f"Bearer {TOKEN}"}}, {}),
        ({}, {}),
    ],
    ids=["api-key", "bearer-key", "bearer-lowercase", "entra-header-wins", "entra-only", "none"],
)
def test_auth_headers(kwargs: dict[str, Any], expected: dict[str, str]) -> None:
    assert ADAPTER.auth_headers(spec(**kwargs)) == expected


@pytest.mark.parametrize(
    ("api_version", "field", "stream_options"),
    [
        (None, "max_completion_tokens", True),
        ("2024-10-21", "max_completion_tokens", True),
        ("2024-09-01-preview", "max_completion_tokens", True),
        ("2025-04-01-preview", "max_completion_tokens", True),
        ("v1", "max_completion_tokens", True),
        ("preview", "max_completion_tokens", True),
        ("2024-06-01", "max_tokens", False),
        ("2024-02-15-preview", "max_tokens", False),
    ],
)
def test_version_dependent_fields(
    api_version: str | None, field: str, stream_options: bool
) -> None:
    ep = spec(deployment="d", api_version=api_version)
    body = ADAPTER.build_chat(ep, prompt(max_tokens=50), stream=True).json
    assert body[field] == 50
    assert ({"max_tokens", "max_completion_tokens"} - {field}).isdisjoint(body)
    assert ("stream_options" in body) is stream_options
    assert body["stream"] is True


def test_explicit_stream_options_kept_on_old_versions() -> None:
    ep = spec(deployment="d", api_version="2024-06-01")
    request = prompt(extra_body={"stream_options": {"include_usage": True}})
    body = ADAPTER.build_chat(ep, request, stream=True).json
    assert body["stream_options"] == {"include_usage": True}


def test_models_request() -> None:
    classic = ADAPTER.models_request(spec())
    assert (classic.method, classic.path, classic.params) == (
        "GET",
        "/openai/models",
        {"api-version": DEFAULT_API_VERSION},
    )
    v1 = ADAPTER.models_request(spec(api_version="v1"))
    assert (v1.path, v1.params) == ("/openai/v1/models", None)
    rooted = ADAPTER.models_request(spec(base_url=ROOT + "/openai/v1"))
    assert (rooted.path, rooted.params) == ("/models", None)


AZURE_429 = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 "
    "have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after "
    "86400 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
    "increase the default rate limit."
)


@pytest.mark.parametrize(
    ("status", "error", "category"),
    [
        (429, {"code": "429", "message": AZURE_429}, ErrorCategory.RATE_LIMIT),
        (429, {"code": "insufficient_quota", "message": "quota gone"}, ErrorCategory.QUOTA),
        (429, {"type": "insufficient_quota", "message": "see https://x/q"}, ErrorCategory.QUOTA),
        (
            429,
            {"code": "429", "message": "You exceeded your current quota, check billing."},
            ErrorCategory.QUOTA,
        ),
        (400, {"code": "content_filter", "message": "filtered"}, ErrorCategory.CONTENT_FILTER),
        (
            400,
            {
                "code": "BadRequest",
                "message": "blocked",
                "innererror": {"code": "ResponsibleAIPolicyViolation"},
            },
            ErrorCategory.CONTENT_FILTER,
        ),
        (
            400,
            {"code": "x", "message": "y", "inner_error": {"code": "ResponsibleAIPolicyViolation"}},
            ErrorCategory.CONTENT_FILTER,
        ),
        (404, {"code": "DeploymentNotFound", "message": "no such"}, ErrorCategory.NOT_FOUND),
        (401, {"code": "401", "message": "Access denied"}, ErrorCategory.AUTH),
        (
            400,
            {
                "code": "context_length_exceeded",
                "message": "This model's maximum context length is 8192 tokens. However, your "
                "messages resulted in 9000 tokens.",
            },
            ErrorCategory.CONTEXT_LENGTH,
        ),
    ],
    ids=[
        "azure-429",
        "insufficient_quota",
        "insufficient_quota-type",
        "quota-words",
        "content_filter",
        "innererror",
        "inner_error",
        "DeploymentNotFound",
        "401",
        "context",
    ],
)
def test_classify_error(status: int, error: dict[str, Any], category: ErrorCategory) -> None:
    payload = {"error": error}
    info = ADAPTER.classify_error(status, payload, json.dumps(payload))
    assert info.category is category
    assert info.message == error["message"]


# --------------------------------------------------------------------------------------------
# Unit: the stream parser fed Azure's chunks directly


def _feed(parser: AzureOpenAIStreamParser, *chunks: dict[str, Any] | str) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        data = chunk if isinstance(chunk, str) else json.dumps(chunk)
        out.extend(parser.feed(SSEEvent(data=data)))
    return out


FILTERS = {"hate": {"filtered": False, "severity": "safe"}}
PROMPT_FILTERS = [{"prompt_index": 0, "content_filter_results": {"jailbreak": {"filtered": False}}}]


def test_parser_skips_annotation_only_chunks_and_keeps_them_in_raw() -> None:
    parser = AzureOpenAIStreamParser(AZURE, spec())
    flagged = {"violence": {"filtered": False, "severity": "low"}}
    out = _feed(
        parser,
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTERS,
        },
        {
            "id": "chatcmpl-1",
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None,
                    "content_filter_results": {},
                }
            ],
        },
        {
            "id": "chatcmpl-1",
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "Hi"},
                    "finish_reason": None,
                    "content_filter_results": FILTERS,
                }
            ],
        },
        {
            "id": "chatcmpl-1",
            "model": "gpt-4o",
            "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop", "content_filter_results": {}}
            ],
        },
        {
            "id": "",
            "model": "",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": None,
                    "content_filter_results": flagged,
                    "content_filter_offsets": {
                        "check_offset": 0,
                        "start_offset": 0,
                        "end_offset": 2,
                    },
                }
            ],
        },
        "[DONE]",
    )
    assert [e.type for e in out] == [TEXT]
    assert parser.done
    result = parser.result()
    assert result.text == "Hi"
    assert result.finish_reason is FinishReason.STOP
    assert (result.response_id, result.model) == ("chatcmpl-1", "gpt-4o")
    assert result.raw is not None
    assert result.raw["prompt_filter_results"] == PROMPT_FILTERS
    assert result.raw["content_filter_results"] == flagged


def test_parser_passes_in_band_errors_through() -> None:
    parser = AzureOpenAIStreamParser(AZURE, spec())
    with pytest.raises(airframe.ContentFilterError):
        _feed(parser, {"error": {"code": "content_filter", "message": "blocked mid-stream"}})


def test_parser_without_annotations_has_no_raw() -> None:
    parser = AzureOpenAIStreamParser(AZURE, spec())
    _feed(
        parser,
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "x"}}]},
        "[DONE]",
    )
    assert parser.result().raw is None


# --------------------------------------------------------------------------------------------
# Over sockets: the classic and v1 URL forms, auth


async def test_classic_form_on_the_wire(emu: Emulator) -> None:
    emu.script(Reply.text("Hello from Azure"))
    result = await airframe.infer(endpoint(emu), prompt(max_tokens=20))
    assert result.text == "Hello from Azure"
    sent = emu.last_request
    assert sent.method == "POST"
    assert sent.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert sent.query == {"api-version": DEFAULT_API_VERSION}
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.json["max_completion_tokens"] == 20
    assert "max_tokens" not in sent.json


async def test_classic_form_deployment_from_the_request_model(emu: Emulator) -> None:
    ep = endpoint(emu, deployment=None, api_version="2025-01-01-preview")
    await airframe.infer(ep, prompt(model="gpt-4o-mini-dev"))
    sent = emu.last_request
    assert sent.path == "/openai/deployments/gpt-4o-mini-dev/chat/completions"
    assert sent.query == {"api-version": "2025-01-01-preview"}


@both
async def test_v1_form_by_api_version(emu: Emulator, stream: bool) -> None:
    emu.script(Reply.text("v1 says hi"))
    result = await run(endpoint(emu, api_version="v1"), prompt(), stream)
    assert result.text == "v1 says hi"
    sent = emu.last_request
    assert sent.path == "/openai/v1/chat/completions"
    assert sent.query == {}
    assert sent.json["model"] == DEPLOYMENT


async def test_v1_form_by_base_url(emu: Emulator) -> None:
    ep = endpoint(emu, suffix="/openai/v1", deployment=None)
    emu.script(Reply.text("rooted"))
    got = await events(ep, prompt(model="gpt-4.1-nano"))
    assert tokens(got) == ["rooted"]
    sent = emu.last_request
    assert sent.path == "/openai/v1/chat/completions"
    assert sent.json["model"] == "gpt-4.1-nano"
    assert await ADAPTER.list_models(ep) == ["emulator-1"]
    assert emu.last_request.path == "/openai/v1/models"


async def test_no_deployment_is_refused_before_any_io(emu: Emulator) -> None:
    ep = endpoint(emu, deployment=None)
    with pytest.raises(airframe.BadRequestError, match="deployment"):
        await ADAPTER.infer(ep, prompt())
    with pytest.raises(airframe.BadRequestError, match="deployment"):
        ADAPTER.stream_infer(ep, prompt())  # refused at call time, not on first iteration
    assert emu.requests == []
    assert emu.total_connections == 0


async def test_entra_token_in_headers_sends_no_api_key(emu: Emulator) -> None:
    emu.api_key = TOKEN
    ep = endpoint(emu, api_key=KEY, headers={"Authorization": f"Bearer {TOKEN}"})
    emu.script(Reply.text("entra ok"))
    assert (await airframe.infer(ep, prompt())).text == "entra ok"
    sent = emu.last_request
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert "api-key" not in sent.headers


async def test_entra_token_given_as_bearer_key(emu: Emulator) -> None:
    emu.api_key = TOKEN
    ep = endpoint(emu, api_key=f"Bearer {TOKEN}")
    assert KEY not in repr(ep)
    assert TOKEN not in repr(ep)
    got = await events(ep, prompt())
    assert got[-1].result is not None
    sent = emu.last_request
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert "api-key" not in sent.headers


@both
async def test_wrong_key_is_auth(emu: Emulator, stream: bool) -> None:
    err = await failure(endpoint(emu, api_key="not-the-key"), prompt(), stream)
    assert isinstance(err, airframe.AuthError)
    assert err.status_code == 401
    assert "Access denied" in err.message
    assert is_uuid(err.request_id)
    assert len(emu.requests) == 1


async def test_wrong_entra_token_is_auth(emu: Emulator) -> None:
    err = await failure(endpoint(emu, api_key="Bearer expired-token"), prompt(), False)
    assert isinstance(err, airframe.AuthError)
    assert len(emu.requests) == 1


# --------------------------------------------------------------------------------------------
# Over sockets: streams, content filter annotations, finish reasons


async def test_stream_first_chunk_prompt_filter_results_kept_in_raw(emu: Emulator) -> None:
    emu.script(Reply.text("Hello there"))
    got = await events(endpoint(emu), prompt())
    assert tokens(got) == ["Hello", " there"]
    result = got[-1].result
    assert result is not None
    # The leading chunk has empty id/model: they come from the first real chunk.
    assert result.response_id is not None
    assert result.response_id.startswith("chatcmpl-")
    assert result.model == "emulator-1"
    assert result.usage is not None
    assert result.usage.output_tokens == 2
    assert result.raw is not None
    prompt_filters = result.raw["prompt_filter_results"]
    assert prompt_filters[0]["prompt_index"] == 0
    assert prompt_filters[0]["content_filter_results"]["jailbreak"]["filtered"] is False
    assert result.raw["content_filter_results"]["violence"]["severity"] == "safe"
    assert emu.last_request.json["stream_options"] == {"include_usage": True}


async def test_non_streamed_filter_results_kept_in_raw(emu: Emulator) -> None:
    emu.script(Reply.text("Hello there"))
    result = await airframe.infer(endpoint(emu), prompt())
    assert result.text == "Hello there"
    assert result.raw is not None
    assert result.raw["prompt_filter_results"][0]["prompt_index"] == 0
    assert result.raw["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert result.response_id is not None
    assert result.usage is not None


@both
async def test_finish_reason_content_filter(emu: Emulator, stream: bool) -> None:
    emu.script(Reply.text("The answer was cut", finish_reason="content_filter"))
    result = await run(endpoint(emu), prompt(), stream)
    assert result.finish_reason is FinishReason.CONTENT_FILTER
    assert result.text == "The answer was cut"


@both
async def test_tool_calls(emu: Emulator, stream: bool) -> None:
    emu.script(Reply.tool_calls([("lookup", {"q": "azure"}), ("fetch", {"id": 7})]))
    result = await run(endpoint(emu), prompt(tools=[airframe.ToolSpec("lookup")]), stream)
    assert result.finish_reason is FinishReason.TOOL_CALLS
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("lookup", {"q": "azure"}),
        ("fetch", {"id": 7}),
    ]


async def test_images_and_json_schema_on_the_wire(emu: Emulator) -> None:
    request = InferenceRequest(
        messages=[
            Message.user([TextPart("describe"), ImagePart(data=b"img", media_type="image/jpeg")])
        ],
        response_format=ResponseFormat.json_schema("d", {"type": "object"}),
    )
    await airframe.infer(endpoint(emu), request)
    body = emu.last_request.json
    assert body["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,aW1n"},
    }
    assert body["response_format"]["type"] == "json_schema"


def _raw_stream(*chunks: dict[str, Any]) -> Fault:
    """A 200 SSE body with exactly these chunks then [DONE] (Azure's key order is irrelevant)."""
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return Fault.status(
        200, body=body + b"data: [DONE]\n\n", headers={"content-type": "text/event-stream"}
    )


async def test_annotation_chunk_after_finish_reason_is_ignored_safely(emu: Emulator) -> None:
    flagged = {"violence": {"filtered": False, "severity": "low"}}
    base = {"id": "chatcmpl-x", "model": "gpt-4o", "object": "chat.completion.chunk"}

    def choice(**fields: Any) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, **fields}]}

    emu.script(
        _raw_stream(
            {"choices": [], "id": "", "model": "", "prompt_filter_results": PROMPT_FILTERS},
            choice(delta={"role": "assistant", "content": ""}, finish_reason=None),
            choice(delta={"content": "Fine"}, finish_reason=None, content_filter_results=FILTERS),
            choice(delta={"content": " words"}, finish_reason=None),
            choice(delta={}, finish_reason="stop"),
            {
                "id": "",
                "model": "",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "content_filter_results": flagged,
                        "content_filter_offsets": {"check_offset": 0, "end_offset": 10},
                    }
                ],
            },
            choice(delta={}, finish_reason=None, content_filter_results=flagged),
            {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
        )
    )
    got = await events(endpoint(emu), prompt())
    assert [e.type for e in got] == [TEXT, TEXT, StreamEventType.USAGE, MESSAGE]
    result = got[-1].result
    assert result is not None
    assert result.text == "Fine words"
    assert result.finish_reason is FinishReason.STOP
    assert (result.response_id, result.model) == ("chatcmpl-x", "gpt-4o")
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (5, 2)
    assert result.raw is not None
    assert result.raw["content_filter_results"] == flagged
    assert result.raw["prompt_filter_results"] == PROMPT_FILTERS


async def test_old_api_version_gets_max_tokens_and_no_usage(emu: Emulator) -> None:
    emu.script(Reply.text("old but fine"))
    ep = endpoint(emu, api_version="2024-06-01")
    got = await events(ep, prompt(max_tokens=10))
    sent = emu.last_request
    assert sent.query == {"api-version": "2024-06-01"}
    assert sent.json["max_tokens"] == 10
    assert "stream_options" not in sent.json
    result = got[-1].result
    assert result is not None
    assert result.text == "old but fine"
    assert result.usage is None  # not reported is unknown, never zero


# --------------------------------------------------------------------------------------------
# Over sockets: errors and retries


@both
async def test_content_filter_400_is_content_filter_and_not_retried(
    emu: Emulator, stream: bool
) -> None:
    emu.script(Fault.content_filter(), Reply.text("never"))
    err = await failure(endpoint(emu), prompt("something bad"), stream)
    assert isinstance(err, airframe.ContentFilterError)
    assert err.category is ErrorCategory.CONTENT_FILTER
    assert err.status_code == 400
    assert not err.retryable
    assert "content management policy" in err.message
    assert isinstance(err.body, dict)
    assert err.body["error"]["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert is_uuid(err.request_id)
    assert err.backend == "azure_openai"
    assert len(emu.requests) == 1


@both
async def test_429_with_a_day_long_retry_after_surfaces_at_once(
    emu: Emulator, stream: bool
) -> None:
    emu.script(Fault.rate_limit(retry_after=86400), Reply.text("never"))
    recorder = Recorder()
    err = await failure(endpoint(emu), prompt(), stream, recorder)
    assert isinstance(err, airframe.RateLimitError)  # not quota: "quotaincrease" is only a URL
    assert err.retry_after == 86400.0
    assert err.retryable  # avionics may fall back to another route
    assert err.status_code == 429
    assert recorder.retries == []
    assert len(emu.requests) == 1


@both
async def test_azure_rate_limit_with_a_short_retry_after_is_retried(
    emu: Emulator, stream: bool
) -> None:
    emu.script(Fault.rate_limit(retry_after=0.002), Reply.text("after the wait"))
    recorder = Recorder()
    result = await run(endpoint(emu), prompt(), stream, recorder)
    assert result.text == "after the wait"
    assert recorder.retries == [(ErrorCategory.RATE_LIMIT, 0.002)]
    assert len(emu.requests) == 2


async def test_retry_after_ms_wins_over_a_day_long_retry_after(emu: Emulator) -> None:
    emu.script(Fault.rate_limit(retry_after=86400, retry_after_ms=3), Reply.text("ok"))
    recorder = Recorder()
    result = await run(endpoint(emu), prompt(), True, recorder)
    assert result.text == "ok"
    assert recorder.retries == [(ErrorCategory.RATE_LIMIT, 0.003)]


@both
async def test_insufficient_quota_is_quota_and_not_retried(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.quota(), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.QuotaError)
    assert not err.retryable
    assert len(emu.requests) == 1


@both
async def test_deployment_not_found_is_not_found(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.status(404), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.NotFoundError)
    assert isinstance(err.body, dict)
    assert err.body["error"]["code"] == "DeploymentNotFound"
    assert not err.retryable
    assert len(emu.requests) == 1


@both
async def test_401_is_auth(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.auth(), Reply.text("never"))
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.AuthError)
    assert len(emu.requests) == 1


@both
async def test_503_retried_then_surfaces_retryable(emu: Emulator, stream: bool) -> None:
    emu.script(*[Fault.overloaded()] * MAX_ATTEMPTS)
    err = await failure(endpoint(emu), prompt(), stream)
    assert isinstance(err, airframe.OverloadedError)
    assert err.retryable
    assert len(emu.requests) == MAX_ATTEMPTS


@both
async def test_500_then_success(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.server_error(), Reply.text("second try"))
    assert (await run(endpoint(emu), prompt(), stream)).text == "second try"
    assert len(emu.requests) == 2


async def test_in_band_error_after_the_prompt_filter_chunk_is_retried(emu: Emulator) -> None:
    emu.script(Fault.in_band_error(after_chunks=2, kind="server"), Reply.text("recovered"))
    got = await events(endpoint(emu), prompt())
    assert tokens(got) == ["recovered"]
    assert len(emu.requests) == 2


async def test_drop_mid_stream_is_interrupted_with_partial(emu: Emulator) -> None:
    # Events: prompt-filter chunk, role chunk, "a", " b", then the connection drops.
    emu.script(Fault.drop(after_chunks=4, reply=Reply.text("a b c d")))
    with pytest.raises(airframe.InterruptedError) as caught:
        await events(endpoint(emu), prompt())
    err = caught.value
    assert err.partial is not None
    assert err.partial.text == "a b"
    assert err.partial.raw is not None
    assert "prompt_filter_results" in err.partial.raw
    assert isinstance(err.__cause__, airframe.ConnectionError)
    assert len(emu.requests) == 1
    assert open_connection_count() == 0


async def test_no_terminator_is_a_protocol_failure(emu: Emulator) -> None:
    emu.script(Fault.no_terminator(reply=Reply.text("x y")))
    with pytest.raises(airframe.InterruptedError) as caught:
        await events(endpoint(emu), prompt())
    assert isinstance(caught.value.__cause__, airframe.ProtocolError)


@both
async def test_html_200_is_a_protocol_error(emu: Emulator, stream: bool) -> None:
    emu.script(Fault.html_200())
    err = await failure(endpoint(emu), prompt(), stream)
    assert type(err) is airframe.ProtocolError
    assert len(emu.requests) == 1


async def test_sequential_requests_reuse_one_connection(emu: Emulator) -> None:
    ep = endpoint(emu)
    for i in range(200):
        assert (await run(ep, prompt("ping"), stream=i % 2 == 0)).text == "echo: ping"
    assert emu.total_connections == 1
    assert open_connection_count(ep.base_url) == 1


# --------------------------------------------------------------------------------------------
# Over sockets: list_models and health


async def test_list_models_classic(emu: Emulator) -> None:
    assert await ADAPTER.list_models(endpoint(emu)) == ["emulator-1"]
    sent = emu.last_request
    assert (sent.method, sent.path) == ("GET", "/openai/models")
    assert sent.query == {"api-version": DEFAULT_API_VERSION}
    assert sent.headers["api-key"] == KEY


async def test_list_models_v1(emu: Emulator) -> None:
    assert await ADAPTER.list_models(endpoint(emu, api_version="v1")) == ["emulator-1"]
    sent = emu.last_request
    assert sent.path == "/openai/v1/models"
    assert sent.query == {}


async def test_health(emu: Emulator) -> None:
    health = await ADAPTER.health_check(endpoint(emu))
    assert health.ok
    assert health.state == "ok"
    assert emu.last_request.path == "/openai/models"


async def test_health_bad_key_is_error(emu: Emulator) -> None:
    health = await ADAPTER.health_check(endpoint(emu, api_key="nope"))
    assert not health.ok
    assert health.state == "error"
    assert "Access denied" in health.detail


# --------------------------------------------------------------------------------------------
# The key canary


@both
async def test_key_echoed_by_the_server_is_redacted_everywhere(
    emu: Emulator, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airframe")
    echo = {"error": {"code": "500", "message": f"backend failed for api-key {KEY}"}}
    emu.script(*[Fault.status(500, body=echo)] * MAX_ATTEMPTS)
    ep = endpoint(emu)
    assert KEY not in repr(ep)
    err = await failure(ep, prompt(), stream)
    assert isinstance(err, airframe.ServerError)
    for text in (str(err), repr(err), repr(vars(err))):
        assert KEY not in text
    assert "[REDACTED]" in err.message
    assert caplog.records  # the retries were logged
    for record in caplog.records:
        assert KEY not in record.getMessage()


async def test_bearer_key_echoed_by_the_server_is_redacted(emu: Emulator) -> None:
    emu.api_key = TOKEN
    echo = {"error": {"code": "401", "message": f"token rejected: Bearer {TOKEN}"}}
    emu.script(Fault.status(401, body=echo))
    err = await failure(endpoint(emu, api_key=f"Bearer {TOKEN}"), prompt(), False)
    assert isinstance(err, airframe.AuthError)
    assert TOKEN not in str(err)
    assert TOKEN not in repr(err)
