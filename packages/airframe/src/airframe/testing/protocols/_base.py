"""The seam between the shared script/fault engine and one wire dialect.

A protocol module provides `ChatEndpoint`s (inference endpoints the script applies to) and plain
routes (model lists, health, tokenizer...). An endpoint only translates: parse a request into a
`Call`, render a `Turn` as a body or a stream, render an error; the engine decides what happens
and sends the bytes.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._behaviours import ErrorKind
from .._state import EmulatorState
from .._turn import Prompt, Turn
from .._wire import Request, Response, StreamPlan

if TYPE_CHECKING:
    from .._engine import Outlet

__all__ = [
    "Call",
    "ChatEndpoint",
    "ErrorSpec",
    "Handler",
    "Route",
    "message_text",
    "route",
    "simple",
]

Handler = Callable[[Request, "Outlet"], Awaitable[None]]


# The status most backends answer each error situation with (protocols override where not).
DEFAULT_STATUS: dict[ErrorKind, int] = {
    "bad_request": 400,
    "auth": 401,
    "permission": 403,
    "not_found": 404,
    "timeout": 408,
    "conflict": 409,
    "too_large": 413,
    "unprocessable": 422,
    "rate_limit": 429,
    "quota": 429,
    "server": 500,
    "overloaded": 503,
    "context_length": 400,
    "content_filter": 400,
}


@dataclass(frozen=True)
class Route:
    """`pattern` is matched against the whole path; `when` narrows shared paths."""

    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    handler: Handler
    when: Callable[[Request], bool] | None = None

    def matches(self, request: Request) -> bool:
        if request.method not in self.methods or not self.pattern.fullmatch(request.path):
            return False
        return self.when is None or self.when(request)


def route(
    methods: str, path: str, handler: Handler, when: Callable[[Request], bool] | None = None
) -> Route:
    return Route(tuple(methods.split()), re.compile(path), handler, when)


def simple(answer: Callable[[Request], Response]) -> Handler:
    """A handler for endpoints that answer with one complete response."""

    async def handle(request: Request, out: Outlet) -> None:
        await out.respond(answer(request))

    return handle


@dataclass
class Call:
    """One parsed inference request."""

    request: Request
    seq: int
    stream: bool
    prompt: Prompt
    created: int = field(default_factory=lambda: int(time.time()))
    include_usage: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.prompt.model


@dataclass(frozen=True)
class ErrorSpec:
    """An error to render: the situation, the status (None: the protocol's usual one)."""

    kind: ErrorKind
    status: int | None = None
    prompt_tokens: int | None = None
    n_ctx: int | None = None
    message: str | None = None


class ChatEndpoint(ABC):
    """One inference endpoint in one wire dialect."""

    stream_content_type: str
    json_content_type: str

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    @abstractmethod
    def prepare(self, request: Request) -> Call | Response:
        """Authenticate and validate; a Response is an immediate answer (401, 400, 404...)."""

    @abstractmethod
    def headers(self, call: Call) -> list[tuple[str, str]]:
        """Headers sent with every answer to this call (request ids...)."""

    def status_for(self, kind: ErrorKind) -> int:
        """The HTTP status this backend uses for an error situation (the common mapping)."""
        return DEFAULT_STATUS[kind]

    @abstractmethod
    def error(self, call: Call | None, request: Request, spec: ErrorSpec) -> Response:
        """An HTTP error response in this backend's real shape."""

    @abstractmethod
    def body(self, call: Call, turn: Turn) -> bytes:
        """The non-streamed JSON body."""

    @abstractmethod
    def stream(self, call: Call, turn: Turn) -> StreamPlan:
        """The streamed events and the terminator."""

    @abstractmethod
    def token_frame(self, call: Call, text: str) -> bytes:
        """One text-delta event carrying `text` (used to inject bad bytes)."""

    @abstractmethod
    def in_band(self, call: Call, spec: ErrorSpec, style: Literal["data", "field"]) -> list[bytes]:
        """The error event(s) sent inside a 200 stream, and whatever the server sends after."""

    def malformed_frame(self, call: Call) -> bytes:
        return b"data: {not json\n\n"

    def context_error(self, call: Call) -> ErrorSpec:
        return ErrorSpec("context_length", None, call.prompt.tokens, self.state.context_window)


def message_text(content: Any) -> str:
    """Text of a message `content`: a string, or the text parts of a content-part list
    (OpenAI `{"type": "text", "text": ...}`, Anthropic text blocks, tool results)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                kind = part.get("type")
                if kind in ("text", "input_text") and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind == "tool_result":
                    texts.append(message_text(part.get("content")))
        return " ".join(text for text in texts if text)
    return ""


def chat_prompt(
    messages: list[Any],
    *,
    system: Any = None,
    max_tokens: int | None,
    model: str,
    user_roles: tuple[str, ...] = ("user",),
) -> Prompt:
    """Count a chat prompt (words + 1 per message) and find the last user text."""
    words = 0
    count = 0
    if system:
        words += len(message_text(system).split())
        count += 1
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = message_text(message.get("content"))
        words += len(text.split())
        count += 1
        if message.get("role") in user_roles and text:
            last_user = text
    return Prompt(
        tokens=words + count, last_user_text=last_user, max_tokens=max_tokens, model=model
    )


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value
