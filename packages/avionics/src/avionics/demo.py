"""`avionics demo` (and `make demo`): the main job, end to end, in a few seconds.

Three agents (planner, coder, critic) are routed by `DEMO_SETTINGS_TOML` (the same file as
`examples/demo/avionics.toml`) to three wire protocols: Anthropic, llama-server and OpenAI. By
default every provider is served by airframe's wire emulator on loopback: no keys, no network,
no GPU. Mid-run the emulator's fault script makes one endpoint fail (529 overloaded) and the
gateway falls back to the agent's next route, live. The run ends with a per-agent token and cost
table from the ledger and the tree of one call.

Real backends replace emulated ones when configured (unless `--offline`):
`AVIONICS_CONFIG=path/to/avionics.toml` uses that settings file for everything;
`OPENAI_API_KEY` / `ANTHROPIC_API_KEY` make those providers real; `AVIONICS_PROVIDERS__LOCAL__
BASE_URL=http://host:8080` (any `AVIONICS_*` override, as always) points `local` at a real
llama-server. Faults are only ever injected into emulated endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .report import attempt_tree, cost_table, money, span_tree
from .settings import CONFIG_ENV_VAR, AvionicsSettings

if TYPE_CHECKING:
    from airframe.testing import Emulator, Fault, RecordedRequest, Reply

    from .gateway import LLMGateway
    from .responses import LLMResponse

__all__ = [
    "AGENTS",
    "DEMO_SETTINGS_TOML",
    "DemoOptions",
    "dump_toml",
    "emulated_settings",
    "main",
    "run_demo",
]

DEMO_SETTINGS_TOML = """\
# Three agents, three backends, one settings file (the `make demo` routing).
# `make demo` serves each provider from airframe's wire emulator unless a real one is configured:
# OPENAI_API_KEY / ANTHROPIC_API_KEY in the environment, or
# AVIONICS_PROVIDERS__LOCAL__BASE_URL=http://host:8080 for a real llama-server.

[providers.local]
kind = "llama_server"
base_url = "http://127.0.0.1:8080"
default_model = "qwen2.5-coder-7b"

[providers.openai]
kind = "openai"
api_key_env = "OPENAI_API_KEY"
default_model = "gpt-4o-mini"

[providers.anthropic]
kind = "anthropic"
api_key_env = "ANTHROPIC_API_KEY"
default_model = "claude-sonnet-4-5"
retry = { max_retries = 1, initial_delay = 0.2 }

[profiles]
local = { provider = "local", model = "qwen2.5-coder-7b", temperature = 0.2 }
fast = { provider = "openai", model = "gpt-4o-mini" }
smart = { provider = "anthropic", model = "claude-sonnet-4-5" }
default = "local"

[agents.planner]
profile = "smart"
fallbacks = ["fast"]
max_tokens = 400
system = "You are the planner. Write a short numbered plan."

[agents.coder]
profile = "local"
fallbacks = ["fast"]
max_tokens = 800
system = "You are the coder. Answer with Python code only."

[agents.critic]
profile = "fast"
fallbacks = ["smart", "local"]
max_tokens = 400
system = "You are the critic. Review the code in a few bullet points."

[pricing."anthropic/claude-sonnet-4-5"]   # USD per million tokens
input = 3.0
output = 15.0

[pricing."openai/gpt-4o-mini"]
input = 0.15
output = 0.6
"""

AGENTS: tuple[str, ...] = ("planner", "coder", "critic")

TASK = "Add a slugify(title) helper to our blog engine: lowercase, ASCII only, dashes."

# What the emulated models answer, per (agent, round). Real backends write their own.
_REPLIES: Mapping[tuple[str, int], str] = {
    ("planner", 1): "1. Normalise the title to ASCII with unicodedata.\n"
    "2. Lowercase it and turn every run of other characters into one dash.\n"
    "3. Strip dashes at both ends; cover it with three tests.",
    ("coder", 1): "import re\nimport unicodedata\n\n\n"
    "def slugify(title: str) -> str:\n"
    '    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()\n'
    '    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")',
    ("critic", 1): "- Correct for the common cases.\n"
    "- An empty or all-symbol title returns an empty slug: return 'untitled' instead.\n"
    "- Add a max_length so URLs stay short.",
    ("planner", 2): "1. Fall back to 'untitled' when the slug is empty.\n"
    "2. Add max_length=60, cutting at a dash.\n"
    "3. Extend the tests to both cases.",
    ("coder", 2): "def slugify(title: str, max_length: int = 60) -> str:\n"
    '    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()\n'
    '    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")\n'
    '    return slug[:max_length].rstrip("-") or "untitled"',
    ("critic", 2): "- Both issues fixed; the cut keeps whole words.\n- Approved: ship it.",
}

_KIND_PATHS: Mapping[str, tuple[str, ...]] = {
    "anthropic": ("/v1/messages",),
    "openai": ("/v1/chat/completions",),
    "llama_server": ("/completion",),
}
"""Inference paths of each protocol on the emulator (for the fault script)."""

_FAIL_ORDER = ("anthropic", "openai", "local")
"""Which emulated provider the demo breaks: the first of these that is emulated."""


# ------------------------------------------------------------------------------------ settings


def dump_toml(data: Mapping[str, Any]) -> str:
    """A TOML document for plain settings data (tables, strings, numbers, booleans, lists)."""
    lines: list[str] = []
    _dump_table(lines, (), data)
    return "\n".join(lines).strip() + "\n"


def _dump_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        lines += ["", "[" + ".".join(_toml_key(p) for p in path) + "]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    for key, sub in tables.items():
        _dump_table(lines, (*path, key), sub)


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum()
    return key if bare else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def emulated_settings(
    emu: Emulator,
    directory: str | os.PathLike[str],
    *,
    real: Sequence[str] = (),
    source: str = DEMO_SETTINGS_TOML,
) -> Path:
    """Write `source` (the demo settings) to `directory/avionics.toml` with every provider not
    named in `real` pointed at the emulator (needing no key). Returns the file's path."""
    data = tomllib.loads(source)
    for name, provider in data.get("providers", {}).items():
        if name in real:
            continue
        provider["base_url"] = emu.base_url(provider["kind"])
        provider["api_key_env"] = ""
        provider.pop("nodes", None)
    path = Path(directory) / "avionics.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return path


def _real_providers(offline: bool, environ: Mapping[str, str]) -> list[str]:
    """Demo providers that have real credentials in the environment."""
    if offline:
        return []
    data = tomllib.loads(DEMO_SETTINGS_TOML)
    real = []
    for name, provider in data["providers"].items():
        env = provider.get("api_key_env")
        if env and environ.get(env, "").strip():
            real.append(name)
    return real


# -------------------------------------------------------------------------------- fault script


class DemoScript:
    """The emulator's responder: the canned answer of the agent now speaking, and an outage of
    one endpoint from the moment `break_endpoint` is called (a fault script).

    Calls are sequential, so "the agent now speaking" is set by the demo before each call."""

    def __init__(self) -> None:
        self.agent = "planner"
        self.round = 1
        self.broken_paths: tuple[str, ...] = ()

    def break_endpoint(self, kind: str) -> None:
        self.broken_paths = _KIND_PATHS.get(kind, ())

    def __call__(self, request: RecordedRequest) -> Reply | Fault:
        from airframe.testing import Fault, Reply

        if request.path in self.broken_paths:
            return Fault.overloaded()
        text = _REPLIES.get((self.agent, self.round), f"echo: {self.agent}")
        return Reply.text(text)


# ------------------------------------------------------------------------------------- output


class _Printer:
    """Everything the demo shows, on one stream (colour only on a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        colour = out.isatty() and "NO_COLOR" not in os.environ
        self._bold = "\033[1m" if colour else ""
        self._dim = "\033[2m" if colour else ""
        self._yellow = "\033[33m" if colour else ""
        self._green = "\033[32m" if colour else ""
        self._reset = "\033[0m" if colour else ""

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def heading(self, text: str) -> None:
        self.line(f"\n{self._bold}== {text} =={self._reset}")

    def dim(self, text: str) -> str:
        return f"{self._dim}{text}{self._reset}"

    def warn(self, text: str) -> str:
        return f"{self._yellow}{text}{self._reset}"

    def ok(self, text: str) -> str:
        return f"{self._green}{text}{self._reset}"

    def bold(self, text: str) -> str:
        return f"{self._bold}{text}{self._reset}"


@dataclass
class _Tracing:
    """An SDK tracer provider private to the demo, recording spans in memory (and exporting
    them as configured in settings or OTEL_* variables); no global provider is set."""

    handle: Any
    exporter: Any
    telemetry: Any

    def spans(self) -> Sequence[Any]:
        return tuple(self.exporter.get_finished_spans())


def _tracing(settings: AvionicsSettings) -> _Tracing | None:
    """None when the OpenTelemetry SDK (the `otel` extra) is not installed."""
    # The demo is an application: it may hold an SDK span processor (app-side, like configure()).
    try:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: TID251
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: TID251
            InMemorySpanExporter,
        )

        from .observability import Telemetry, configure
    except ImportError:
        return None
    handle = configure(settings, set_global=False)
    exporter = InMemorySpanExporter()
    handle.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(
        tracer_provider=handle.tracer_provider, meter_provider=handle.meter_provider
    )
    return _Tracing(handle, exporter, telemetry)


# --------------------------------------------------------------------------------------- run


@dataclass
class DemoOptions:
    """How to run the demo."""

    offline: bool = False
    """Emulate every backend, even when keys or AVIONICS_CONFIG are in the environment."""
    instant: bool = False
    """No simulated token timing (tests)."""
    json: bool = False
    """Print a JSON summary at the end instead of the tables."""
    config: str | None = None
    """A settings file of real backends (like AVIONICS_CONFIG): no emulator."""
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class _Run:
    gateway: LLMGateway
    printer: _Printer
    script: DemoScript | None
    emulated: dict[str, str]
    tracing: _Tracing | None = None
    responses: list[LLMResponse] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    """provider/model of each route of the agent now speaking, in fallback order."""


def _on_row(run: _Run) -> Any:
    """The gateway's resource callback: show each failed attempt the moment it is billed."""

    def callback(row: Mapping[str, Any]) -> None:
        if row.get("outcome") not in ("error", "interrupted"):
            return
        where = f"{row['provider']}/{row['model']}"
        later = run.chain[run.chain.index(where) + 1 :] if where in run.chain else []
        then = f"falling back to {later[0]}" if later else "no route left"
        run.printer.line(run.printer.warn(f"  ✗ {where} failed: {row['error_category']} → {then}"))

    return callback


async def _ask(run: _Run, agent: str, rnd: int, prompt: str) -> LLMResponse:
    from .routing import fallback_chain

    printer = run.printer
    if run.script is not None:
        run.script.agent, run.script.round = agent, rnd
    routes = fallback_chain(run.gateway.settings, agent, run.gateway.fallback_providers)
    run.chain = [f"{route.provider}/{route.model}" for route in routes]
    printer.line(f"\n{printer.bold('▶ ' + agent)}")
    response: LLMResponse | None = None
    started = False
    async for chunk in await run.gateway.complete_stream(prompt, agent_name=agent):
        if chunk.is_final:
            response = chunk.response
            break
        if not started:
            printer.write("  ")
            started = True
        printer.write(chunk.text.replace("\n", "\n  "))
    assert response is not None
    fallback = " (fallback)" if response.metadata.get("fallback_used") else ""
    printer.line(
        "\n  "
        + printer.dim(
            f"✓ {response.provider}/{response.model}{fallback} · {response.prompt_tokens} in / "
            f"{response.completion_tokens} out tokens · {money(response.cost)} · "
            f"{response.latency_ms / 1000:.2f}s"
        )
    )
    run.responses.append(response)
    return response


async def _round(run: _Run, rnd: int, context: str) -> str:
    plan = (await _ask(run, "planner", rnd, f"{TASK}\n{context}".strip())).text
    code = (await _ask(run, "coder", rnd, f"Task: {TASK}\nPlan:\n{plan}")).text
    review = (await _ask(run, "critic", rnd, f"Review this code:\n{code}")).text
    return f"Review of the previous version:\n{review}"


def _break_one(run: _Run) -> str | None:
    """Start the outage: the first emulated endpoint in `_FAIL_ORDER` answers 529 from now on."""
    if run.script is None:
        return None
    for name in _FAIL_ORDER:
        kind = run.emulated.get(name)
        if kind is not None:
            run.script.break_endpoint(kind)
            return name
    return None


def _intro(run: _Run, settings: AvionicsSettings) -> None:
    from .routing import fallback_chain

    printer = run.printer
    printer.heading("avionics demo: three agents, three wire protocols")
    for name, provider in settings.providers.items():
        where = "wire emulator" if name in run.emulated else "REAL backend"
        urls = ", ".join(provider.urls)
        printer.line(f"  provider {name:<10} {provider.kind.value:<13} {urls}  ({where})")
    printer.line("")
    for agent in AGENTS:
        chain = [
            f"{route.profile} → {route.provider}/{route.model}"
            for route in fallback_chain(settings, agent)
        ]
        printer.line(f"  agent {agent:<8} {chain[0]}")
        for hop in chain[1:]:
            printer.line(printer.dim(f"  {'':<14} then {hop}"))


def _summary(run: _Run, elapsed: float) -> None:
    printer = run.printer
    printer.heading("Cost and tokens per agent (from the ledger)")
    for line in cost_table(run.gateway.get_stats(), AGENTS):
        printer.line("  " + line)
    target = next(
        (r for r in run.responses if r.metadata.get("fallback_used")),
        run.responses[0] if run.responses else None,
    )
    if target is None:
        return
    lines = span_tree(run.tracing.spans(), target.request_id) if run.tracing else []
    if lines:
        printer.heading(f"Span tree of one call ({target.agent_name}, with its fallback)")
    else:
        printer.heading(f"Attempts of one call ({target.agent_name}; spans need the otel extra)")
        lines = attempt_tree(target)
    for line in lines:
        printer.line("  " + line)
    printer.line(f"\n{printer.ok('done')} in {elapsed:.1f}s")


def _json_summary(run: _Run, elapsed: float) -> dict[str, Any]:
    stats = run.gateway.get_stats()
    return {
        "emulated": sorted(run.emulated),
        "elapsed_s": round(elapsed, 3),
        "by_agent": stats["by_agent"],
        "totals": stats["totals"],
        "calls": [
            {
                "agent": r.agent_name,
                "provider": r.provider,
                "model": r.model,
                "fallback_used": bool(r.metadata.get("fallback_used")),
                "attempts": r.metadata.get("attempts", []),
                "text": r.text,
            }
            for r in run.responses
        ],
    }


async def _play(run: _Run, settings: AvionicsSettings, options: DemoOptions) -> None:
    started = time.perf_counter()
    if not options.json:
        _intro(run, settings)
    run.printer.heading("Round 1: plan, code, review")
    context = await _round(run, 1, "")
    broken = _break_one(run)
    if broken is not None:
        kind = settings.providers[broken].kind.value
        run.printer.line(
            "\n"
            + run.printer.warn(
                f"⚡ fault script: the {kind} endpoint of provider {broken!r} now answers "
                "every request with 529/503 overloaded"
            )
        )
    run.printer.heading("Round 2: revise after the review")
    await _round(run, 2, context)
    elapsed = time.perf_counter() - started
    if options.json:
        json.dump(_json_summary(run, elapsed), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _summary(run, elapsed)


def _load(options: DemoOptions, workdir: Path, emu: Emulator | None) -> AvionicsSettings:
    if emu is None:
        return AvionicsSettings.from_file(options.config) if options.config else AvionicsSettings()
    real = _real_providers(options.offline, options.environ)
    return AvionicsSettings.from_file(emulated_settings(emu, workdir, real=real))


def _emulated(settings: AvionicsSettings, emu: Emulator | None) -> dict[str, str]:
    """Provider name -> kind, for providers whose every node is the emulator."""
    if emu is None:
        return {}
    root = emu.root_url
    return {
        name: p.kind.value
        for name, p in settings.providers.items()
        if p.urls and all(url.startswith(root) for url in p.urls)
    }


async def run_demo(options: DemoOptions | None = None, out: TextIO | None = None) -> int:
    """Run the demo; returns 0. Raises what the gateway raises (the CLI maps it to exit codes)."""
    from airframe import aclose_all

    from .gateway import LLMGateway

    options = options or DemoOptions()
    printer = _Printer(out or (sys.stderr if options.json else sys.stdout))
    use_real_config = options.config is not None or (
        not options.offline and bool(options.environ.get(CONFIG_ENV_VAR))
    )
    emu = None if use_real_config else _start_emulator(options.instant)
    try:
        with tempfile.TemporaryDirectory(prefix="avionics-demo-") as workdir:
            settings = _load(options, Path(workdir), emu)
            script = DemoScript() if emu is not None else None
            if emu is not None and script is not None:
                emu.set_default(script)
            tracing = _tracing(settings)
            telemetry = tracing.telemetry if tracing is not None else None
            gateway = LLMGateway(settings, telemetry=telemetry)
            run = _Run(gateway, printer, script, _emulated(settings, emu), tracing)
            gateway.set_resource_callback(_on_row(run))
            try:
                await _play(run, settings, options)
            finally:
                if tracing is not None:
                    await asyncio.to_thread(tracing.handle.shutdown)
    finally:
        await aclose_all()
        if emu is not None:
            await asyncio.to_thread(emu.stop)
    return 0


def _start_emulator(instant: bool) -> Emulator:
    from airframe.testing import Emulator

    emu = Emulator() if instant else Emulator(token_delay=0.02, first_token_delay=0.15)
    try:
        return emu.start()
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise SystemExit(
            f"avionics demo needs the wire emulator: pip install 'jeeves-airframe[testing]' ({exc})"
        ) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The demo's options (shared by `avionics demo` and scripts/demo.py)."""
    parser.add_argument(
        "--offline",
        action="store_true",
        help="emulate every backend even when API keys or AVIONICS_CONFIG are set",
    )
    parser.add_argument("--instant", action="store_true", help="no simulated token timing")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    return DemoOptions(
        offline=args.offline,
        instant=args.instant,
        json=args.json,
        config=getattr(args, "config", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m avionics.demo` / scripts/demo.py: same as `avionics demo`."""
    from .cli import main as cli_main

    return cli_main(["demo", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
