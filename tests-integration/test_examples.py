"""Every script in examples/ runs offline (it starts the wire emulator itself), exits 0 and prints
what it promises; `make demo`'s script does too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

EXPECTED: dict[str, list[str]] = {
    "gateway_agents.py": [
        "researcher notes:\n1. Honey never spoils.",
        "writer:\nBees are remarkable:",
        "researcher: 1 call(s), ",
        "writer: 1 call(s), ",
    ],
    "tool_calling.py": [
        "  tool get_weather(city='Paris')\n  tool get_weather(city='Oslo')\n",
        "  tool convert_c_to_f(celsius=18)\n",
        "3 model calls, ",
        "answer: Paris is warmer: 18°C (64.4°F)",
    ],
    "vision.py": [
        "skipped local/qwen2.5-7b-instruct: no vision support",
        "answered by openai/gpt-4o-mini",
        "A small, plain red square.",
    ],
    "structured_output.py": [
        "ticket: Ticket(title='Checkout broken', priority=1, tags=['payments', 'outage'])",
        "json: {'name': 'Dana', 'team': 'payments'}",
    ],
    "swap_backend.py": [
        "summarizer -> local/",
        "summarizer -> anthropic/claude-haiku-4-5: echo: Summarize:",
        "paths the emulator saw: ['/apply-template', '/completion', '/v1/messages']",
    ],
    "export_traces.py": [
        "'Login page is blank' -> 'frontend, high' via anthropic",
        "the collector received 5 spans:",
        "triage-service: chat gpt-4o-mini (child) error.type=overloaded",
        "triage-service: invoke_agent triage",
    ],
    "airframe_only.py": [
        "The Nile, the Amazon and the Danube.\n",
        "finish stop",
        "requests the server saw: 2",
    ],
}


def clean_env() -> dict[str, str]:
    """The environment without settings, keys or collectors: examples must run offline."""
    drop = ("AVIONICS_", "OTEL_", "LLAMA_SERVER_URL")
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(drop) and not k.upper().endswith("_API_KEY")
    }


def start(*argv: str | Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Every example and the demo script, started at once (each is mostly interpreter start-up),
    then waited for: name -> (exit status, stdout, stderr)."""
    procs = {
        script: start(EXAMPLES / script, cwd=tmp_path_factory.mktemp("example"))
        for script in sorted(EXPECTED)
    }
    demo = ROOT / "scripts" / "demo.py"
    procs["demo"] = start(demo, "--instant", "--offline", cwd=tmp_path_factory.mktemp("demo"))
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=180)
            results[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_every_example_is_covered() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)
    listed = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}`" in listed for name in scripts)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_offline(script: str, finished: dict[str, tuple[int, str, str]]) -> None:
    code, out, err = finished[script]
    assert code == 0, err
    for expected in EXPECTED[script]:
        assert expected in out, f"{expected!r} not in:\n{out}"


def test_make_demo_script(finished: dict[str, tuple[int, str, str]]) -> None:
    """What `make demo` runs (minus the simulated token timing)."""
    code, out, err = finished["demo"]
    assert code == 0, err
    assert "✗ anthropic/claude-sonnet-4-5 failed: overloaded" in out
    assert "Cost and tokens per agent" in out
    assert "invoke_agent planner  INTERNAL" in out
