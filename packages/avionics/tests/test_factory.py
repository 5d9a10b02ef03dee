"""Providers from settings: `create_llm_provider`, the agent helpers and `LLMFactory`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airframe import BackendKind
from airframe.testing import Emulator
from avionics import (
    AvionicsSettings,
    LLMFactory,
    MockProvider,
    SettingsError,
    create_agent_provider,
    create_agent_provider_with_node_awareness,
    create_llm_provider,
)
from avionics.providers import AirframeProvider
from avionics.routing import resolve_profile

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import inference_requests, provider, settings


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def fleet(emu: Emulator) -> AvionicsSettings:
    return settings(
        {
            "local": provider(emu, "llama_server"),
            "cloud": provider(emu, "anthropic"),
        },
        profiles={"smart": {"provider": "cloud"}},
        agents={"planner": {"profile": "smart"}, "coder": {"provider": "local"}},
        gateway={"node_cooldown": 7},
    )


@pytest.mark.parametrize("name", ["llamaserver", "llama-server", "llama_server", "LlamaServer"])
async def test_create_llm_provider_by_type(fleet: AvionicsSettings, name: str) -> None:
    built = create_llm_provider(name, fleet)
    assert isinstance(built, AirframeProvider)
    assert built.name == "local"
    assert built.backend_kind is BackendKind.LLAMA_SERVER
    assert built.local


async def test_create_llm_provider_by_settings_name_and_it_works(
    fleet: AvionicsSettings, emu: Emulator
) -> None:
    built = create_llm_provider("cloud", fleet)
    assert built.kind == "anthropic"
    assert await built.generate(None, "hi") == "echo: hi"
    assert inference_requests(emu)[-1].json["model"] == "claude-sonnet-4-5"


def test_create_llm_provider_refuses_unknown_types(fleet: AvionicsSettings) -> None:
    with pytest.raises(ValueError, match="unknown provider type 'gemini'; use one of"):
        create_llm_provider("gemini", fleet)
    with pytest.raises(ValueError, match='kind = "openai"'):
        create_llm_provider("openai", fleet)
    assert isinstance(create_llm_provider("mock", fleet), MockProvider)


async def test_create_agent_provider_follows_the_agent_route(fleet: AvionicsSettings) -> None:
    assert create_agent_provider(fleet, "planner").name == "cloud"
    assert create_agent_provider(fleet, "coder").name == "local"
    assert create_agent_provider(fleet, "unknown-agent").name == "local"  # the default profile
    assert create_agent_provider(fleet, "planner", override_provider="llamaserver").name == "local"


async def test_node_aware_provider_spreads_calls_over_nodes() -> None:
    with Emulator() as a, Emulator() as b:
        fleet = settings({"local": provider(None, "llama_server", nodes=[a, b])})
        built = create_agent_provider_with_node_awareness(fleet, "worker")
        assert isinstance(built, AirframeProvider)
        assert len(built.pool.nodes) == 2
        stream = built.generate_stream(None, "first")
        await anext(stream)  # in flight on node a
        assert await built.generate(None, "second") == "echo: second"
        _ = [c async for c in stream]
        assert len(inference_requests(a)) == len(inference_requests(b)) == 1


def test_factory_caches_per_agent_until_cleared(fleet: AvionicsSettings) -> None:
    factory = LLMFactory(fleet)
    first = factory.get_provider_for_agent("planner")
    assert factory.get_provider_for_agent("planner") is first
    assert factory.get_provider_for_agent("planner", use_cache=False) is not first
    mock = MockProvider()
    factory.register("local", mock)
    factory.clear_cache()
    assert factory.get_provider_for_agent("planner") is not first
    assert factory.get_provider_for_agent("coder") is mock  # registered providers stay
    assert mock.name == "local"


def test_factory_applies_the_node_cooldown(fleet: AvionicsSettings) -> None:
    built = LLMFactory(fleet).provider("local")
    assert isinstance(built, AirframeProvider)
    assert built.pool.cooldown == 7


def test_mark_node_healthy_builds_the_provider_when_needed(
    fleet: AvionicsSettings, emu: Emulator
) -> None:
    factory = LLMFactory(fleet)
    name = f"local/127.0.0.1:{emu.port}"
    factory.mark_node_healthy(name, False)
    built = factory.provider("local")
    assert isinstance(built, AirframeProvider)
    assert built.pool.state(built.pool.nodes[0]) == "open"
    factory.mark_node_healthy(name, True)
    assert built.pool.state(built.pool.nodes[0]) == "closed"
    with pytest.raises(KeyError):
        factory.mark_node_healthy("nowhere/1.2.3.4:5", True)


def test_capabilities_settings_only_narrow_the_protocol(emu: Emulator) -> None:
    fleet = settings(
        {"local": provider(emu, "llama_server"), "cloud": provider(emu, "openai")},
        profiles={"c": {"provider": "cloud"}},
        capabilities={
            "qwen2.5-7b": {"tools": True, "context_window": 32768},
            "gpt-4o": {"vision": False},
        },
    )
    factory = LLMFactory(fleet)
    local_route, cloud_route = resolve_profile(fleet, "default"), resolve_profile(fleet, "c")
    local = factory.capabilities(local_route, factory.provider("local"))
    assert local.tools is False  # native /completion has no tools, whatever settings say
    assert local.context_window == 32768
    assert local.image_urls is False
    cloud = factory.capabilities(cloud_route, factory.provider("cloud"))
    assert (cloud.vision, cloud.tools, cloud.json_schema) == (False, True, True)


def test_a_missing_api_key_is_reported_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_ONLY_OPENAI_KEY", raising=False)
    fleet = settings(
        {
            "cloud": {
                "kind": "openai",
                "api_key_env": "TEST_ONLY_OPENAI_KEY",
                "default_model": "gpt-4o",
            }
        }
    )  # loading needs no key
    with pytest.raises(SettingsError, match="TEST_ONLY_OPENAI_KEY"):
        LLMFactory(fleet).provider("cloud")
    with pytest.raises(KeyError, match="known providers: cloud"):
        LLMFactory(fleet).provider("other")
