"""OpenAI Chat Completions: `POST /v1/chat/completions`, `GET /v1/models`.

Wire facts reproduced (openai-python `_streaming.py`, API reference):
- stream: `data: {chat.completion.chunk}` events, ended by `data: [DONE]`; content type
  `text/event-stream; charset=utf-8`. The first chunk carries `delta.role`; tool calls arrive as
  `delta.tool_calls[{index, id, type, function{name, arguments}}]` fragments (this emulator
  interleaves parallel calls by index); the last choice chunk has `finish_reason`; with
  `stream_options.include_usage` every chunk has `"usage": null` and a final chunk has empty
  `choices` and the usage.
- refusals are `message.refusal` / `delta.refusal`; reasoning (compatible servers) is
  `reasoning_content`.
- errors: `{"error": {"message", "type", "param", "code"}}`; in a stream, `data: {"error": ...}`.
- headers: `x-request-id`; bearer auth, 401 `invalid_api_key`.
"""

from __future__ import annotations

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

__all__ = ["OpenAIChat", "openai_error_object", "routes"]

DONE = b"data: [DONE]\n\n"

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "stop_sequence": "stop",
    "refusal": "stop",
}


def openai_finish(finish: str) -> str:
    return _FINISH.get(finish, finish)


# kind -> (message template, type, param, code); templates see {model}, {n_ctx}, {prompt_tokens}.
_ERRORS: dict[ErrorKind, tuple[str, str, str | None, str | None]] = {
    "context_length": (
        "This model's maximum context length is {n_ctx} tokens. However, your messages resulted "
        "in {prompt_tokens} tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    ),
    "rate_limit": (
        "Rate limit reached for {model} in organization org-emulator on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        "requests",
        None,
        "rate_limit_exceeded",
    ),
    "quota": (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        None,
        "insufficient_quota",
    ),
    "auth": (
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    ),
    "content_filter": (
        "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
        "Please try again with a different prompt.",
        "invalid_request_error",
        None,
        "invalid_prompt",
    ),
    "not_found": (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        None,
        "model_not_found",
    ),
    "permission": (
        "You are not allowed to sample from this model",
        "invalid_request_error",
        None,
        None,
    ),
    "overloaded": ("The server is overloaded or not ready yet.", "server_error", None, None),
    "server": (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
        None,
    ),
    "timeout": ("Request timed out.", "timeout", None, None),
}
_INVALID = ("Invalid request.", "invalid_request_error", None, None)


def openai_error_object(spec: ErrorSpec, model: str) -> dict[str, Any]:
    """The inner `error` object OpenAI sends for an error situation."""
    template, error_type, param, code = _ERRORS.get(spec.kind, _INVALID)
    message = spec.message or template.format(
        model=model, n_ctx=spec.n_ctx, prompt_tokens=spec.prompt_tokens
    )
    return {"message": message, "type": error_type, "param": param, "code": code}


class OpenAIChat(ChatEndpoint):
    """OpenAI's endpoint; Azure and llama-server's OpenAI-compatible endpoint subclass it."""

    stream_content_type = SSE_UTF8
    json_content_type = JSON
    fingerprint = "fp_emulator"
    id_prefix = "chatcmpl-emu"

    # -- request side --------------------------------------------------------------------------

    def authenticate(self, request: Request) -> bool:
        key = self.state.api_key
        return key is None or request.bearer() == key

    def response_model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        return model if isinstance(model, str) and model else self.state.model

    def reject(self, request: Request) -> Response | None:
        """Checks that come before auth (Azure's api-version, llama-server's loading state)."""
        return None

    def prepare(self, request: Request) -> Call | Response:
        early = self.reject(request)
        if early is not None:
            return early
        if not self.authenticate(request):
            return self.error(None, request, ErrorSpec("auth", 401))
        body = request.json
        if not isinstance(body, dict):
            return self.bad_request(
                request,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                None,
            )
        messages = body.get("messages")
        if not isinstance(messages, list):
            return self.bad_request(request, "Missing required parameter: 'messages'.", "messages")
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = (
            stream and isinstance(options, dict) and options.get("include_usage") is True
        )
        max_tokens = int_or_none(body.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = int_or_none(body.get("max_tokens"))
        prompt = chat_prompt(messages, max_tokens=max_tokens, model=self.response_model(body))
        return Call(
            request=request,
            seq=self.state.next_seq(),
            stream=stream,
            prompt=prompt,
            include_usage=include_usage,
        )

    def bad_request(self, request: Request, message: str, param: str | None) -> Response:
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
        return json_response(400, {"error": error}, self.json_content_type, self.request_headers())

    # -- headers and errors --------------------------------------------------------------------

    def request_headers(self, seq: int | None = None) -> list[tuple[str, str]]:
        number = self.state.next_seq() if seq is None else seq
        return [
            ("x-request-id", f"req_emu{number:024d}"),
            ("openai-version", "2020-10-01"),
            ("openai-processing-ms", "1"),
        ]

    def headers(self, call: Call) -> list[tuple[str, str]]:
        return self.request_headers(call.seq)

    def error_object(self, call: Call | None, spec: ErrorSpec) -> dict[str, Any]:
        return openai_error_object(spec, call.model if call else self.state.model)

    def error(self, call: Call | None, request: Request, spec: ErrorSpec) -> Response:
        status = spec.status or self.status_for(spec.kind)
        headers = self.headers(call) if call else self.request_headers()
        body = {"error": self.error_object(call, spec)}
        return json_response(status, body, self.json_content_type, headers)

    def in_band(self, call: Call, spec: ErrorSpec, style: Literal["data", "field"]) -> list[bytes]:
        return [self.event({"error": self.error_object(call, spec)})]

    # -- rendering -----------------------------------------------------------------------------

    def completion_id(self, call: Call) -> str:
        return f"{self.id_prefix}{call.seq:020d}"

    def tool_id(self, call: Call, index: int, given: str | None) -> str:
        return given or f"call_emu{call.seq:06d}{index:02d}"

    def usage(self, call: Call, turn: Turn) -> dict[str, Any]:
        usage = turn.usage
        return {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": usage.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def message(self, call: Call, turn: Turn) -> dict[str, Any]:
        text = turn.full_text
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not (turn.tool_calls or turn.refusal) else None,
            "refusal": turn.full_refusal or None,
            "annotations": [],
        }
        if turn.reasoning:
            message["reasoning_content"] = turn.full_reasoning
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": self.tool_id(call, tool.index, tool.id),
                    "type": "function",
                    "function": {"name": tool.name, "arguments": tool.arguments_json},
                }
                for tool in turn.tool_calls
            ]
        return message

    def choice(self, call: Call, turn: Turn) -> dict[str, Any]:
        return {
            "index": 0,
            "message": self.message(call, turn),
            "logprobs": None,
            "finish_reason": openai_finish(turn.finish),
        }

    def body(self, call: Call, turn: Turn) -> bytes:
        obj = {
            "id": self.completion_id(call),
            "object": "chat.completion",
            "created": call.created,
            "model": call.model,
            "choices": [self.choice(call, turn)],
            "usage": self.usage(call, turn),
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }
        return self.encode(obj)

    def encode(self, obj: dict[str, Any]) -> bytes:
        """The non-stream body bytes for a JSON object (Azure sorts keys)."""
        return dumps(obj).encode()

    def chunk(self, call: Call, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": self.completion_id(call),
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if call.include_usage:
            obj["usage"] = None
        return obj

    def usage_chunk(self, call: Call, turn: Turn) -> dict[str, Any]:
        return {
            "id": self.completion_id(call),
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
            "choices": [],
            "usage": self.usage(call, turn),
        }

    def role_delta(self, turn: Turn) -> dict[str, Any]:
        only_tools = bool(turn.tool_calls) and not turn.text
        return {"role": "assistant", "content": None if only_tools else "", "refusal": None}

    def opening_frames(self, call: Call) -> list[Frame]:
        return []

    def closing_chunks(self, call: Call, turn: Turn) -> list[dict[str, Any]]:
        chunks = [self.chunk(call, {}, openai_finish(turn.finish))]
        if call.include_usage:
            chunks.append(self.usage_chunk(call, turn))
        return chunks

    def event(self, obj: dict[str, Any]) -> bytes:
        """One SSE event for a JSON object (Azure sorts keys)."""
        return sse(obj)

    def token_frame(self, call: Call, text: str) -> bytes:
        return self.event(self.chunk(call, {"content": text}))

    def deltas(self, call: Call, key: str, pieces: list[str]) -> list[Frame]:
        """One delta event per piece, rendered once and filled per piece."""
        if not pieces:
            return []
        template = Template(self.event(self.chunk(call, {key: SLOT[0]})))
        return [Frame(template.fill(piece)) for piece in pieces]

    def stream(self, call: Call, turn: Turn) -> StreamPlan:
        frames = self.opening_frames(call)
        frames.append(Frame(self.event(self.chunk(call, self.role_delta(turn))), token=False))
        frames += self.deltas(call, "reasoning_content", turn.reasoning)
        frames += self.deltas(call, "content", turn.text)
        frames += self.deltas(call, "refusal", turn.refusal)
        frames += self.tool_frames(call, turn)
        frames += [Frame(self.event(c), token=False) for c in self.closing_chunks(call, turn)]
        return StreamPlan(self.stream_content_type, frames, [DONE])

    def tool_frames(self, call: Call, turn: Turn) -> list[Frame]:
        """Parallel calls interleaved by index: every call's header first, then argument
        fragments round-robin (call 0 piece 0, call 1 piece 0, call 0 piece 1...)."""
        frames: list[Frame] = []
        for tool in turn.tool_calls:
            head = {
                "index": tool.index,
                "id": self.tool_id(call, tool.index, tool.id),
                "type": "function",
                "function": {"name": tool.name, "arguments": ""},
            }
            frames.append(Frame(self.event(self.chunk(call, {"tool_calls": [head]}))))
        templates = [
            Template(
                self.event(
                    self.chunk(
                        call,
                        {"tool_calls": [{"index": tool.index, "function": {"arguments": SLOT[0]}}]},
                    )
                )
            )
            for tool in turn.tool_calls
        ]
        rounds = max((len(tool.pieces) for tool in turn.tool_calls), default=0)
        for piece in range(rounds):
            for tool, template in zip(turn.tool_calls, templates, strict=True):
                if piece < len(tool.pieces):
                    frames.append(Frame(template.fill(tool.pieces[piece])))
        return frames


def models_body(model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 1700000000, "owned_by": "emulator"}],
    }


def routes(state: EmulatorState, engine: Engine) -> list[Route]:
    endpoint = OpenAIChat(state)

    async def models(request: Request, out: Outlet) -> None:
        if not endpoint.authenticate(request):
            await out.respond(endpoint.error(None, request, ErrorSpec("auth", 401)))
            return
        body = models_body(state.model)
        await out.respond(json_response(200, body, JSON, endpoint.request_headers()))

    return [
        route("POST", "/v1/chat/completions", engine.handler(endpoint)),
        route("GET", "/v1/models", models),
    ]
