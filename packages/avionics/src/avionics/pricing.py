"""Token prices and call costs in exact `Decimal` USD.

Where a price comes from, first match wins:

1. settings overrides, keyed "provider/model" or "model" (a dated id such as
   `claude-sonnet-4-5-20250929` also matches an override for `claude-sonnet-4-5`);
2. local backends (llama_server, ollama, in-process llama.cpp, mock) cost exactly 0;
3. the genai-prices snapshot, looked up under the provider's own name when genai-prices knows it
   (groq, together, deepseek...), then under its backend kind (openai -> openai, azure_openai ->
   azure then openai, anthropic -> anthropic). genai-prices matches dated ids itself;
4. otherwise the model is unknown: costs are `None` with ONE warning per (provider, model) per
   process. A price is never guessed.

Cost of one call (airframe's `input_tokens` includes cache reads and writes; reasoning tokens are
part of `output_tokens`):

    input_cost       = (input - cache_read - cache_write) * input rate
    cache_read_cost  = cache_read  * cache read rate  (the input rate when the model has none)
    cache_write_cost = cache_write * cache write rate (the input rate when the model has none)
    output_cost      = output * output rate
    total_cost       = the sum, or None when any part is unknown

A count the backend did not report (`None`) makes its part, and so the total, `None`.
Long-context tiers apply to every token of a call whose input exceeds the threshold, as the
providers bill them. Only token prices are used: per-request or per-search fees some entries of
genai-prices carry are not part of a call's cost here.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Final, Literal

import structlog

from airframe import BackendKind, Usage

if TYPE_CHECKING:
    from genai_prices import types as genai_types

__all__ = [
    "DEFAULT_ESTIMATE_OUTPUT_TOKENS",
    "DEFAULT_LOCAL_KINDS",
    "CostCalculator",
    "CostMetrics",
    "ModelPrice",
    "PriceSource",
    "PriceTier",
    "calculate_cost",
    "estimate_tokens",
    "get_cost_calculator",
]

PriceSource = Literal["settings", "genai-prices", "local", "unknown"]

#: Backends that run on hardware you already pay for: every call costs exactly 0.
DEFAULT_LOCAL_KINDS: Final = frozenset(
    {BackendKind.LLAMA_SERVER.value, BackendKind.OLLAMA.value, "llamacpp", "in_process", "mock"}
)
#: Output tokens assumed by `estimate_cost` when the caller gives no `max_output_tokens`.
DEFAULT_ESTIMATE_OUTPUT_TOKENS: Final = 512
#: The usual rough ratio for English text and code.
CHARS_PER_TOKEN: Final = 4.0

# genai-prices provider ids to try for each airframe backend kind, in order.
_GENAI_PROVIDERS_BY_KIND: Final[Mapping[str, tuple[str, ...]]] = {
    BackendKind.OPENAI.value: ("openai",),
    BackendKind.AZURE_OPENAI.value: ("azure", "openai"),
    BackendKind.ANTHROPIC.value: ("anthropic",),
}
_MILLION: Final = Decimal(1_000_000)
_ZERO: Final = Decimal(0)
_DATE_SUFFIX: Final = re.compile(r"[-@](20\d{2}-?\d{2}-?\d{2})$")

_log = structlog.get_logger("avionics.pricing")


def non_negative_decimal(value: Decimal | int | float | str, name: str) -> Decimal:
    """An exact Decimal from a price or amount (floats via their repr), refusing NaN and < 0."""
    result = value if isinstance(value, Decimal) else Decimal(str(value))
    if not result.is_finite() or result < 0:
        raise ValueError(f"{name} must be a finite, non-negative number, got {value!r}")
    return result


def _decimal(value: Decimal | int | float | str, name: str) -> Decimal:
    return non_negative_decimal(value, f"{name} (USD per million tokens)")


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Flat rates that apply to a whole call once its input tokens exceed `above_input_tokens`."""

    above_input_tokens: int
    price: ModelPrice


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. A cache rate of `None` means cache tokens bill at the input rate."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    tiers: tuple[PriceTier, ...] = ()

    def __post_init__(self) -> None:
        # Accept ints, floats and strings at runtime too (settings files hold floats).
        for name in ("input_per_mtok", "output_per_mtok"):
            object.__setattr__(self, name, _decimal(getattr(self, name), name))
        for name in ("cache_read_per_mtok", "cache_write_per_mtok"):
            if (value := getattr(self, name)) is not None:
                object.__setattr__(self, name, _decimal(value, name))
        ordered = tuple(sorted(self.tiers, key=lambda tier: tier.above_input_tokens))
        object.__setattr__(self, "tiers", ordered)

    @classmethod
    def of(
        cls,
        input: Decimal | float | str,
        output: Decimal | float | str,
        cache_read: Decimal | float | str | None = None,
        cache_write: Decimal | float | str | None = None,
    ) -> ModelPrice:
        """Build from plain numbers, e.g. `ModelPrice.of(3, 15, cache_read=0.3)`."""
        return cls(
            _decimal(input, "input"),
            _decimal(output, "output"),
            None if cache_read is None else _decimal(cache_read, "cache_read"),
            None if cache_write is None else _decimal(cache_write, "cache_write"),
        )

    def for_input_tokens(self, input_tokens: int | None) -> ModelPrice:
        """The flat rates that apply to a call with this many input tokens (cache included)."""
        chosen = replace(self, tiers=()) if self.tiers else self
        if input_tokens is None:
            return chosen
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens:
                chosen = tier.price
        return chosen


_FREE: Final = ModelPrice(_ZERO, _ZERO, _ZERO, _ZERO)


@dataclass(frozen=True, slots=True)
class CostMetrics:
    """The cost of one call. `input_cost` is the uncached input only; cache parts are separate.

    `priced` is False when no price was found (then every cost is None). With a price but a count
    the backend did not report, that part and `total_cost` are None while `priced` stays True.
    """

    provider: str
    model: str
    input_cost: Decimal | None
    output_cost: Decimal | None
    cache_read_cost: Decimal | None
    cache_write_cost: Decimal | None
    total_cost: Decimal | None
    priced: bool
    source: PriceSource
    input_tokens: int | None = None
    output_tokens: int | None = None
    currency: Literal["USD"] = "USD"
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def cost_usd(self) -> float | None:
        """A float view of `total_cost`, for display and JSON."""
        return None if self.total_cost is None else float(self.total_cost)

    @property
    def prompt_tokens(self) -> int | None:
        return self.input_tokens

    @property
    def completion_tokens(self) -> int | None:
        return self.output_tokens

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    @property
    def tokens_per_dollar(self) -> float | None:
        """Efficiency; None when the cost is unknown or zero (local models)."""
        tokens = self.total_tokens
        if tokens is None or not self.total_cost:
            return None
        return tokens / float(self.total_cost)


# Warn once per (provider, model) per process, whichever calculator sees it first.
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_unpriced(provider: str, model: str) -> None:
    key = (provider, model)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    _log.warning(
        "model_price_unknown",
        provider=provider,
        model=model,
        hint=f"costs are recorded as unknown; add a pricing override for '{provider}/{model}'",
    )


def estimate_tokens(text: str) -> int:
    """Rough token count of `text` (~4 characters per token), for estimates before a call."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _strip_date(model: str) -> str | None:
    stripped = _DATE_SUFFIX.sub("", model)
    return stripped if stripped != model else None


def _convert(price: genai_types.ModelPrice) -> ModelPrice:
    from genai_prices import types as genai_types  # the price snapshot loads on first lookup

    # Missing input/output prices bill as 0, missing cache prices at the input rate: the same
    # reading genai-prices' own calc_price makes. Tiers of each key merge into whole-call tiers.
    def get(name: str) -> Decimal | genai_types.TieredPrices | None:
        value = getattr(price, name, None)
        return value if isinstance(value, Decimal | genai_types.TieredPrices) else None

    raw = (get("input_mtok"), get("output_mtok"), get("cache_read_mtok"), get("cache_write_mtok"))
    starts = sorted(
        {t.start for p in raw if isinstance(p, genai_types.TieredPrices) for t in p.tiers}
    )

    def rate(value: Decimal | genai_types.TieredPrices | None, above: int) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        chosen = value.base
        for tier in value.tiers:  # ascending; a tier applies when input > its start
            if tier.start <= above:
                chosen = tier.price
        return chosen

    def flat(above: int) -> ModelPrice:
        i, o, cr, cw = (rate(value, above) for value in raw)
        return ModelPrice(i or _ZERO, o or _ZERO, cr, cw)

    return replace(flat(-1), tiers=tuple(PriceTier(start, flat(start)) for start in starts))


# genai-prices returns the same ModelPrice object for a model until its price changes, so
# conversions are cached by identity (the object is kept alive so its id is never reused).
_converted: dict[int, tuple[genai_types.ModelPrice, ModelPrice]] = {}


def _from_genai(price: genai_types.ModelPrice) -> ModelPrice:
    if (hit := _converted.get(id(price))) is not None and hit[0] is price:
        return hit[1]
    converted = _convert(price)
    _converted[id(price)] = (price, converted)
    return converted


def _genai_model(provider_id: str, model: str) -> genai_types.ModelInfo | None:
    import genai_prices

    try:
        calculation = genai_prices.calc_price(genai_prices.Usage(), model, provider_id=provider_id)
    except (LookupError, ValueError):  # unknown here; pricing never breaks a call
        return None
    return calculation.model


@dataclass(frozen=True, slots=True)
class _Resolved:
    source: PriceSource
    fixed: ModelPrice | None = None
    genai: genai_types.ModelInfo | None = None

    def price(self) -> ModelPrice | None:
        if self.genai is not None:
            # Resolved per call: a few genai-prices entries change with the date or time of day.
            return _from_genai(self.genai.get_prices(datetime.now(UTC)))
        return self.fixed


def _unpriced(
    provider: str,
    model: str,
    source: PriceSource,
    input_tokens: int | None,
    output_tokens: int | None,
    *,
    priced: bool,
) -> CostMetrics:
    return CostMetrics(
        provider=provider,
        model=model,
        input_cost=None,
        output_cost=None,
        cache_read_cost=None,
        cache_write_cost=None,
        total_cost=None,
        priced=priced,
        source=source,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


class CostCalculator:
    """Prices calls. Lookups are cached per (provider, model, kind); safe to share across threads.

    `overrides` come from settings and win over genai-prices. `local_kinds` are backend kinds
    whose calls cost 0.
    """

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice] | None = None,
        local_kinds: Iterable[str] = DEFAULT_LOCAL_KINDS,
        *,
        use_genai_prices: bool = True,
    ) -> None:
        self._overrides = {key.strip().lower(): price for key, price in (overrides or {}).items()}
        self._local_kinds = frozenset(str(kind) for kind in local_kinds)
        self._use_genai_prices = use_genai_prices
        self._cache: dict[tuple[str, str, str | None], _Resolved] = {}

    def get_pricing(
        self, provider: str, model: str, *, provider_kind: str | None = None
    ) -> ModelPrice | None:
        """Per-million-token rates for this model, or None when it is unknown."""
        return self._resolve(provider, model, provider_kind).price()

    def price_source(
        self, provider: str, model: str, *, provider_kind: str | None = None
    ) -> PriceSource:
        """Where `get_pricing` finds this model's price."""
        return self._resolve(provider, model, provider_kind).source

    def calculate_cost(
        self,
        provider: str,
        model: str,
        usage: Usage | int | None,
        completion_tokens: int | None = None,
        *,
        provider_kind: str | None = None,
    ) -> CostMetrics:
        """The exact cost of one call from its reported usage.

        Also takes the older form `calculate_cost(provider, model, prompt_tokens,
        completion_tokens)`.
        """
        if isinstance(usage, int):
            usage = Usage(usage, completion_tokens)
        resolved = self._resolve(provider, model, provider_kind)
        price = resolved.price()
        input_tokens = usage.input_tokens if usage is not None else None
        output_tokens = usage.output_tokens if usage is not None else None
        if price is None:
            _warn_unpriced(provider, model)
            return _unpriced(provider, model, "unknown", input_tokens, output_tokens, priced=False)
        if usage is None:
            return _unpriced(provider, model, resolved.source, None, None, priced=True)

        rates = price.for_input_tokens(input_tokens)
        cache_read = max(usage.cache_read_tokens or 0, 0)
        cache_write = max(usage.cache_write_tokens or 0, 0)
        read_rate = rates.cache_read_per_mtok
        write_rate = rates.cache_write_per_mtok
        cache_read_cost = (
            cache_read * (rates.input_per_mtok if read_rate is None else read_rate) / _MILLION
        )
        cache_write_cost = (
            cache_write * (rates.input_per_mtok if write_rate is None else write_rate) / _MILLION
        )
        input_cost: Decimal | None = None
        if input_tokens is not None:
            uncached = max(input_tokens - cache_read - cache_write, 0)
            input_cost = uncached * rates.input_per_mtok / _MILLION
        output_cost: Decimal | None = None
        if output_tokens is not None:
            output_cost = output_tokens * rates.output_per_mtok / _MILLION
        total: Decimal | None = None
        if input_cost is not None and output_cost is not None:
            total = input_cost + cache_read_cost + cache_write_cost + output_cost
        return CostMetrics(
            provider=provider,
            model=model,
            input_cost=input_cost,
            output_cost=output_cost,
            cache_read_cost=cache_read_cost,
            cache_write_cost=cache_write_cost,
            total_cost=total,
            priced=True,
            source=resolved.source,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    def estimate_cost(
        self,
        provider: str,
        model: str,
        text_or_prompt_tokens: str | int,
        max_output_tokens: int | None = None,
        *,
        provider_kind: str | None = None,
    ) -> Decimal | None:
        """Worst-case cost before a call: every prompt token uncached, all output tokens used.

        Text is counted at ~4 characters per token; an int is taken as exact prompt tokens.
        Returns None for an unknown model (with the usual one warning).
        """
        if isinstance(text_or_prompt_tokens, str):
            prompt_tokens = estimate_tokens(text_or_prompt_tokens)
        else:
            prompt_tokens = max(int(text_or_prompt_tokens), 0)
        if max_output_tokens is None:
            max_output_tokens = DEFAULT_ESTIMATE_OUTPUT_TOKENS
        price = self.get_pricing(provider, model, provider_kind=provider_kind)
        if price is None:
            _warn_unpriced(provider, model)
            return None
        rates = price.for_input_tokens(prompt_tokens)
        return (
            prompt_tokens * rates.input_per_mtok + max(max_output_tokens, 0) * rates.output_per_mtok
        ) / _MILLION

    def _resolve(self, provider: str, model: str, provider_kind: str | None) -> _Resolved:
        key = (provider, model, provider_kind)
        if (hit := self._cache.get(key)) is not None:
            return hit
        resolved = self._lookup(provider, model, provider_kind)
        self._cache[key] = resolved
        return resolved

    def _lookup(self, provider: str, model: str, provider_kind: str | None) -> _Resolved:
        override = self._override(provider.lower(), model.lower())
        if override is not None:
            return _Resolved("settings", fixed=override)
        kind = str(provider_kind) if provider_kind is not None else provider
        if kind in self._local_kinds:
            return _Resolved("local", fixed=_FREE)
        if self._use_genai_prices:
            candidates = (provider, *_GENAI_PROVIDERS_BY_KIND.get(kind, ()))
            for provider_id in dict.fromkeys(candidates):
                if (found := _genai_model(provider_id, model)) is not None:
                    return _Resolved("genai-prices", genai=found)
        return _Resolved("unknown")

    def _override(self, provider: str, model: str) -> ModelPrice | None:
        undated = _strip_date(model)
        for candidate in (model, undated):
            if candidate is None:
                continue
            for key in (f"{provider}/{candidate}", candidate):
                if (price := self._overrides.get(key)) is not None:
                    return price
        return None


@cache
def get_cost_calculator() -> CostCalculator:
    """The process-wide calculator: genai-prices and local backends, no settings overrides."""
    return CostCalculator()


def calculate_cost(
    provider: str,
    model: str,
    usage: Usage | int | None,
    completion_tokens: int | None = None,
    *,
    provider_kind: str | None = None,
) -> CostMetrics:
    """`get_cost_calculator().calculate_cost(...)` (also with prompt and completion counts)."""
    return get_cost_calculator().calculate_cost(
        provider, model, usage, completion_tokens, provider_kind=provider_kind
    )
