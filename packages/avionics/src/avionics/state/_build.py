"""`build_shared_state(settings)`: the stores `[state]` asks for.

`backend = "memory"` (the default) returns `MEMORY`, an empty `SharedState`: callers keep their
per-process stores and nothing else is imported or allocated. `backend = "redis"` builds the gate
and the three stores on one `RedisConnection`; the gateways and factories alive in a process
share one connection per (URL, fail mode), so one client (one socket pool) per event loop.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Final

from ._base import SharedState

if TYPE_CHECKING:
    from avionics.settings import AvionicsSettings

    from ._connection import RedisConnection

__all__ = ["MEMORY", "build_shared_state"]

#: The memory backend: nothing shared, every field None.
MEMORY: Final = SharedState()

# Alive connections by (URL, fail mode): shared while some gateway or factory holds one.
_connections: weakref.WeakValueDictionary[tuple[str, str], RedisConnection] = (
    weakref.WeakValueDictionary()
)
_lock = threading.Lock()


def build_shared_state(settings: AvionicsSettings) -> SharedState:
    """The shared state of `settings.state` (`MEMORY` for the memory backend)."""
    state = settings.state
    if state.backend == "memory":
        return MEMORY
    if state.redis_url is None:  # pragma: no cover - rejected by StateSettings already
        raise ValueError("[state] backend = 'redis' needs redis_url")
    from .breakers import RedisBreakerStore
    from .budgets import RedisBudgetStore
    from .gate import SharedGate
    from .windows import RedisWindowStore

    connection = _connection(state.redis_url.get_secret_value(), state.fail_mode)
    gateway = settings.gateway
    return SharedState(
        backend="redis",
        connection=connection,
        gate=SharedGate(
            connection, key_prefix=state.key_prefix, max_wait=gateway.rate_limit_max_wait
        ),
        windows=RedisWindowStore(connection),
        budgets=RedisBudgetStore(connection),
        breakers=RedisBreakerStore(
            connection,
            key_prefix=state.key_prefix,
            probe_timeout=max(gateway.node_cooldown, 30.0),
        ),
    )


def _connection(url: str, fail_mode: str) -> RedisConnection:
    from ._connection import RedisConnection

    with _lock:
        found = _connections.get((url, fail_mode))
        if found is None:
            found = _connections[(url, fail_mode)] = RedisConnection(
                url,
                fail_mode="open" if fail_mode == "open" else "closed",
            )
        return found
