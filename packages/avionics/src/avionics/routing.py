"""Routing: agent -> profile (aliases followed) -> provider + model + params, and fallback chains.

    route = resolve_agent(settings, "planner")      # the agent's own route
    chain = fallback_chain(settings, "planner", ["openai"])
    for route in chain:
        endpoints = route.endpoints()                # one airframe.EndpointSpec per node

Rules (see docs/settings.md):
- An agent resolves to its `profile`, or to `provider` + `model` (or the provider's
  `default_model`); with neither, or without an `[agents.NAME]` table, to the `default` profile.
  An agent's `model` replaces the model of its own route only.
- `params` are the profile's request parameters overridden by the agent's (`extra_body` merged key
  by key, the agent's `system` prompt included), named as `airframe.InferenceRequest` keywords.
  Agent parameters also apply to the agent's fallback routes.
- A chain is the agent's route, its `fallbacks` profiles in order, then the gateway-level fallback
  providers with their `default_model`; a (provider, model) pair appears once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from airframe import BackendKind, EndpointSpec

from .settings import (
    AgentSettings,
    AvionicsSettings,
    ModelCapabilities,
    ProviderSettings,
    SettingsError,
    SettingsIssue,
)

__all__ = ["Route", "fallback_chain", "resolve_agent", "resolve_profile", "routing_table"]

DEFAULT_PROFILE = "default"

_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Route:
    """One place a request can go: provider + model + request parameters.

    `profile` is the concrete profile (after aliases; `via` lists the aliases followed), or None
    for a route built from an agent's provider/model or a gateway fallback provider.
    `params` holds only the parameters that are set, as `InferenceRequest` keywords (temperature,
    max_tokens, top_p, stop (a tuple), seed, extra_body, system):
    `InferenceRequest(messages, model=route.model, **route.params)`. Hashes on
    (profile, provider, model).
    """

    profile: str | None
    provider: str
    provider_settings: ProviderSettings
    model: str
    params: Mapping[str, Any] = field(default_factory=lambda: _NO_PARAMS)
    capabilities: ModelCapabilities = field(default_factory=ModelCapabilities)
    via: tuple[str, ...] = ()

    def __hash__(self) -> int:
        return hash((self.profile, self.provider, self.model))

    @property
    def kind(self) -> BackendKind:
        return self.provider_settings.kind

    @property
    def key(self) -> str:
        """`provider/model`: what fallback chains de-duplicate on."""
        return f"{self.provider}/{self.model}"

    def endpoints(self) -> list[EndpointSpec]:
        """One `airframe.EndpointSpec` per node; reads the API key now (`SettingsError` if none)."""
        return self.provider_settings.endpoints(self.provider)

    def with_model(self, model: str, settings: AvionicsSettings | None = None) -> Route:
        """This route with another model (a per-call override); capabilities follow the model
        when `settings` is given, else only the provider's context window is kept."""
        if settings is not None:
            caps = _capabilities(settings, self.provider, self.provider_settings, model)
        else:
            caps = ModelCapabilities(context_window=self.provider_settings.context_window)
        return replace(self, model=model, capabilities=caps)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view (no keys): what `routing_table` and `avionics routes` show."""
        caps = self.capabilities.model_dump(exclude_none=True)
        return {
            "profile": self.profile,
            "via": list(self.via),
            "provider": self.provider,
            "kind": self.kind.value,
            "model": self.model,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()},
            "urls": self.provider_settings.urls,
            "capabilities": caps,
        }


def resolve_profile(settings: AvionicsSettings, name: str) -> Route:
    """The route of profile `name`, following aliases; `SettingsError` on unknown or cycle."""
    chain = settings.profile_chain(name, key=f"profiles.{name}")
    concrete, profile = settings.concrete_profile(chain[-1])
    return _route(
        settings,
        profile=concrete,
        provider=profile.provider,
        model=profile.model,
        params=profile.request_params(),
        via=tuple(chain[:-1]),
    )


def resolve_agent(settings: AvionicsSettings, agent_name: str) -> Route:
    """The agent's own route. An agent without an `[agents.NAME]` table uses the default profile."""
    agent = settings.agents.get(agent_name)
    if agent is None:
        return _default_route(settings, agent_name)
    if agent.provider is not None:
        base = _route(settings, None, agent.provider, agent.model, {})
    elif agent.profile is not None:
        base = resolve_profile(settings, agent.profile)
    else:
        base = _default_route(settings, agent_name)
    if agent.model is not None and agent.model != base.model:
        base = _route(
            settings, base.profile, base.provider, agent.model, dict(base.params), base.via
        )
    return _with_agent(base, agent)


def fallback_chain(
    settings: AvionicsSettings, agent_name: str, fallback_providers: Sequence[str] = ()
) -> list[Route]:
    """The agent's route, its `fallbacks` profiles, then `fallback_providers`; de-duplicated."""
    agent = settings.agents.get(agent_name)
    routes = [resolve_agent(settings, agent_name)]
    fallbacks = agent.fallbacks if agent else []
    routes += [_with_agent(resolve_profile(settings, name), agent) for name in fallbacks]
    for provider in fallback_providers:
        provider_settings = settings.provider(provider)
        if provider_settings.default_model is None:
            raise SettingsError(
                SettingsIssue(
                    f"providers.{provider}.default_model",
                    f"fallback provider {provider!r} has no default_model",
                    f"set providers.{provider}.default_model, or drop {provider!r} from the "
                    "fallback providers",
                )
            )
        routes.append(_with_agent(_route(settings, None, provider, None, {}), agent))
    unique: dict[str, Route] = {}
    for route in routes:
        unique.setdefault(route.key, route)
    return list(unique.values())


def routing_table(
    settings: AvionicsSettings,
    fallback_providers: Sequence[str] | None = None,
    agents: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One JSON-ready row per agent: its resolved chain (first entry = its own route) and budget.

    `agents` defaults to every configured agent plus `default` (what unconfigured agents get);
    `fallback_providers` defaults to `settings.fallback.providers`.
    """
    if fallback_providers is None:
        fallback_providers = settings.fallback.providers
    if agents is None:
        agents = sorted(settings.agents)
        if DEFAULT_PROFILE not in settings.agents and DEFAULT_PROFILE in settings.profiles:
            agents = [*agents, DEFAULT_PROFILE]
    rows = []
    for name in agents:
        agent = settings.agents.get(name)
        chain = fallback_chain(settings, name, fallback_providers)
        budget: Decimal | None = agent.budget_usd if agent else None
        rows.append(
            {
                "agent": name,
                "configured": agent is not None,
                "budget_usd": None if budget is None else str(budget),
                "budget_period": agent.budget_period if agent and budget is not None else None,
                "chain": [route.describe() for route in chain],
            }
        )
    return rows


def _default_route(settings: AvionicsSettings, agent_name: str) -> Route:
    if DEFAULT_PROFILE not in settings.profiles:
        raise SettingsError(
            SettingsIssue(
                f"agents.{agent_name}",
                f"agent {agent_name!r} has no profile and no {DEFAULT_PROFILE!r} profile exists",
                f"add [agents.{agent_name}] with profile = '...', or define profiles.default",
            )
        )
    return resolve_profile(settings, DEFAULT_PROFILE)


def _route(
    settings: AvionicsSettings,
    profile: str | None,
    provider: str,
    model: str | None,
    params: dict[str, Any],
    via: tuple[str, ...] = (),
) -> Route:
    provider_settings = settings.provider(provider)
    model = model or provider_settings.default_model
    if model is None:
        raise SettingsError(
            SettingsIssue(
                f"providers.{provider}.default_model",
                f"no model given and provider {provider!r} has no default_model",
                f"set a model, or providers.{provider}.default_model",
            )
        )
    return Route(
        profile=profile,
        provider=provider,
        provider_settings=provider_settings,
        model=model,
        params=MappingProxyType(params),
        capabilities=_capabilities(settings, provider, provider_settings, model),
        via=via,
    )


def _with_agent(route: Route, agent: AgentSettings | None) -> Route:
    """`route` with the agent's parameters (and system prompt) layered over the profile's."""
    if agent is None:
        return route
    params = dict(route.params)
    overrides = agent.request_params()
    extra = {**params.get("extra_body", {}), **overrides.pop("extra_body", {})}
    params.update(overrides)
    if extra:
        params["extra_body"] = extra
    if agent.system is not None:
        params["system"] = agent.system
    return replace(route, params=MappingProxyType(params))


def _capabilities(
    settings: AvionicsSettings, provider: str, provider_settings: ProviderSettings, model: str
) -> ModelCapabilities:
    """`capabilities["provider/model"]`, else `["model"]`; the provider's window fills in."""
    caps = settings.capabilities.get(f"{provider}/{model}") or settings.capabilities.get(model)
    caps = caps or ModelCapabilities()
    if caps.context_window is None and provider_settings.context_window is not None:
        caps = caps.model_copy(update={"context_window": provider_settings.context_window})
    return caps
