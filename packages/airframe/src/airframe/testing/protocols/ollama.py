"""Ollama: `POST /api/chat`, `GET /api/tags`, `POST /api/show`, `POST /api/pull`,
`GET /api/version`, `GET /` ("Ollama is running").

Wire facts reproduced (ollama docs/api.md, api/types.go):
- `/api/chat` streams by default: NDJSON (`application/x-ndjson`), one object per line
  `{"model", "created_at", "message": {"role", "content"[, "thinking"][, "tool_calls"]},
  "done": false}`; the last line has `"done": true`, `done_reason` and the metrics
  `total_duration`, `load_duration`, `prompt_eval_count`, `prompt_eval_duration`, `eval_count`,
  `eval_duration` (nanoseconds). `"stream": false` gives that final object with the whole
  message. Tool-call arguments are JSON objects, not strings.
- errors are `{"error": "..."}`; an unknown model is 404 `model "x" not found, try pulling it
  first`; an error after the stream started is a final `{"error": "..."}` line.
- `/api/pull` streams progress lines (`status`, `digest`, `total`, `completed`) ending with
  `{"status": "success"}`; the pulled model then shows in `/api/tags`.
- Ollama has no auth of its own; with an `api_key` the emulator plays a bearer-checking proxy.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from .._engine import Engine, Outlet
from .._state import EmulatorState, OllamaModel
from .._turn import Turn
from .._wire import (
    JSON_UTF8,
    NDJSON,
    SLOT,
    Frame,
    Request,
    Response,
    StreamPlan,
    Template,
    dumps,
    json_response,
    ndjson,
    text_response,
)
from ._base import (
    Call,
    ChatEndpoint,
    ErrorSpec,
    Route,
    chat_prompt,
    int_or_none,
    route,
    simple,
)

__all__ = ["OllamaChat", "routes"]

VERSION = "0.12.6"

_DONE = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "stop",
    "stop_sequence": "stop",
    "refusal": "stop",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _message(spec: ErrorSpec, model: str) -> str:
    kind = spec.kind
    if kind == "not_found":
        return f'model "{model}" not found, try pulling it first'
    if kind == "context_length":
        # Recent Ollama (llama-server runner, "truncate": false) passes the runner's error on.
        inner = {
            "error": {
                "code": 400,
                "message": (
                    f"request ({spec.prompt_tokens} tokens) exceeds the available context size "
                    f"({spec.n_ctx} tokens), try increasing it"
                ),
                "type": "exceed_context_size_error",
                "n_prompt_tokens": spec.prompt_tokens,
                "n_ctx": spec.n_ctx,
            }
        }
        return json.dumps(inner, separators=(",", ":"))
    if kind == "overloaded":
        return "server busy, please try again.  maximum pending requests exceeded"
    if kind == "server":
        return "llama runner process has terminated: exit status 2"
    if kind == "rate_limit":
        return "too many requests, please slow down"
    if kind == "quota":
        return "you have reached your usage quota, upgrade your plan for higher limits"
    if kind == "auth":
        return "unauthorized"
    if kind == "permission":
        return "forbidden"
    if kind == "content_filter":
        return "content blocked by the safety filter"
    if kind == "timeout":
        return "timed out waiting for llama runner to start"
    return "invalid request"


class OllamaChat(ChatEndpoint):
    stream_content_type = NDJSON
    json_content_type = JSON_UTF8

    def authenticate(self, request: Request) -> Response | None:
        key = self.state.api_key
        if key is None or request.bearer() == key:
            return None
        return self.plain_error(401, "unauthorized")

    def plain_error(self, status: int, message: str) -> Response:
        return json_response(status, {"error": message}, JSON_UTF8)

    def prepare(self, request: Request) -> Call | Response:
        rejected = self.authenticate(request)
        if rejected is not None:
            return rejected
        body = request.json
        if not isinstance(body, dict):
            return self.plain_error(400, "invalid request body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.plain_error(400, "model is required")
        if self.state.ollama_model(model) is None:
            return self.plain_error(404, f'model "{model}" not found, try pulling it first')
        messages = body.get("messages")
        if messages is None:
            messages = []
        if not isinstance(messages, list):
            return self.plain_error(400, "messages must be a list")
        if not messages:
            loaded = {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": ""},
                "done_reason": "load",
                "done": True,
            }
            return json_response(200, loaded, JSON_UTF8)
        options = body.get("options")
        max_tokens = int_or_none(options.get("num_predict")) if isinstance(options, dict) else None
        if max_tokens is not None and max_tokens < 0:
            max_tokens = None
        prompt = chat_prompt(messages, max_tokens=max_tokens, model=model)
        return Call(
            request=request,
            seq=self.state.next_seq(),
            stream=body.get("stream", True) is not False,
            prompt=prompt,
        )

    def headers(self, call: Call) -> list[tuple[str, str]]:
        return []

    def error(self, call: Call | None, request: Request, spec: ErrorSpec) -> Response:
        model = call.model if call else self.state.model
        return self.plain_error(spec.status or self.status_for(spec.kind), _message(spec, model))

    def in_band(self, call: Call, spec: ErrorSpec, style: Literal["data", "field"]) -> list[bytes]:
        return [ndjson({"error": _message(spec, call.model)})]

    def malformed_frame(self, call: Call) -> bytes:
        return b"{not json\n"

    # -- rendering -----------------------------------------------------------------------------

    def metrics(self, turn: Turn) -> dict[str, int]:
        load = 1_000_000
        prompt_eval = max(1, turn.usage.input_tokens) * 100_000
        evaluation = max(1, turn.usage.output_tokens) * 1_000_000
        return {
            "total_duration": load + prompt_eval + evaluation,
            "load_duration": load,
            "prompt_eval_count": turn.usage.input_tokens,
            "prompt_eval_duration": prompt_eval,
            "eval_count": turn.usage.output_tokens,
            "eval_duration": evaluation,
        }

    def tool_calls(self, call: Call, turn: Turn) -> list[dict[str, Any]]:
        return [
            {
                "id": tool.id or f"call_emu{call.seq:06d}{tool.index:02d}",
                "function": {"index": tool.index, "name": tool.name, "arguments": tool.arguments},
            }
            for tool in turn.tool_calls
        ]

    def final(self, call: Call, turn: Turn, message: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "model": call.model,
            "created_at": _now(),
            "message": message,
            "done_reason": _DONE.get(turn.finish, turn.finish),
            "done": True,
        }
        obj.update(self.metrics(turn))
        return obj

    def body(self, call: Call, turn: Turn) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": turn.full_text + turn.full_refusal,
        }
        if turn.reasoning:
            message["thinking"] = turn.full_reasoning
        if turn.tool_calls:
            message["tool_calls"] = self.tool_calls(call, turn)
        return dumps(self.final(call, turn, message)).encode()

    def line(self, call: Call, message: dict[str, Any]) -> bytes:
        return ndjson(
            {"model": call.model, "created_at": _now(), "message": message, "done": False}
        )

    def token_frame(self, call: Call, text: str) -> bytes:
        return self.line(call, {"role": "assistant", "content": text})

    def stream(self, call: Call, turn: Turn) -> StreamPlan:
        thinking = Template(
            self.line(call, {"role": "assistant", "content": "", "thinking": SLOT[0]})
        )
        content = Template(self.line(call, {"role": "assistant", "content": SLOT[0]}))
        frames = [Frame(thinking.fill(piece)) for piece in turn.reasoning]
        frames += [Frame(content.fill(piece)) for piece in turn.text + turn.refusal]
        frames += [
            Frame(self.line(call, {"role": "assistant", "content": "", "tool_calls": [tool]}))
            for tool in self.tool_calls(call, turn)
        ]
        final = self.final(call, turn, {"role": "assistant", "content": ""})
        return StreamPlan(self.stream_content_type, frames, [ndjson(final)])


def _tag(model: OllamaModel) -> dict[str, Any]:
    family = model.name.split(":", 1)[0].split("/")[-1]
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": model.modified_at,
        "size": model.size,
        "digest": model.digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


class _Models:
    """Ollama's model-management endpoints."""

    def __init__(self, state: EmulatorState, endpoint: OllamaChat) -> None:
        self.state = state
        self.endpoint = endpoint

    def root(self, request: Request) -> Response:
        return text_response(200, "Ollama is running")

    def version(self, request: Request) -> Response:
        return json_response(200, {"version": VERSION}, JSON_UTF8)

    def tags(self, request: Request) -> Response:
        rejected = self.endpoint.authenticate(request)
        if rejected is not None:
            return rejected
        body = {"models": [_tag(model) for model in self.state.ollama_models()]}
        return json_response(200, body, JSON_UTF8)

    def named(self, request: Request) -> str | Response:
        """The model a management request names, or the response refusing it."""
        rejected = self.endpoint.authenticate(request)
        if rejected is not None:
            return rejected
        body = request.json if isinstance(request.json, dict) else {}
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            return self.endpoint.plain_error(400, "model is required")
        return name

    def show(self, request: Request) -> Response:
        name = self.named(request)
        if isinstance(name, Response):
            return name
        model = self.state.ollama_model(name)
        if model is None:
            return self.endpoint.plain_error(404, f"model '{name}' not found")
        body = {
            "license": "",
            "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model.name}\n',
            "parameters": 'stop                           "<|im_end|>"',
            "template": "{{ .Prompt }}",
            "details": _tag(model)["details"],
            "model_info": {
                "general.architecture": "llama",
                "general.parameter_count": 3_212_749_888,
                "llama.context_length": self.state.context_window,
                "llama.embedding_length": 3072,
            },
            "capabilities": ["completion", "tools", "thinking"],
            "modified_at": model.modified_at,
        }
        return json_response(200, body, JSON_UTF8)

    async def pull(self, request: Request, out: Outlet) -> None:
        name = self.named(request)
        if isinstance(name, Response):
            await out.respond(name)
            return
        model = self.state.add_ollama_model(name)
        if isinstance(request.json, dict) and request.json.get("stream") is False:
            await out.respond(json_response(200, {"status": "success"}, JSON_UTF8))
            return
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        lines.extend(
            {
                "status": f"pulling {model.digest[:12]}",
                "digest": f"sha256:{model.digest}",
                "total": model.size,
                "completed": completed,
            }
            for completed in (0, model.size // 4, model.size // 2, model.size)
        )
        lines += [
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        await out.start(200, [("content-type", NDJSON)])
        await out.end(b"".join(ndjson(line) for line in lines))


def routes(state: EmulatorState, engine: Engine) -> list[Route]:
    endpoint = OllamaChat(state)
    models = _Models(state, endpoint)
    return [
        route("GET HEAD", "/", simple(models.root)),
        route("GET HEAD", "/api/version", simple(models.version)),
        route("GET", "/api/tags", simple(models.tags)),
        route("POST", "/api/show", simple(models.show)),
        route("POST", "/api/pull", models.pull),
        route("POST", "/api/chat", engine.handler(endpoint)),
    ]
