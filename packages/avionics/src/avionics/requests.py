"""Turning the gateway's friendly arguments into one airframe `InferenceRequest`.

Accepts what agent code already has: OpenAI-style message dicts, tool dicts, image bytes, paths or
URLs, a JSON schema dict or a pydantic model class as the response format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from airframe import (
    ImagePart,
    InferenceRequest,
    Message,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolSpec,
)

from .fallback import Needs

__all__ = ["build_request", "needs_of", "to_messages", "to_response_format", "to_tools"]

_PARAM_FIELDS = ("max_tokens", "temperature", "top_p", "seed")


def _to_tool_call(raw: Any) -> ToolCall:
    if isinstance(raw, ToolCall):
        return raw
    fn = raw.get("function", raw)
    args = fn.get("arguments", {})
    if isinstance(args, str):
        return ToolCall.from_raw(raw.get("id", ""), fn["name"], args)
    return ToolCall(raw.get("id", ""), fn["name"], dict(args), json.dumps(args))


def to_messages(messages: Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    """airframe `Message`s from `Message`s or OpenAI-style dicts."""
    out: list[Message] = []
    for m in messages:
        if isinstance(m, Message):
            out.append(m)
            continue
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"message role must be system, user, assistant or tool, not {role!r}")
        content = m.get("content") or ""
        if not isinstance(content, str):
            content = [
                TextPart(p["text"]) if p.get("type") == "text" else _image(p) for p in content
            ]
        out.append(
            Message(
                role,
                content,
                tool_calls=tuple(_to_tool_call(c) for c in m.get("tool_calls") or ()),
                tool_call_id=m.get("tool_call_id"),
                name=m.get("name"),
            )
        )
    return out


def _image(part: Mapping[str, Any]) -> ImagePart:
    url = part.get("image_url", {})
    return ImagePart(url=url.get("url") if isinstance(url, Mapping) else url)


def to_image(image: Any) -> ImagePart:
    """An `ImagePart` from bytes, a URL (http or data:), a file path or an `ImagePart`."""
    if isinstance(image, ImagePart):
        return image
    if isinstance(image, bytes | bytearray):
        return ImagePart(data=bytes(image))
    text = str(image)
    if text.startswith(("http://", "https://", "data:")):
        return ImagePart(url=text)
    return ImagePart.from_path(text)


def to_tools(tools: Sequence[ToolSpec | Mapping[str, Any]] | None) -> tuple[ToolSpec, ...]:
    """`ToolSpec`s from specs, OpenAI tool dicts or plain {name, description, parameters}."""
    out: list[ToolSpec] = []
    for t in tools or ():
        if isinstance(t, ToolSpec):
            out.append(t)
            continue
        fn = t.get("function", t)
        params = fn.get("parameters") or fn.get("input_schema") or {"type": "object"}
        out.append(ToolSpec(fn["name"], fn.get("description", ""), params))
    return tuple(out)


def to_response_format(fmt: Any) -> ResponseFormat | None:
    """A `ResponseFormat` from one, "json", a JSON-schema dict or a pydantic model class."""
    if fmt is None or isinstance(fmt, ResponseFormat):
        return fmt
    if fmt in ("json", "json_object"):
        return ResponseFormat.json_object()
    if isinstance(fmt, Mapping):
        if fmt.get("type") == "json_object":
            return ResponseFormat.json_object()
        if fmt.get("type") == "json_schema" and "json_schema" in fmt:
            spec = fmt["json_schema"]
            return ResponseFormat.json_schema(
                spec.get("name", "response"), spec["schema"], spec.get("strict", True)
            )
        return ResponseFormat.json_schema("response", fmt)
    schema_fn = getattr(fmt, "model_json_schema", None)
    if callable(schema_fn):
        return ResponseFormat.json_schema(getattr(fmt, "__name__", "response"), schema_fn())
    raise TypeError(
        "response_format must be a ResponseFormat, 'json', a JSON schema dict or a pydantic "
        f"model class, not {type(fmt).__name__}"
    )


def build_request(
    *,
    prompt: str | None,
    messages: Sequence[Message | Mapping[str, Any]] | None,
    system: str | None,
    tools: Sequence[ToolSpec | Mapping[str, Any]] | None,
    images: Sequence[Any] | None,
    response_format: Any,
    params: Mapping[str, Any],
) -> InferenceRequest:
    """One request without a model (each route sets its own)."""
    if prompt is None and not messages:
        raise ValueError("complete() needs prompt= or messages=")
    msgs = to_messages(messages or [])
    if prompt is not None:
        msgs.append(Message.user(prompt))
    if images:
        parts = [to_image(i) for i in images]
        last = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "user"), None)
        if last is None:
            raise ValueError("images= needs a user message to attach to")
        m = msgs[last]
        existing = [TextPart(m.content)] if isinstance(m.content, str) else list(m.content)
        msgs[last] = replace(m, content=[*existing, *parts])
    extra = params.get("extra_body") or {}
    stop = params.get("stop") or ()
    return InferenceRequest(
        messages=msgs,
        system=system if system is not None else params.get("system"),
        max_tokens=params.get("max_tokens"),
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        seed=params.get("seed"),
        tools=to_tools(tools),
        tool_choice=params.get("tool_choice"),
        response_format=to_response_format(response_format),
        extra_body=dict(extra),
    )


def for_route(
    request: InferenceRequest, model: str | None, route_params: Mapping[str, Any]
) -> InferenceRequest:
    """The request for one route: its model, and its params where the call left them unset."""
    changes: dict[str, Any] = {"model": model}
    for name in _PARAM_FIELDS:
        if getattr(request, name) is None and route_params.get(name) is not None:
            changes[name] = route_params[name]
    if not request.stop and route_params.get("stop"):
        stop = route_params["stop"]
        changes["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    if request.system is None and route_params.get("system"):
        changes["system"] = route_params["system"]
    if route_params.get("extra_body"):
        changes["extra_body"] = {**route_params["extra_body"], **request.extra_body}
    return replace(request, **changes)


def needs_of(request: InferenceRequest) -> Needs:
    """The capabilities a route needs to serve `request`."""
    fmt = request.response_format
    return Needs(
        vision=request.has_images(),
        tools=bool(request.tools),
        json_schema=fmt is not None and fmt.type == "json_schema",
        image_urls=_has_remote_image(request),
    )


def _has_remote_image(request: InferenceRequest) -> bool:
    for message in request.messages:
        if isinstance(message.content, str):
            continue
        for part in message.content:
            if isinstance(part, ImagePart) and part.url and not part.url.startswith("data:"):
                return True
    return False
