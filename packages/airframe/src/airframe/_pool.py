"""Shared connection pools: one `httpx.AsyncClient` per (base_url, event loop).

Clients hold no credentials (they go on each request), so one pool is safe for many tenants.
Loop-bound objects are created lazily on the loop that uses them; a pool whose loop has closed is
dropped the next time its key is looked up.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import Any

import httpx

__all__ = ["aclose_all", "get_client", "open_connection_count"]

_LIMITS = httpx.Limits(max_connections=2048, max_keepalive_connections=256, keepalive_expiry=30.0)


@functools.cache
def _linear_pool_class() -> type[Any] | None:
    """`_LinearPool` (defined on first use: httpx imports httpcore only when a transport is made,
    and so does this), or None when the installed httpcore is not the 1.0 series it mirrors."""
    import httpcore

    if not httpcore.__version__.startswith("1.0."):
        return None

    class _LinearPool(httpcore.AsyncConnectionPool):
        """httpcore's pool with its bookkeeping pass made linear in the number of connections.

        httpcore 1.0 runs `_assign_requests_to_connections` twice per request (when it is queued
        and when its response closes). Its keep-alive check evaluates
        `len([c.is_idle() for c in self._connections])` once per idle connection, which is
        O(n^2) in pooled connections: about 4,000 `is_idle()` calls per pass with 64
        connections, and a quarter of a million with 500, enough to stall a process streaming
        to hundreds of clients (encode/httpcore#1035, pydantic/httpx2#974). That expression is
        just `len(self._connections)`. This pass makes the same decisions in the same order: the
        same connections are closed, reused or created for the same requests; only the repeated
        scans are gone (the first available or idle connection is found with `next()` instead
        of building the full list and taking element 0; every predicate involved is a
        side-effect-free state query).
        """

        def _assign_requests_to_connections(self) -> list[Any]:
            closing: list[Any] = []
            connections = self._connections
            max_keepalive = self._max_keepalive_connections
            for connection in list(connections):
                if connection.is_closed():
                    connections.remove(connection)
                elif connection.has_expired() or (
                    connection.is_idle() and len(connections) > max_keepalive
                ):
                    connections.remove(connection)
                    closing.append(connection)

            for pool_request in [request for request in self._requests if request.is_queued()]:
                origin = pool_request.request.url.origin
                available = next(
                    (c for c in connections if c.can_handle_request(origin) and c.is_available()),
                    None,
                )
                if available is not None:
                    pool_request.assign_to_connection(available)
                    continue
                if len(connections) < self._max_connections:
                    connection = self.create_connection(origin)
                    connections.append(connection)
                    pool_request.assign_to_connection(connection)
                    continue
                idle = next((c for c in connections if c.is_idle()), None)
                if idle is not None:
                    connections.remove(idle)
                    closing.append(idle)
                    connection = self.create_connection(origin)
                    connections.append(connection)
                    pool_request.assign_to_connection(connection)
            return closing

    return _LinearPool


def _linear_pool(transport: httpx.AsyncHTTPTransport) -> httpx.AsyncHTTPTransport:
    """Give `transport` the linear bookkeeping pass when its pool is httpcore 1.0's own class
    (not a proxy, not a subclass): the subclass has the same layout and no state of its own."""
    import httpcore

    cls = _linear_pool_class()
    pool = getattr(transport, "_pool", None)
    if (
        cls is not None
        and type(pool) is httpcore.AsyncConnectionPool
        and hasattr(pool, "_connections")
        and hasattr(pool, "_requests")
    ):
        pool.__class__ = cls
    return transport


_clients: dict[
    tuple[str, int], tuple[weakref.ref[asyncio.AbstractEventLoop], httpx.AsyncClient]
] = {}


def get_client(base_url: str) -> httpx.AsyncClient:
    """The pooled client for `base_url` on the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    key = (base_url, id(loop))
    entry = _clients.get(key)
    if entry is not None:
        owner, client = entry
        if owner() is loop and not client.is_closed:
            return client
    client = httpx.AsyncClient(
        limits=_LIMITS,
        follow_redirects=False,
        transport=_linear_pool(httpx.AsyncHTTPTransport(limits=_LIMITS, retries=0)),
    )
    _clients[key] = (weakref.ref(loop), client)
    return client


async def aclose_all() -> None:
    """Close every pooled client of the running loop (and forget pools of closed loops)."""
    loop = asyncio.get_running_loop()
    for key, (owner, client) in list(_clients.items()):
        target = owner()
        if target is loop:
            del _clients[key]
            await client.aclose()
        elif target is None or target.is_closed():
            del _clients[key]


def open_connection_count(base_url: str | None = None) -> int:
    """Connections currently held by the running loop's pools (for tests and diagnostics)."""
    loop = asyncio.get_running_loop()
    total = 0
    for (url, _), (owner, client) in _clients.items():
        if owner() is not loop or (base_url is not None and url != base_url):
            continue
        pool = getattr(client._transport, "_pool", None)  # httpcore's pool; no public accessor
        total += len(getattr(pool, "connections", ()))
    return total
