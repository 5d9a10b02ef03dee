"""The two storage seams behind limits and budgets.

Limiters and budget trackers keep no counters themselves: they ask a store. The in-memory stores
in `memory.py` serve one process; a shared store (Redis) implements the same two protocols so
several processes share limits and budgets. Every method is async so a store may do network I/O;
each one must be atomic with respect to other callers of the same key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

__all__ = ["BudgetClaim", "BudgetRefusal", "BudgetState", "BudgetStore", "WindowStore"]


@runtime_checkable
class WindowStore(Protocol):
    """Units (requests, tokens) taken per key within a sliding window of `window` seconds."""

    async def acquire(self, key: str, amount: int, *, limit: int, window: int) -> float:
        """Take `amount` units if they fit under `limit` and return 0.0.

        Otherwise take nothing and return the seconds until the window may have room (> 0), read
        from the window's reset time. Callers never ask for more than `limit` at once.
        """
        ...

    async def settle(
        self, key: str, delta: int, *, limit: int, window: int, acquired_at: float
    ) -> None:
        """Correct an earlier `acquire` (made at epoch time `acquired_at`) by `delta` units.

        Negative: give units back (a no-op once they have left the window). Positive: take more
        units whether or not they fit; they were already used.
        """
        ...


@dataclass(frozen=True, slots=True)
class BudgetClaim:
    """One budget a reservation must fit.

    `key` names the budget and its period window ("avionics:budget:planner:day:2025-06-01");
    `limit` None means track spending without limiting it.
    """

    key: str
    limit: Decimal | None


@dataclass(frozen=True, slots=True)
class BudgetState:
    """USD already spent (committed) and held by open reservations, for one key."""

    spent: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """Why `BudgetStore.reserve` refused: the first claim that would overflow, and its state."""

    claim: BudgetClaim
    state: BudgetState


@runtime_checkable
class BudgetStore(Protocol):
    """Spent and reserved USD per budget key. `Decimal` in, `Decimal` out: exact."""

    async def reserve(self, amount: Decimal, claims: Sequence[BudgetClaim]) -> BudgetRefusal | None:
        """Atomically over all claims: if `spent + reserved + amount <= limit` holds for every
        claim with a limit, add `amount` to each key's reserved and return None; otherwise change
        nothing and return the first claim that would overflow."""
        ...

    async def settle(self, keys: Sequence[str], reserved: Decimal, actual: Decimal) -> None:
        """Close a reservation: for each key, `reserved -= reserved` and `spent += actual`."""
        ...

    async def state(self, key: str) -> BudgetState:
        """Current spent and reserved USD for `key` (zeros for a key never used)."""
        ...
