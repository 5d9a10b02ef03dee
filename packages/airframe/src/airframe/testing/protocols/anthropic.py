"""Anthropic Messages: `POST /v1/messages`, `POST /v1/messages/count_tokens`, `GET /v1/models`.

Wire facts reproduced (Messages API reference, streaming guide, anthropic-sdk-python):
- `anthropic-version` header required (400 otherwise); `x-api-key` when a key is set (401
  `authentication_error`); `max_tokens` required (400 `invalid_request_error`).
- stream: named SSE events `message_start` (usage with `input_tokens`,
  `cache_creation_input_tokens`, `cache_read_input_tokens`), `content_block_start`, `ping`,
  `content_block_delta` (`text_delta`, `thinking_delta`, `signature_delta`, `input_json_delta`
  starting with an empty `partial_json`), `content_block_stop`, `message_delta` (stop_reason and
  cumulative `output_tokens`), `message_stop`; errors as `event: error`.
- `input_tokens` is the uncached remainder: cache reads/writes are reported beside it.
- errors: `{"type": "error", "error": {"type", "message"}, "request_id"}`; header `request-id`;
  overloaded is 529 `overloaded_error`.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Literal

from .._behaviours import ErrorKind
from .._engine import Engine, Outlet
from .._state import EmulatorState
from .._turn import Turn
from .._wire import (
    JSON,
    SLOT,
    SSE_UTF8,
    Frame,
    Request,
    Response,
    StreamPlan,
    Template,
    dumps,
    json_response,
    sse,
)
from ._base import Call, ChatEndpoint, ErrorSpec, Route, chat_prompt, int_or_none, route

__all__ = ["AnthropicMessages", "routes"]

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "content_filter": "refusal",
}

_TYPES: dict[ErrorKind, tuple[int, str]] = {
    "bad_request": (400, "invalid_request_error"),
    "auth": (401, "authentication_error"),
    "permission": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "timeout": (504, "timeout_error"),
    "conflict": (409, "invalid_request_error"),
    "too_large": (413, "request_too_large"),
    "unprocessable": (422, "invalid_request_error"),
    "rate_limit": (429, "rate_limit_error"),
    "quota": (400, "invalid_request_error"),
    "server": (500, "api_error"),
    "overloaded": (529, "overloaded_error"),
    "context_length": (400, "invalid_request_error"),
    "content_filter": (400, "invalid_request_error"),
}

_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def _message(kind: ErrorKind, spec: ErrorSpec, model: str) -> str:
    if kind == "context_length":
        return f"prompt is too long: {spec.prompt_tokens} tokens > {spec.n_ctx} maximum"
    if kind == "overloaded":
        return "Overloaded"
    if kind == "rate_limit":
        return (
            "This request would exceed the rate limit for your organization of 50 requests per "
            "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can "
            "see the response headers for current usage. Please reduce the prompt length or the "
            "maximum tokens requested, or try again later."
        )
    if kind == "quota":
        return (
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
            "Billing to upgrade or purchase credits."
        )
    if kind == "auth":
        return "invalid x-api-key"
    if kind == "permission":
        return "Your API key does not have permission to use the specified resource."
    if kind == "not_found":
        return f"model: {model}"
    if kind == "content_filter":
        return "Output blocked by content filtering policy"
    if kind == "server":
        return "Internal server error"
    if kind == "timeout":
        return "Request timed out"
    if kind == "too_large":
        return "Request exceeds the maximum allowed number of bytes."
    return "Invalid request"


class AnthropicMessages(ChatEndpoint):
    stream_content_type = SSE_UTF8
    json_content_type = JSON

    def authenticate(self, request: Request) -> Response | None:
        key = self.state.api_key
        if key is None:
            return None
        given = request.headers.get("x-api-key") or request.bearer()
        if given == key:
            return None
        message = "x-api-key header is required" if not given else "invalid x-api-key"
        return self.simple_error(401, "authentication_error", message)

    def simple_error(self, status: int, error_type: str, message: str) -> Response:
        headers = self.request_headers(self.state.next_seq())
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": headers[0][1],
        }
        return json_response(status, body, JSON, headers)

    def prepare(self, request: Request) -> Call | Response:
        rejected = self.authenticate(request)
        if rejected is not None:
            return rejected
        if not request.headers.get("anthropic-version"):
            return self.simple_error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        body = request.json
        if not isinstance(body, dict):
            return self.simple_error(
                400, "invalid_request_error", "There was an issue with your request body."
            )
        max_tokens = int_or_none(body.get("max_tokens"))
        if max_tokens is None:
            return self.simple_error(400, "invalid_request_error", "max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list):
            return self.simple_error(400, "invalid_request_error", "messages: Field required")
        model = body.get("model")
        prompt = chat_prompt(
            messages,
            system=body.get("system"),
            max_tokens=max_tokens,
            model=model if isinstance(model, str) and model else self.state.model,
        )
        return Call(
            request=request,
            seq=self.state.next_seq(),
            stream=body.get("stream") is True,
            prompt=prompt,
        )

    # -- headers and errors --------------------------------------------------------------------

    def request_headers(self, seq: int) -> list[tuple[str, str]]:
        return [("request-id", f"req_emu{seq:021d}"), ("anthropic-organization-id", "org-emulator")]

    def headers(self, call: Call) -> list[tuple[str, str]]:
        return self.request_headers(call.seq)

    def status_for(self, kind: ErrorKind) -> int:
        return _TYPES[kind][0]

    def error_object(self, call: Call | None, spec: ErrorSpec) -> dict[str, Any]:
        error_type = _TYPES[spec.kind][1]
        if spec.kind == "quota" and spec.status == 429:
            error_type = "rate_limit_error"
        model = call.model if call else self.state.model
        return {"type": error_type, "message": _message(spec.kind, spec, model)}

    def error(self, call: Call | None, request: Request, spec: ErrorSpec) -> Response:
        status = spec.status or self.status_for(spec.kind)
        headers = self.request_headers(call.seq if call else self.state.next_seq())
        body = {
            "type": "error",
            "error": self.error_object(call, spec),
            "request_id": headers[0][1],
        }
        return json_response(status, body, JSON, headers)

    def in_band(self, call: Call, spec: ErrorSpec, style: Literal["data", "field"]) -> list[bytes]:
        body = {
            "type": "error",
            "error": self.error_object(call, spec),
            "request_id": f"req_emu{call.seq:021d}",
        }
        return [sse(body, "error")]

    def malformed_frame(self, call: Call) -> bytes:
        return b"event: content_block_delta\ndata: {not json\n\n"

    # -- rendering -----------------------------------------------------------------------------

    def message_id(self, call: Call) -> str:
        return f"msg_emu{call.seq:017d}"

    def tool_id(self, call: Call, index: int, given: str | None) -> str:
        return given or f"toolu_emu{call.seq:06d}{index:02d}"

    @staticmethod
    def signature(turn: Turn) -> str:
        digest = hashlib.sha256(turn.full_reasoning.encode()).digest()
        return "EmuSig" + base64.b64encode(digest * 2).decode()

    @staticmethod
    def stop_reason(turn: Turn) -> str:
        return _STOP.get(turn.finish, turn.finish)

    def usage(self, turn: Turn, output_tokens: int) -> dict[str, Any]:
        usage = turn.usage
        uncached = max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
        return {
            "input_tokens": uncached,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def blocks(self, call: Call, turn: Turn) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if turn.reasoning:
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": turn.full_reasoning,
                    "signature": self.signature(turn),
                }
            )
        text = turn.full_text + turn.full_refusal
        if text or not (turn.tool_calls or turn.reasoning):
            blocks.append({"type": "text", "text": text})
        blocks.extend(
            {
                "type": "tool_use",
                "id": self.tool_id(call, tool.index, tool.id),
                "name": tool.name,
                "input": tool.arguments,
            }
            for tool in turn.tool_calls
        )
        return blocks

    def body(self, call: Call, turn: Turn) -> bytes:
        obj = {
            "id": self.message_id(call),
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": self.blocks(call, turn),
            "stop_reason": self.stop_reason(turn),
            "stop_sequence": None,
            "usage": self.usage(turn, turn.usage.output_tokens),
        }
        return dumps(obj).encode()

    def token_frame(self, call: Call, text: str) -> bytes:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        return sse(delta, "content_block_delta")

    def stream(self, call: Call, turn: Turn) -> StreamPlan:
        start = {
            "type": "message_start",
            "message": {
                "id": self.message_id(call),
                "type": "message",
                "role": "assistant",
                "model": call.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self.usage(turn, 1),
            },
        }
        blocks = _Blocks([Frame(sse(start, "message_start"), token=False)])
        if turn.reasoning:
            blocks.open({"type": "thinking", "thinking": "", "signature": ""})
            blocks.pieces("thinking_delta", "thinking", turn.reasoning)
            blocks.delta({"type": "signature_delta", "signature": self.signature(turn)}, False)
            blocks.close()
        pieces = turn.text + turn.refusal
        if pieces or not (turn.tool_calls or turn.reasoning):
            blocks.open({"type": "text", "text": ""})
            blocks.pieces("text_delta", "text", pieces)
            blocks.close()
        for tool in turn.tool_calls:
            tool_id = self.tool_id(call, tool.index, tool.id)
            blocks.open({"type": "tool_use", "id": tool_id, "name": tool.name, "input": {}})
            blocks.delta({"type": "input_json_delta", "partial_json": ""}, False)
            blocks.pieces("input_json_delta", "partial_json", tool.pieces)
            blocks.close()

        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason(turn), "stop_sequence": None},
            "usage": {"output_tokens": turn.usage.output_tokens},
        }
        frames = [*blocks.frames, Frame(sse(message_delta, "message_delta"), token=False)]
        stop = sse({"type": "message_stop"}, "message_stop")
        return StreamPlan(self.stream_content_type, frames, [stop])


class _Blocks:
    """Content-block events with their running index; one `ping` after the first block opens."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        self.index = 0
        self.pinged = False

    def open(self, block: dict[str, Any]) -> None:
        event = {"type": "content_block_start", "index": self.index, "content_block": block}
        self.frames.append(Frame(sse(event, "content_block_start"), token=False))
        if not self.pinged:
            self.frames.append(Frame(_PING, token=False))
            self.pinged = True

    def delta(self, payload: dict[str, Any], token: bool = True) -> None:
        event = {"type": "content_block_delta", "index": self.index, "delta": payload}
        self.frames.append(Frame(sse(event, "content_block_delta"), token=token))

    def pieces(self, delta_type: str, key: str, pieces: list[str]) -> None:
        """Token deltas: the event is rendered once, then filled per piece."""
        event = {
            "type": "content_block_delta",
            "index": self.index,
            "delta": {"type": delta_type, key: SLOT[0]},
        }
        template = Template(sse(event, "content_block_delta"))
        self.frames.extend(Frame(template.fill(piece)) for piece in pieces)

    def close(self) -> None:
        event = {"type": "content_block_stop", "index": self.index}
        self.frames.append(Frame(sse(event, "content_block_stop"), token=False))
        self.index += 1


def routes(state: EmulatorState, engine: Engine) -> list[Route]:
    endpoint = AnthropicMessages(state)

    def is_anthropic(request: Request) -> bool:
        return "anthropic-version" in request.headers or "x-api-key" in request.headers

    async def models(request: Request, out: Outlet) -> None:
        rejected = endpoint.authenticate(request)
        if rejected is not None:
            await out.respond(rejected)
            return
        model = state.model
        body = {
            "data": [
                {
                    "type": "model",
                    "id": model,
                    "display_name": model.replace("-", " ").title(),
                    "created_at": "2025-01-01T00:00:00Z",
                }
            ],
            "has_more": False,
            "first_id": model,
            "last_id": model,
        }
        headers = endpoint.request_headers(state.next_seq())
        await out.respond(json_response(200, body, JSON, headers))

    async def count_tokens(request: Request, out: Outlet) -> None:
        prepared = endpoint.prepare(_with_max_tokens(request))
        if isinstance(prepared, Response):
            await out.respond(prepared)
            return
        body = {"input_tokens": prepared.prompt.tokens}
        await out.respond(json_response(200, body, JSON, endpoint.headers(prepared)))

    return [
        route("POST", "/v1/messages", engine.handler(endpoint)),
        route("POST", "/v1/messages/count_tokens", count_tokens),
        route("GET", "/v1/models", models, when=is_anthropic),
    ]


def _with_max_tokens(request: Request) -> Request:
    """count_tokens does not take max_tokens; reuse the Messages validation without it."""
    if isinstance(request.json, dict) and "max_tokens" not in request.json:
        body = dict(request.json, max_tokens=1)
        return Request(
            request.method, request.path, request.query, request.headers, request.body, body
        )
    return request
