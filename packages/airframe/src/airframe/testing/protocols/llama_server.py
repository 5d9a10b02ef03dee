"""llama.cpp's llama-server: native `POST /completion` (and `/completions`), `/apply-template`,
`/tokenize`, `/detokenize`, `GET /health`, `/props`, `/slots`, `/models`, and its
OpenAI-compatible `/v1/chat/completions` + `/v1/models` (served when the emulator's
`openai_dialect` is "llama_server", since OpenAI owns those paths otherwise).

Wire facts reproduced (tools/server/README.md, server-task.cpp, server-common.cpp):
- `/completion` stream: `data: {"index", "content", "tokens", "stop": false, "id_slot",
  "tokens_predicted", "tokens_evaluated"}` per token, then a final `data:` object with
  `"stop": true`, `stop_type` ("eos" | "limit" | "word"), `stopping_word`, `tokens_predicted`,
  `tokens_evaluated`, `generation_settings`, `timings` {prompt_n, prompt_ms,
  prompt_per_token_ms, prompt_per_second, predicted_n, predicted_ms, predicted_per_token_ms,
  predicted_per_second, cache_n}. No `[DONE]` on the native endpoint; content type
  `text/event-stream`.
- OpenAI-compatible stream: `[DONE]` at the end, `timings` on the last chunk, first delta
  `{"role": "assistant", "content": null}`.
- errors: `{"error": {"code", "message", "type"}}`; prompt too long is 400
  `exceed_context_size_error` with `n_prompt_tokens` and `n_ctx`; while loading every endpoint
  (health included) answers 503 `{"error": {"code": 503, "message": "Loading model", "type":
  "unavailable_error"}}`. Mid-stream errors are `data: {"error": {...}}` (current) or the old
  `error: {...}` SSE field (builds before late 2025), followed by `data: [DONE]` on /v1.
- auth (`--api-key`): bearer or `x-api-key`; /health and /models stay public.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from .._behaviours import ErrorKind
from .._engine import Engine
from .._state import EmulatorState
from .._turn import Prompt, Turn, count_words, split_pieces
from .._wire import (
    JSON_UTF8,
    SLOT,
    SSE_PLAIN,
    Frame,
    Request,
    Response,
    StreamPlan,
    Template,
    dumps,
    json_response,
    sse,
)
from ._base import (
    Call,
    ChatEndpoint,
    ErrorSpec,
    Route,
    int_or_none,
    message_text,
    route,
    simple,
)
from .openai import DONE, OpenAIChat, openai_finish

__all__ = ["LlamaCompletion", "LlamaOpenAIChat", "chatml", "routes"]

BUILD = "b6000-emulator"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_LAST_USER = re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL)

_TYPES: dict[ErrorKind, tuple[int, str, str]] = {
    "bad_request": (400, "invalid_request_error", "Invalid request"),
    "auth": (401, "authentication_error", "Invalid API Key"),
    "permission": (403, "permission_error", "Forbidden"),
    "not_found": (404, "not_found_error", "model not found"),
    "timeout": (504, "server_error", "Request timed out"),
    "conflict": (409, "invalid_request_error", "Conflict"),
    "too_large": (413, "invalid_request_error", "Request too large"),
    "unprocessable": (400, "invalid_request_error", "Invalid request"),
    "rate_limit": (429, "rate_limit_error", "Too many requests"),
    "quota": (429, "insufficient_quota", "You have exceeded your quota"),
    "server": (500, "server_error", "Internal server error"),
    "overloaded": (503, "unavailable_error", "Loading model"),
    "context_length": (400, "exceed_context_size_error", ""),
    "content_filter": (400, "invalid_request_error", "Content blocked by the moderation filter"),
}


def chatml(messages: list[Any]) -> str:
    """The ChatML rendering `/apply-template` returns (generation prompt included)."""
    parts = []
    for message in messages:
        if isinstance(message, dict):
            role = message.get("role", "user")
            parts.append(f"<|im_start|>{role}\n{message_text(message.get('content'))}<|im_end|>\n")
    return "".join(parts) + "<|im_start|>assistant\n"


def llama_error_object(spec: ErrorSpec, status: int | None = None) -> dict[str, Any]:
    default_status, error_type, message = _TYPES[spec.kind]
    code = status or spec.status or default_status
    if spec.kind == "context_length":
        return {
            "code": code,
            "message": (
                f"request ({spec.prompt_tokens} tokens) exceeds the available context size "
                f"({spec.n_ctx} tokens), try increasing it"
            ),
            "type": error_type,
            "n_prompt_tokens": spec.prompt_tokens,
            "n_ctx": spec.n_ctx,
        }
    return {"code": code, "message": spec.message or message, "type": error_type}


def llama_error(spec: ErrorSpec) -> Response:
    status = spec.status or _TYPES[spec.kind][0]
    return json_response(status, {"error": llama_error_object(spec, status)}, JSON_UTF8, _SERVER)


def llama_in_band(spec: ErrorSpec, style: Literal["data", "field"]) -> bytes:
    error = llama_error_object(spec)
    if style == "field":
        return f"error: {dumps(error)}\n\n".encode()
    return sse({"error": error})


_SERVER = [("server", "llama.cpp")]


def timings(prompt_n: int, predicted_n: int) -> dict[str, Any]:
    prompt_ms = max(prompt_n, 1) * 0.25
    predicted_ms = max(predicted_n, 1) * 2.0
    return {
        "cache_n": 0,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / max(prompt_n, 1),
        "prompt_per_second": 1000.0 * prompt_n / prompt_ms,
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / max(predicted_n, 1),
        "predicted_per_second": 1000.0 * predicted_n / predicted_ms,
    }


def generation_params(n_predict: int, stream: bool, stop: list[str]) -> dict[str, Any]:
    return {
        "n_predict": n_predict,
        "seed": 4294967295,
        "temperature": 0.800000011920929,
        "dynatemp_range": 0.0,
        "dynatemp_exponent": 1.0,
        "top_k": 40,
        "top_p": 0.949999988079071,
        "min_p": 0.05000000074505806,
        "typical_p": 1.0,
        "repeat_last_n": 64,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop": stop,
        "max_tokens": n_predict,
        "n_keep": 0,
        "n_discard": 0,
        "ignore_eos": False,
        "stream": stream,
        "n_probs": 0,
        "min_keep": 0,
        "chat_format": "Content-only",
        "samplers": ["penalties", "dry", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"],
        "timings_per_token": False,
    }


class _Gate:
    """The loading state and the API key, as llama-server's middleware applies them."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def check(self, request: Request, *, public: bool = False) -> Response | None:
        if self.state.loading:
            return llama_error(ErrorSpec("overloaded", 503))
        key = self.state.api_key
        if public or key is None:
            return None
        if request.bearer() == key or request.headers.get("x-api-key") == key:
            return None
        return llama_error(ErrorSpec("auth", 401))


class LlamaCompletion(ChatEndpoint):
    """The native `/completion` endpoint."""

    stream_content_type = SSE_PLAIN
    json_content_type = JSON_UTF8

    def __init__(self, state: EmulatorState) -> None:
        super().__init__(state)
        self.gate = _Gate(state)

    def prepare(self, request: Request) -> Call | Response:
        rejected = self.gate.check(request)
        if rejected is not None:
            return rejected
        body = request.json
        if not isinstance(body, dict):
            return llama_error(ErrorSpec("bad_request", 400))
        raw = body.get("prompt")
        if isinstance(raw, dict):
            raw = raw.get("prompt_string")
        if isinstance(raw, str):
            text, tokens = raw, count_words(raw)
        elif isinstance(raw, list) and raw and all(isinstance(t, int | str) for t in raw):
            ids = [t for t in raw if isinstance(t, int)]
            strings = [t for t in raw if isinstance(t, str)]
            text = self.state.vocab.decode(ids) + " ".join(strings)
            tokens = len(ids) + sum(count_words(s) for s in strings)
        else:
            return llama_error(_bad('"prompt" must be provided'))
        matches = _LAST_USER.findall(text)
        last_user = matches[-1].strip() if matches else text.strip()
        n_predict = int_or_none(body.get("n_predict"))
        if n_predict is None:
            n_predict = int_or_none(body.get("max_tokens"))
        budget = n_predict if n_predict is not None and n_predict >= 0 else None
        stop = body.get("stop")
        return Call(
            request=request,
            seq=self.state.next_seq(),
            stream=body.get("stream") is True,
            prompt=Prompt(
                tokens=tokens, last_user_text=last_user, max_tokens=budget, model=self.state.model
            ),
            options={
                "prompt": text,
                "n_predict": -1 if n_predict is None else n_predict,
                "stop": [s for s in stop if isinstance(s, str)] if isinstance(stop, list) else [],
            },
        )

    def headers(self, call: Call) -> list[tuple[str, str]]:
        return list(_SERVER)

    def status_for(self, kind: ErrorKind) -> int:
        return _TYPES[kind][0]

    def error(self, call: Call | None, request: Request, spec: ErrorSpec) -> Response:
        return llama_error(spec)

    def in_band(self, call: Call, spec: ErrorSpec, style: Literal["data", "field"]) -> list[bytes]:
        return [llama_in_band(spec, style)]

    # -- rendering -----------------------------------------------------------------------------

    def pieces(self, turn: Turn) -> list[str]:
        """Raw model output: reasoning inside <think> tags, tool calls as Hermes <tool_call>."""
        pieces: list[str] = []
        if turn.reasoning:
            pieces += ["<think>", *turn.reasoning, "</think>\n\n"]
        pieces += turn.text + turn.refusal
        for tool in turn.tool_calls:
            call_text = dumps({"name": tool.name, "arguments": tool.arguments})
            pieces += ["<tool_call>\n", *split_pieces(call_text), "\n</tool_call>"]
        return pieces

    def stop_type(self, turn: Turn) -> str:
        if turn.finish == "length":
            return "limit"
        if turn.finish == "stop_sequence":
            return "word"
        return "eos"

    def final(self, call: Call, turn: Turn, content: str, predicted: int) -> dict[str, Any]:
        stop_type = self.stop_type(turn)
        stops: list[str] = call.options["stop"]
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": 0,
            "stop": True,
            "model": call.model,
            "tokens_predicted": predicted,
            "tokens_evaluated": turn.usage.input_tokens,
            "generation_settings": generation_params(call.options["n_predict"], call.stream, stops),
            "prompt": call.options["prompt"],
            "has_new_line": "\n" in content,
            "truncated": False,
            "stop_type": stop_type,
            "stopping_word": stops[0] if stop_type == "word" and stops else "",
            "tokens_cached": 0,
            "timings": timings(turn.usage.input_tokens, predicted),
        }

    def body(self, call: Call, turn: Turn) -> bytes:
        pieces = self.pieces(turn)
        final = self.final(call, turn, "".join(pieces), turn.usage.output_tokens)
        return dumps(final).encode()

    def partial(self, call: Call, text: str, predicted: int, evaluated: int) -> bytes:
        return sse(
            {
                "index": 0,
                "content": text,
                "tokens": [self.state.vocab.id(text)],
                "stop": False,
                "id_slot": 0,
                "tokens_predicted": predicted,
                "tokens_evaluated": evaluated,
            }
        )

    def token_frame(self, call: Call, text: str) -> bytes:
        return self.partial(call, text, 1, call.prompt.tokens)

    def stream(self, call: Call, turn: Turn) -> StreamPlan:
        partial = {
            "index": 0,
            "content": SLOT[0],
            "tokens": [SLOT[1]],
            "stop": False,
            "id_slot": 0,
            "tokens_predicted": SLOT[2],
            "tokens_evaluated": turn.usage.input_tokens,
        }
        template = Template(sse(partial))
        vocab = self.state.vocab
        frames = [
            Frame(template.fill(piece, vocab.id(piece), number))
            for number, piece in enumerate(self.pieces(turn), start=1)
        ]
        final = self.final(call, turn, "", turn.usage.output_tokens)
        return StreamPlan(self.stream_content_type, frames, [sse(final)])


class LlamaOpenAIChat(OpenAIChat):
    """llama-server's `/v1/chat/completions`: OpenAI's shape with llama-server's quirks."""

    stream_content_type = SSE_PLAIN
    json_content_type = JSON_UTF8
    fingerprint = BUILD

    def __init__(self, state: EmulatorState) -> None:
        super().__init__(state)
        self.gate = _Gate(state)

    def reject(self, request: Request) -> Response | None:
        return self.gate.check(request)

    def authenticate(self, request: Request) -> bool:
        return True  # the gate already checked the key

    def bad_request(self, request: Request, message: str, param: str | None) -> Response:
        return llama_error(_bad(message))

    def request_headers(self, seq: int | None = None) -> list[tuple[str, str]]:
        return list(_SERVER)

    def status_for(self, kind: ErrorKind) -> int:
        return _TYPES[kind][0]

    def error(self, call: Call | None, request: Request, spec: ErrorSpec) -> Response:
        return llama_error(spec)

    def in_band(self, call: Call, spec: ErrorSpec, style: Literal["data", "field"]) -> list[bytes]:
        return [llama_in_band(spec, style), DONE]

    def completion_id(self, call: Call) -> str:
        return f"chatcmpl-emu{call.seq:020d}"

    def tool_id(self, call: Call, index: int, given: str | None) -> str:
        return given or f"emu{call.seq:025d}{index:04d}"

    def usage(self, call: Call, turn: Turn) -> dict[str, Any]:
        usage = turn.usage
        return {
            "completion_tokens": usage.output_tokens,
            "prompt_tokens": usage.input_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        }

    def message(self, call: Call, turn: Turn) -> dict[str, Any]:
        message = super().message(call, turn)
        message.pop("refusal", None)
        message.pop("annotations", None)
        if turn.refusal:
            message["content"] = turn.full_text + turn.full_refusal
        return message

    def body(self, call: Call, turn: Turn) -> bytes:
        obj = {
            "choices": [
                {
                    "finish_reason": openai_finish(turn.finish),
                    "index": 0,
                    "message": self.message(call, turn),
                }
            ],
            "created": call.created,
            "model": call.model,
            "system_fingerprint": self.fingerprint,
            "object": "chat.completion",
            "usage": self.usage(call, turn),
            "id": self.completion_id(call),
            "timings": timings(turn.usage.input_tokens, turn.usage.output_tokens),
        }
        return dumps(obj).encode()

    def chunk(self, call: Call, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if "refusal" in delta:
            delta = {"content": delta["refusal"]}
        return {
            "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
            "created": call.created,
            "id": self.completion_id(call),
            "model": call.model,
            "system_fingerprint": self.fingerprint,
            "object": "chat.completion.chunk",
        }

    def role_delta(self, turn: Turn) -> dict[str, Any]:
        return {"role": "assistant", "content": None}

    def usage_chunk(self, call: Call, turn: Turn) -> dict[str, Any]:
        return {
            "choices": [],
            "created": call.created,
            "id": self.completion_id(call),
            "model": call.model,
            "system_fingerprint": self.fingerprint,
            "object": "chat.completion.chunk",
            "usage": self.usage(call, turn),
        }

    def closing_chunks(self, call: Call, turn: Turn) -> list[dict[str, Any]]:
        chunks = super().closing_chunks(call, turn)
        chunks[-1]["timings"] = timings(turn.usage.input_tokens, turn.usage.output_tokens)
        return chunks

    def stream(self, call: Call, turn: Turn) -> StreamPlan:
        plan = super().stream(call, turn)
        return StreamPlan(self.stream_content_type, plan.frames, plan.terminator)


def _bad(message: str) -> ErrorSpec:
    return ErrorSpec("bad_request", 400, message=message)


def _props(state: EmulatorState) -> dict[str, Any]:
    slot = _slot(state)
    return {
        "default_generation_settings": slot,
        "total_slots": 1,
        "model_path": f"/models/{state.model}.gguf",
        "chat_template": CHATML_TEMPLATE,
        "chat_template_caps": {"supports_tools": True, "supports_system_role": True},
        "modalities": {"vision": False, "audio": False},
        "build_info": BUILD,
        "is_sleeping": False,
    }


def _slot(state: EmulatorState) -> dict[str, Any]:
    return {
        "id": 0,
        "id_task": -1,
        "n_ctx": state.context_window,
        "speculative": False,
        "is_processing": False,
        "params": generation_params(-1, True, []),
        "prompt": "",
        "next_token": {
            "has_next_token": True,
            "has_new_line": False,
            "n_remain": -1,
            "n_decoded": 0,
            "stopping_word": "",
        },
    }


def _models(state: EmulatorState) -> dict[str, Any]:
    model = state.model
    return {
        "models": [
            {
                "name": model,
                "model": model,
                "modified_at": "",
                "size": "",
                "digest": "",
                "type": "model",
                "description": "",
                "tags": [""],
                "capabilities": ["completion"],
                "parameters": "",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "",
                    "families": [""],
                    "parameter_size": "",
                    "quantization_level": "",
                },
            }
        ],
        "object": "list",
        "data": [
            {
                "id": model,
                "object": "model",
                "created": 1700000000,
                "owned_by": "llamacpp",
                "meta": {
                    "vocab_type": 2,
                    "n_vocab": 151936,
                    "n_ctx_train": state.context_window,
                    "n_embd": 896,
                    "n_params": 494032768,
                    "size": 531065856,
                },
            }
        ],
    }


class _Utility:
    """llama-server's endpoints other than inference, behind its loading state and API key."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.gate = _Gate(state)

    @staticmethod
    def ok(obj: Any) -> Response:
        return json_response(200, obj, JSON_UTF8, _SERVER)

    @staticmethod
    def body(request: Request) -> dict[str, Any]:
        return request.json if isinstance(request.json, dict) else {}

    def health(self, request: Request) -> Response:
        return self.gate.check(request, public=True) or self.ok({"status": "ok"})

    def props(self, request: Request) -> Response:
        return self.gate.check(request) or self.ok(_props(self.state))

    def slots(self, request: Request) -> Response:
        return self.gate.check(request) or self.ok([_slot(self.state)])

    def models(self, request: Request) -> Response:
        return self.gate.check(request, public=True) or self.ok(_models(self.state))

    def tokenize(self, request: Request) -> Response:
        rejected = self.gate.check(request)
        if rejected is not None:
            return rejected
        body = self.body(request)
        content = body.get("content")
        if not isinstance(content, str):
            return llama_error(_bad('"content" must be provided'))
        vocab = self.state.vocab
        pieces = split_pieces(content)
        ids = [vocab.id(piece) for piece in pieces]
        if body.get("add_special") is True:
            ids, pieces = [vocab.BOS, *ids], ["", *pieces]
        if body.get("with_pieces") is True:
            pairs = zip(ids, pieces, strict=True)
            return self.ok({"tokens": [{"id": token, "piece": piece} for token, piece in pairs]})
        return self.ok({"tokens": ids})

    def detokenize(self, request: Request) -> Response:
        rejected = self.gate.check(request)
        if rejected is not None:
            return rejected
        tokens = self.body(request).get("tokens")
        ids = [t for t in tokens if isinstance(t, int)] if isinstance(tokens, list) else []
        return self.ok({"content": self.state.vocab.decode(ids)})

    def apply_template(self, request: Request) -> Response:
        rejected = self.gate.check(request)
        if rejected is not None:
            return rejected
        messages = self.body(request).get("messages")
        if not isinstance(messages, list):
            return llama_error(_bad('"messages" must be provided'))
        return self.ok({"prompt": chatml(messages)})


def routes(state: EmulatorState, engine: Engine) -> list[Route]:
    utility = _Utility(state)

    def is_llama(request: Request) -> bool:
        return state.openai_dialect == "llama_server"

    return [
        route("GET", "/health|/v1/health", simple(utility.health)),
        route("GET", "/props", simple(utility.props)),
        route("GET", "/slots", simple(utility.slots)),
        route("GET", "/models", simple(utility.models)),
        route("GET", "/v1/models", simple(utility.models), when=is_llama),
        route("POST", "/completion|/completions", engine.handler(LlamaCompletion(state))),
        route(
            "POST", "/v1/chat/completions", engine.handler(LlamaOpenAIChat(state)), when=is_llama
        ),
        route("POST", "/tokenize", simple(utility.tokenize)),
        route("POST", "/detokenize", simple(utility.detokenize)),
        route("POST", "/apply-template", simple(utility.apply_template)),
    ]
