"""Shared state across gateway processes: rate limits, budgets and circuit breakers on Redis.

    [state]
    backend = "redis"                      # default "memory": one process, nothing shared
    redis_url = "redis://10.0.0.9:6379/0"
    fail_mode = "closed"                   # or "open": per-process limits while Redis is down

`build_shared_state(settings)` turns `[state]` into a `SharedState`; `LLMGateway` does it for
you. Modules:

- `gate`      `SharedGate`: one Lua script admits a call (budgets, concurrency, rpm, tpm), one
              settles it (real tokens, lease back, real cost). At most one round trip each.
- `windows`   `RedisWindowStore`, the `WindowStore` protocol (sliding window log).
- `budgets`   `RedisBudgetStore`, the `BudgetStore` protocol (holds that expire).
- `breakers`  `RedisBreakerStore`, the sync `BreakerStore` protocol (local cache, background sync).
- `_lua`      the scripts and the key layout; `_connection` the client per event loop, timeouts,
              outages and `fail_mode`.

Importing this package does not import `redis`; only building a Redis backend does (the `redis`
extra: `pip install 'jeeves-avionics[redis]'`). See docs/operations.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._base import FailMode, SharedState, SharedStateUnavailable, redact_url
from ._build import MEMORY, build_shared_state

if TYPE_CHECKING:
    from ._connection import RedisConnection
    from .breakers import RedisBreakerStore
    from .budgets import RedisBudgetStore
    from .gate import SharedGate, SharedPermit, SharedReservation
    from .windows import RedisWindowStore

__all__ = [
    "MEMORY",
    "FailMode",
    "RedisBreakerStore",
    "RedisBudgetStore",
    "RedisConnection",
    "RedisWindowStore",
    "SharedGate",
    "SharedPermit",
    "SharedReservation",
    "SharedState",
    "SharedStateUnavailable",
    "build_shared_state",
    "redact_url",
]

# Names whose modules import `redis`: loaded on first access.
_LAZY: dict[str, str] = {
    "RedisBreakerStore": "breakers",
    "RedisBudgetStore": "budgets",
    "RedisConnection": "_connection",
    "RedisWindowStore": "windows",
    "SharedGate": "gate",
    "SharedPermit": "gate",
    "SharedReservation": "gate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
