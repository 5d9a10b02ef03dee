"""Backend name -> adapter class, imported on first use.

Adding a backend is one module plus one line here. Third-party backends register through the
entry-point group `airframe.adapters` (name = "module:Class").
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import Any

from .._config import BackendKind
from ._base import BackendAdapter

__all__ = ["available_backends", "get_adapter"]

_BUILTIN: MappingProxyType[str, str] = MappingProxyType(
    {
        BackendKind.OPENAI: "airframe.adapters.openai:OpenAIAdapter",
        BackendKind.AZURE_OPENAI: "airframe.adapters.azure:AzureOpenAIAdapter",
        BackendKind.ANTHROPIC: "airframe.adapters.anthropic:AnthropicAdapter",
        BackendKind.LLAMA_SERVER: "airframe.adapters.llama_server:LlamaServerAdapter",
        BackendKind.OLLAMA: "airframe.adapters.ollama:OllamaAdapter",
    }
)

_instances: dict[str, BackendAdapter] = {}


def entry_points(*, group: str) -> Any:
    """`importlib.metadata.entry_points`, imported on first need (it costs ~20 ms to import)."""
    from importlib import metadata

    return metadata.entry_points(group=group)


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="airframe.adapters")}


def available_backends() -> list[str]:
    """Every backend name that `get_adapter` accepts (built-ins, then plug-ins)."""
    return [str(k) for k in _BUILTIN] + sorted(set(_plugins()) - set(_BUILTIN))


def get_adapter(kind: BackendKind | str) -> BackendAdapter:
    """The (shared, stateless) adapter for a backend kind."""
    name = str(kind.value if isinstance(kind, BackendKind) else kind)
    found = _instances.get(name)
    if found is not None:
        return found
    target = _BUILTIN.get(name) or _plugins().get(name)
    if target is None:
        known = ", ".join(available_backends())
        raise ValueError(f"unknown backend {name!r}; known backends: {known}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    adapter = cls()
    if not isinstance(adapter, BackendAdapter):
        raise TypeError(f"{target} is not an airframe BackendAdapter")
    _instances[name] = adapter
    return adapter
