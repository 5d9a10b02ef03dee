"""The `avionics` command line: `avionics routes [--json] [--config PATH] [AGENT ...]`.

Subcommands live in `COMMANDS` (name -> `Command`). To add one, write `configure(parser)` (its
arguments) and `run(args) -> exit code`, then register it:

    COMMANDS["doctor"] = Command("check providers and keys", configure_doctor, run_doctor)

Every subcommand gets `--config PATH`; `load_settings(args)` honours it. A `SettingsError` raised
by a handler exits with status 2 and a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .routing import routing_table
from .settings import AvionicsSettings, SettingsError

__all__ = ["COMMANDS", "Command", "load_settings", "main"]

EXIT_SETTINGS_ERROR = 2


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


# ------------------------------------------------------------------------------------------ main

COMMANDS: dict[str, Command] = {
    "routes": Command(
        "show agent -> profile -> provider/model routes", _configure_routes, _run_routes
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avionics", description="avionics LLM orchestration")
    parser.add_argument("--config", metavar="PATH", help="settings TOML file")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS, help="settings TOML file"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.configure(sub.add_parser(name, help=command.help, parents=[common]))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for settings errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_SETTINGS_ERROR
    try:
        return COMMANDS[args.command].run(args)
    except SettingsError as exc:
        print(f"avionics: settings error: {exc.one_line()}", file=sys.stderr)
        return EXIT_SETTINGS_ERROR
