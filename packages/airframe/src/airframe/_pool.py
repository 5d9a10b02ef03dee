"""Shared connection pools: one `httpx.AsyncClient` per (base_url, event loop).

Clients hold no credentials (they go on each request), so one pool is safe for many tenants.
Loop-bound objects are created lazily on the loop that uses them; a pool whose loop has closed is
dropped the next time its key is looked up.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx

__all__ = ["aclose_all", "get_client", "open_connection_count"]

_LIMITS = httpx.Limits(max_connections=2048, max_keepalive_connections=256, keepalive_expiry=30.0)

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
        transport=httpx.AsyncHTTPTransport(limits=_LIMITS, retries=0),
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
