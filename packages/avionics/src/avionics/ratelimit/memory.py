"""The default budget store: budgets in a dict, atomic under one lock (tasks and threads)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from decimal import Decimal

from .base import BudgetClaim, BudgetRefusal, BudgetState

__all__ = ["MemoryBudgetStore"]


class MemoryBudgetStore:
    """A `BudgetStore` for one process. Atomic across tasks and threads (one lock, no awaits)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, Decimal] = {}
        self._reserved: dict[str, Decimal] = {}

    async def reserve(self, amount: Decimal, claims: Sequence[BudgetClaim]) -> BudgetRefusal | None:
        with self._lock:
            for claim in claims:
                if claim.limit is None:
                    continue
                state = self._state(claim.key)
                if state.spent + state.reserved + amount > claim.limit:
                    return BudgetRefusal(claim, state)
            for claim in claims:
                self._reserved[claim.key] = self._reserved.get(claim.key, Decimal(0)) + amount
        return None

    async def settle(self, keys: Sequence[str], reserved: Decimal, actual: Decimal) -> None:
        with self._lock:
            for key in keys:
                self._reserved[key] = self._reserved.get(key, Decimal(0)) - reserved
                self._spent[key] = self._spent.get(key, Decimal(0)) + actual

    async def state(self, key: str) -> BudgetState:
        with self._lock:
            return self._state(key)

    def _state(self, key: str) -> BudgetState:
        return BudgetState(
            spent=self._spent.get(key, Decimal(0)), reserved=self._reserved.get(key, Decimal(0))
        )
