"""Local rate limits and USD budgets, behind small storage protocols (see `base`)."""

from .base import BudgetClaim, BudgetRefusal, BudgetState, BudgetStore, WindowStore
from .budget import BudgetPeriod, BudgetTracker, BudgetUsage, Reservation
from .limiter import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_WAIT,
    DEFAULT_WINDOW_SECONDS,
    LimiterRegistry,
    Permit,
    ProviderLimiter,
)
from .memory import MemoryBudgetStore

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_WINDOW_SECONDS",
    "BudgetClaim",
    "BudgetPeriod",
    "BudgetRefusal",
    "BudgetState",
    "BudgetStore",
    "BudgetTracker",
    "BudgetUsage",
    "LimiterRegistry",
    "LimitsWindowStore",
    "MemoryBudgetStore",
    "Permit",
    "ProviderLimiter",
    "Reservation",
    "WindowStore",
]


def __getattr__(name: str) -> object:
    # `LimitsWindowStore` imports the `limits` library; load it only when asked for.
    if name == "LimitsWindowStore":
        from .windows import LimitsWindowStore

        return LimitsWindowStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
