"""USD amounts on the wire: integer picodollars (10^-12 USD) as decimal strings.

Redis adds integers exactly; `Decimal` converts both ways without loss. Amounts finer than a
picodollar (prices are at most 6 decimals per million tokens, i.e. 10^-12 per token) round
towards the safe side: costs and estimates up, limits down.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final

from avionics.ratelimit.budget import BudgetPeriod

__all__ = ["from_pico", "period_ttl_ms", "to_pico", "to_pico_limit"]

_PICO: Final = Decimal("1e12")
_ONE: Final = Decimal(1)


def to_pico(usd: Decimal) -> str:
    """A cost or estimate, rounded up to the picodollar."""
    return str(int((usd * _PICO).to_integral_value(rounding=ROUND_CEILING)))


def to_pico_limit(usd: Decimal | None) -> str:
    """A budget limit, rounded down; '' for no limit."""
    if usd is None:
        return ""
    return str(int((usd * _PICO).to_integral_value(rounding=ROUND_FLOOR)))


def from_pico(value: str | int | None) -> Decimal:
    """Picodollars back to USD, without trailing zeros or an exponent ("4.9", "5")."""
    amount = Decimal(int(value or 0)).scaleb(-12)
    if amount == amount.to_integral_value():
        return amount.quantize(_ONE)
    return amount.normalize()


def period_ttl_ms(period: BudgetPeriod, now: datetime) -> int:
    """How long a budget key of `period` (made at `now`) is kept: to the end of the period and
    one more period after it, so last period's spending can still be read; 0 (forever) for
    "total"."""
    now = now.astimezone(UTC)
    if period is BudgetPeriod.DAY:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=2)
    elif period is BudgetPeriod.MONTH:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start
        for _ in range(2):  # two month boundaries ahead
            end = (end + timedelta(days=32)).replace(day=1)
    else:
        return 0
    return max(int((end - now) / timedelta(milliseconds=1)), 1)


def utcnow() -> datetime:
    return datetime.now(UTC)
