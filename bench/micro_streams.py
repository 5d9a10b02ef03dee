"""Micro-benchmark: airframe's SSE decoder vs httpx-sse's decoding, on an OpenAI-style stream.

Not a test. Run from the repository root:

    uv run python bench/micro_streams.py [--events 2000] [--chunk 4096] [--repeat 30]

Two measurements, both over the same 2,000-event ``chat.completion.chunk`` stream cut into
4 KB chunks (the size httpx hands out from ``aiter_raw()`` on a typical connection):

1. decode only: ``airframe._streams.SSEDecoder.feed`` per chunk, versus what
   ``httpx_sse.EventSource.aiter_sse`` does per chunk (incremental UTF-8 text decoding, then
   httpx-sse's ``SSELineDecoder`` and one ``SSEDecoder.decode`` call per line);
2. in situ: a ``httpx.AsyncClient`` over ``httpx.MockTransport`` (no sockets), comparing a bare
   ``aconnect_sse(...).aiter_sse()`` loop with ``client.stream(...)`` + ``aiter_raw()`` +
   our decoder. The target is that decoding never pulls airframe below 0.85x of the former.

Ratios are throughput ratios: > 1.0 means airframe is faster.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from httpx_sse import aconnect_sse
from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder
from httpx_sse._decoders import SSELineDecoder

from airframe._streams import SSEDecoder


def build_stream(n_events: int) -> bytes:
    words = ["Hello", " world", ", this", " is", " a", " streamed", " answer"]
    words += [" – café", " 日本", " 🦜"]  # some 2-, 3- and 4-byte UTF-8
    parts = []
    for i in range(n_events):
        chunk = {
            "id": "chatcmpl-9xYzAbCdEfGhIjKlMnOpQrStUv",
            "object": "chat.completion.chunk",
            "created": 1718000000,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0123456789",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": words[i % len(words)]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        parts.append(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n")
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode("utf-8")


def split(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def decode_airframe(chunks: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    out: list[str] = []
    for chunk in chunks:
        out.extend([event.data for event in decoder.feed(chunk)])
    out.extend([event.data for event in decoder.flush()])
    return out


def decode_httpx_sse(chunks: list[bytes]) -> list[str]:
    # Mirrors EventSource.aiter_sse: httpx's TextDecoder (incremental UTF-8, errors="replace"),
    # SSELineDecoder per text chunk, line.rstrip("\n"), SSEDecoder.decode per line.
    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines = SSELineDecoder()
    decoder = HttpxSSEDecoder()
    out: list[str] = []
    for chunk in chunks:
        for line in lines.decode(text_decoder.decode(chunk)):
            sse = decoder.decode(line.rstrip("\n"))
            if sse is not None:
                out.append(sse.data)
    for line in lines.decode(text_decoder.decode(b"", True)) + lines.flush():
        sse = decoder.decode(line.rstrip("\n"))
        if sse is not None:
            out.append(sse.data)
    return out


def time_pair(
    theirs: Callable[[], object], ours: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Alternate the two sides run by run (a shared, noisy machine drifts), keep each minimum."""
    t_theirs: list[float] = []
    t_ours: list[float] = []
    for _ in range(repeat):
        for fn, times in ((theirs, t_theirs), (ours, t_ours)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return min(t_theirs), min(t_ours)


def make_client(chunks: list[bytes]) -> httpx.AsyncClient:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Body(body)
        )

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://bench")


class _Body(httpx.AsyncByteStream):
    def __init__(self, factory: Callable[[], AsyncIterator[bytes]]) -> None:
        self._factory = factory

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._factory():
            yield chunk


async def run_httpx_sse(client: httpx.AsyncClient) -> int:
    n = 0
    async with aconnect_sse(client, "POST", "/v1/chat/completions") as source:
        async for _event in source.aiter_sse():
            n += 1
    return n


async def run_airframe(client: httpx.AsyncClient) -> int:
    n = 0
    decoder = SSEDecoder()
    async with client.stream("POST", "/v1/chat/completions") as response:
        async for chunk in response.aiter_raw():
            n += len(decoder.feed(chunk))
    n += len(decoder.flush())
    return n


async def time_pair_async(
    theirs: Callable[[httpx.AsyncClient], Awaitable[int]],
    ours: Callable[[httpx.AsyncClient], Awaitable[int]],
    chunks: list[bytes],
    repeat: int,
) -> tuple[float, float]:
    t_theirs: list[float] = []
    t_ours: list[float] = []
    async with make_client(chunks) as client:
        for _ in range(repeat):
            for fn, times in ((theirs, t_theirs), (ours, t_ours)):
                start = time.perf_counter()
                await fn(client)
                times.append(time.perf_counter() - start)
    return min(t_theirs), min(t_ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    stream = build_stream(args.events)
    chunks = split(stream, args.chunk)
    ours, theirs = decode_airframe(chunks), decode_httpx_sse(chunks)
    assert ours == theirs, "decoders disagree"
    n = len(ours)
    print(
        f"stream: {n} events, {len(stream):,} bytes, {len(chunks)} chunks of {args.chunk} B; "
        f"best of {args.repeat} interleaved runs"
    )

    t_theirs, t_ours = time_pair(
        lambda: decode_httpx_sse(chunks), lambda: decode_airframe(chunks), args.repeat
    )
    print("1. decode only")
    print(f"   httpx-sse line decoder : {t_theirs * 1e3:8.2f} ms  ({n / t_theirs:>10,.0f} ev/s)")
    print(f"   airframe SSEDecoder    : {t_ours * 1e3:8.2f} ms  ({n / t_ours:>10,.0f} ev/s)")
    print(f"   throughput ratio airframe / httpx-sse: {t_theirs / t_ours:.2f}x")

    async def in_situ() -> tuple[float, float]:
        assert await _count(run_httpx_sse, chunks) == await _count(run_airframe, chunks) == n
        return await time_pair_async(run_httpx_sse, run_airframe, chunks, args.repeat)

    a_theirs, a_ours = asyncio.run(in_situ())
    print("2. in situ (httpx.AsyncClient + MockTransport, no network)")
    print(f"   aconnect_sse().aiter_sse()        : {a_theirs * 1e3:8.2f} ms")
    print(f"   aiter_raw() + airframe SSEDecoder : {a_ours * 1e3:8.2f} ms")
    print(f"   throughput ratio airframe / httpx-sse: {a_theirs / a_ours:.2f}x (target >= 0.85)")


async def _count(fn: Callable[[httpx.AsyncClient], Awaitable[int]], chunks: list[bytes]) -> int:
    async with make_client(chunks) as client:
        return await fn(client)


if __name__ == "__main__":
    main()
