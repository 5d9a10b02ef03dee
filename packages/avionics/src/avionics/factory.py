"""Providers from settings: built once per name, cached, with node-aware routing.

`provider_type` strings are parsed here, at the edge, into backend kinds; nothing else in avionics
compares provider names to strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airframe import BackendKind

from .fallback import RouteCapabilities
from .nodes import NodePool
from .providers.base import LLMProvider
from .providers.mock import MockProvider
from .providers.remote import AirframeProvider
from .routing import Route, resolve_agent
from .settings import AvionicsSettings
from .state import build_shared_state

__all__ = [
    "LLMFactory",
    "create_agent_provider",
    "create_agent_provider_with_node_awareness",
    "create_llm_provider",
]

_KIND_ALIASES: Mapping[str, str] = {
    "llamaserver": BackendKind.LLAMA_SERVER,
    "llama-server": BackendKind.LLAMA_SERVER,
    "llama_server": BackendKind.LLAMA_SERVER,
    "llama": BackendKind.LLAMA_SERVER,
    "openai": BackendKind.OPENAI,
    "anthropic": BackendKind.ANTHROPIC,
    "azure": BackendKind.AZURE_OPENAI,
    "azure_openai": BackendKind.AZURE_OPENAI,
    "ollama": BackendKind.OLLAMA,
}


class LLMFactory:
    """Builds and caches one provider per settings name (and per agent)."""

    def __init__(self, settings: AvionicsSettings, node_profiles: Any = None) -> None:
        self.settings = settings
        self.node_profiles = node_profiles
        self._providers: dict[str, LLMProvider] = {}
        self._registered: dict[str, LLMProvider] = {}
        #: Breaker store of built providers' node pools: per process, or shared ([state]).
        self.shared = build_shared_state(settings)

    def register(self, name: str, provider: LLMProvider) -> None:
        """Use `provider` for settings name `name` (tests, MockProvider, custom providers)."""
        provider.name = name
        self._registered[name] = provider
        self._providers[name] = provider

    def provider(self, name: str) -> LLMProvider:
        """The provider called `name` in settings (built on first use)."""
        found = self._providers.get(name)
        if found is None:
            found = self._providers[name] = self._build(name)
        return found

    def _build(self, name: str) -> LLMProvider:
        ps = self.settings.providers.get(name)
        if ps is None:
            if name == "mock":
                return MockProvider(name="mock")
            known = ", ".join(sorted(self.settings.providers)) or "(none)"
            raise KeyError(
                f"no provider named {name!r} in settings; known providers: {known}. "
                f"Add a [providers.{name}] section to avionics.toml"
            )
        if ps.in_process:
            from .providers.llamacpp import LlamaCppProvider

            return LlamaCppProvider.from_settings(name, ps)
        provider = AirframeProvider(
            name,
            ps.endpoints(name),
            default_model=ps.default_model,
            cooldown=self.settings.gateway.node_cooldown,
        )
        if self.shared.breakers is not None:  # breakers shared across processes
            pool = provider.pool
            provider.pool = NodePool(
                pool.nodes,
                failure_threshold=pool.failure_threshold,
                cooldown=pool.cooldown,
                store=self.shared.breakers,
            )
        return provider

    def get_provider_for_agent(self, agent_name: str, use_cache: bool = True) -> LLMProvider:
        """The provider of the agent's primary route."""
        route = resolve_agent(self.settings, agent_name)
        if not use_cache and route.provider not in self._registered:
            self._providers.pop(route.provider, None)
        return self.provider(route.provider)

    def clear_cache(self) -> None:
        """Forget built providers (registered ones stay)."""
        self._providers = dict(self._registered)

    def mark_node_healthy(self, node_name: str, is_healthy: bool) -> None:
        """Close (healthy) or open (unhealthy) the breaker of a node, named "provider/host:port"
        or by its base URL. Providers not built yet are built to find it."""
        candidates = list(self._providers.values())
        owner = node_name.split("/", 1)[0]
        if owner in self.settings.providers and owner not in self._providers:
            candidates.append(self.provider(owner))
        for provider in candidates:
            pool = getattr(provider, "pool", None)
            if pool is None:
                continue
            try:
                pool.mark(node_name, is_healthy)
                return
            except KeyError:
                continue
        raise KeyError(f"no provider has a node named {node_name!r}")

    def capabilities(self, route: Route, provider: LLMProvider) -> RouteCapabilities:
        """What a route can do: its protocol's limits, narrowed by settings for its model
        (`capabilities["provider/model"]` or `["model"]`, the provider's `context_window`)."""
        proto = provider.protocol_capabilities()
        caps = route.capabilities

        def pick(name: str) -> bool:  # the protocol's limits are hard; settings only narrow
            value = getattr(caps, name, None)
            return bool(getattr(proto, name, True)) and (value is None or bool(value))

        return RouteCapabilities(
            vision=pick("vision"),
            tools=pick("tools"),
            json_schema=pick("json_schema"),
            context_window=caps.context_window,
            image_urls=bool(getattr(proto, "image_urls", True)),
        )

    def all_providers(self) -> dict[str, LLMProvider]:
        for name in self.settings.providers:
            self.provider(name)
        return dict(self._providers)

    def stats(self) -> dict[str, Any]:
        return {name: p.get_stats() for name, p in self._providers.items()}


def create_llm_provider(
    provider_type: str, settings: AvionicsSettings, agent_name: str | None = None
) -> LLMProvider:
    """A provider by settings name, or by type ("llamaserver", "openai", "anthropic", "azure",
    "ollama", "llamacpp", "mock") using the first settings provider of that kind."""
    if provider_type in settings.providers:
        return LLMFactory(settings).provider(provider_type)
    if provider_type == "mock":
        return MockProvider()
    if provider_type == "llamacpp":
        for name, ps in settings.providers.items():
            if getattr(ps, "in_process", False):
                return LLMFactory(settings).provider(name)
        raise ValueError("no provider with in_process = true in settings for 'llamacpp'")
    kind = _KIND_ALIASES.get(provider_type.lower())
    if kind is None:
        valid = ", ".join(sorted({*_KIND_ALIASES, "mock", "llamacpp"}))
        raise ValueError(f"unknown provider type {provider_type!r}; use one of: {valid}")
    for name, ps in settings.providers.items():
        if ps.kind == kind:
            return LLMFactory(settings).provider(name)
    raise ValueError(
        f'no provider of kind {kind} in settings; add [providers.NAME] with kind = "{kind}"'
    )


def create_agent_provider(
    settings: AvionicsSettings, agent_name: str, override_provider: str | None = None
) -> LLMProvider:
    """The provider for an agent, or `override_provider` (a settings name or type) when given."""
    if override_provider:
        return create_llm_provider(override_provider, settings, agent_name)
    return LLMFactory(settings).get_provider_for_agent(agent_name)


def create_agent_provider_with_node_awareness(
    settings: AvionicsSettings, agent_name: str, node_profiles: Any = None
) -> LLMProvider:
    """The agent's provider; with several nodes it picks a healthy, least-busy node per call."""
    return LLMFactory(settings, node_profiles).get_provider_for_agent(agent_name)
