"""`avionics demo`: three agents on three protocols, a fault mid-run, the fallback, the ledger
table and the span tree; and which backends it emulates."""

from __future__ import annotations

import json
import os
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from airframe.testing import Emulator
from avionics import AvionicsSettings
from avionics.cli import main
from avionics.demo import (
    DEMO_SETTINGS_TOML,
    _emulated,
    _real_providers,
    dump_toml,
    emulated_settings,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("AVIONICS_", "OTEL_")) or upper.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_demo_text(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--instant"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "provider anthropic  anthropic     http://127.0.0.1:" in out
    assert "(wire emulator)" in out
    assert "REAL backend" not in out
    for agent in ("planner", "coder", "critic"):
        assert out.count(f"▶ {agent}") == 2
    assert "⚡ fault script: the anthropic endpoint" in out
    failed = "✗ anthropic/claude-sonnet-4-5 failed: overloaded → falling back to openai/gpt-4o-mini"
    assert out.index("Round 2") < out.index(failed) < out.index("(fallback)")
    assert "def slugify(title: str) -> str:" in out
    table = out[out.index("Cost and tokens per agent") :]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert rows["planner"][1:3] == ["3", "1"]
    assert rows["coder"][-1] == "$0.000000"
    assert rows["total"][1] == "7"
    tree = out[out.index("Span tree of one call (planner") :].splitlines()
    assert tree[1].strip().startswith("invoke_agent planner  INTERNAL")
    assert tree[2].strip().startswith("├── chat claude-sonnet-4-5  CLIENT")
    assert "error.type=overloaded" in tree[2]
    assert "resend=1" in tree[3]
    assert tree[4].strip().startswith("└── chat gpt-4o-mini  CLIENT")
    assert "fallback" in tree[4]


def test_demo_json_totals_equal_the_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--instant", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    summary = json.loads(out)
    assert summary["emulated"] == ["anthropic", "local", "openai"]
    calls = summary["calls"]
    assert [c["agent"] for c in calls] == ["planner", "coder", "critic"] * 2
    planner2 = calls[3]
    assert planner2["fallback_used"] is True
    assert [a["error_category"] for a in planner2["attempts"]] == ["overloaded", None]
    assert (planner2["provider"], planner2["model"]) == ("openai", "gpt-4o-mini")
    rows = [a for c in calls for a in c["attempts"]]
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(summary["totals"]["cost_usd"])
    assert Decimal(summary["totals"]["cost_usd"]) > 0
    by_agent = summary["by_agent"]
    assert sum(a["output_tokens"] for a in by_agent.values()) == summary["totals"]["output_tokens"]
    assert Decimal(by_agent["coder"]["cost_usd"]) == 0


def test_demo_uses_avionics_config_when_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real settings file replaces the emulator entirely (here the file points at one)."""
    with Emulator() as real:
        path = emulated_settings(real, tmp_path)
        monkeypatch.setenv("AVIONICS_CONFIG", str(path))
        code = main(["demo", "--instant", "--json"])
        out, _ = capsys.readouterr()
        assert code == 0
        summary = json.loads(out)
        assert summary["emulated"] == []
        assert all(c["text"].startswith("echo: ") for c in summary["calls"])  # its default
        inference = [r for r in real.requests if r.path != "/apply-template"]
        assert len(inference) == 6  # nothing injected: no fallback


def test_keys_in_the_environment_make_providers_real() -> None:
    assert _real_providers(False, {"OPENAI_API_KEY": "sk-x"}) == ["openai"]
    assert _real_providers(False, {"ANTHROPIC_API_KEY": " "}) == []
    assert _real_providers(True, {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "k"}) == []


def test_emulated_settings_keep_real_providers(tmp_path: Path) -> None:
    with Emulator() as emu:
        path = emulated_settings(emu, tmp_path, real=["openai"])
        settings = AvionicsSettings.from_file(path)
        assert settings.providers["openai"].urls == ["https://api.openai.com/v1"]
        assert settings.providers["openai"].api_key_env == "OPENAI_API_KEY"
        assert settings.providers["anthropic"].urls == [emu.base_url("anthropic")]
        assert settings.providers["anthropic"].api_key_env is None
        assert _emulated(settings, emu) == {"local": "llama_server", "anthropic": "anthropic"}


def test_env_overrides_still_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIONICS_PROVIDERS__LOCAL__BASE_URL", "http://10.0.0.5:8080")
    with Emulator() as emu:
        settings = AvionicsSettings.from_file(emulated_settings(emu, tmp_path))
        assert settings.providers["local"].urls == ["http://10.0.0.5:8080"]
        assert "local" not in _emulated(settings, emu)


def test_example_settings_file_is_the_demo_settings() -> None:
    shipped = (ROOT / "examples" / "demo" / "avionics.toml").read_text()
    assert shipped == DEMO_SETTINGS_TOML
    settings = AvionicsSettings.from_file(ROOT / "examples" / "demo" / "avionics.toml")
    assert sorted(settings.agents) == ["coder", "critic", "planner"]
    assert {p.kind.value for p in settings.providers.values()} == {
        "llama_server",
        "openai",
        "anthropic",
    }


def test_dump_toml_round_trips() -> None:
    data = tomllib.loads(DEMO_SETTINGS_TOML)
    assert tomllib.loads(dump_toml(data)) == data
    odd = {"a b": {"x": [1, 2.5, True, 'q"uote'], "t": {"deep": "ü"}}}
    assert tomllib.loads(dump_toml(odd)) == odd


def test_demo_against_an_unreachable_backend_exits_6(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "real.toml"
    path.write_text(
        f'[providers.local]\nkind = "llama_server"\nbase_url = "http://127.0.0.1:{port}"\n'
        'default_model = "m"\nretry = { max_retries = 0 }\n'
        '[profiles]\ndefault = { provider = "local" }\n'
    )
    monkeypatch.setenv("AVIONICS_CONFIG", str(path))
    code = main(["demo", "--instant"])
    out, err = capsys.readouterr()
    assert code == 6
    assert "REAL backend" in out
    assert "All 1 route attempt failed for agent 'planner'" in err
    assert "connection" in err
