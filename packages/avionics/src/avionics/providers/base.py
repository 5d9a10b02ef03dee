"""The provider interface: one configured backend (with its nodes) that the gateway calls.

A provider adds settings, node choice and identity to an airframe adapter; it holds no HTTP code.
The gateway calls `infer` / `stream` with airframe requests. `generate` / `generate_stream` are the
simple prompt-in, text-out calls for code that uses a provider directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airframe import (
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    Message,
    StreamEventType,
    TransportHooks,
)

from ..nodes import Node

__all__ = ["LLMProvider", "TokenChunk", "request_from_options"]

_KNOWN_OPTIONS = frozenset(
    {"temperature", "max_tokens", "num_predict", "top_p", "stop", "seed", "system"}
)


@dataclass(slots=True)
class TokenChunk:
    """A piece of streamed text. The final chunk has `is_final=True` and the result in metadata."""

    text: str
    is_final: bool = False
    token_count: int = 0
    metadata: dict[str, Any] | None = None


def request_from_options(
    model: str | None, prompt: str, options: Mapping[str, Any] | None
) -> InferenceRequest:
    """An `InferenceRequest` from the simple API's options (`num_predict` is `max_tokens`).

    Options airframe has no field for (`top_k`, `repeat_penalty`, ...) go to `extra_body`.
    """
    opts = dict(options or {})
    max_tokens = opts.get("max_tokens", opts.get("num_predict"))
    stop = opts.get("stop") or ()
    extra = {k: v for k, v in opts.items() if k not in _KNOWN_OPTIONS}
    return InferenceRequest(
        messages=[Message.user(prompt)],
        model=model,
        system=opts.get("system"),
        max_tokens=max_tokens,
        temperature=opts.get("temperature"),
        top_p=opts.get("top_p"),
        stop=tuple(stop) if not isinstance(stop, str) else (stop,),
        seed=opts.get("seed"),
        extra_body=extra,
    )


class LLMProvider(ABC):
    """A configured backend. `name` is the provider's settings name; `kind` its wire dialect."""

    name: str = "provider"
    kind: str = "unknown"
    default_model: str | None = None
    local: bool = False  # local backends cost nothing

    @abstractmethod
    async def infer(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> InferenceResult: ...

    @abstractmethod
    def stream(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> AsyncGenerator[InferenceStreamEvent, None]: ...

    @abstractmethod
    async def health_check(self) -> bool:
        """Whether the provider answers (every node is checked; one healthy node suffices)."""

    def pick_node(self, exclude: Sequence[str] = ()) -> Node | None:
        """The node the next call would use (None for providers without nodes). No side
        effects; a call uses `acquire_node` / `release_node`."""
        return None

    def has_node(self, exclude: Sequence[str] = ()) -> bool:
        """Whether a node outside `exclude` is available (always True without nodes)."""
        return True

    def acquire_node(self, exclude: Sequence[str] = ()) -> Node | None:
        """Choose a node for one call and count it in flight; pair with `release_node`.

        Raises `avionics.nodes.NoHealthyNodeError` when every node is cooling down."""
        return None

    def release_node(  # noqa: B027
        self, node: Node | None, error_category: Any = None, *, completed: bool = True
    ) -> None:
        """End a call on `node`: its outcome feeds the node's circuit breaker (`error_category`
        None is a success; `completed=False` means the caller gave up: no verdict)."""

    def record_outcome(self, node: Node | None, error_category: Any = None) -> None:  # noqa: B027
        """Feed a call's outcome to the node's circuit breaker (no-op without nodes)."""

    def protocol_capabilities(self) -> Any:
        """What the wire protocol can carry (an object with `vision`, `tools`, `json_schema`,
        `image_urls`), or None when it carries everything."""
        return None

    @property
    def supports_streaming(self) -> bool:
        return True

    async def generate(
        self, model: str | None, prompt: str, options: Mapping[str, Any] | None = None
    ) -> str:
        """Prompt in, text out."""
        request = request_from_options(model or self.default_model, prompt, options)
        return (await self.infer(request)).text

    async def generate_stream(
        self, model: str | None, prompt: str, options: Mapping[str, Any] | None = None
    ) -> AsyncIterator[TokenChunk]:
        """Prompt in, text chunks out; the last chunk is final and carries the result."""
        request = request_from_options(model or self.default_model, prompt, options)
        stream = self.stream(request)
        try:
            async for event in stream:
                if event.type is StreamEventType.TOKEN:
                    yield TokenChunk(event.content, token_count=1)
                elif event.type is StreamEventType.MESSAGE and event.result is not None:
                    usage = event.result.usage
                    yield TokenChunk(
                        "",
                        is_final=True,
                        token_count=(usage.output_tokens or 0) if usage else 0,
                        metadata={"result": event.result},
                    )
        finally:
            await stream.aclose()

    def get_stats(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "default_model": self.default_model}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r})"
