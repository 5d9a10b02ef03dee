"""Requests, messages, results, stream events and usage: the values every backend shares.

These are plain slotted dataclasses. They are built once per call (requests, results) or once per
streamed delta (`InferenceStreamEvent`), so they carry no validation machinery on the hot path;
the adapters check what a backend needs before any network I/O.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypeAlias

__all__ = [
    "Content",
    "FinishReason",
    "ImagePart",
    "InferenceRequest",
    "InferenceResult",
    "InferenceStreamEvent",
    "Message",
    "ResponseFormat",
    "Role",
    "StreamEventType",
    "TextPart",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class TextPart:
    """A text piece of a multi-part message."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image given inline (`data`) or by reference (`url`; a `data:` URL also works)."""

    data: bytes | None = None
    url: str | None = None
    media_type: str = "image/png"

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ValueError("ImagePart needs exactly one of data= (raw bytes) or url=")

    @classmethod
    def from_path(cls, path: str, media_type: str | None = None) -> ImagePart:
        """Read an image file; the media type is guessed from the extension when not given."""
        import mimetypes

        with open(path, "rb") as f:
            data = f.read()
        guessed = media_type or mimetypes.guess_type(path)[0] or "image/png"
        return cls(data=data, media_type=guessed)

    def base64_data(self) -> str:
        """The image as base64 text: inline bytes, or the payload of a `data:` URL."""
        if self.data is not None:
            return base64.b64encode(self.data).decode("ascii")
        assert self.url is not None
        if self.url.startswith("data:") and "," in self.url:
            return self.url.split(",", 1)[1]
        raise ValueError(
            f"image URL {self.url[:60]!r} cannot be sent inline: this backend needs the image "
            "bytes (pass ImagePart(data=...))"
        )

    def as_url(self) -> str:
        """A URL for backends that accept one: the given URL, or a base64 `data:` URL."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.base64_data()}"


Content: TypeAlias = str | Sequence[TextPart | ImagePart]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for. `arguments` is parsed; `raw_arguments` is the wire text."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""

    @classmethod
    def from_raw(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        """Parse the wire JSON; empty means `{}`. Unparseable JSON is kept raw under `_raw`."""
        text = raw_arguments.strip()
        if not text:
            return cls(id=id, name=name, arguments={}, raw_arguments=raw_arguments)
        try:
            parsed = json.loads(text)
        except ValueError:
            return cls(id=id, name=name, arguments={"_raw": raw_arguments}, raw_arguments=text)
        args = parsed if isinstance(parsed, dict) else {"_value": parsed}
        return cls(id=id, name=name, arguments=args, raw_arguments=raw_arguments)


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn. Assistant turns may carry `tool_calls`; tool turns carry `tool_call_id`."""

    role: Role
    content: Content = ""
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: Content) -> Message:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: Content = "", tool_calls: Sequence[ToolCall] = ()) -> Message:
        return cls("assistant", content, tool_calls=tuple(tool_calls))

    @classmethod
    def tool(cls, content: str, tool_call_id: str, name: str | None = None) -> Message:
        return cls("tool", content, tool_call_id=tool_call_id, name=name)

    def text(self) -> str:
        """The text of this turn, image parts left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def has_images(self) -> bool:
        return not isinstance(self.content, str) and any(
            isinstance(p, ImagePart) for p in self.content
        )


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """Structured output: any JSON object, or JSON matching a schema."""

    type: Literal["json_object", "json_schema"]
    name: str = "response"
    schema: Mapping[str, Any] | None = None
    strict: bool = True

    @classmethod
    def json_object(cls) -> ResponseFormat:
        return cls("json_object")

    @classmethod
    def json_schema(
        cls, name: str, schema: Mapping[str, Any], strict: bool = True
    ) -> ResponseFormat:
        return cls("json_schema", name=name, schema=schema, strict=strict)


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """What to ask a backend. `model=None` uses the endpoint's default (local servers)."""

    messages: Sequence[Message]
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: Sequence[str] = ()
    seed: int | None = None
    tools: Sequence[ToolSpec] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: ResponseFormat | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        messages: object = self.messages
        if isinstance(messages, str):
            raise TypeError(
                "InferenceRequest.messages must be a list of Message, not a string: "
                "use InferenceRequest.from_prompt(text)"
            )

    @classmethod
    def from_prompt(cls, prompt: str, **kwargs: Any) -> InferenceRequest:
        """A one-turn request: `InferenceRequest.from_prompt("hi", max_tokens=32)`."""
        return cls(messages=[Message.user(prompt)], **kwargs)

    def has_images(self) -> bool:
        return any(m.has_images() for m in self.messages)


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    OTHER = "other"


@dataclass(slots=True)
class Usage:
    """Token counts. `None` means the backend did not report that count: unknown is not zero.

    `input_tokens` counts every input token, cache reads and writes included (they are subsets).
    """

    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)


@dataclass(slots=True)
class InferenceResult:
    """A whole answer. `raw` keeps backend extras (llama.cpp timings, Azure filter results...)."""

    text: str
    tool_calls: list[ToolCall]
    finish_reason: FinishReason
    usage: Usage | None
    model: str
    response_id: str | None
    reasoning: str = ""
    refusal: str = ""
    reasoning_signature: str | None = None
    raw: dict[str, Any] | None = None


class StreamEventType(StrEnum):
    TOKEN = "token"
    REASONING = "reasoning"
    TOOL_CALL = "tool_call"
    USAGE = "usage"
    MESSAGE = "message"


@dataclass(slots=True)
class InferenceStreamEvent:
    """One streamed event. `MESSAGE` is always last and holds the whole result."""

    type: StreamEventType
    content: str = ""
    tool_call: ToolCall | None = None
    usage: Usage | None = None
    result: InferenceResult | None = None
