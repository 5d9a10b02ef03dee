"""The `avionics` command line.

    avionics routes [AGENT ...]          the resolved agent -> profile -> provider/model table
    avionics doctor                      health of every provider and node, keys, Redis, with fixes
    avionics chat --agent NAME "prompt"  stream one answer through LLMGateway
    avionics models [PROVIDER ...]       the models each provider serves
    avionics pull MODEL                  pull a model on an Ollama provider, with progress
    avionics demo                        the main job on the wire emulator (see avionics.demo)

Every subcommand takes `--config PATH` and `--json` (JSON on stdout for scripts; errors too).
Progress and diagnostics go to stderr, answers to stdout.

Exit codes: 0 success; 1 problems found (doctor) or an unexpected failure; 2 settings or usage
error; then by airframe error category, as `python -m airframe`: 3 auth, 4 not_found,
5 rate_limit/quota (and local rate limits), 6 connection/timeout, 7 bad_request/context_length/
content_filter, 8 server/overloaded, 9 protocol/interrupted; 10 budget exceeded; 130 Ctrl-C.
A `GatewayError` (every route failed) exits with the category of the error that ended the chain.

Subcommands live in `COMMANDS` (name -> `Command`). To add one, write `configure(parser)` (its
arguments) and `run(args) -> exit code`, then register it:

    COMMANDS["hello"] = Command("say hello", configure_hello, run_hello)

`load_settings(args)` honours `--config`. A `SettingsError` raised by a handler exits with
status 2 and a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from .routing import routing_table
from .settings import AvionicsSettings, SettingsError

if TYPE_CHECKING:
    from .responses import LLMResponse

__all__ = ["COMMANDS", "Command", "exit_code_for", "load_settings", "main"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_SETTINGS_ERROR = 2
EXIT_BUDGET = 10
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: its help line, how to add its arguments, and what it runs."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def load_settings(args: argparse.Namespace) -> AvionicsSettings:
    """Settings from `--config PATH` when given, else the usual sources (not the cached ones)."""
    path = getattr(args, "config", None)
    return AvionicsSettings.from_file(path) if path else AvionicsSettings()


# ------------------------------------------------------------------------------------ errors


def exit_code_for(error: BaseException) -> int:
    """The exit status for an error: airframe categories as `python -m airframe` (see the
    module docstring); a `GatewayError` by the error that ended its chain."""
    from airframe import ErrorCategory
    from airframe.__main__ import EXIT_CODES

    from .errors import BudgetExceededError, GatewayError, RateLimitedLocally

    if isinstance(error, SettingsError):
        return EXIT_SETTINGS_ERROR
    if isinstance(error, BudgetExceededError):
        return EXIT_BUDGET
    if isinstance(error, RateLimitedLocally):
        return EXIT_CODES[ErrorCategory.RATE_LIMIT]
    if isinstance(error, GatewayError):
        causes = [e for e in error.exceptions if not isinstance(e, GatewayError)]
        return exit_code_for(causes[-1]) if causes else EXIT_PROBLEMS
    category = getattr(error, "category", None)
    if isinstance(category, ErrorCategory):
        return EXIT_CODES[category]
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_PROBLEMS


def _last_category(error: BaseException) -> Any:
    from .errors import GatewayError

    if isinstance(error, GatewayError) and error.exceptions:
        return _last_category(error.exceptions[-1])
    return getattr(error, "category", None)


def describe_error(error: BaseException) -> str:
    """What went wrong and the fix. One line, except a GatewayError: one line per attempt."""
    from airframe.__main__ import HINTS

    from .errors import GatewayError

    if isinstance(error, SettingsError):
        return f"settings error: {error.one_line()}"
    hint = HINTS.get(_last_category(error))
    if isinstance(error, GatewayError):
        text = str(error)
        return f"{text}\nFix: {hint}" if hint else text
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{text}. Fix: {hint}" if hint else text


def _error_json(error: BaseException, code: int) -> dict[str, Any]:
    from .errors import GatewayError

    category = _last_category(error)
    body: dict[str, Any] = {
        "type": type(error).__name__,
        "category": None if category is None else str(category),
        "message": str(error) if not isinstance(error, SettingsError) else error.one_line(),
        "exit_code": code,
    }
    if isinstance(error, GatewayError):
        body["attempts"] = [
            {
                "provider": a.provider,
                "model": a.model,
                "node": a.node,
                "category": a.category,
                "reason": a.reason,
            }
            for a in error.attempts
        ]
    return {"error": body}


class _StderrLoggerFactory:
    """structlog loggers writing to whatever `sys.stderr` is when they log."""

    def __call__(self, *args: Any) -> Any:
        import structlog

        return structlog.PrintLogger(sys.stderr)


@contextmanager
def _logs_to_stderr(verbose: bool) -> Iterator[None]:
    """While a command runs, library log events go to stderr (stdout carries answers and JSON),
    warnings and up unless `--verbose`. An application that configured structlog keeps its own
    configuration; ours is undone afterwards."""
    import structlog

    if structlog.is_configured():
        yield
        return
    level = logging.DEBUG if verbose else logging.ERROR
    structlog.configure(  # noqa: TID251 - the CLI is the application; undone below
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_StderrLoggerFactory(),
    )
    try:
        yield
    finally:
        structlog.reset_defaults()


def _dump(data: Any, out: TextIO | None = None) -> None:
    target = out or sys.stdout
    json.dump(data, target, indent=2, default=str)
    target.write("\n")
    target.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------- routes


def _configure_routes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agents", nargs="*", metavar="AGENT", help="only these agents")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--fallback-provider",
        action="append",
        dest="fallback_providers",
        metavar="NAME",
        help="gateway-level fallback provider (repeatable; default: [fallback] providers)",
    )


def _run_routes(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    rows = routing_table(settings, args.fallback_providers, args.agents or None)
    out: TextIO = sys.stdout
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
    else:
        out.write(format_routes(rows))
    return 0


def format_routes(rows: Sequence[dict[str, Any]]) -> str:
    """The routing table as aligned text: one line per agent, one per fallback below it."""
    header = ("AGENT", "PROFILE", "PROVIDER", "KIND", "MODEL", "PARAMS", "BUDGET")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        budget = f"${row['budget_usd']}/{row['budget_period']}" if row["budget_usd"] else ""
        for index, route in enumerate(row["chain"]):
            agent = row["agent"] if index == 0 else f"  fallback {index}"
            profile = " -> ".join([*route["via"], route["profile"] or "-"])
            params = " ".join(f"{k}={_short(v)}" for k, v in route["params"].items())
            lines.append(
                (
                    agent,
                    profile,
                    route["provider"],
                    route["kind"],
                    route["model"],
                    params or "-",
                    budget if index == 0 else "",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join(text) + "\n"


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------- doctor


def _configure_doctor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _run_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose, settings_failure

    try:
        settings = load_settings(args)
    except SettingsError as exc:
        if args.json:
            _dump(settings_failure(exc).to_dict())
        raise
    report = _run_async(diagnose(settings))
    if args.json:
        _dump(report.to_dict())
    else:
        sys.stdout.write(report.render())
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _run_async(coro: Any) -> Any:
    """Run a coroutine, then close airframe's pooled connections."""
    from airframe import aclose_all

    async def run() -> Any:
        try:
            return await coro
        finally:
            await aclose_all()

    return asyncio.run(run())


# ------------------------------------------------------------------------------------------ chat


def _configure_chat(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="the prompt ('-' or none: read stdin)")
    parser.add_argument("--agent", default="default", help="agent whose route to use")
    parser.add_argument("--system", help="system prompt (default: the agent's)")
    parser.add_argument("--model", help="override the model of the agent's own route")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="upper bound on output")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--no-stream", action="store_true", help="one non-streamed call")
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    parser.add_argument(
        "--fallback-provider",
        action="append",
        dest="fallback_providers",
        metavar="NAME",
        help="gateway-level fallback provider (repeatable)",
    )


def _read_prompt(prompt: str | None) -> str:
    if prompt not in (None, "-"):
        return str(prompt)
    if prompt is None and sys.stdin.isatty():
        raise SettingsError("give a prompt (or pipe one on stdin)")
    text = sys.stdin.read().strip()
    if not text:
        raise SettingsError("the prompt read from stdin is empty")
    return text


def _run_chat(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    prompt = _read_prompt(args.prompt)
    response: LLMResponse = _run_async(_chat(settings, prompt, args))
    if args.json:
        from .report import response_dict

        _dump(response_dict(response))
        return EXIT_OK
    if not response.text.endswith("\n"):
        sys.stdout.write("\n")
    fallback = " (fallback)" if response.metadata.get("fallback_used") else ""
    cost = "cost unknown" if response.cost is None else f"${response.cost:.6f}"
    _err(
        f"[{args.agent} → {response.provider}/{response.model}{fallback} · "
        f"{response.prompt_tokens} in / {response.completion_tokens} out tokens · {cost} · "
        f"{response.latency_ms / 1000:.2f}s]"
    )
    return EXIT_OK


async def _chat(settings: AvionicsSettings, prompt: str, args: argparse.Namespace) -> LLMResponse:
    from .gateway import LLMGateway
    from .routing import fallback_chain

    chain = [f"{r.provider}/{r.model}" for r in fallback_chain(settings, args.agent)]
    chain += [f"{p}/{settings.providers[p].default_model}" for p in args.fallback_providers or ()]

    def on_row(row: Mapping[str, Any]) -> None:
        if row.get("outcome") not in ("error", "interrupted", "skipped"):
            return
        where = f"{row['provider']}/{row['model']}"
        later = chain[chain.index(where) + 1 :] if where in chain else chain[1:]
        then = f"; trying {later[0]}" if later else ""
        _err(f"avionics: {where} failed ({row.get('error_category')}){then}")

    gateway = LLMGateway(settings, args.fallback_providers, resource_callback=on_row)
    options: dict[str, Any] = {
        "agent_name": args.agent,
        "system": args.system,
        "model": args.model,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
    }
    if args.no_stream:
        response = await gateway.complete(prompt, **options)
        if not args.json:
            sys.stdout.write(response.text)
        return response
    final: LLMResponse | None = None
    printed = False
    try:
        async for chunk in await gateway.complete_stream(prompt, **options):
            if chunk.is_final:
                final = chunk.response
            elif chunk.kind == "token" and not args.json:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                printed = True
    except BaseException:
        if printed:
            sys.stdout.write("\n")
        raise
    assert final is not None, "a gateway stream always ends with a final chunk"
    return final


# ---------------------------------------------------------------------------------------- models


def _configure_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("providers", nargs="*", metavar="PROVIDER", help="only these providers")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _run_models(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    names = args.providers or list(settings.providers)
    for name in names:
        settings.provider(name)  # unknown names: a SettingsError listing the defined ones

    async def gather() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(_models_of(settings, n) for n in names)))

    results = _run_async(gather())
    listing = dict(zip(names, results, strict=True))
    if args.json:
        _dump({"providers": listing})
    for name, entry in listing.items():
        if args.json:
            break
        ps = settings.providers[name]
        sys.stdout.write(f"{name} ({ps.kind.value}, {', '.join(ps.urls) or 'in process'})\n")
        if entry["error"] is not None:
            sys.stdout.write(f"  error: {entry['error']}\n")
        sys.stdout.write("".join(f"  {model}\n" for model in entry["models"]))
    codes = [entry["exit_code"] for entry in listing.values() if entry["exit_code"]]
    return codes[0] if codes else EXIT_OK


async def _models_of(settings: AvionicsSettings, name: str) -> dict[str, Any]:
    from airframe import AirframeError, get_adapter

    ps = settings.providers[name]
    entry: dict[str, Any] = {"kind": ps.kind.value, "models": [], "error": None, "exit_code": 0}
    if ps.in_process:
        entry["models"] = [ps.model_path or ""]
        return entry
    try:
        endpoint = ps.endpoints(name)[0]
        entry["models"] = await get_adapter(ps.kind).list_models(endpoint)
    except (AirframeError, SettingsError) as exc:
        entry["error"] = describe_error(exc)
        entry["exit_code"] = exit_code_for(exc)
    return entry


# ------------------------------------------------------------------------------------------ pull


def _configure_pull(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model to pull, e.g. llama3.2 or qwen2.5:7b")
    parser.add_argument("--provider", help="an Ollama provider (default: the only one)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _ollama_provider(settings: AvionicsSettings, name: str | None) -> str:
    from airframe import BackendKind

    ollamas = [n for n, p in settings.providers.items() if p.kind is BackendKind.OLLAMA]
    if name is not None:
        if settings.provider(name).kind is not BackendKind.OLLAMA:
            raise SettingsError(f"provider {name!r} is not an Ollama provider; only Ollama pulls")
        return name
    if len(ollamas) != 1:
        found = ", ".join(ollamas) or "none"
        raise SettingsError(f"name the Ollama provider with --provider (Ollama providers: {found})")
    return ollamas[0]


def _run_pull(args: argparse.Namespace) -> int:
    from airframe import get_adapter

    settings = load_settings(args)
    name = _ollama_provider(settings, args.provider)
    endpoint = settings.providers[name].endpoints(name)[0]
    adapter: Any = get_adapter(endpoint.backend_kind)
    from .report import PullProgressPrinter

    printer = PullProgressPrinter(sys.stderr)
    started = time.perf_counter()
    try:
        _run_async(adapter.pull_model(endpoint, args.model, printer))
    finally:
        printer.close()
    elapsed = time.perf_counter() - started
    if args.json:
        _dump({"provider": name, "model": args.model, "pulled": True, "elapsed_s": elapsed})
    else:
        sys.stdout.write(f"pulled {args.model} on {name} in {elapsed:.1f}s\n")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ demo


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    from .demo import configure_parser

    configure_parser(parser)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import options_from_args, run_demo

    code: int = asyncio.run(run_demo(options_from_args(args)))
    return code


# ------------------------------------------------------------------------------------------ main

COMMANDS: dict[str, Command] = {
    "routes": Command(
        "show agent -> profile -> provider/model routes", _configure_routes, _run_routes
    ),
    "doctor": Command(
        "check providers, nodes, keys and Redis; print a fix for each problem",
        _configure_doctor,
        _run_doctor,
    ),
    "chat": Command("stream one answer through the gateway", _configure_chat, _run_chat),
    "models": Command("list the models of each provider", _configure_models, _run_models),
    "pull": Command("pull a model on an Ollama provider", _configure_pull, _run_pull),
    "demo": Command(
        "three agents on three backends (wire emulator by default)", _configure_demo, _run_demo
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avionics",
        description="avionics LLM orchestration",
        epilog="Exit codes: 0 ok, 1 problems found, 2 settings/usage, 3 auth, 4 not_found, "
        "5 rate_limit/quota, 6 connection/timeout, 7 bad_request/context_length/content_filter, "
        "8 server/overloaded, 9 protocol/interrupted, 10 budget exceeded, 130 Ctrl-C.",
    )
    parser.add_argument("--config", metavar="PATH", help="settings TOML file")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library log events")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS, help="settings TOML file"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show library log events on stderr",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.configure(sub.add_parser(name, help=command.help, parents=[common]))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (see the module docstring)."""
    from airframe import AirframeError

    from .errors import AvionicsError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_SETTINGS_ERROR
    try:
        with _logs_to_stderr(args.verbose):
            return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        _err("\navionics: interrupted")
        return EXIT_INTERRUPTED
    except (SettingsError, AirframeError, AvionicsError) as exc:
        code = exit_code_for(exc)
        if getattr(args, "json", False) and not (args.command == "doctor" and code == 2):
            # (doctor printed its own JSON report for a settings error)
            _dump(_error_json(exc, code))
        _err(f"avionics: {describe_error(exc)}")
        return code
