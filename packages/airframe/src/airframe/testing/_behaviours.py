"""What the emulator answers: replies (what a model says) and faults (what goes wrong).

Both are frozen dataclasses built through classmethods. A behaviour is consumed by exactly one
inference request (`Emulator.script` is a FIFO queue); when the queue is empty the default
behaviour answers (an echo unless changed with `Emulator.set_default`).

    Reply.text("Hello there")                       # streamed as "Hello", " there"
    Reply.tool_calls([("get_weather", {"city": "Paris"})])
    Fault.rate_limit(retry_after=1)                  # 429 in the backend's own error shape
    Fault.drop(after_chunks=3)                       # TCP connection closed mid-stream
    Reply.text("ok").with_headers({"x-should-retry": "false"})
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

from ._recording import RecordedRequest

__all__ = [
    "Behaviour",
    "ErrorKind",
    "Fault",
    "FaultKind",
    "Reply",
    "Responder",
    "TokenCounts",
    "ToolCallSpec",
]

Headers: TypeAlias = tuple[tuple[str, str], ...]

ErrorKind: TypeAlias = Literal[
    "bad_request",
    "auth",
    "permission",
    "not_found",
    "timeout",
    "conflict",
    "too_large",
    "unprocessable",
    "rate_limit",
    "quota",
    "server",
    "overloaded",
    "context_length",
    "content_filter",
]
"""Protocol-neutral names of error situations; each protocol renders them in its own shape."""

FaultKind: TypeAlias = Literal[
    "status",
    "stall",
    "drop",
    "malformed_chunk",
    "in_band_error",
    "no_terminator",
    "html_200",
    "json_200_for_stream",
    "invalid_utf8",
]

_KIND_BY_STATUS: dict[int, ErrorKind] = {
    400: "bad_request",
    401: "auth",
    403: "permission",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    422: "unprocessable",
    429: "rate_limit",
    500: "server",
    502: "server",
    503: "overloaded",
    504: "timeout",
    529: "overloaded",
}


def error_kind_for_status(status: int) -> ErrorKind:
    """The error situation a bare status code stands for (used for default bodies)."""
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    return "server" if status >= 500 else "bad_request"


def _headers(headers: Mapping[str, str] | None) -> Headers:
    if not headers:
        return ()
    return tuple((str(key).lower(), str(value)) for key, value in headers.items())


def _merge(first: Headers, second: Mapping[str, str] | None) -> Headers:
    merged = dict(first)
    merged.update(_headers(second))
    return tuple(merged.items())


def _encode_body(body: str | bytes | Mapping[str, Any] | None) -> tuple[bytes | None, str | None]:
    """Explicit fault bodies: mappings become JSON; text is JSON if it parses, plain text if not."""
    if body is None:
        return None, None
    if isinstance(body, Mapping):
        return json.dumps(dict(body)).encode(), "application/json"
    raw = body.encode() if isinstance(body, str) else bytes(body)
    try:
        json.loads(raw)
    except ValueError:
        return raw, "text/plain; charset=utf-8"
    return raw, "application/json"


@dataclass(frozen=True)
class TokenCounts:
    """Token usage to report instead of the computed one.

    `input_tokens` counts every input token, cache reads and writes included (they are subsets);
    each protocol renders it its own way (Anthropic, for one, reports the uncached remainder in
    `input_tokens` and the cache counts beside it).
    """

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call a scripted reply makes. `id` defaults to a protocol-shaped generated id."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict, hash=False)
    id: str | None = None


ReplyKind: TypeAlias = Literal["text", "echo", "tool_calls", "refusal"]


@dataclass(frozen=True)
class Reply:
    """A successful answer. Build one with the classmethods (`Reply.text(...)`, ...).

    Text is streamed as one token per whitespace-delimited piece, keeping the whitespace, so the
    streamed tokens joined together equal the text. Without `usage`, the reported usage is
    computed: input = whitespace words of all message text + 1 per message; output = the number
    of streamed pieces (reasoning, text, refusal and tool-argument pieces).
    """

    kind: ReplyKind
    content: str = ""
    reasoning: str = ""
    finish_reason: str = "stop"
    usage: TokenCounts | None = None
    calls: tuple[ToolCallSpec, ...] = ()
    headers: Headers = ()

    @classmethod
    def text(
        cls,
        text: str,
        *,
        reasoning: str = "",
        finish_reason: str = "stop",
        usage: TokenCounts | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Answer `text`. `finish_reason` is protocol-neutral: "stop", "length", "tool_calls",
        "content_filter", "stop_sequence" or "refusal"; other strings are sent verbatim."""
        return cls(
            kind="text",
            content=text,
            reasoning=reasoning,
            finish_reason=finish_reason,
            usage=usage,
            headers=_headers(headers),
        )

    @classmethod
    def echo(cls, *, headers: Mapping[str, str] | None = None) -> Reply:
        """Answer "echo: " + the text of the last user message (the default behaviour)."""
        return cls(kind="echo", headers=_headers(headers))

    @classmethod
    def tool_calls(
        cls,
        calls: Iterable[tuple[str, Mapping[str, Any]] | ToolCallSpec],
        *,
        text: str = "",
        reasoning: str = "",
        usage: TokenCounts | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Call tools (several calls are parallel calls), optionally after some text."""
        specs = tuple(
            call if isinstance(call, ToolCallSpec) else ToolCallSpec(call[0], dict(call[1]))
            for call in calls
        )
        if not specs:
            raise ValueError("Reply.tool_calls needs at least one call")
        return cls(
            kind="tool_calls",
            content=text,
            reasoning=reasoning,
            finish_reason="tool_calls",
            usage=usage,
            calls=specs,
            headers=_headers(headers),
        )

    @classmethod
    def refusal(
        cls, message: str = "I can't help with that.", *, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """A model refusal: OpenAI `refusal` deltas, Anthropic `stop_reason: "refusal"`."""
        return cls(
            kind="refusal", content=message, finish_reason="refusal", headers=_headers(headers)
        )

    @classmethod
    def length(
        cls,
        text: str = "This answer stops here because it reached the",
        *,
        usage: TokenCounts | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """A reply cut by the output limit (finish reason length / max_tokens / limit)."""
        return cls(
            kind="text",
            content=text,
            finish_reason="length",
            usage=usage,
            headers=_headers(headers),
        )

    def with_headers(self, headers: Mapping[str, str] | None = None, /, **more: str) -> Reply:
        """The same reply with extra response headers (names are case-insensitive)."""
        return replace(self, headers=_merge(_merge(self.headers, headers), more))


@dataclass(frozen=True)
class Fault:
    """Something going wrong, in the backend's real wire shape. Build one with the classmethods.

    `after_chunks` counts stream events (one SSE event or one NDJSON line) sent before the fault.
    Mid-stream faults stream `reply` (default: the emulator's default reply) around the fault.
    A non-streamed request gets the matching non-stream behaviour: an error status for status
    and in-band faults, the HTML page, a stall before or after the headers, a connection dropped
    before the body is complete, a malformed or non-UTF-8 JSON body.
    """

    kind: FaultKind
    status_code: int | None = None
    error: ErrorKind | None = None
    body: bytes | None = None
    content_type: str | None = None
    headers: Headers = ()
    seconds: float = 0.0
    after_chunks: int | None = 0
    prompt_tokens: int | None = None
    n_ctx: int | None = None
    style: Literal["data", "field"] = "data"
    reply: Reply | None = None

    # -- HTTP status faults ------------------------------------------------------------------

    @classmethod
    def status(
        cls,
        code: int,
        *,
        body: str | bytes | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer with HTTP `code`. Without `body` the body is the protocol's real error shape
        for that status."""
        raw, content_type = _encode_body(body)
        return cls(
            kind="status",
            status_code=code,
            error=error_kind_for_status(code),
            body=raw,
            content_type=content_type,
            headers=_headers(headers),
        )

    @classmethod
    def rate_limit(
        cls,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """429 rate limit. `retry-after` / `retry-after-ms` headers are sent only when given."""
        extra: dict[str, str] = {}
        if retry_after is not None:
            extra["retry-after"] = _number(retry_after)
        if retry_after_ms is not None:
            extra["retry-after-ms"] = _number(retry_after_ms)
        return cls._error("rate_limit", 429, _merge(_headers(extra), headers))

    @classmethod
    def quota(cls, *, status: int | None = None, headers: Mapping[str, str] | None = None) -> Fault:
        """Out of quota or credit. OpenAI/Azure: 429 `insufficient_quota`; Anthropic: its real
        400 "credit balance is too low" (pass `status=429` for a 429); others: 429."""
        return cls._error("quota", status, _headers(headers))

    @classmethod
    def overloaded(cls, *, headers: Mapping[str, str] | None = None) -> Fault:
        """Overloaded: 529 `overloaded_error` on Anthropic, 503 elsewhere."""
        return cls._error("overloaded", None, _headers(headers))

    @classmethod
    def server_error(cls, *, headers: Mapping[str, str] | None = None) -> Fault:
        """500 internal server error."""
        return cls._error("server", 500, _headers(headers))

    @classmethod
    def context_length(
        cls,
        prompt_tokens: int | None = None,
        n_ctx: int | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """400 prompt too long, in each backend's real shape. Defaults: `n_ctx` = the
        emulator's `context_window`, `prompt_tokens` = max(counted prompt, n_ctx + 1)."""
        return cls(
            kind="status",
            status_code=400,
            error="context_length",
            headers=_headers(headers),
            prompt_tokens=prompt_tokens,
            n_ctx=n_ctx,
        )

    @classmethod
    def content_filter(cls, *, headers: Mapping[str, str] | None = None) -> Fault:
        """400 blocked by a content filter (Azure `content_filter`, OpenAI `invalid_prompt`,
        Anthropic "Output blocked by content filtering policy")."""
        return cls._error("content_filter", 400, _headers(headers))

    @classmethod
    def auth(cls, *, headers: Mapping[str, str] | None = None) -> Fault:
        """401 bad credentials, whatever key was sent."""
        return cls._error("auth", 401, _headers(headers))

    # -- transport faults ----------------------------------------------------------------------

    @classmethod
    def stall(
        cls, seconds: float, after_chunks: int | None = 0, *, reply: Reply | None = None
    ) -> Fault:
        """Send nothing for `seconds` after `after_chunks` events (headers already sent), then
        carry on normally. `after_chunks=None` stalls before the response headers."""
        return cls(kind="stall", seconds=seconds, after_chunks=after_chunks, reply=reply)

    @classmethod
    def drop(cls, after_chunks: int = 0, *, reply: Reply | None = None) -> Fault:
        """Close the TCP connection after `after_chunks` events, without the terminator
        (0: right after the headers)."""
        return cls(kind="drop", after_chunks=after_chunks, reply=reply)

    @classmethod
    def malformed_chunk(cls, after_chunks: int = 0, *, reply: Reply | None = None) -> Fault:
        """Insert an event whose payload is not JSON (`data: {not json`), then carry on."""
        return cls(kind="malformed_chunk", after_chunks=after_chunks, reply=reply)

    @classmethod
    def in_band_error(
        cls,
        after_chunks: int = 0,
        kind: ErrorKind = "overloaded",
        *,
        style: Literal["data", "field"] = "data",
        reply: Reply | None = None,
    ) -> Fault:
        """An error event inside a 200 stream after `after_chunks` events, then the stream
        ends. `style="field"` (llama-server only) uses the old `error: {...}` SSE field."""
        return cls(
            kind="in_band_error", error=kind, after_chunks=after_chunks, style=style, reply=reply
        )

    @classmethod
    def no_terminator(cls, *, reply: Reply | None = None) -> Fault:
        """The stream ends cleanly at the TCP level but without `[DONE]` / `message_stop` /
        `done: true` / `stop: true`."""
        return cls(kind="no_terminator", after_chunks=None, reply=reply)

    @classmethod
    def html_200(cls) -> Fault:
        """200 `text/html` page (a captive portal or proxy) where JSON or a stream was expected."""
        return cls(kind="html_200", after_chunks=None)

    @classmethod
    def json_200_for_stream(cls, *, reply: Reply | None = None) -> Fault:
        """A streamed request answered by the complete non-stream JSON body."""
        return cls(kind="json_200_for_stream", after_chunks=None, reply=reply)

    @classmethod
    def invalid_utf8(cls, after_chunks: int = 0, *, reply: Reply | None = None) -> Fault:
        """Insert an event whose text contains bytes that are not UTF-8, then carry on."""
        return cls(kind="invalid_utf8", after_chunks=after_chunks, reply=reply)

    def with_headers(self, headers: Mapping[str, str] | None = None, /, **more: str) -> Fault:
        """The same fault with extra response headers (e.g. `x-should-retry`)."""
        return replace(self, headers=_merge(_merge(self.headers, headers), more))

    @classmethod
    def _error(cls, kind: ErrorKind, status: int | None, headers: Headers) -> Fault:
        return cls(kind="status", status_code=status, error=kind, headers=headers)


Responder: TypeAlias = Callable[[RecordedRequest], "Reply | Fault"]
"""A function deciding the behaviour from the request (runs on the emulator's thread)."""

Behaviour: TypeAlias = "Reply | Fault | Responder"


def _number(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
