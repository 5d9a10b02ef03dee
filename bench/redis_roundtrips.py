"""Redis round trips per gateway call with `[state] backend = "redis"` (not a test).

    uv run python bench/redis_roundtrips.py [--calls 500] [--concurrency 8] [--url redis://...]

Starts a throwaway ``redis-server`` on a free loopback port (or uses ``--url``), runs
``LLMGateway.complete`` against a priced mock provider in several configurations, and counts the
round trips three independent ways:

1. server side: ``INFO commandstats`` after ``CONFIG RESETSTAT`` (every command the server ran;
   the gate never pipelines, so commands = round trips);
2. client side: ``RedisConnection.round_trips`` (requests the gateway sent);
3. ``MONITOR`` while one call runs: the commands themselves, to show what they are.

Configurations: the memory backend (0 by construction), rpm only (1 admission, nothing to
settle), and rpm + tpm + max_concurrency + an agent budget (1 admission + 1 settlement), each
sequential and with ``--concurrency`` callers at once. The script cache is warmed first (the
first call on a fresh server costs one EVAL more per script). Importable: ``run(quick=...)``
returns the numbers (``bench/run.py`` figure 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis

from avionics import AvionicsSettings, LLMGateway, MockProvider

READY_DEADLINE_S = 20.0

CONFIGS: dict[str, dict[str, Any]] = {
    "rpm only": {"provider": {"rpm": 1_000_000}, "budget": None},
    "rpm+tpm+concurrency+budget": {
        "provider": {"rpm": 1_000_000, "tpm": 10**12, "max_concurrency": 64},
        "budget": "1000000",
    },
}


class PricedMock(MockProvider):
    """A mock billed like a cloud model, so the budget path runs with real estimates."""

    local = False


def settings(url: str | None, provider: dict[str, Any], budget: str | None) -> AvionicsSettings:
    agent: dict[str, Any] = {"profile": "default", "max_tokens": 16}
    if budget is not None:
        agent["budget_usd"] = budget
    state = {"backend": "redis", "redis_url": url} if url else {"backend": "memory"}
    return AvionicsSettings(
        providers={
            "cloud": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": "sk-bench",
                "default_model": "gpt-4o",
                **provider,
            }
        },
        profiles={"default": {"provider": "cloud"}},
        agents={"bench": agent},
        pricing={"cloud/gpt-4o": {"input": 2.5, "output": 10}},
        state=state,
    )


# -- a throwaway redis-server ------------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[str]:
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redis-server not found (apt-get install redis-server, or --url)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", workdir]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + READY_DEADLINE_S
            while not _pong(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {' '.join(args)}")
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# -- measuring ---------------------------------------------------------------------------------


# Commands a client sends itself; everything else in commandstats ran inside a script (Redis
# counts a script's own calls there too).
SCRIPT_CALLS = frozenset({"evalsha", "eval", "script|load"})
CONNECTION_SETUP = frozenset({"hello", "client|setname"})


async def commandstats(admin: aioredis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (the bench's own commands excluded)."""
    stats = await admin.info("commandstats")
    calls = {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}
    for own in ("info", "config|resetstat"):
        calls.pop(own, None)
    return calls


async def measure(url: str | None, name: str, calls: int, concurrency: int) -> dict[str, Any]:
    config = CONFIGS[name]
    gateway = LLMGateway(
        settings(url, config["provider"], config["budget"]),
        providers={"cloud": PricedMock(lambda request: "a short answer")},
    )
    connection = gateway.accountant.shared.connection
    admin = aioredis.Redis.from_url(url, decode_responses=True) if url else None
    try:
        await gateway.complete("warm up", agent_name="bench")  # loads the scripts once
        if admin is not None:
            await admin.config_resetstat()
        sent_before = connection.round_trips if connection is not None else 0
        queue = iter(range(calls))

        async def caller() -> None:
            for _ in queue:
                await gateway.complete("what is the answer", agent_name="bench")

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        server = await commandstats(admin) if admin is not None else {}
        sent = (connection.round_trips if connection is not None else 0) - sent_before
        monitored = await monitor_one_call(gateway, url) if url else []
    finally:
        if admin is not None:
            await admin.aclose()
        await gateway.accountant.shared.aclose()
    scripts = sum(n for name, n in server.items() if name in SCRIPT_CALLS)
    setup = sum(n for name, n in server.items() if name in CONNECTION_SETUP)
    inside = sum(server.values()) - scripts - setup
    return {
        "config": name,
        "backend": "redis" if url else "memory",
        "calls": calls,
        "concurrency": concurrency,
        "server_commands": server,
        "round_trips_per_call_server": scripts / calls,
        "round_trips_per_call_client": sent / calls,
        "connection_setup_round_trips": setup,
        "commands_inside_scripts_per_call": inside / calls,
        "monitor_one_call": monitored,
        "calls_per_s": calls / wall,
    }


async def monitor_one_call(gateway: LLMGateway, url: str) -> list[str]:
    """What one gateway call sent, as MONITOR saw it: the client's own commands, then how many
    commands ran inside its scripts."""
    connection = gateway.accountant.shared.connection
    assert connection is not None
    watcher = aioredis.Redis.from_url(url, decode_responses=True)
    marker = "bench-monitor-end"
    sent: list[str] = []
    inside = 0
    try:
        async with watcher.monitor() as monitor:
            await gateway.complete("one monitored call", agent_name="bench")
            await connection.client().echo(marker)  # a fence on the gateway's own client
            while True:
                entry = await monitor.next_command()
                command = entry["command"]
                if marker in command:
                    break
                if entry["client_type"] == "lua":
                    inside += 1
                    continue
                name = command.split()[0].upper()
                sent.append(f"{name} {_script_name(command)}".strip())
    finally:
        await watcher.aclose()
    return [*sent, f"(+{inside} commands inside the scripts)"]


def _script_name(command: str) -> str:
    from avionics.state._lua import SCRIPTS

    for script in SCRIPTS:
        if script.sha in command:
            return f"({script.name})"
    return ""


async def run_all(url: str | None, calls: int, concurrency: int) -> list[dict[str, Any]]:
    results = [await measure(None, "rpm+tpm+concurrency+budget", calls, 1)]
    results += [
        await measure(url, name, calls, callers) for name in CONFIGS for callers in (1, concurrency)
    ]
    return results


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{r['backend']} {r['config']} x{r['concurrency']}": round(
            r["round_trips_per_call_server"] if r["backend"] == "redis" else 0.0, 3
        )
        for r in results
    }


def run(quick: bool = False, url: str | None = None) -> dict[str, Any]:
    """Measure and return {"summary": {config: round trips per call}, "results": [...]}."""
    calls, concurrency = (100, 4) if quick else (500, 8)
    if url is not None:
        results = asyncio.run(run_all(url, calls, concurrency))
    else:
        with redis_server() as started:
            results = asyncio.run(run_all(started, calls, concurrency))
    return {"summary": summarize(results), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", help="an existing Redis (default: start a throwaway one)")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()
    if args.url:
        results = asyncio.run(run_all(args.url, args.calls, args.concurrency))
    else:
        with redis_server() as url:
            results = asyncio.run(run_all(url, args.calls, args.concurrency))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    print("Round trips per gateway call (server: EVALSHA/EVAL in INFO commandstats; client:")
    print("requests counted by RedisConnection). Connection setup (HELLO, CLIENT SETNAME) is")
    print("paid once per pooled socket and shown apart.")
    print()
    header = f"{'configuration':<40}{'server':>8}{'client':>8}{'setup':>7}{'in-script':>11}"
    print(header + f"{'calls/s':>9}")
    for r in results:
        label = f"{r['backend']}: {r['config']} x{r['concurrency']}"
        print(
            f"{label:<40}{r['round_trips_per_call_server']:>8.2f}"
            f"{r['round_trips_per_call_client']:>8.2f}{r['connection_setup_round_trips']:>7}"
            f"{r['commands_inside_scripts_per_call']:>11.1f}{r['calls_per_s']:>9.0f}"
        )
    print()
    for r in results:
        if r["monitor_one_call"]:
            print(f"MONITOR, one call ({r['config']}): {', '.join(r['monitor_one_call'])}")


if __name__ == "__main__":
    main()
