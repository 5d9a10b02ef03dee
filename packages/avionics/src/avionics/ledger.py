"""The cost ledger: one row per attempt, running totals, and subscribers.

Totals are aggregated as rows arrive and kept for the life of the ledger, so they always equal
the sum of every row ever recorded, while only the last `max_rows` rows are kept in memory.
Counts the backend did not report (`None`) add nothing to token totals; a row whose cost is
`None` adds nothing to `cost_usd` and counts in `unpriced_calls` (skipped routes excepted: they
made no call).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Literal

import structlog

__all__ = [
    "DEFAULT_MAX_ROWS",
    "Ledger",
    "LedgerCallback",
    "LedgerRow",
    "LedgerTotals",
    "Outcome",
    "OutcomeName",
]

DEFAULT_MAX_ROWS: Final = 10_000

_log = structlog.get_logger("avionics.ledger")


class Outcome(StrEnum):
    """How an attempt ended."""

    OK = "ok"
    ERROR = "error"
    INTERRUPTED = "interrupted"  # a stream broke after output began; partial usage is billed
    SKIPPED = "skipped"  # the route was not tried (missing capability, budget, local limit)


OutcomeName = Literal["ok", "error", "interrupted", "skipped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRow:
    """One attempt of one gateway call. `cost_usd` is exact; None means it could not be priced."""

    request_id: str
    agent: str
    provider: str
    model: str
    node: str | None = None
    attempt: int = 1
    outcome: Outcome | OutcomeName = Outcome.OK  # a string is parsed into an Outcome
    error_category: str | None = None
    streamed: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = None
    latency_ms: float = 0.0
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        if self.error_category is not None:
            object.__setattr__(self, "error_category", str(self.error_category))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: Decimal as str, timestamp as ISO 8601, enums as their values."""
        # Built field by field: `dataclasses.asdict` deep-copies and was a fifth of the gateway's
        # own CPU per call (every row becomes a dict for `metadata["attempts"]`).
        data = {name: getattr(self, name) for name in _ROW_FIELDS}
        data["outcome"] = str(self.outcome)
        data["cost_usd"] = None if self.cost_usd is None else str(self.cost_usd)
        data["timestamp"] = self.timestamp.isoformat()
        return data


_ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """Sums over rows. `calls` counts every row; `errors` counts error and interrupted rows."""

    calls: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: LedgerTotals) -> LedgerTotals:
        return LedgerTotals(
            calls=self.calls + other.calls,
            ok=self.ok + other.ok,
            errors=self.errors + other.errors,
            skipped=self.skipped + other.skipped,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
        )

    @classmethod
    def of_row(cls, row: LedgerRow) -> LedgerTotals:
        """The totals of a single row (summing these over rows gives the ledger's totals)."""
        return cls(
            calls=1,
            ok=int(row.outcome == Outcome.OK),
            errors=int(row.outcome in (Outcome.ERROR, Outcome.INTERRUPTED)),
            skipped=int(row.outcome == Outcome.SKIPPED),
            input_tokens=row.input_tokens or 0,
            output_tokens=row.output_tokens or 0,
            cache_read_tokens=row.cache_read_tokens,
            cache_write_tokens=row.cache_write_tokens,
            reasoning_tokens=row.reasoning_tokens,
            cost_usd=row.cost_usd if row.cost_usd is not None else Decimal(0),
            unpriced_calls=int(row.cost_usd is None and row.outcome != Outcome.SKIPPED),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost_usd"] = str(self.cost_usd)
        data["total_tokens"] = self.total_tokens
        return data


#: Called with each recorded row. May be a coroutine function (scheduled on the running loop).
LedgerCallback = Callable[[LedgerRow], object]


class Ledger:
    """Records attempts and keeps totals per agent and per provider.

    Safe to share between threads and tasks of one process: `record` holds a lock only for the
    in-memory update and calls subscribers after releasing it. A subscriber that raises is logged
    and never breaks the call that recorded the row.
    """

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if max_rows < 0:
            raise ValueError("max_rows must be >= 0")
        self._lock = threading.Lock()
        self._rows: deque[LedgerRow] = deque(maxlen=max_rows)
        self._by_pair: dict[tuple[str, str], LedgerTotals] = {}
        self._total = LedgerTotals()
        self._subscribers: list[LedgerCallback] = []
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def max_rows(self) -> int:
        return self._rows.maxlen or 0

    def record(self, row: LedgerRow) -> None:
        """Add a row to the totals and the recent rows, then notify subscribers."""
        delta = LedgerTotals.of_row(row)
        pair = (row.agent, row.provider)
        with self._lock:
            self._rows.append(row)
            self._total = self._total + delta
            self._by_pair[pair] = self._by_pair.get(pair, LedgerTotals()) + delta
            subscribers = tuple(self._subscribers)
        for callback in subscribers:
            self._notify(callback, row)

    def rows(self) -> list[LedgerRow]:
        """The most recent rows (at most `max_rows`), oldest first."""
        with self._lock:
            return list(self._rows)

    def totals(self, agent: str | None = None, provider: str | None = None) -> LedgerTotals:
        """Totals over every row ever recorded, optionally for one agent and/or provider."""
        with self._lock:
            if agent is None and provider is None:
                return self._total
            pairs = list(self._by_pair.items())
        result = LedgerTotals()
        for (row_agent, row_provider), totals in pairs:
            if (agent is None or row_agent == agent) and (
                provider is None or row_provider == provider
            ):
                result = result + totals
        return result

    def by_agent(self) -> dict[str, LedgerTotals]:
        return self._group(0)

    def by_provider(self) -> dict[str, LedgerTotals]:
        return self._group(1)

    def subscribe(self, callback: LedgerCallback) -> Callable[[], None]:
        """Call `callback(row)` for every row recorded from now on. Returns an unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def __iter__(self) -> Iterator[LedgerRow]:
        return iter(self.rows())

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def _group(self, index: int) -> dict[str, LedgerTotals]:
        with self._lock:
            pairs = list(self._by_pair.items())
        grouped: dict[str, LedgerTotals] = {}
        for pair, totals in pairs:
            name = pair[index]
            grouped[name] = grouped.get(name, LedgerTotals()) + totals
        return grouped

    def _notify(self, callback: LedgerCallback, row: LedgerRow) -> None:
        try:
            result = callback(row)
        except Exception:
            _log.warning("ledger_callback_failed", callback=repr(callback), exc_info=True)
            return
        if inspect.isawaitable(result):
            self._schedule(callback, result)

    def _schedule(self, callback: LedgerCallback, awaitable: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: an async callback cannot run here
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            _log.warning("ledger_callback_needs_event_loop", callback=repr(callback))
            return

        async def run() -> None:
            try:
                await awaitable
            except Exception:
                _log.warning("ledger_callback_failed", callback=repr(callback), exc_info=True)

        task = loop.create_task(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for async subscribers still running on this event loop."""
        loop = asyncio.get_running_loop()
        pending = [task for task in self._pending if task.get_loop() is loop]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
