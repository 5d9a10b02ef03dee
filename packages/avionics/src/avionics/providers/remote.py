"""Providers over airframe adapters: one class for every backend kind, named subclasses for the
constructors users know (`LlamaServerProvider(base_url)`, `OpenAIProvider(api_key)`, ...)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import Any

from airframe import (
    AirframeError,
    BackendAdapter,
    BackendKind,
    ConnectionError,
    EndpointSpec,
    ErrorCategory,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    RetryPolicy,
    Timeouts,
    TransportHooks,
    get_adapter,
)

from ..nodes import Node, NodePool, NoHealthyNodeError, node_category
from .base import LLMProvider

__all__ = [
    "AirframeProvider",
    "AnthropicProvider",
    "AzureAIFoundryProvider",
    "LlamaServerProvider",
    "OllamaProvider",
    "OpenAIProvider",
]

LOCAL_KINDS = frozenset({BackendKind.LLAMA_SERVER, BackendKind.OLLAMA})


def _node_name(provider: str, endpoint: EndpointSpec) -> str:
    if endpoint.name:
        return endpoint.name
    host = endpoint.base_url.split("://", 1)[-1].split("/", 1)[0]
    return f"{provider}/{host}"


class AirframeProvider(LLMProvider):
    """A provider whose calls go through an airframe adapter to one or more nodes.

    `infer` / `stream` without `node=` choose a node themselves (least in flight, breakers
    honoured) and report the outcome to it. With `node=` (the gateway, which holds the node
    through `acquire_node` / `release_node`) they only make the call.
    """

    def __init__(
        self,
        name: str,
        endpoints: Sequence[EndpointSpec],
        *,
        default_model: str | None = None,
        pool: NodePool | None = None,
        cooldown: float | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError(f"provider {name!r} needs at least one endpoint")
        kinds = {e.backend_kind for e in endpoints}
        if len(kinds) != 1:
            raise ValueError(f"provider {name!r} mixes backend kinds: {sorted(kinds)}")
        self.name = name
        self.backend_kind: BackendKind | str = endpoints[0].backend_kind
        self.kind = str(self.backend_kind)
        self.local = self.backend_kind in LOCAL_KINDS
        self.default_model = default_model
        self.adapter: BackendAdapter = get_adapter(self.backend_kind)
        if pool is None:
            nodes = [Node(_node_name(name, e), e) for e in endpoints]
            pool = NodePool(nodes) if cooldown is None else NodePool(nodes, cooldown=cooldown)
        self.pool = pool

    @property
    def endpoints(self) -> list[EndpointSpec]:
        return [n.endpoint for n in self.pool.nodes]

    def pick_node(self, exclude: Sequence[str] = ()) -> Node:
        try:
            return self.pool.pick(exclude)
        except NoHealthyNodeError as exc:
            raise ConnectionError(str(exc), backend=self.kind, endpoint=self.name) from None

    def has_node(self, exclude: Sequence[str] = ()) -> bool:
        return self.pool.has_available(exclude)

    def acquire_node(self, exclude: Sequence[str] = ()) -> Node:
        return self.pool.acquire(exclude)

    def release_node(
        self, node: Node | None, error_category: Any = None, *, completed: bool = True
    ) -> None:
        if node is not None:
            category = None if error_category is None else ErrorCategory(error_category)
            self.pool.release(node, category, completed=completed)

    def record_outcome(self, node: Node | None, error_category: Any = None) -> None:
        if node is None:
            return
        if error_category is None:
            self.pool.record_success(node)
        else:
            self.pool.record_failure(node, ErrorCategory(error_category))

    def protocol_capabilities(self) -> Any:
        return self.adapter.capabilities_for(self.pool.nodes[0].endpoint)

    def _request(self, request: InferenceRequest) -> InferenceRequest:
        if request.model is None and self.default_model is not None:
            return replace(request, model=self.default_model)
        return request

    def _lease(self) -> Node:
        try:
            return self.pool.acquire()
        except NoHealthyNodeError as exc:
            raise ConnectionError(str(exc), backend=self.kind, endpoint=self.name) from None

    async def infer(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> InferenceResult:
        if node is not None:
            return await self.adapter.infer(node.endpoint, self._request(request), hooks=hooks)
        chosen = self._lease()
        category: ErrorCategory | None = None
        completed = False
        try:
            result = await self.adapter.infer(chosen.endpoint, self._request(request), hooks=hooks)
            completed = True
        except AirframeError as exc:
            category, completed = node_category(exc), True
            raise
        finally:
            self.pool.release(chosen, category, completed=completed)
        return result

    async def stream(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> AsyncGenerator[InferenceStreamEvent, None]:
        chosen = node or self._lease()
        category: ErrorCategory | None = None
        completed = False
        events = self.adapter.stream_infer(chosen.endpoint, self._request(request), hooks=hooks)
        try:
            async for event in events:
                yield event
            completed = True
        except AirframeError as exc:
            category, completed = node_category(exc), True
            raise
        finally:
            await events.aclose()
            if node is None:
                self.pool.release(chosen, category, completed=completed)

    async def health_check(self) -> bool:
        """Check every node: healthy nodes close their breakers, unhealthy ones open them.
        True when one node is healthy."""
        statuses = await asyncio.gather(
            *(self.adapter.health_check(n.endpoint) for n in self.pool.nodes)
        )
        for node, status in zip(self.pool.nodes, statuses, strict=True):
            self.pool.mark(node.name, status.ok)
        return any(s.ok for s in statuses)

    async def list_models(self) -> list[str]:
        return await self.adapter.list_models(self.pick_node().endpoint)

    def get_stats(self) -> dict[str, Any]:
        stats = super().get_stats()
        stats["nodes"] = [
            {"name": n.name, "in_flight": n.in_flight, "breaker": self.pool.state(n)}
            for n in self.pool.nodes
        ]
        return stats


def _spec(
    base_url: str,
    kind: BackendKind,
    *,
    api_key: str | None = None,
    timeout: float = 120.0,
    max_retries: int = 3,
    **kwargs: Any,
) -> EndpointSpec:
    return EndpointSpec(
        base_url,
        kind,
        api_key=api_key,
        timeouts=Timeouts(read=timeout),
        retry=RetryPolicy(max_retries=max_retries),
        **kwargs,
    )


def _env_key(env: str, given: str | None) -> str | None:
    import os

    return given if given is not None else os.environ.get(env)


class LlamaServerProvider(AirframeProvider):
    """llama.cpp `llama-server` (native `/completion` or its OpenAI-compatible `/v1`)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        timeout: float = 120.0,
        max_retries: int = 3,
        api_type: str = "native",
        logger: Any = None,
        *,
        name: str = "llama_server",
        default_model: str | None = None,
        api_key: str | None = None,
    ) -> None:
        spec = _spec(
            base_url,
            BackendKind.LLAMA_SERVER,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            api_type="openai" if api_type == "openai" else "native",
        )
        super().__init__(name, [spec], default_model=default_model)


class OpenAIProvider(AirframeProvider):
    """OpenAI, or any OpenAI-compatible service with `base_url` (Groq, vLLM, OpenRouter...)."""

    def __init__(
        self,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        *,
        base_url: str = "https://api.openai.com/v1",
        name: str = "openai",
        default_model: str | None = None,
    ) -> None:
        spec = _spec(
            base_url,
            BackendKind.OPENAI,
            api_key=_env_key("OPENAI_API_KEY", api_key),
            timeout=timeout,
            max_retries=max_retries,
        )
        super().__init__(name, [spec], default_model=default_model)


class AnthropicProvider(AirframeProvider):
    """Anthropic Messages API."""

    def __init__(
        self,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        *,
        base_url: str = "https://api.anthropic.com",
        name: str = "anthropic",
        default_model: str | None = None,
    ) -> None:
        spec = _spec(
            base_url,
            BackendKind.ANTHROPIC,
            api_key=_env_key("ANTHROPIC_API_KEY", api_key),
            timeout=timeout,
            max_retries=max_retries,
        )
        super().__init__(name, [spec], default_model=default_model)


class AzureAIFoundryProvider(AirframeProvider):
    """Azure OpenAI (a resource endpoint and a deployment)."""

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        deployment_name: str | None = None,
        api_version: str = "2024-10-21",
        timeout: float = 60.0,
        max_retries: int = 3,
        *,
        name: str = "azure",
        default_model: str | None = None,
    ) -> None:
        import os

        base_url = endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not base_url:
            raise ValueError(
                "AzureAIFoundryProvider needs endpoint= (https://NAME.openai.azure.com) "
                "or the AZURE_OPENAI_ENDPOINT environment variable"
            )
        spec = _spec(
            base_url,
            BackendKind.AZURE_OPENAI,
            api_key=_env_key("AZURE_OPENAI_API_KEY", api_key),
            timeout=timeout,
            max_retries=max_retries,
            deployment=deployment_name,
            api_version=api_version,
        )
        super().__init__(name, [spec], default_model=default_model or deployment_name)


class OllamaProvider(AirframeProvider):
    """Ollama's native `/api/chat`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:11434",
        timeout: float = 120.0,
        max_retries: int = 3,
        *,
        name: str = "ollama",
        default_model: str | None = None,
    ) -> None:
        spec = _spec(base_url, BackendKind.OLLAMA, timeout=timeout, max_retries=max_retries)
        super().__init__(name, [spec], default_model=default_model)
