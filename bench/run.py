"""The coordinator: starts the upstream and one worker process per client, runs the figures with
the clients interleaved round by round, and reports every figure as a ratio to the floor.

Figures (see docs/performance.md for the method):

1. client CPU per non-streamed call, sequential and 64 concurrent;
2. streamed chunks per second delivered to the consumer (2,000-chunk stream), CPU per chunk,
   and time added to the first token;
3. import time (``python -X importtime``, fresh process) and RSS after import;
4. 1,000 concurrent slow streams (50 ms between tokens): peak RSS, event-loop lag p99, sockets
   left open;
5. Redis limits: delegated to ``bench/redis_roundtrips.py`` when that module exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from .clients import CLIENTS, FLOOR_CALL, FLOOR_STREAM
from .report import render, write_chart, write_json

__all__ = ["Plan", "main"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Plan:
    """How much of each figure to run."""

    rounds: int = 8  # interleaved rounds (ABAB): every figure's samples are spread over them
    seq_calls: int = 250  # sequential calls per client per round (8 x 250 = 2,000)
    seq_warmup: int = 20
    conc_waves: int = 4  # waves of 64 concurrent calls per client per round (8 x 4 x 64 = 2,048)
    width: int = 64
    stream_tokens: int = 2000
    stream_reps: int = 3  # 2,000-chunk streams per client per round
    stream_budget: float = 6.0  # seconds per client per round; a slow client does fewer reps
    ttft_tokens: int = 8
    ttft_reps: int = 20
    clients: tuple[str, ...] | None = None  # None: every client (--clients overrides)
    import_reps: int = 7
    import_clients: tuple[str, ...] | None = None  # None: every client
    slow_streams: int = 1000
    slow_tokens: int = 20
    slow_delay: float = 0.05
    slow_tick: float = 0.01
    slow_clients: tuple[str, ...] = (
        "httpx-sse",
        "openai SDK",
        "litellm",
        "airframe",
        "avionics",
        "httpx-sse (anthropic)",
        "anthropic SDK",
        "airframe (anthropic)",
    )


QUICK = Plan(
    clients=("httpx", "httpx-sse", "openai SDK", "litellm", "airframe", "avionics"),
    rounds=3,
    seq_calls=150,
    seq_warmup=10,
    conc_waves=1,
    stream_reps=1,
    stream_budget=3.0,
    ttft_reps=8,
    import_reps=1,
    slow_streams=250,
    slow_tokens=10,
    slow_clients=("httpx-sse", "airframe", "avionics"),
)


_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:5.0f}s] {message}", file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------------------------


class Upstream:
    """`python -m bench.upstream` in its own process."""

    def __init__(self, token_delay: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.upstream", "--token-delay", str(token_delay)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"upstream did not start: {line!r}")
        self.port = int(line.split()[1])
        self.root = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Worker:
    """One client's process (`python -m bench.worker`); `ask` sends a command, waits the answer."""

    def __init__(self, name: str, root: str, stderr: IO[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", name, root],
            cwd=_SCRATCH,  # no ./avionics.toml: the gateway reads only what the bench passes
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=_worker_env(),
        )

    def ask(self, op: str, timeout: float = 600.0, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.receive(op, timeout)

    def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def receive(self, op: str, timeout: float = 600.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            raise RuntimeError(f"{self.name}: no answer to {op} within {timeout:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: worker exited during {op} (see the worker log)")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok_", False):
            raise RuntimeError(f"{self.name}: {op} failed: {answer.get('error')}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_SCRATCH = tempfile.mkdtemp(prefix="bench-")


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.setdefault("LITELLM_TELEMETRY", "False")
    env.setdefault("LITELLM_LOG", "ERROR")
    env["PYTHONWARNINGS"] = "ignore"  # one-off library warnings are not what is measured
    for key in [k for k in env if k.startswith(("AVIONICS_", "OTEL_"))]:
        del env[key]  # the gateway is configured by the benchmark, not by this shell
    return env


# -- statistics ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p99(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def round_ratio(
    rounds: dict[str, list[list[float]]], name: str, floor: str, stat: Callable[..., float]
) -> float | None:
    """Median over rounds of stat(client's round samples) / stat(floor's same-round samples).

    Each round ran every client back to back, so dividing within a round cancels the machine's
    drift (other processes, frequency scaling) before the median across rounds is taken."""
    mine, base = rounds.get(name), rounds.get(floor)
    if not mine or not base:
        return None
    ratios = [stat(a) / stat(b) for a, b in zip(mine, base, strict=False) if a and b]
    return median(ratios) if ratios else None


def flat(rounds: list[list[float]]) -> list[float]:
    return [x for r in rounds for x in r]


# -- the figures ---------------------------------------------------------------------------------


def interleaved(
    workers: dict[str, Worker], plan: Plan, op: str, **args: Any
) -> dict[str, list[dict[str, Any]]]:
    """Run `op` on every worker, `plan.rounds` times, alternating the order (ABBA...)."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in workers}
    names = list(workers)
    for r in range(plan.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            out[name].append(workers[name].ask(op, **args))
        log(f"  {op}: round {r + 1}/{plan.rounds} done")
    return out


def figure_calls(
    workers: dict[str, Worker], plan: Plan, run_between: Callable[[], None] | None = None
) -> dict[str, Any]:
    callers = {n: w for n, w in workers.items() if CLIENTS[n].calls}
    log("figure 1: CPU per non-streamed call, sequential")
    seq = interleaved(callers, plan, "seq", n=plan.seq_calls, warmup=plan.seq_warmup)
    if run_between is not None:
        # Streams run here, before the concurrent calls: those leave 64 idle connections in
        # each pool, and httpcore's pool costs grow with the number of pooled connections.
        run_between()
    log(f"figure 1: CPU per non-streamed call, {plan.width} concurrent")
    conc = interleaved(callers, plan, "conc", waves=plan.conc_waves, width=plan.width)
    result: dict[str, Any] = {}
    seq_rounds = {n: [a["cpu"] for a in answers] for n, answers in seq.items()}
    conc_rounds = {n: [a["cpu"] for a in answers] for n, answers in conc.items()}
    for name in callers:
        floor = FLOOR_CALL[CLIENTS[name].protocol]
        s, c = flat(seq_rounds[name]), flat(conc_rounds[name])
        result[name] = {
            "floor": floor,
            "seq_calls": len(s),
            "seq_median_us": median(s) * 1e6,
            "seq_p99_us": p99(s) * 1e6,
            "seq_ratio": round_ratio(seq_rounds, name, floor, median),
            "seq_p99_ratio": round_ratio(seq_rounds, name, floor, p99),
            "seq_wall_per_call_ms": median([a["wall"] / plan.seq_calls for a in seq[name]]) * 1e3,
            "conc_calls": sum(a["calls"] for a in conc[name]),
            "conc_median_us": median(c) * 1e6,
            "conc_p99_us": p99(c) * 1e6,
            "conc_ratio": round_ratio(conc_rounds, name, floor, median),
            "conc_wall_per_call_ms": median([a["wall"] / a["calls"] for a in conc[name]]) * 1e3,
        }
    for row in result.values():
        base = result[row["floor"]]
        row["seq_overhead_us"] = row["seq_median_us"] - base["seq_median_us"]
        row["conc_overhead_us"] = row["conc_median_us"] - base["conc_median_us"]
    return result


def figure_streams(workers: dict[str, Worker], plan: Plan) -> dict[str, Any]:
    streamers = {n: w for n, w in workers.items() if CLIENTS[n].streams}
    log(f"figure 2: {plan.stream_tokens}-chunk streams")
    runs = interleaved(
        streamers, plan, "stream",
        tokens=plan.stream_tokens, reps=plan.stream_reps, budget=plan.stream_budget,
    )  # fmt: skip
    log("figure 2: time to first token")
    ttft = interleaved(streamers, plan, "ttft", tokens=plan.ttft_tokens, reps=plan.ttft_reps)
    rate_rounds = {n: [a["rate"] for a in answers] for n, answers in runs.items()}
    cpu_rounds = {n: [a["cpu_per_chunk"] for a in answers] for n, answers in runs.items()}
    ttft_rounds = {n: [a["ttft"] for a in answers] for n, answers in ttft.items()}
    result: dict[str, Any] = {}
    for name in streamers:
        floor = FLOOR_STREAM[CLIENTS[name].protocol]
        rates, cpu, first = (
            flat(rate_rounds[name]),
            flat(cpu_rounds[name]),
            flat(ttft_rounds[name]),
        )
        added = [
            median(a) - median(b)
            for a, b in zip(ttft_rounds[name], ttft_rounds[floor], strict=False)
        ]
        result[name] = {
            "floor": floor,
            "streams": len(rates),
            "chunks_per_s": median(rates),
            "rate_ratio": round_ratio(rate_rounds, name, floor, median),
            "cpu_per_chunk_us": median(cpu) * 1e6,
            "cpu_ratio": round_ratio(cpu_rounds, name, floor, median),
            "ttft_ms": median(first) * 1e3,
            "ttft_added_ms": median(added) * 1e3,
        }
    return result


_IMPORT_PROBE = (
    "import time as _t\n"
    "_t0 = _t.perf_counter()\n"
    "{stmt}\n"
    "_t1 = _t.perf_counter()\n"
    "import os as _os\n"
    "with open('/proc/self/statm', 'rb') as _f:\n"
    "    _rss = int(_f.read().split()[1]) * _os.sysconf('SC_PAGE_SIZE')\n"
    "print(_t1 - _t0, _rss)\n"
)


def _import_once(stmt: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _IMPORT_PROBE.format(stmt=stmt)],
        cwd=_SCRATCH,
        capture_output=True,
        text=True,
        env=_worker_env(),
        check=True,
    )
    wall, rss = proc.stdout.split()
    return {"importtime": _importtime(proc.stderr), "wall": float(wall), "rss": int(rss)}


_BASELINE: set[str] = set()


def _importtime(stderr: str) -> dict[str, int]:
    """Top-level modules `-X importtime` lists -> cumulative microseconds."""
    out: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # top level
            out[name.strip()] = out.get(name.strip(), 0) + int(parts[1])
    return out


def figure_imports(names: Sequence[str], plan: Plan) -> dict[str, Any]:
    log("figure 3: import time and RSS after import")
    bare = [_import_once("pass") for _ in range(max(2, plan.import_reps // 2))]
    baseline = set().union(*(b["importtime"] for b in bare))
    bare_rss = median([b["rss"] for b in bare])
    if plan.import_clients is not None:
        names = [n for n in names if n in plan.import_clients]
    statements = list(dict.fromkeys(CLIENTS[n].import_stmt for n in names))
    by_stmt: dict[str, list[dict[str, Any]]] = {stmt: [] for stmt in statements}
    for r in range(plan.import_reps):
        for stmt in statements if r % 2 == 0 else statements[::-1]:
            by_stmt[stmt].append(_import_once(stmt))
    result: dict[str, Any] = {}
    for name in names:
        samples = by_stmt[CLIENTS[name].import_stmt]
        times = [
            sum(us for mod, us in s["importtime"].items() if mod not in baseline) / 1e3
            for s in samples
        ]
        rss = median([s["rss"] for s in samples])
        result[name] = {
            "statement": CLIENTS[name].import_stmt,
            "import_ms": median(times),
            "import_wall_ms": median([s["wall"] for s in samples]) * 1e3,
            "rss_mb": rss / 2**20,
            "rss_added_mb": (rss - bare_rss) / 2**20,
        }
    result["_bare_python"] = {"rss_mb": bare_rss / 2**20}
    return result


def figure_slow(names: Sequence[str], plan: Plan, stderr: IO[str]) -> dict[str, Any]:
    log(
        f"figure 4: {plan.slow_streams} concurrent streams, {plan.slow_tokens} tokens "
        f"{plan.slow_delay * 1e3:.0f} ms apart"
    )
    upstream = Upstream(token_delay=plan.slow_delay)
    result: dict[str, Any] = {}
    try:
        for name in names:
            worker = Worker(name, upstream.root, stderr)
            try:
                worker.ask("setup", timeout=120)
                answer = worker.ask(
                    "slow", timeout=300,
                    streams=plan.slow_streams, tokens=plan.slow_tokens, tick=plan.slow_tick,
                )  # fmt: skip
            except RuntimeError as exc:
                log(f"  {name}: {exc}")
                result[name] = {"failed": str(exc)}
                continue
            finally:
                worker.close()
            grown = answer["peak_rss"] - answer["rss_before"]
            leaked = sum(answer["sockets_after_close"].values())
            result[name] = {
                **answer,
                "kb_per_stream": grown / answer["streams"] / 1024,
                "lag_p99_ms": answer["lag_p99"] * 1e3,
                "leaked_sockets": leaked,
                "pooled_after_streams": sum(answer["sockets_after_streams"].values()),
                "cpu_per_chunk_us": answer["cpu"] / max(answer["chunks"], 1) * 1e6,
            }
            log(
                f"  {name}: {answer['ok']}/{answer['streams']} ok in {answer['wall']:.1f}s, "
                f"lag p99 {answer['lag_p99'] * 1e3:.1f} ms, leaked sockets {leaked}"
            )
    finally:
        upstream.close()
    return result


def figure_redis(quick: bool) -> dict[str, Any] | None:
    """Figure 5 lives in bench/redis_roundtrips.py (another issue); run it when present."""
    if not (HERE / "redis_roundtrips.py").exists():
        log("figure 5: skipped (bench/redis_roundtrips.py is not there yet)")
        return None
    import importlib

    module = importlib.import_module("bench.redis_roundtrips")
    run = getattr(module, "run", None)
    if run is None:
        log("figure 5: bench/redis_roundtrips.py has no run(quick=...) entry point; skipped")
        return None
    log("figure 5: Redis limits")
    try:
        data: dict[str, Any] = run(quick=quick)
    except Exception as exc:  # no redis-server binary, no redis package...
        log(f"figure 5: failed: {type(exc).__name__}: {exc}")
        return {"failed": f"{type(exc).__name__}: {exc}"}
    data["latency"] = redis_latency(data.get("results", []))
    return data


def redis_latency(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sequential configuration: round trips per call and the time each call gained over the
    in-memory backend (1 / calls per second, both sequential, same mock provider)."""
    memory = [r for r in results if r.get("backend") == "memory" and r.get("concurrency") == 1]
    if not memory:
        return []
    base_ms = 1e3 / memory[0]["calls_per_s"]
    return [
        {
            "config": r["config"],
            "round_trips_per_call": r["round_trips_per_call_server"],
            "ms_per_call": 1e3 / r["calls_per_s"],
            "extra_ms_per_call": 1e3 / r["calls_per_s"] - base_ms,
            "memory_ms_per_call": base_ms,
        }
        for r in results
        if r.get("backend") == "redis" and r.get("concurrency") == 1
    ]


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced run, under 2 minutes")
    parser.add_argument("--clients", help="comma-separated subset of: " + ", ".join(CLIENTS))
    parser.add_argument(
        "--figures", default="1,2,3,4,5", help="comma-separated subset of 1,2,3,4,5"
    )
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else Plan()
    if args.clients:
        names = [n.strip() for n in args.clients.split(",")]
    else:
        names = list(plan.clients or CLIENTS)
    for name in names:
        if name not in CLIENTS:
            parser.error(f"unknown client {name!r}; known: {', '.join(CLIENTS)}")
    # Ratios need the floors in the same run.
    for cls in [CLIENTS[n] for n in names]:
        for floor in (FLOOR_CALL[cls.protocol], FLOOR_STREAM[cls.protocol]):
            if floor not in names:
                names.append(floor)
    names.sort(key=list(CLIENTS).index)
    figures = {int(f) for f in args.figures.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data: dict[str, Any] = {
        "plan": asdict(plan),
        "quick": args.quick,
        "machine": _machine(),
        "upstream": "airframe.testing.Emulator (uvicorn + h11) in a separate process "
        "(python -m bench.upstream), token timing off",
    }
    with open(out / "workers.log", "w") as worker_log:
        if figures & {1, 2}:
            upstream = Upstream()
            workers: dict[str, Worker] = {}
            try:
                log(f"upstream at {upstream.root}; starting {len(names)} client processes")
                for name in names:
                    workers[name] = Worker(name, upstream.root, worker_log)
                for worker in workers.values():  # imports run in parallel
                    worker.send("setup")
                for worker in workers.values():
                    worker.receive("setup", timeout=300)

                def streams() -> None:
                    data["streams"] = figure_streams(workers, plan)

                if 1 in figures:
                    data["calls"] = figure_calls(workers, plan, streams if 2 in figures else None)
                elif 2 in figures:
                    streams()
                data["extra"] = {n: w.ask("extra") for n, w in workers.items()}
            finally:
                for worker in workers.values():
                    worker.close()
                upstream.close()
        if 3 in figures:
            data["imports"] = figure_imports(names, plan)
        if 4 in figures:
            data["slow"] = figure_slow(
                [n for n in plan.slow_clients if n in names], plan, worker_log
            )
        if 5 in figures:
            data["redis"] = figure_redis(args.quick)
    data["elapsed_s"] = time.perf_counter() - started

    table = render(data)
    print(table)
    stem = "quick" if args.quick else "full"
    write_json(data, table, out / f"{stem}.json")
    chart = write_chart(data, out / f"{stem}.png")
    log(f"wrote {out / (stem + '.json')}" + (f" and {chart}" if chart else ""))
    log(f"elapsed {data['elapsed_s']:.0f}s")


def _machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {}
    for dist in ("httpx", "httpx-sse", "openai", "anthropic", "litellm", "jeeves-airframe",
                 "jeeves-avionics", "opentelemetry-sdk", "uvicorn"):  # fmt: skip
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "not installed"
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": load,
        "versions": versions,
    }
