"""One client under test, in its own process, driven by the coordinator over stdin/stdout.

    python -m bench.worker CLIENT_NAME UPSTREAM_ROOT_URL

Reads one JSON command per line on stdin and answers one JSON line on the original stdout
(library output is sent to stderr, so nothing else can interleave with the answers). The event
loop and the client persist between commands, as in a long-running application: pools stay warm.

CPU is `time.process_time()` of this process (all its threads), so it counts exactly what the
client library costs the application, and nothing of the upstream, which runs elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import sys
import time
from typing import Any

from .clients import Client, Urls, make_client

__all__ = ["main"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size now (from /proc: no import, no allocation worth counting)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tcp_to(port: int) -> dict[str, int]:
    """This process's TCP connections to `port`, by state (psutil; /proc under the hood)."""
    import psutil

    states: dict[str, int] = {}
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == port:
            states[conn.status] = states.get(conn.status, 0) + 1
    return states


class Worker:
    def __init__(self, client: Client, root: str) -> None:
        self.client = client
        self.urls = Urls(root)
        self.port = int(root.rsplit(":", 1)[1].split("/")[0])

    async def op_setup(self) -> dict[str, Any]:
        rss0 = rss_bytes()
        await self.client.setup(self.urls)
        # One real call of each kind, so lazy imports and the first connection are done.
        if self.client.calls:
            text = await self.client.call()
            assert text, "empty answer"
        if self.client.streams:
            n, _ = await self.client.stream(8)
            assert n == 8, f"expected 8 chunks, got {n}"
        return {"pid": os.getpid(), "rss_before_setup": rss0, "rss": rss_bytes()}

    async def op_seq(self, n: int, warmup: int) -> dict[str, Any]:
        call = self.client.call
        for _ in range(warmup):
            await call()
        pt = time.process_time
        cpu: list[float] = []
        wall0 = time.perf_counter()
        for _ in range(n):
            c0 = pt()
            await call()
            cpu.append(pt() - c0)
        return {"cpu": cpu, "wall": time.perf_counter() - wall0}

    async def op_conc(self, waves: int, width: int) -> dict[str, Any]:
        call = self.client.call
        await asyncio.gather(*(call() for _ in range(width)))  # warm the pool to `width`
        pt = time.process_time
        per_call: list[float] = []
        wall0 = time.perf_counter()
        for _ in range(waves):
            c0 = pt()
            await asyncio.gather(*(call() for _ in range(width)))
            per_call.append((pt() - c0) / width)
        return {"cpu": per_call, "wall": time.perf_counter() - wall0, "calls": waves * width}

    async def op_stream(self, tokens: int, reps: int, budget: float) -> dict[str, Any]:
        await self.client.stream(8)  # the connection may have idled out between rounds
        pt = time.process_time
        rates: list[float] = []
        cpu_per_chunk: list[float] = []
        started = time.perf_counter()
        for _ in range(reps):
            c0 = pt()
            t0 = time.perf_counter()
            n, _first = await self.client.stream(tokens)
            elapsed = time.perf_counter() - t0
            if n != tokens:
                raise AssertionError(f"expected {tokens} chunks, got {n}")
            rates.append(n / elapsed)
            cpu_per_chunk.append((pt() - c0) / n)
            if time.perf_counter() - started > budget:
                break
        return {"rate": rates, "cpu_per_chunk": cpu_per_chunk}

    async def op_ttft(self, tokens: int, reps: int) -> dict[str, Any]:
        await self.client.stream(tokens)
        ttft: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            n, first = await self.client.stream(tokens)
            if n != tokens:
                raise AssertionError(f"expected {tokens} chunks, got {n}")
            ttft.append(first - t0)
        return {"ttft": ttft}

    async def op_slow(self, streams: int, tokens: int, tick: float) -> dict[str, Any]:
        """`streams` concurrent streams of `tokens` slow tokens: memory, loop lag, sockets."""
        gc.collect()
        rss0 = rss_bytes()
        lags: list[float] = []
        peak = [rss0]
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(tick)
                lags.append(time.perf_counter() - t0 - tick)
                peak[0] = max(peak[0], rss_bytes())

        arrivals: list[float] = []

        async def one() -> int:
            n, first = await self.client.stream(tokens)
            arrivals.append(time.perf_counter() - first)
            return n

        ticking = asyncio.create_task(ticker())
        c0 = time.process_time()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(streams)), return_exceptions=True)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        stop.set()
        await ticking
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        chunks = sum(r for r in results if isinstance(r, int))
        await asyncio.sleep(0.2)
        after_streams = tcp_to(self.port)
        await self.client.aclose()
        gc.collect()
        await asyncio.sleep(0.5)
        after_close = tcp_to(self.port)
        lags.sort()
        return {
            "streams": streams,
            "tokens": tokens,
            "ok": streams - len(errors),
            "errors": errors[:5],
            "error_count": len(errors),
            "chunks": chunks,
            "wall": wall,
            "cpu": cpu,
            "rss_before": rss0,
            "peak_rss": max(peak[0], peak_rss_bytes()),
            "peak_rss_sampled": peak[0],
            "lag_p50": lags[len(lags) // 2] if lags else None,
            "lag_p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None,
            "lag_max": lags[-1] if lags else None,
            "stream_span_median": sorted(arrivals)[len(arrivals) // 2] if arrivals else None,
            "sockets_after_streams": after_streams,
            "sockets_after_close": after_close,
        }

    async def op_extra(self) -> dict[str, Any]:
        extra = getattr(self.client, "extra", None)
        return extra() if extra is not None else {}


def main() -> None:
    name, root = sys.argv[1], sys.argv[2]
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the answers
    sys.stdout = sys.stderr
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    worker = Worker(make_client(name), root)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        try:
            answer = loop.run_until_complete(getattr(worker, f"op_{op}")(**command))
            answer["ok_"] = True
        except Exception as exc:  # reported to the coordinator, which decides
            answer = {"ok_": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
    with contextlib.suppress(Exception):
        loop.run_until_complete(worker.client.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


if __name__ == "__main__":
    main()
