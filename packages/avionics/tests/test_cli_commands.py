"""`avionics chat`, `models`, `pull` and `doctor` against the wire emulator.

Exit codes by error category come from emulator faults; keys never appear in any output.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airframe.testing import Emulator, Fault, Reply
from avionics.cli import main
from avionics.demo import dump_toml, emulated_settings

CANARY = "sk-CANARY-5b1c-never-print-me"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("AVIONICS_", "OTEL_")) or upper.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def config(emu: Emulator, tmp_path: Path) -> Path:
    """The demo settings (planner -> anthropic, coder -> llama-server, critic -> openai), every
    provider on the emulator."""
    path = emulated_settings(emu, tmp_path)
    data = tomllib.loads(path.read_text())
    for provider in data["providers"].values():  # one fast retry (the emulator answers at once)
        provider["retry"] = {"max_retries": 1, "initial_delay": 0.001, "max_delay": 0.001}
    path.write_text(dump_toml(data))
    return path


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- chat ----------------------------------------------------------------------------------------


def test_chat_streams_through_the_agents_route(
    config: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.script(Reply.text("1. Plan it. 2. Do it."))
    code, out, err = run(capsys, "chat", "--config", str(config), "--agent", "planner", "Plan")
    assert code == 0, err
    assert out == "1. Plan it. 2. Do it.\n"
    assert "planner → anthropic/claude-sonnet-4-5" in err
    sent = emu.last_request
    assert sent.path == "/v1/messages"
    assert sent.json["stream"] is True
    assert sent.json["system"] == "You are the planner. Write a short numbered plan."


def test_chat_shows_the_fallback(
    config: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.script(Fault.overloaded(), Fault.overloaded(), Reply.text("from the fallback"))
    code, out, err = run(capsys, "chat", "--config", str(config), "--agent", "planner", "Plan")
    assert code == 0, err
    assert out == "from the fallback\n"
    assert "anthropic/claude-sonnet-4-5 failed (overloaded); trying openai/gpt-4o-mini" in err
    assert "openai/gpt-4o-mini (fallback)" in err
    assert [r.path for r in emu.requests] == ["/v1/messages"] * 2 + ["/v1/chat/completions"]


def test_chat_json_no_stream(
    config: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.script(Reply.text("def f(): pass"))
    code, out, _ = run(
        capsys,
        "chat",
        "--config",
        str(config),
        "--agent",
        "coder",
        "--no-stream",
        "--json",
        "--max-tokens",
        "64",
        "Write f",
    )
    assert code == 0
    body = json.loads(out)
    assert body["text"] == "def f(): pass"
    assert body["provider"] == "local"
    assert body["cost_usd"] == "0"
    assert body["fallback_used"] is False
    assert [a["outcome"] for a in body["attempts"]] == ["ok"]
    assert emu.last_request.json["n_predict"] == 64


def test_chat_prompt_from_stdin(
    config: Path, emu: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    code, out, _ = run(capsys, "chat", "--config", str(config), "--agent", "critic", "-")
    assert code == 0
    assert out == "echo: from stdin\n"


EVERY_ROUTE_FAILS = [
    pytest.param(Fault.auth(), 3, "auth", id="auth"),
    pytest.param(Fault.status(404), 4, "not_found", id="not_found"),
    pytest.param(Fault.quota(), 5, "quota", id="quota"),
    pytest.param(Fault.content_filter(), 7, "content_filter", id="content_filter"),
    pytest.param(Fault.status(400), 7, "bad_request", id="bad_request"),
    pytest.param(Fault.server_error(), 8, "server", id="server"),
    pytest.param(Fault.overloaded(), 8, "overloaded", id="overloaded"),
    pytest.param(Fault.html_200(), 9, "protocol", id="protocol"),
]


@pytest.mark.parametrize(("fault", "code", "category"), EVERY_ROUTE_FAILS)
def test_chat_exit_code_by_category(
    config: Path,
    emu: Emulator,
    capsys: pytest.CaptureFixture[str],
    fault: Fault,
    code: int,
    category: str,
) -> None:
    emu.set_default(fault)
    got, out, err = run(
        capsys, "chat", "--config", str(config), "--agent", "coder", "--json", "Write f"
    )
    assert got == code, err
    error = json.loads(out)["error"]
    assert error["category"] == category
    assert error["exit_code"] == code
    assert error["attempts"][0]["provider"] == "local"
    assert "avionics: " in err
    assert "Fix: " in err


def test_chat_interrupted_stream_exits_9(
    config: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.script(Fault.drop(after_chunks=3, reply=Reply.text("one two three four five")))
    code, out, err = run(capsys, "chat", "--config", str(config), "--agent", "critic", "Review")
    assert code == 9
    assert out == "one two\n"
    assert "interrupted" in err


def test_chat_unreachable_exits_6(
    tmp_path: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = write(
        tmp_path,
        f'[providers.local]\nkind = "llama_server"\nbase_url = "http://127.0.0.1:{closed_port}"\n'
        'default_model = "m"\n[providers.local.retry]\nmax_retries = 0\n'
        '[profiles]\ndefault = { provider = "local" }\n',
    )
    code, _, err = run(capsys, "chat", "--config", str(settings), "hello")
    assert code == 6
    assert "connection" in err


def test_chat_budget_exceeded_exits_10(
    config: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config.read_text().replace(
        'system = "You are the planner.', 'budget_usd = 0.000001\nsystem = "You are the planner.'
    )
    config.write_text(text)
    code, _, err = run(capsys, "chat", "--config", str(config), "--agent", "planner", "Plan")
    assert code == 10
    assert "Budget exceeded" in err
    assert emu.requests == []


def test_chat_missing_key_is_a_settings_error(
    tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = write(
        tmp_path,
        f'[providers.openai]\nkind = "openai"\nbase_url = "{emu.base_url("openai")}"\n'
        'api_key_env = "MY_OPENAI_KEY"\ndefault_model = "gpt-4o-mini"\n'
        '[profiles]\ndefault = { provider = "openai" }\n',
    )
    code, _, err = run(capsys, "chat", "--config", str(settings), "hello")
    assert code == 2
    assert "MY_OPENAI_KEY is not set" in err
    assert "export MY_OPENAI_KEY=" in err


def test_chat_key_never_printed(
    tmp_path: Path,
    emu: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu.api_key = "sk-the-right-one"
    monkeypatch.setenv("MY_OPENAI_KEY", CANARY)
    settings = write(
        tmp_path,
        f'[providers.openai]\nkind = "openai"\nbase_url = "{emu.base_url("openai")}"\n'
        'api_key_env = "MY_OPENAI_KEY"\ndefault_model = "gpt-4o-mini"\n'
        '[profiles]\ndefault = { provider = "openai" }\n',
    )
    code, out, err = run(capsys, "chat", "--config", str(settings), "--json", "hello")
    assert code == 3
    assert CANARY not in out + err
    assert emu.last_request.headers["authorization"] == f"Bearer {CANARY}"


# -- models and pull -----------------------------------------------------------------------------


def test_models_per_provider(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--config", str(config))
    assert code == 0
    assert out.splitlines()[0].startswith("local (llama_server, http://127.0.0.1:")
    assert out.count("  emulator-1") == 3
    code, out, _ = run(capsys, "models", "--config", str(config), "--json", "openai")
    assert code == 0
    assert json.loads(out)["providers"] == {
        "openai": {"kind": "openai", "models": ["emulator-1"], "error": None, "exit_code": 0}
    }


def test_models_reports_each_failure(
    tmp_path: Path, emu: Emulator, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = write(
        tmp_path,
        f'[providers.up]\nkind = "ollama"\nbase_url = "{emu.base_url("ollama")}"\n'
        f'[providers.down]\nkind = "llama_server"\nbase_url = "http://127.0.0.1:{closed_port}"\n'
        "[providers.down.retry]\nmax_retries = 0\n",
    )
    code, out, _ = run(capsys, "models", "--config", str(settings))
    assert code == 6
    assert "  emulator-1" in out
    assert "  error: connection: " in out


def test_models_unknown_provider(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "models", "--config", str(config), "opnai")
    assert code == 2
    assert "did you mean 'openai'" in err


def ollama_settings(tmp_path: Path, emu: Emulator) -> Path:
    return write(
        tmp_path,
        f'[providers.ollama]\nkind = "ollama"\nbase_url = "{emu.base_url("ollama")}"\n'
        'default_model = "llama3.2"\n[profiles]\ndefault = { provider = "ollama" }\n',
    )


def test_pull_shows_progress(
    tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ollama_settings(tmp_path, emu)
    code, out, err = run(capsys, "pull", "--config", str(settings), "llama3.2")
    assert code == 0, err
    assert out.startswith("pulled llama3.2 on ollama in ")
    lines = err.splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[-1] == "success"
    assert any("%" in line for line in lines)
    code, out, _ = run(capsys, "models", "--config", str(settings), "--json")
    assert "llama3.2:latest" in json.loads(out)["providers"]["ollama"]["models"]


def test_pull_needs_an_ollama_provider(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "pull", "--config", str(config), "llama3.2")
    assert code == 2
    assert "Ollama providers: none" in err
    code, _, err = run(capsys, "pull", "--config", str(config), "--provider", "local", "x")
    assert code == 2
    assert "not an Ollama provider" in err


# -- doctor --------------------------------------------------------------------------------------


def checks(out: str) -> dict[str, dict[str, Any]]:
    return {c["subject"]: c for c in json.loads(out)["checks"]}


def test_doctor_all_good(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 0
    assert out.rstrip().endswith("all good, 0 warning(s)")
    assert out.count("ok    providers.") == 3


def test_doctor_finds_problems_with_fixes(
    tmp_path: Path,
    emu: Emulator,
    closed_port: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRESENT_KEY", CANARY)
    emu.loading = True
    settings = write(
        tmp_path,
        f'[providers.down]\nkind = "llama_server"\nbase_url = "http://127.0.0.1:{closed_port}"\n'
        f'[providers.loading]\nkind = "llama_server"\nbase_url = "{emu.base_url("llama_server")}"\n'
        '[providers.nokey]\nkind = "anthropic"\napi_key_env = "ABSENT_KEY"\n'
        f'[providers.keyed]\nkind = "openai"\nbase_url = "{emu.base_url("openai")}"\n'
        'api_key_env = "PRESENT_KEY"\n'
        f'[providers.ollama]\nkind = "ollama"\nbase_url = "{emu.base_url("ollama")}"\n'
        'default_model = "llama3.2"\n'
        '[state]\nbackend = "redis"\n'
        f'redis_url = "redis://:hunter2@127.0.0.1:{closed_port}/0"\n',
    )
    code, out, err = run(capsys, "doctor", "--config", str(settings), "--json")
    assert code == 1, err
    found = checks(out)
    down = found[f"providers.down node http://127.0.0.1:{closed_port}"]
    assert down["status"] == "fail"
    assert down["fix"] == "start the server, or fix providers.down.base_url"
    loading = found[f"providers.loading node {emu.base_url('llama_server')}"]
    assert loading["status"] == "warn"
    nokey = found["providers.nokey.api_key_env"]
    assert nokey["status"] == "fail"
    assert nokey["fix"].startswith("export ABSENT_KEY=<your key>")
    assert found["providers.keyed.api_key_env"] == {
        "subject": "providers.keyed.api_key_env",
        "status": "ok",
        "detail": "PRESENT_KEY is set",
        "fix": "",
    }
    assert found["providers.ollama model llama3.2"]["fix"] == (
        "avionics pull llama3.2 --provider ollama"
    )
    redis = found["state.redis_url"]
    assert redis["status"] == "fail"
    assert "hunter2" not in out
    assert CANARY not in out + err
    assert json.loads(out)["ok"] is False


def test_doctor_says_which_agents_fall_back(
    config: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config.read_text()
    anthropic = text.index("[providers.anthropic]")
    start = text.index("base_url = ", anthropic)
    end = text.index("\n", start)
    config.write_text(f'{text[:start]}base_url = "http://127.0.0.1:{closed_port}"{text[end:]}')
    code, out, _ = run(capsys, "doctor", "--config", str(config), "--json")
    assert code == 1
    found = checks(out)
    assert found["agents.planner"]["status"] == "warn"
    assert "fall back to openai/gpt-4o-mini" in found["agents.planner"]["detail"]
    assert found["agents.coder"]["status"] == "ok"
    assert found["agents.critic"]["detail"] == "openai/gpt-4o-mini"


def test_doctor_text_lists_fixes(
    tmp_path: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = write(
        tmp_path,
        f'[providers.local]\nkind = "llama_server"\nbase_url = "http://127.0.0.1:{closed_port}"\n',
    )
    code, out, _ = run(capsys, "doctor", "--config", str(settings))
    assert code == 1
    assert f"FAIL  providers.local node http://127.0.0.1:{closed_port}: unreachable (" in out
    assert "      fix: start the server, or fix providers.local.base_url" in out
    assert out.rstrip().endswith("1 problem(s), 0 warning(s)")


def test_doctor_settings_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = write(tmp_path, '[providers.local]\nkind = "llama-servr"\nbase_url = "http://x"\n')
    code, out, err = run(capsys, "doctor", "--config", str(settings), "--json")
    assert code == 2
    report = json.loads(out)
    assert report["ok"] is False
    assert report["checks"][0]["status"] == "fail"
    assert "unknown kind 'llama-servr'" in report["checks"][0]["detail"]
    assert err.startswith("avionics: settings error: ")
