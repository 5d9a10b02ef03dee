"""Streamed gateway calls: chunks as they arrive, with fallback only before the first one.

A stream falls back (to another node, then the next route) only while no chunk has reached the
caller. After that a failure raises `airframe.InterruptedError` whose `partial` holds what the
backend had sent, and the attempt's ledger row (outcome `interrupted`) bills it. A caller that
stops early (`break` + `aclose()`, `contextlib.aclosing`, task cancellation) releases the rate
limit permit, the budget reservation and the node at once; that attempt is billed for what it
received (row outcome `interrupted`, `error_category` "cancelled").

Per chunk the gateway allocates the `StreamingChunk` (and its timestamp) and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Generator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airframe import (
    AirframeError,
    ErrorCategory,
    InterruptedError,
    ProtocolError,
    StreamEventType,
)

from .errors import RateLimitedLocally
from .requests import for_route
from .responses import StreamingChunk

if TYPE_CHECKING:
    from .accounting import AttemptRecord
    from .engine import Call, CallEngine
    from .routing import Route

__all__ = ["ChunkStream", "stream_call"]

_TOKEN = StreamEventType.TOKEN
_REASONING = StreamEventType.REASONING
_MESSAGE = StreamEventType.MESSAGE


class ChunkStream:
    """What `LLMGateway.complete_stream` returns: an async iterator of `StreamingChunk`s, the
    last one final (`is_final`, with the whole `response`).

    Iterate it directly (`async for chunk in gateway.complete_stream(...)`) or await it first
    (`async for chunk in await gateway.complete_stream(...)`): the same stream either way.
    `aclose()` (or `contextlib.aclosing`) ends it early and releases what it holds.
    """

    __slots__ = ("_agen",)

    def __init__(self, agen: AsyncGenerator[StreamingChunk, None]) -> None:
        self._agen = agen

    def __aiter__(self) -> ChunkStream:
        return self

    def __anext__(self) -> Awaitable[StreamingChunk]:
        return self._agen.__anext__()

    async def aclose(self) -> None:
        await self._agen.aclose()

    def __await__(self) -> Generator[Any, None, ChunkStream]:
        return self._ready().__await__()

    async def _ready(self) -> ChunkStream:
        return self


async def stream_call(engine: CallEngine, call: Call) -> AsyncGenerator[StreamingChunk, None]:
    """The chunks of one streamed call, with fallback before the first chunk."""
    engine._begin(call)
    done = False
    try:
        for route, provider in engine._candidates(call):
            request = for_route(call.request, route.model, route.params)
            tried: list[str] = []
            while True:
                attempt = engine._attempt(call, route, provider, request, tried)
                try:
                    async with attempt as record:
                        events = provider.stream(request, node=record.node, hooks=record.hooks)
                        async with aclosing(events):
                            async for event in events:
                                kind = event.type
                                if kind is _TOKEN or kind is _REASONING:
                                    record.chunks += 1
                                    chunk = _chunk(call, route, record, event.content, kind)
                                    engine._notify(chunk)
                                    yield chunk
                                elif kind is _MESSAGE:
                                    record.result = event.result
                        if record.result is None:
                            raise ProtocolError(
                                "the stream ended without its final message",
                                backend=provider.kind,
                                endpoint=provider.name,
                            )
                except (AirframeError, RateLimitedLocally) as exc:
                    if attempt.record.chunks:  # output reached the caller: no fallback
                        if isinstance(exc, AirframeError) and not _is_interrupted(exc):
                            raise _interrupted(exc) from exc
                        raise
                    if engine._next_node(attempt.record, tried):
                        continue
                    break
                response = engine._response(call, route, attempt.record)
                final = StreamingChunk(
                    "", True, call.request_id, call.agent, route.provider, response.model,
                    attempt.record.chunks, response.timestamp, response,
                )  # fmt: skip
                engine._notify(final)
                done = True
                call.telemetry.finish(response, None)
                yield final
                return
            if not engine._moves_on(call, route, attempt.record):
                break
        raise engine._failed(call)
    except BaseException as exc:
        if not done:
            call.telemetry.finish(None, exc)
        raise


def _chunk(
    call: Call, route: Route, record: AttemptRecord, text: str, kind: StreamEventType
) -> StreamingChunk:
    return StreamingChunk(
        text, False, call.request_id, call.agent, route.provider, route.model,
        record.chunks, datetime.now(UTC), None, "token" if kind is _TOKEN else "reasoning",
    )  # fmt: skip


def _is_interrupted(error: AirframeError) -> bool:
    return error.category is ErrorCategory.INTERRUPTED


def _interrupted(error: AirframeError) -> InterruptedError:
    """A provider's mid-stream error in the shape airframe uses after output began."""
    return InterruptedError(
        f"stream interrupted after output began: {error.message}",
        status_code=error.status_code,
        backend=error.backend,
        endpoint=error.endpoint,
        request_id=error.request_id,
        partial=error.partial,
    )
