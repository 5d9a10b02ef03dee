"""Wire primitives shared by the protocol modules: requests, responses, stream plans, framing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ._recording import RecordedRequest, parse_json

__all__ = [
    "SLOT",
    "Frame",
    "Request",
    "Response",
    "StreamPlan",
    "Template",
    "dumps",
    "json_response",
    "ndjson",
    "sse",
    "text_response",
]

JSON = "application/json"
JSON_UTF8 = "application/json; charset=utf-8"
SSE_UTF8 = "text/event-stream; charset=utf-8"
SSE_PLAIN = "text/event-stream"
NDJSON = "application/x-ndjson"


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_SORTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def dumps(obj: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON, UTF-8 left as is (as the real servers send it)."""
    return (_SORTED if sort_keys else _COMPACT).encode(obj)


def sse(obj: Any, event: str | None = None) -> bytes:
    """One server-sent event: optional `event:` line, one `data:` line, blank line."""
    data = obj if isinstance(obj, str) else dumps(obj)
    if event is None:
        return f"data: {data}\n\n".encode()
    return f"event: {event}\ndata: {data}\n\n".encode()


def ndjson(obj: Any) -> bytes:
    return (dumps(obj) + "\n").encode()


SLOT = ("@@SLOT0@@", "@@SLOT1@@", "@@SLOT2@@")
"""Marker values for `Template`: put them where the varying values go, render once."""

_SLOTS = re.compile(rb'"@@SLOT(\d)@@"')


class Template:
    """An event rendered once with `SLOT` markers, then filled fast for every token.

    Streams are mostly the same event over and over with one string changing; encoding only
    that string keeps a 2,000-token stream at a few milliseconds of server time.
    """

    def __init__(self, rendered: bytes) -> None:
        self._parts: list[bytes] = []
        self._order: list[int] = []
        position = 0
        for match in _SLOTS.finditer(rendered):
            self._parts.append(rendered[position : match.start()])
            self._order.append(int(match.group(1)))
            position = match.end()
        self._parts.append(rendered[position:])

    def fill(self, *values: Any) -> bytes:
        """Each slot gets the JSON encoding of its value (strings, numbers, lists...)."""
        out = [self._parts[0]]
        for slot, part in zip(self._order, self._parts[1:], strict=True):
            value = values[slot]
            out.append(
                str(value).encode() if type(value) is int else _COMPACT.encode(value).encode()
            )
            out.append(part)
        return b"".join(out)


@dataclass
class Request:
    """An incoming request, body fully read."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any

    @classmethod
    def from_scope(cls, scope: Any, body: bytes) -> Request:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = bytes(raw_name).decode("latin-1").lower()
            value = bytes(raw_value).decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query_string = bytes(scope.get("query_string", b"")).decode("latin-1")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        return cls(
            method=str(scope.get("method", "GET")).upper(),
            path=str(scope.get("path", "/")),
            query=query,
            headers=headers,
            body=body,
            json=parse_json(body),
        )

    def recorded(self) -> RecordedRequest:
        return RecordedRequest(
            method=self.method,
            path=self.path,
            query=dict(self.query),
            headers=dict(self.headers),
            json=self.json,
            body=self.body,
        )

    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()


@dataclass
class Response:
    """A complete (non-streamed) response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def with_headers(
        self, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...]
    ) -> Response:
        """Add headers; a name already present is replaced."""
        names = {name for name, _ in headers}
        kept = [(name, value) for name, value in self.headers if name not in names]
        return Response(self.status, kept + list(headers), self.body)


@dataclass(frozen=True)
class Frame:
    """One stream event (one SSE event or one NDJSON line). `token` frames carry model output
    and get the emulator's token delays; framing events (message_start, ...) do not."""

    data: bytes
    token: bool = True


@dataclass
class StreamPlan:
    """A whole stream before faults: its events and the terminator events that end it."""

    content_type: str
    frames: list[Frame]
    terminator: list[bytes] = field(default_factory=list)


def json_response(
    status: int,
    obj: Any,
    content_type: str = JSON,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    return Response(status, [("content-type", content_type), *(headers or [])], dumps(obj).encode())


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    return Response(status, [("content-type", content_type)], text.encode())
