"""What every backend shares: the `SharedState` bundle, the unavailability error, URL redaction.

Nothing here imports `redis`: the memory backend (the default) never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from avionics.errors import AvionicsError

if TYPE_CHECKING:
    from avionics.nodes import BreakerStore
    from avionics.ratelimit.base import BudgetStore, WindowStore

    from ._connection import RedisConnection
    from .gate import SharedGate

__all__ = ["FailMode", "SharedState", "SharedStateUnavailable", "redact_url"]

FailMode = Literal["closed", "open"]

_SECRET_QUERY_KEYS = frozenset({"password", "username"})


def redact_url(url: str) -> str:
    """`url` without its credentials: `redis://:pw@host:6379/0` -> `redis://***@host:6379/0`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class SharedStateUnavailable(AvionicsError):
    """The shared state store (Redis) could not be reached, and `[state] fail_mode = "closed"`.

    `url` is the store's address without credentials; `reason` says what failed. Raised before
    the provider is called, so a refused call costs nothing.
    """

    def __init__(self, url: str, reason: str, *, retry_in: float | None = None) -> None:
        self.url = url
        self.reason = reason
        self.retry_in = retry_in
        again = f" (next attempt in {retry_in:.2f}s)" if retry_in else ""
        super().__init__(
            f"Shared state at {url} is unreachable: {reason}{again}. Calls are refused because "
            f'[state] fail_mode = "closed". Start Redis at that address, fix [state] redis_url, '
            f'or set fail_mode = "open" to fall back to per-process limits while it is down.'
        )


@dataclass(frozen=True, slots=True)
class SharedState:
    """The stores one gateway process uses, as built from `[state]` by `build_shared_state`.

    With `backend = "memory"` every field is None and callers keep their per-process defaults
    (nothing is imported, nothing is allocated). With `backend = "redis"`:

    - `gate` admits a gateway call (rpm, tpm, concurrency and budgets) in one round trip and
      settles it in one more;
    - `windows` and `budgets` implement the `WindowStore` and `BudgetStore` protocols on the same
      keys, for code that drives `ProviderLimiter` or `BudgetTracker` directly;
    - `breakers` shares circuit breakers between the processes' `NodePool`s.
    """

    backend: Literal["memory", "redis"] = "memory"
    connection: RedisConnection | None = None
    gate: SharedGate | None = None
    windows: WindowStore | None = None
    budgets: BudgetStore | None = None
    breakers: BreakerStore | None = None

    @property
    def shared(self) -> bool:
        return self.backend != "memory"

    async def aclose(self) -> None:
        """Stop background breaker syncing and close this event loop's Redis connections."""
        if self.connection is None:
            return  # the memory backend holds nothing
        from .breakers import RedisBreakerStore

        if isinstance(self.breakers, RedisBreakerStore):
            await self.breakers.aclose()
        await self.connection.aclose()
