"""Fallback as DESIGN.md says: by error category, capability-aware, in chain order, over real
sockets against the emulator (one emulator per provider, so each has its own fault script)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import airframe
from airframe import ImagePart, ResponseFormat
from airframe.testing import Emulator, Fault, Reply
from avionics import AvionicsSettings, GatewayError, LLMGateway, MockProvider

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import NO_RETRY, inference_requests, provider, refused_url, settings


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emu2() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def two_routes(
    first: Emulator, second: Emulator, kind: str = "openai", **gateway: Any
) -> LLMGateway:
    """Agent `a`: primary provider `p` on `first`, fallback profile `backup` on `second`."""
    return LLMGateway(
        settings(
            {"p": provider(first, kind, retry=NO_RETRY), "q": provider(second, kind)},
            profiles={"main": {"provider": "p"}, "backup": {"provider": "q"}},
            agents={"a": {"profile": "main", "fallbacks": ["backup"]}},
            **gateway,
        )
    )


MOVES_ON = [
    ("rate_limit", Fault.rate_limit()),
    ("quota", Fault.quota()),
    ("overloaded", Fault.overloaded()),
    ("server", Fault.server_error()),
    ("timeout", Fault.status(504)),
    ("not_found", Fault.status(404)),
    ("auth", Fault.auth()),
    ("protocol", Fault.html_200()),
]


@pytest.mark.parametrize(("category", "fault"), MOVES_ON, ids=[c for c, _ in MOVES_ON])
async def test_these_categories_move_on_to_the_next_route(
    emu: Emulator, emu2: Emulator, category: str, fault: Fault
) -> None:
    gw = two_routes(emu, emu2)
    emu.script(fault)
    emu2.script(Reply.text("from the backup"))
    response = await gw.complete("hi", agent_name="a")
    assert response.text == "from the backup"
    assert response.provider == "q"
    attempts = response.metadata["attempts"]
    assert [(a["provider"], a["outcome"], a["error_category"]) for a in attempts] == [
        ("p", "error", category),
        ("q", "ok", None),
    ]
    assert response.metadata["fallback_used"] is True
    assert gw.get_stats()["fallbacks"] == 1


async def test_a_refused_connection_moves_on(emu2: Emulator) -> None:
    with refused_url() as url:
        gw = LLMGateway(
            settings(
                {
                    "p": provider(None, "openai", url=url, retry=NO_RETRY),
                    "q": provider(emu2, "openai"),
                },
                agents={"a": {"profile": "default", "fallbacks": ["backup"]}},
                profiles={"backup": {"provider": "q"}},
            )
        )
        response = await gw.complete("hi", agent_name="a")
    assert response.provider == "q"
    assert response.metadata["attempts"][0]["error_category"] == "connection"


STOPS = [
    ("bad_request", Fault.status(400)),
    ("content_filter", Fault.content_filter()),
]


@pytest.mark.parametrize(("category", "fault"), STOPS, ids=[c for c, _ in STOPS])
async def test_bad_request_and_content_filter_stop_the_chain(
    emu: Emulator, emu2: Emulator, category: str, fault: Fault
) -> None:
    gw = two_routes(emu, emu2)
    emu.script(fault)
    with pytest.raises(GatewayError) as info:
        await gw.complete("hi", agent_name="a")
    assert inference_requests(emu2) == []
    (cause,) = info.value.exceptions
    assert isinstance(cause, airframe.AirframeError)
    assert cause.category == category
    assert gw.get_stats()["failures"] == 1


async def test_stop_on_is_configurable(emu: Emulator, emu2: Emulator) -> None:
    gw = two_routes(emu, emu2, fallback={"stop_on": ["rate_limit"]})
    emu.script(Fault.content_filter())  # no longer stops
    assert (await gw.complete("hi", agent_name="a")).provider == "q"
    emu.script(Fault.rate_limit())  # now stops (no retry on p)
    with pytest.raises(GatewayError):
        await gw.complete("hi", agent_name="a")
    assert len(inference_requests(emu2)) == 1


# -- context length -----------------------------------------------------------------------------


def context_gateway(
    emu: Emulator, emu2: Emulator, emu3: Emulator | None, windows: dict[str, int]
) -> LLMGateway:
    providers = {"p": provider(emu, "openai", retry=NO_RETRY), "q": provider(emu2, "openai")}
    profiles: dict[str, Any] = {
        "main": {"provider": "p", "model": "small"},
        "same": {"provider": "q", "model": "same-size"},
    }
    fallbacks = ["same"]
    if emu3 is not None:
        providers["r"] = provider(emu3, "openai")
        profiles["big"] = {"provider": "r", "model": "large"}
        fallbacks.append("big")
    return LLMGateway(
        settings(
            providers,
            profiles=profiles,
            agents={"a": {"profile": "main", "fallbacks": fallbacks}},
            capabilities={k: {"context_window": v} for k, v in windows.items()},
        )
    )


async def test_context_length_moves_only_to_a_larger_window(emu: Emulator, emu2: Emulator) -> None:
    with Emulator() as emu3:
        gw = context_gateway(emu, emu2, emu3, {"small": 4096, "same-size": 4096, "large": 128000})
        emu.script(Fault.context_length(prompt_tokens=5000, n_ctx=4096))
        response = await gw.complete("a very long prompt", agent_name="a")
        assert response.provider == "r"
        assert inference_requests(emu2) == []  # same window: skipped, never called
        skipped = response.metadata["skipped"]
        assert [s["provider"] for s in skipped] == ["q"]
        assert "context window" in skipped[0]["reason"]


async def test_context_length_with_no_larger_route_lists_the_skip(
    emu: Emulator, emu2: Emulator
) -> None:
    gw = context_gateway(emu, emu2, None, {"small": 4096})  # q's window unknown: not larger
    emu.script(Fault.context_length())
    with pytest.raises(GatewayError) as info:
        await gw.complete("long", agent_name="a")
    message = str(info.value)
    assert "context_length" in message
    assert "skipped" in message
    assert "q/same-size" in message
    assert inference_requests(emu2) == []
    matched: list[BaseException] = []
    try:
        raise info.value
    except* airframe.ContextLengthError as group:
        matched.extend(group.exceptions)
    assert [type(e) for e in matched] == [airframe.ContextLengthError]


# -- capabilities -------------------------------------------------------------------------------


async def test_an_image_request_skips_a_route_without_vision(emu: Emulator, emu2: Emulator) -> None:
    gw = LLMGateway(
        settings(
            {"p": provider(emu, "openai"), "q": provider(emu2, "openai")},
            profiles={"main": {"provider": "p", "model": "text-only"}, "eyes": {"provider": "q"}},
            agents={"a": {"profile": "main", "fallbacks": ["eyes"]}},
            capabilities={"text-only": {"vision": False}},
        )
    )
    response = await gw.complete("what is this?", images=[b"\x89PNG fake"], agent_name="a")
    assert response.provider == "q"
    assert inference_requests(emu) == []
    assert response.metadata["skipped"][0]["reason"] == "no vision support"
    assert (await gw.complete("text only", agent_name="a")).provider == "p"


async def test_tools_skip_llama_server_native_but_not_its_openai_mode(
    emu: Emulator, emu2: Emulator
) -> None:
    gw = LLMGateway(
        settings(
            {
                "native": provider(emu, "llama_server"),
                "compat": provider(emu2, "llama_server", api_type="openai"),
            },
            profiles={"main": {"provider": "native"}, "compat": {"provider": "compat"}},
            agents={"a": {"profile": "main", "fallbacks": ["compat"]}},
        )
    )
    emu2.script(Reply.tool_calls([("lookup", {"q": "x"})]))
    tool = {"name": "lookup", "parameters": {"type": "object"}}
    response = await gw.complete("find x", tools=[tool], agent_name="a")
    assert response.provider == "compat"
    assert response.tool_calls[0].name == "lookup"
    assert inference_requests(emu) == []
    assert response.metadata["skipped"] == [
        {"provider": "native", "model": "qwen2.5-7b", "reason": "no tool support"}
    ]


async def test_json_schema_skips_a_route_marked_without_it(emu: Emulator, emu2: Emulator) -> None:
    gw = LLMGateway(
        settings(
            {"p": provider(emu, "openai"), "q": provider(emu2, "openai")},
            profiles={"main": {"provider": "p"}, "strict": {"provider": "q", "model": "gpt-4.1"}},
            agents={"a": {"profile": "main", "fallbacks": ["strict"]}},
            capabilities={"p/gpt-4o": {"json_schema": False}},
        )
    )
    schema = ResponseFormat.json_schema("answer", {"type": "object"})
    emu2.script(Reply.text('{"ok": true}'))
    response = await gw.complete("json please", response_format=schema, agent_name="a")
    assert response.provider == "q"
    assert inference_requests(emu) == []
    json_object = await gw.complete("plain json", response_format="json", agent_name="a")
    assert json_object.provider == "p"


async def test_image_urls_skip_a_protocol_that_takes_bytes_only(
    emu: Emulator, emu2: Emulator
) -> None:
    gw = LLMGateway(
        settings(
            {"local": provider(emu, "ollama"), "cloud": provider(emu2, "openai")},
            agents={"a": {"profile": "default", "fallbacks": ["cloud"]}},
            profiles={"cloud": {"provider": "cloud"}},
        )
    )
    image = ImagePart(url="https://example.com/cat.png")
    response = await gw.complete("describe", images=[image], agent_name="a")
    assert response.provider == "cloud"
    assert inference_requests(emu) == []


async def test_when_every_route_is_skipped_the_error_says_why(emu: Emulator) -> None:
    gw = LLMGateway(
        settings({"p": provider(emu, "llama_server")}),
    )
    with pytest.raises(GatewayError) as info:
        await gw.complete("x", tools=[{"name": "t"}])
    assert "p/qwen2.5-7b: skipped: no tool support" in str(info.value)
    assert inference_requests(emu) == []
    assert gw.accountant.ledger.rows() == []


# -- chain order ----------------------------------------------------------------------------------


async def test_chain_is_route_then_fallback_profiles_then_fallback_providers() -> None:
    scripts = {
        "p": MockProvider([airframe.ServerError("p down")], name="p"),
        "q": MockProvider([airframe.OverloadedError("q busy")], name="q"),
        "r": MockProvider([airframe.RateLimitError("r slow")], name="r"),
        "z": MockProvider(["last resort"], name="z", default_model="z-default"),
    }
    local = {"kind": "llama_server", "base_url": "http://127.0.0.1:9"}
    gw = LLMGateway(
        settings(
            {name: {**local, "default_model": f"{name}-default"} for name in scripts},
            profiles={"main": {"provider": "p"}, "f1": {"provider": "q"}, "f2": {"provider": "r"}},
            agents={"a": {"profile": "main", "fallbacks": ["f1", "f2"]}},
        ),
        fallback_providers=["z"],
        providers=scripts,
    )
    response = await gw.complete("go", agent_name="a")
    assert response.text == "last resort"
    assert [a["provider"] for a in response.metadata["attempts"]] == ["p", "q", "r", "z"]
    assert response.model == "z-default"
    assert scripts["z"].requests[0].model == "z-default"


async def test_fallback_providers_default_to_settings(emu: Emulator, emu2: Emulator) -> None:
    gw = LLMGateway(
        settings(
            {"p": provider(emu, "openai", retry=NO_RETRY), "z": provider(emu2, "anthropic")},
            fallback={"providers": ["z"]},
        )
    )
    emu.script(Fault.overloaded())
    response = await gw.complete("x")
    assert response.provider == "z"
    assert response.model == "claude-sonnet-4-5"
    assert LLMGateway(gw.settings, fallback_providers=[]).fallback_providers == []


async def test_an_agent_without_settings_uses_the_default_profile(
    emu: Emulator, emu2: Emulator
) -> None:
    gw = LLMGateway(
        settings(
            {"p": provider(emu, "openai"), "q": provider(emu2, "openai")},
            profiles={"default": {"provider": "q", "model": "gpt-4.1-mini"}},
            agents={"planner": {"provider": "p"}},
        )
    )
    response = await gw.complete("x", agent_name="someone-new")
    assert (response.provider, response.model) == ("q", "gpt-4.1-mini")
    assert inference_requests(emu) == []


async def test_an_env_var_moves_an_agent_with_no_code_change(
    emu: Emulator, emu2: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    providers = {"p": provider(emu, "openai"), "q": provider(emu2, "anthropic")}
    profiles = {"cloud": {"provider": "p"}, "local": {"provider": "q"}, "default": "cloud"}

    async def planner_provider() -> str:
        gw = LLMGateway(AvionicsSettings(providers=providers, profiles=profiles))
        return (await gw.complete("plan", agent_name="planner")).provider

    assert await planner_provider() == "p"
    monkeypatch.setenv("AVIONICS_AGENTS__PLANNER__PROFILE", "local")
    assert await planner_provider() == "q"
    assert len(inference_requests(emu2)) == 1


async def test_a_provider_missing_its_api_key_is_skipped_like_auth(
    emu2: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_FOR_TESTS", raising=False)
    keyless = {
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "NO_SUCH_KEY_FOR_TESTS",
        "default_model": "gpt-4o",
    }
    gw = LLMGateway(
        settings(
            {"p": keyless, "q": provider(emu2, "openai")},
            agents={"a": {"profile": "default", "fallbacks": ["backup"]}},
            profiles={"backup": {"provider": "q"}},
        )
    )
    response = await gw.complete("x", agent_name="a")
    assert response.provider == "q"
    assert "NO_SUCH_KEY_FOR_TESTS" in response.metadata["skipped"][0]["reason"]


# -- GatewayError ----------------------------------------------------------------------------------


async def test_gateway_error_lists_every_attempt(emu: Emulator, emu2: Emulator) -> None:
    gw = two_routes(emu, emu2)
    emu.script(Fault.overloaded())
    emu2.script(Fault.rate_limit(), Fault.rate_limit())  # q retries once
    with pytest.raises(GatewayError) as info:
        await gw.complete("hi", agent_name="a")
    error = info.value
    lines = str(error).splitlines()
    assert lines[0] == "All 2 route attempts failed for agent 'a':"
    assert lines[1].startswith(f"  1. p/gpt-4o @ p/127.0.0.1:{emu.port}: overloaded: ")
    assert lines[2].startswith(f"  2. q/gpt-4o @ q/127.0.0.1:{emu2.port}: rate_limit: ")
    assert [a.category for a in error.attempts] == ["overloaded", "rate_limit"]
    assert [type(e) for e in error.exceptions] == [
        airframe.OverloadedError,
        airframe.RateLimitError,
    ]
    assert "sk-test" not in str(error)
    matched: list[BaseException] = []
    try:
        raise error
    except* airframe.RateLimitError as group:
        matched.extend(group.exceptions)
    except* airframe.OverloadedError as group:
        matched.extend(group.exceptions)
    assert len(matched) == 2


async def test_attempts_are_listed_on_success_after_fallback(emu: Emulator, emu2: Emulator) -> None:
    gw = two_routes(emu, emu2)
    emu.script(Fault.server_error())
    response = await gw.complete("hi", agent_name="a")
    first, second = response.metadata["attempts"]
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["node"] == f"p/127.0.0.1:{emu.port}"
    assert first["cost_usd"] == "0"  # a 500 generated nothing
    assert second["outcome"] == "ok"
    assert response.tokens_used == second["input_tokens"] + second["output_tokens"]


async def test_an_unexpected_exception_surfaces_unchanged() -> None:
    gw = LLMGateway(
        settings(
            {"m": {"kind": "llama_server", "base_url": "http://127.0.0.1:9", "default_model": "x"}}
        ),
        providers={"m": MockProvider([ValueError("provider bug")])},
    )
    with pytest.raises(ValueError, match="provider bug"):
        await gw.complete("x")
    (row,) = gw.accountant.ledger.rows()
    assert row.error_category == "ValueError"
