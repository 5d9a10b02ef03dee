"""Routing: agent -> profile -> provider/model/params, aliases, fallback chains, the table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airframe import BackendKind, InferenceRequest, Message
from avionics.routing import Route, fallback_chain, resolve_agent, resolve_profile, routing_table
from avionics.settings import AvionicsSettings, ModelCapabilities, SettingsError

SETTINGS = """
[providers.local]
kind = "llama_server"
nodes = ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
default_model = "qwen2.5-7b"
context_window = 8192
[providers.anthropic]
kind = "anthropic"
default_model = "claude-haiku-4-5"
[providers.openai]
kind = "openai"
default_model = "gpt-4o-mini"

[profiles]
fast = { provider = "local", model = "qwen2.5-7b", temperature = 0.2, extra_body = { top_k = 40 } }
smart = { provider = "anthropic", model = "claude-sonnet-4-5", max_tokens = 4000, stop = ["END"] }
local = { provider = "local", temperature = 0.0 }
default = "fast"
quick = "default"

[agents.planner]
profile = "smart"
fallbacks = ["fast"]
max_tokens = 1024
budget_usd = 5.0
system = "You plan."
extra_body = { top_k = 10, min_p = 0.05 }

[agents.coder]
provider = "openai"
model = "gpt-4o"
temperature = 0.1

[agents.summarizer]
provider = "anthropic"

[agents.helper]
temperature = 0.7

[agents.reviewer]
profile = "smart"
model = "claude-opus-4-1"
fallbacks = ["quick", "smart", "fast"]

[capabilities."anthropic/claude-sonnet-4-5"]
context_window = 200000
vision = true
[capabilities.gpt-4o]
tools = true
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("AVIONICS_") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(SETTINGS)
    return path


@pytest.fixture
def settings(config: Path) -> AvionicsSettings:
    return AvionicsSettings.from_file(config)


def test_resolve_profile(settings: AvionicsSettings) -> None:
    route = resolve_profile(settings, "smart")
    assert isinstance(route, Route)
    assert (route.profile, route.provider, route.model) == (
        "smart",
        "anthropic",
        "claude-sonnet-4-5",
    )
    assert route.kind is BackendKind.ANTHROPIC
    assert route.provider_settings is settings.providers["anthropic"]
    assert dict(route.params) == {"max_tokens": 4000, "stop": ("END",)}
    assert route.capabilities == ModelCapabilities(context_window=200000, vision=True)
    assert route.via == ()
    assert route.key == "anthropic/claude-sonnet-4-5"


def test_resolve_profile_follows_aliases(settings: AvionicsSettings) -> None:
    route = resolve_profile(settings, "quick")
    assert route.profile == "fast"
    assert route.via == ("quick", "default")
    assert route.provider == "local"
    assert dict(route.params) == {"temperature": 0.2, "extra_body": {"top_k": 40}}
    # no capabilities entry: the provider's context window fills in
    assert route.capabilities == ModelCapabilities(context_window=8192)


def test_profile_without_model_uses_provider_default(settings: AvionicsSettings) -> None:
    route = resolve_profile(settings, "local")
    assert route.model == "qwen2.5-7b"


def test_resolve_profile_rejects_unknown_and_cycles(settings: AvionicsSettings) -> None:
    with pytest.raises(SettingsError, match=r"unknown profile 'smrt'.*did you mean 'smart'"):
        resolve_profile(settings, "smrt")
    # cycles cannot load, so build one past validation
    broken = AvionicsSettings.model_construct(
        providers=settings.providers, profiles={"a": "b", "b": "c", "c": "a"}, agents={}
    )
    with pytest.raises(SettingsError, match="a -> b -> c -> a"):
        resolve_profile(broken, "a")


def test_resolve_agent_profile_with_param_overrides(settings: AvionicsSettings) -> None:
    route = resolve_agent(settings, "planner")
    assert (route.profile, route.provider, route.model) == (
        "smart",
        "anthropic",
        "claude-sonnet-4-5",
    )
    assert dict(route.params) == {
        "max_tokens": 1024,  # agent overrides the profile's 4000
        "stop": ("END",),  # kept from the profile
        "extra_body": {"top_k": 10, "min_p": 0.05},
        "system": "You plan.",
    }


def test_route_params_are_inference_request_keywords(settings: AvionicsSettings) -> None:
    for agent in ("planner", "coder", "helper", "nobody"):
        route = resolve_agent(settings, agent)
        request = InferenceRequest([Message.user("hi")], model=route.model, **route.params)
        assert request.model == route.model
    planner = resolve_agent(settings, "planner")
    request = InferenceRequest([Message.user("hi")], model=planner.model, **planner.params)
    assert request.system == "You plan."
    assert request.max_tokens == 1024


def test_resolve_agent_provider_and_model(settings: AvionicsSettings) -> None:
    coder = resolve_agent(settings, "coder")
    assert (coder.profile, coder.provider, coder.model) == (None, "openai", "gpt-4o")
    assert dict(coder.params) == {"temperature": 0.1}
    assert coder.capabilities.tools is True
    summarizer = resolve_agent(settings, "summarizer")
    assert (summarizer.provider, summarizer.model) == ("anthropic", "claude-haiku-4-5")


def test_agent_model_overrides_its_profile_model(settings: AvionicsSettings) -> None:
    route = resolve_agent(settings, "reviewer")
    assert (route.profile, route.provider, route.model) == (
        "smart",
        "anthropic",
        "claude-opus-4-1",
    )
    assert route.capabilities == ModelCapabilities()  # the sonnet entry does not apply


def test_agent_without_entry_uses_default_profile(settings: AvionicsSettings) -> None:
    route = resolve_agent(settings, "nobody")
    assert (route.profile, route.via, route.provider) == ("fast", ("default",), "local")
    helper = resolve_agent(settings, "helper")  # an entry with params only
    assert helper.profile == "fast"
    assert helper.params["temperature"] == 0.7


def test_env_moves_planner_to_another_provider_without_code_change(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = resolve_agent(AvionicsSettings.from_file(config), "planner")
    assert before.provider == "anthropic"
    monkeypatch.setenv("AVIONICS_AGENTS__PLANNER__PROFILE", "local")
    after = resolve_agent(AvionicsSettings.from_file(config), "planner")
    assert (after.profile, after.provider, after.kind) == (
        "local",
        "local",
        BackendKind.LLAMA_SERVER,
    )
    assert after.model == "qwen2.5-7b"
    assert after.params["max_tokens"] == 1024  # the agent's own overrides still apply
    assert [e.name for e in after.endpoints()] == ["local/10.0.0.5:8080", "local/10.0.0.6:8080"]


def test_no_default_profile_is_an_error_naming_the_fix() -> None:
    settings = AvionicsSettings(providers={"oa": {"kind": "openai", "default_model": "gpt-4o"}})
    with pytest.raises(SettingsError) as info:
        resolve_agent(settings, "nobody")
    message = str(info.value)
    assert "agents.nobody" in message
    assert "no 'default' profile" in message
    assert "Fix:" in message


def test_fallback_chain_order_params_and_gateway_providers(settings: AvionicsSettings) -> None:
    chain = fallback_chain(settings, "planner", ["openai"])
    assert [(r.profile, r.provider, r.model) for r in chain] == [
        ("smart", "anthropic", "claude-sonnet-4-5"),
        ("fast", "local", "qwen2.5-7b"),
        (None, "openai", "gpt-4o-mini"),
    ]
    # agent params apply to the fallbacks too, over the fallback profile's own
    assert dict(chain[1].params) == {
        "temperature": 0.2,
        "max_tokens": 1024,
        "extra_body": {"top_k": 10, "min_p": 0.05},
        "system": "You plan.",
    }
    assert chain[2].params["system"] == "You plan."


def test_fallback_chain_deduplicates_by_provider_and_model(settings: AvionicsSettings) -> None:
    chain = fallback_chain(settings, "reviewer", ["local", "anthropic"])
    assert [r.key for r in chain] == [
        "anthropic/claude-opus-4-1",
        "local/qwen2.5-7b",  # quick -> default -> fast; later "fast" and "local" are duplicates
        "anthropic/claude-sonnet-4-5",
        "anthropic/claude-haiku-4-5",
    ]


def test_fallback_chain_for_unconfigured_agent(settings: AvionicsSettings) -> None:
    chain = fallback_chain(settings, "nobody", ("anthropic",))
    assert [r.key for r in chain] == ["local/qwen2.5-7b", "anthropic/claude-haiku-4-5"]
    assert fallback_chain(settings, "nobody") == chain[:1]


def test_fallback_provider_errors(settings: AvionicsSettings) -> None:
    with pytest.raises(SettingsError, match=r"unknown provider 'opnai'.*did you mean 'openai'"):
        fallback_chain(settings, "planner", ["opnai"])
    bare = AvionicsSettings(
        providers={
            "local": {"kind": "llama_server", "base_url": "http://h:1", "default_model": "m"},
            "oa": {"kind": "openai"},
        },
        profiles={"default": {"provider": "local"}},
    )
    with pytest.raises(SettingsError, match="no default_model"):
        fallback_chain(bare, "x", ["oa"])


def test_route_helpers(settings: AvionicsSettings) -> None:
    route = resolve_agent(settings, "planner")
    assert hash(route) == hash(resolve_agent(settings, "planner"))
    assert route == resolve_agent(settings, "planner")
    other = route.with_model("claude-opus-4-1")
    assert (other.model, other.profile, other.params) == ("claude-opus-4-1", "smart", route.params)
    assert other.capabilities == ModelCapabilities()
    back = other.with_model("claude-sonnet-4-5", settings)
    assert back.capabilities.context_window == 200000
    with pytest.raises(SettingsError, match="ANTHROPIC_API_KEY"):
        route.endpoints()
    with pytest.raises(AttributeError):
        route.model = "x"  # type: ignore[misc]


def test_routing_table(settings: AvionicsSettings) -> None:
    rows = routing_table(settings, ["openai"])
    assert [row["agent"] for row in rows] == [
        "coder",
        "helper",
        "planner",
        "reviewer",
        "summarizer",
        "default",
    ]
    json.dumps(rows)  # JSON-ready
    planner = next(row for row in rows if row["agent"] == "planner")
    assert planner["configured"] is True
    assert (planner["budget_usd"], planner["budget_period"]) == ("5.0", "day")
    first = planner["chain"][0]
    assert first["provider"] == "anthropic"
    assert first["kind"] == "anthropic"
    assert first["urls"] == ["https://api.anthropic.com"]
    assert first["params"]["stop"] == ["END"]
    assert [hop["provider"] for hop in planner["chain"]] == ["anthropic", "local", "openai"]
    default = rows[-1]
    assert default["configured"] is False
    assert default["chain"][0]["via"] == ["default"]


def test_routing_table_uses_settings_fallback_providers(config: Path) -> None:
    settings = AvionicsSettings.from_file(config, fallback={"providers": ["openai"]})
    (row,) = routing_table(settings, agents=["nobody"])
    assert [hop["provider"] for hop in row["chain"]] == ["local", "openai"]
    (row,) = routing_table(settings, fallback_providers=[], agents=["nobody"])
    assert len(row["chain"]) == 1
