"""`avionics routes`: the resolved table as text and JSON, settings errors, `python -m avionics`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avionics import cli
from avionics.cli import COMMANDS, Command, main

CANARY = "sk-CANARY-41d2-never-print-me"

SETTINGS = f"""
[providers.local]
kind = "llama_server"
nodes = ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
default_model = "qwen2.5-7b"
[providers.anthropic]
kind = "anthropic"
api_key = "{CANARY}"
default_model = "claude-haiku-4-5"
[profiles]
fast = {{ provider = "local", model = "qwen2.5-7b", temperature = 0.2 }}
smart = {{ provider = "anthropic", model = "claude-sonnet-4-5" }}
default = "fast"
[agents.planner]
profile = "smart"
fallbacks = ["fast"]
max_tokens = 1024
budget_usd = 5.0
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("AVIONICS_") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(SETTINGS)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_routes_text(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "routes", "--config", str(config))
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["AGENT", "PROFILE", "PROVIDER", "KIND", "MODEL", "PARAMS", "BUDGET"]
    planner = lines[1].split()
    assert planner == [
        *("planner", "smart", "anthropic", "anthropic", "claude-sonnet-4-5"),
        *("max_tokens=1024", "$5.0/day"),
    ]
    fallback = lines[2].split()
    assert fallback[:2] == ["fallback", "1"]
    assert fallback[2:] == [
        *("fast", "local", "llama_server", "qwen2.5-7b"),
        *("temperature=0.2", "max_tokens=1024"),
    ]
    default = lines[3]
    assert default.startswith("default")
    assert "default -> fast" in default
    assert CANARY not in out


def test_routes_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "routes", "--json", "--config", str(config))
    assert code == 0
    rows = json.loads(out)
    assert [row["agent"] for row in rows] == ["planner", "default"]
    chain = rows[0]["chain"]
    assert [(hop["profile"], hop["provider"], hop["model"]) for hop in chain] == [
        ("smart", "anthropic", "claude-sonnet-4-5"),
        ("fast", "local", "qwen2.5-7b"),
    ]
    assert chain[1]["params"] == {"temperature": 0.2, "max_tokens": 1024}
    assert chain[1]["urls"] == ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
    assert rows[0]["budget_usd"] == "5.0"
    assert CANARY not in out


def test_routes_for_named_agents_and_fallback_providers(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "--config",
        str(config),  # the global option works too
        "routes",
        "--json",
        "--fallback-provider",
        "anthropic",
        "writer",
    )
    assert code == 0
    (row,) = json.loads(out)
    assert row["agent"] == "writer"
    assert row["configured"] is False
    assert [hop["provider"] for hop in row["chain"]] == ["local", "anthropic"]
    assert row["chain"][1]["model"] == "claude-haiku-4-5"


def test_routes_reflects_env_override(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVIONICS_AGENTS__PLANNER__PROFILE", "fast")
    code, out, _ = run(capsys, "routes", "--json", "--config", str(config), "planner")
    assert code == 0
    (row,) = json.loads(out)
    assert [hop["provider"] for hop in row["chain"]] == ["local"]


def test_routes_uses_avionics_toml_in_cwd(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "avionics.toml").write_text(config.read_text())
    code, out, _ = run(capsys, "routes")
    assert code == 0
    assert "planner" in out


def test_settings_error_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SETTINGS.replace('profile = "smart"', 'profile = "smrt"'))
    code, out, err = run(capsys, "routes", "--config", str(bad))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("avionics: settings error: ")
    assert str(bad.resolve()) in err
    assert "agents.planner.profile" in err
    assert "did you mean 'smart'" in err
    assert CANARY not in err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "routes", "--config", str(tmp_path / "none.toml"))
    assert code == 2
    assert "does not exist" in err


def test_unknown_fallback_provider_exits_2(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "routes", "--config", str(config), "--fallback-provider", "nope")
    assert code == 2
    assert "unknown provider 'nope'" in err


def test_no_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "routes" in err


def test_commands_registry_is_the_extension_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    seen: list[argparse.Namespace] = []

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--flag", action="store_true")

    def handler(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0 if cli.load_settings(args).providers else 1

    monkeypatch.setitem(COMMANDS, "hello", Command("say hello", configure, handler))
    code, _, _ = run(capsys, "hello", "--flag", "--config", str(config))
    assert code == 0
    assert seen[0].flag is True
    assert seen[0].config == str(config)


def test_python_dash_m_avionics(config: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AVIONICS_")}
    proc = subprocess.run(
        [sys.executable, "-m", "avionics", "routes", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["agent"] == "planner"
