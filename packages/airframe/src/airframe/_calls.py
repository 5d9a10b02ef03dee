"""One-call entry points: async `infer`/`stream_infer`, and blocking versions over the same code.

The blocking versions add no second HTTP implementation.
Calls run on one private event loop in a daemon thread, so connection pools survive between sync
calls and the functions work both outside and inside a running event loop (e.g. a notebook).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from ._config import EndpointSpec
from ._types import InferenceRequest, InferenceResult, InferenceStreamEvent

__all__ = ["infer", "infer_sync", "run_sync", "stream_infer", "stream_infer_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _portal() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="airframe-sync", daemon=True).start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the portal loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, _portal()).result()


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from blocking code; closing the iterator closes the stream."""
    loop = _portal()
    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(anext(agen), loop).result()  # type: ignore[arg-type]
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            asyncio.run_coroutine_threadsafe(aclose(), loop).result()


def infer_sync(endpoint: EndpointSpec, request: InferenceRequest) -> InferenceResult:
    """Blocking `infer`: `airframe.infer_sync(endpoint, request)`."""
    from .adapters import get_adapter

    return run_sync(get_adapter(endpoint.backend_kind).infer(endpoint, request))


def stream_infer_sync(
    endpoint: EndpointSpec, request: InferenceRequest
) -> Iterator[InferenceStreamEvent]:
    """Blocking `stream_infer`: iterate events; the last one is `MESSAGE`."""
    from .adapters import get_adapter

    return iterate_sync(get_adapter(endpoint.backend_kind).stream_infer(endpoint, request))


async def infer(endpoint: EndpointSpec, request: InferenceRequest) -> InferenceResult:
    """`await airframe.infer(endpoint, request)`: the adapter for the endpoint's kind, one call."""
    from .adapters import get_adapter

    return await get_adapter(endpoint.backend_kind).infer(endpoint, request)


def stream_infer(
    endpoint: EndpointSpec, request: InferenceRequest
) -> AsyncGenerator[InferenceStreamEvent, None]:
    """`async for event in airframe.stream_infer(endpoint, request)`; `MESSAGE` comes last."""
    from .adapters import get_adapter

    return get_adapter(endpoint.backend_kind).stream_infer(endpoint, request)
