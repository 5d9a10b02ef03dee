"""Third-party adapters arrive through the `airframe.adapters` entry-point group."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import airframe
from airframe.adapters import _registry
from airframe.testing import Emulator, Reply


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A plug-in module (speaking the OpenAI dialect) registered as `echo_dialect`."""
    module = tmp_path / "echo_dialect_plugin.py"
    module.write_text(
        "from airframe.adapters.openai import OpenAIAdapter\n"
        "class EchoDialectAdapter(OpenAIAdapter):\n"
        "    kind = 'echo_dialect'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    point = EntryPoint(
        "echo_dialect", "echo_dialect_plugin:EchoDialectAdapter", "airframe.adapters"
    )

    def fake_entry_points(*, group: str) -> Any:
        return [point] if group == "airframe.adapters" else []

    monkeypatch.setattr(_registry, "entry_points", fake_entry_points)
    yield "echo_dialect"
    _registry._instances.pop("echo_dialect", None)
    sys.modules.pop("echo_dialect_plugin", None)


async def test_a_plugin_kind_is_accepted_and_dispatched(plugin: str) -> None:
    assert plugin in airframe.available_backends()
    with Emulator() as emu:
        emu.script(Reply.text("from the plug-in"))
        endpoint = airframe.EndpointSpec(emu.base_url("openai"), plugin)
        assert endpoint.backend_kind == plugin
        result = await airframe.infer(endpoint, airframe.InferenceRequest.from_prompt("hi"))
        assert result.text == "from the plug-in"
        await airframe.aclose_all()


def test_an_unregistered_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backend_kind 'nope'.*openai"):
        airframe.EndpointSpec("http://127.0.0.1:1", "nope")
