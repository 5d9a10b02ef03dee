"""Profile one client's non-streamed or streamed path against the benchmark upstream.

    uv run --group bench python -m bench.profiling airframe call        # cProfile, top 30
    uv run --group bench python -m bench.profiling airframe stream --pyinstrument
    uv run --group bench python -m bench.profiling httpx call --calls 3000

The upstream runs in its own process, as in the benchmark; only the client is profiled. Also
prints the client's CPU per call (or per chunk) measured without the profiler, for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from .clients import CLIENTS, Urls, make_client
from .run import Upstream

__all__ = ["main"]


async def _run(args: argparse.Namespace, root: str) -> None:
    client = make_client(args.client)
    await client.setup(Urls(root))

    async def work(n: int) -> int:
        if args.path == "call":
            for _ in range(n):
                await client.call()
            return n
        total = 0
        for _ in range(n):
            got, _ = await client.stream(args.tokens)
            total += got
        return total

    n = args.calls if args.path == "call" else args.streams
    await work(max(n // 10, 5))  # warm up
    c0 = time.process_time()
    units = await work(n)
    per = (time.process_time() - c0) / units * 1e6
    unit = "call" if args.path == "call" else "chunk"
    print(f"{args.client} {args.path}: {per:.1f} µs CPU per {unit} (no profiler)")

    profiler: Any
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002, async_mode="enabled")
        profiler.start()
        await work(n)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    else:
        profiler = cProfile.Profile()
        profiler.enable()
        await work(n)
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats(args.sort).print_stats(args.top)
    await client.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    parser.add_argument("client", choices=list(CLIENTS))
    parser.add_argument("path", choices=["call", "stream"])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args(argv)
    upstream = Upstream()
    try:
        asyncio.run(_run(args, upstream.root))
    finally:
        upstream.close()


if __name__ == "__main__":
    main()
