"""Fixtures and wire helpers for the emulator's own tests (plain httpx over real sockets).

Test modules cannot import each other under `--import-mode=importlib`, so the helpers reach
the tests through the `wire` fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from airframe.testing import Emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def client() -> Iterator[httpx.Client]:
    """One client for the session (building an httpx client loads the CA bundle: ~40 ms)."""
    with httpx.Client(timeout=httpx.Timeout(10.0)) as http:
        yield http


@dataclass(frozen=True)
class SSEEvent:
    event: str | None
    data: str
    fields: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(raw: bytes) -> list[SSEEvent]:
    """Split a raw SSE body into events (every field kept, so odd fields are visible)."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event: str | None = None
        data: list[str] = []
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        events.append(SSEEvent(event, "\n".join(data), fields))
    return events


def parse_ndjson(raw: bytes) -> list[Any]:
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def chat(text: str = "hello world") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@dataclass(frozen=True)
class Target:
    """One inference endpoint, enough to send it a request and recognise its terminator."""

    kind: str
    path: str
    headers: dict[str, str]
    terminator: bytes
    stream_by_default: bool = False

    def url(self, emu: Emulator) -> str:
        return emu.base_url(_BASE_KIND[self.kind]) + self.path

    def body(self, stream: bool, text: str = "hello world", **extra: Any) -> dict[str, Any]:
        if self.kind == "llama_server":
            prompt = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
            return {"prompt": prompt, "stream": stream, **extra}
        body: dict[str, Any] = {"model": "emulator-1", "messages": chat(text), "stream": stream}
        if self.kind == "anthropic":
            body["max_tokens"] = 256
        return {**body, **extra}


_BASE_KIND = {
    "openai": "openai",
    "azure_openai": "azure_openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "llama_server": "llama_server",
}

TARGETS = [
    Target("openai", "/chat/completions", {}, b"data: [DONE]\n\n"),
    Target(
        "azure_openai",
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        {},
        b"data: [DONE]\n\n",
    ),
    Target(
        "anthropic",
        "/v1/messages",
        {"anthropic-version": "2023-06-01"},
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ),
    Target("ollama", "/api/chat", {}, b'"done":true', stream_by_default=True),
    Target("llama_server", "/completion", {}, b'"stop":true'),
]


@pytest.fixture(params=TARGETS, ids=[target.kind for target in TARGETS])
def target(request: pytest.FixtureRequest) -> Target:
    selected: Target = request.param
    return selected


def stream_raw(client: httpx.Client, emu: Emulator, target: Target, **extra: Any) -> httpx.Response:
    """Send a streaming request and read the whole raw body (the response is returned read)."""
    with client.stream(
        "POST", target.url(emu), json=target.body(True, **extra), headers=target.headers
    ) as response:
        response.read()
    return response


def streamed_text(target: Target, raw: bytes) -> str:
    """The text a client would assemble from a stream of `target`."""
    if target.kind == "ollama":
        return "".join(line.get("message", {}).get("content", "") for line in parse_ndjson(raw))
    text = []
    for event in parse_sse(raw):
        if event.data == "[DONE]" or not event.data:
            continue
        payload = event.json()
        if target.kind == "anthropic":
            if (
                payload.get("type") == "content_block_delta"
                and payload["delta"]["type"] == "text_delta"
            ):
                text.append(payload["delta"]["text"])
        elif target.kind == "llama_server":
            if not payload.get("stop"):
                text.append(payload["content"])
        else:
            text.extend(
                choice["delta"].get("content") or "" for choice in payload.get("choices", [])
            )
    return "".join(text)


class Wire:
    """The helpers above, handed to tests by the `wire` fixture."""

    parse_sse = staticmethod(parse_sse)
    parse_ndjson = staticmethod(parse_ndjson)
    stream = staticmethod(stream_raw)
    text = staticmethod(streamed_text)
    chat = staticmethod(chat)
    targets = TARGETS

    @staticmethod
    def target(kind: str) -> Target:
        return next(target for target in TARGETS if target.kind == kind)


@pytest.fixture
def wire() -> type[Wire]:
    return Wire
