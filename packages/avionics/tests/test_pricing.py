"""CostCalculator: where prices come from, exact Decimal costs, cache accounting, estimates."""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from structlog.testing import capture_logs

from airframe import BackendKind, Usage
from avionics.pricing import (
    DEFAULT_ESTIMATE_OUTPUT_TOKENS,
    CostCalculator,
    CostMetrics,
    ModelPrice,
    PriceTier,
    calculate_cost,
    estimate_tokens,
    get_cost_calculator,
)

D = Decimal


def unique_model() -> str:
    # The unknown-model warning is once per process: every test gets names nobody used.
    return f"no-such-model-{uuid.uuid4().hex[:8]}"


def warnings_for(
    logs: list[MutableMapping[str, Any]], model: str
) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "model_price_unknown" and e["model"] == model]


# -- where prices come from ------------------------------------------------------------------


def test_genai_prices_resolve_a_dated_anthropic_id_to_its_model() -> None:
    calc = CostCalculator()
    dated = calc.get_pricing("anthropic", "claude-sonnet-4-5-20250929")
    plain = calc.get_pricing("anthropic", "claude-sonnet-4-5")
    assert dated is not None
    assert dated == plain
    assert calc.price_source("anthropic", "claude-sonnet-4-5-20250929") == "genai-prices"
    assert dated.input_per_mtok == D("3")
    assert dated.output_per_mtok == D("15")
    assert dated.cache_read_per_mtok == D("0.3")
    assert dated.cache_write_per_mtok == D("3.75")


@pytest.mark.parametrize(
    ("provider", "kind", "model"),
    [
        ("anthropic", None, "claude-sonnet-4-5-20250929"),
        ("anthropic", None, "claude-3-5-haiku-latest"),
        ("openai", None, "gpt-4o"),
        ("openai", None, "gpt-4o-2024-08-06"),
        ("openai", None, "o3-mini"),
        ("prod-openai", BackendKind.OPENAI, "gpt-5"),
        ("my-azure", BackendKind.AZURE_OPENAI, "gpt-4o"),
        ("groq", BackendKind.OPENAI, "llama-3.1-8b-instant"),
    ],
)
@pytest.mark.parametrize(
    "usage",
    [
        Usage(input_tokens=1_234, output_tokens=567),
        Usage(input_tokens=50_000, output_tokens=2_000, cache_read_tokens=30_000),
        Usage(
            input_tokens=9_000, output_tokens=10, cache_read_tokens=4_000, cache_write_tokens=3_000
        ),
        # Over Anthropic's 200k long-context threshold: every token bills at the tier rate.
        Usage(input_tokens=250_000, output_tokens=1_000, cache_read_tokens=20_000),
    ],
)
def test_costs_equal_genai_prices_own_calculation(
    provider: str, kind: str | None, model: str, usage: Usage
) -> None:
    calc = CostCalculator()
    metrics = calc.calculate_cost(provider, model, usage, provider_kind=kind)
    genai_provider = {"prod-openai": "openai", "my-azure": "azure"}.get(provider, provider)
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
        ),
        model,
        provider_id=genai_provider,
    )
    assert metrics.priced
    assert metrics.source == "genai-prices"
    assert metrics.total_cost == expected.total_price
    assert metrics.output_cost == expected.output_price
    assert metrics.input_cost is not None
    assert metrics.cache_read_cost is not None
    assert metrics.cache_write_cost is not None
    assert (
        metrics.input_cost + metrics.cache_read_cost + metrics.cache_write_cost
        == expected.input_price
    )


def test_an_openai_compatible_provider_named_like_a_genai_provider_gets_its_prices() -> None:
    calc = CostCalculator()
    groq = calc.get_pricing("groq", "llama-3.1-8b-instant", provider_kind="openai")
    assert groq is not None
    assert calc.price_source("groq", "llama-3.1-8b-instant", provider_kind="openai") == (
        "genai-prices"
    )


def test_azure_openai_kind_uses_azure_prices() -> None:
    calc = CostCalculator()
    price = calc.get_pricing("work-azure", "gpt-4o", provider_kind=BackendKind.AZURE_OPENAI)
    assert price is not None
    assert price.input_per_mtok == D("2.5")


def test_a_self_hosted_model_behind_an_openai_endpoint_is_not_guessed() -> None:
    calc = CostCalculator()
    model = unique_model()
    assert calc.get_pricing("vllm", model, provider_kind="openai") is None
    metrics = calc.calculate_cost("vllm", model, Usage(10, 10), provider_kind="openai")
    assert metrics.total_cost is None
    assert metrics.priced is False
    assert metrics.source == "unknown"


@pytest.mark.parametrize(
    ("provider", "kind"),
    [
        ("local", BackendKind.LLAMA_SERVER),
        ("box", BackendKind.OLLAMA),
        ("embedded", "llamacpp"),
        ("ollama", None),  # no kind given: a provider named after a local kind is local
        ("llama_server", None),
    ],
)
def test_local_backends_cost_exactly_zero(provider: str, kind: str | None) -> None:
    usage = Usage(input_tokens=100_000, output_tokens=5_000, cache_read_tokens=1_000)
    metrics = CostCalculator().calculate_cost(provider, "qwen2.5-7b", usage, provider_kind=kind)
    assert metrics.total_cost == D(0)
    assert metrics.input_cost == D(0)
    assert metrics.output_cost == D(0)
    assert metrics.priced is True
    assert metrics.source == "local"
    assert metrics.tokens_per_dollar is None


def test_local_kinds_are_configurable() -> None:
    calc = CostCalculator(local_kinds={"llama_server"})
    assert calc.price_source("box", "qwen", provider_kind="ollama") == "unknown"
    assert calc.price_source("srv", "qwen", provider_kind="llama_server") == "local"


# -- settings overrides ----------------------------------------------------------------------


def test_overrides_win_over_genai_prices_and_provider_model_wins_over_model() -> None:
    calc = CostCalculator(
        overrides={
            "gpt-4o": ModelPrice.of(1, 2),
            "openai/gpt-4o": ModelPrice.of(5, 6),
        }
    )
    assert calc.get_pricing("openai", "gpt-4o") == ModelPrice.of(5, 6)
    assert calc.price_source("openai", "gpt-4o") == "settings"
    # Another provider serving the same model only matches the bare model key.
    assert calc.get_pricing("proxy", "gpt-4o") == ModelPrice.of(1, 2)


def test_an_override_matches_dated_ids_and_ignores_case() -> None:
    calc = CostCalculator(overrides={"Anthropic/Claude-Sonnet-4-5": ModelPrice.of(1, 1)})
    assert calc.get_pricing("anthropic", "claude-sonnet-4-5-20250929") == ModelPrice.of(1, 1)
    assert calc.get_pricing("anthropic", "claude-sonnet-4-5@2025-09-29") == ModelPrice.of(1, 1)


def test_an_override_can_price_a_local_model() -> None:
    calc = CostCalculator(overrides={"local/qwen": ModelPrice.of("0.01", "0.02")})
    metrics = calc.calculate_cost(
        "local", "qwen", Usage(1_000_000, 1_000_000), provider_kind="llama_server"
    )
    assert metrics.total_cost == D("0.03")
    assert metrics.source == "settings"


def test_model_price_validates_and_coerces() -> None:
    assert ModelPrice.of(0.1, "0.2").input_per_mtok == D("0.1")  # float through str: exact
    with pytest.raises(ValueError, match="non-negative"):
        ModelPrice.of(-1, 1)
    with pytest.raises(ValueError, match="finite"):
        ModelPrice.of("NaN", 1)


# -- the arithmetic --------------------------------------------------------------------------

PRICE = ModelPrice(
    input_per_mtok=D("2"),
    output_per_mtok=D("10"),
    cache_read_per_mtok=D("0.5"),
    cache_write_per_mtok=D("2.5"),
)


def priced(usage: Usage | None, price: ModelPrice = PRICE) -> CostMetrics:
    return CostCalculator(overrides={"p/m": price}).calculate_cost("p", "m", usage)


def test_cache_reads_and_writes_bill_at_their_rates_and_are_not_counted_twice() -> None:
    usage = Usage(
        input_tokens=1_000, output_tokens=100, cache_read_tokens=600, cache_write_tokens=300
    )
    metrics = priced(usage)
    assert metrics.input_cost == 100 * D("2") / 1_000_000  # 1000 - 600 - 300 uncached
    assert metrics.cache_read_cost == 600 * D("0.5") / 1_000_000
    assert metrics.cache_write_cost == 300 * D("2.5") / 1_000_000
    assert metrics.output_cost == 100 * D("10") / 1_000_000
    assert metrics.total_cost == D("0.0002") + D("0.0003") + D("0.00075") + D("0.001")
    assert metrics.currency == "USD"


def test_reasoning_tokens_are_part_of_output_not_extra() -> None:
    plain = priced(Usage(input_tokens=10, output_tokens=500))
    thinking = priced(Usage(input_tokens=10, output_tokens=500, reasoning_tokens=400))
    assert thinking.total_cost == plain.total_cost


def test_a_model_without_cache_rates_bills_cache_tokens_at_the_input_rate() -> None:
    flat = ModelPrice.of(2, 10)
    metrics = priced(
        Usage(input_tokens=1_000, output_tokens=0, cache_read_tokens=400, cache_write_tokens=100),
        flat,
    )
    assert metrics.total_cost == 1_000 * D(2) / 1_000_000


def test_costs_are_exact_decimals() -> None:
    # 0.1 + 0.2 in floats is not 0.3; here every digit is kept.
    metrics = priced(Usage(input_tokens=1, output_tokens=1), ModelPrice.of("0.1", "0.2"))
    assert metrics.total_cost == D("0.0000003")
    assert isinstance(metrics.total_cost, Decimal)
    assert metrics.cost_usd == pytest.approx(3e-7)


def test_no_usage_means_unknown_cost_not_zero() -> None:
    metrics = priced(None)
    assert metrics.priced is True
    assert metrics.total_cost is None
    assert metrics.input_cost is None
    assert metrics.output_cost is None


def test_an_unreported_count_makes_its_part_and_the_total_unknown() -> None:
    no_output = priced(Usage(input_tokens=1_000, output_tokens=None, cache_read_tokens=200))
    assert no_output.output_cost is None
    assert no_output.input_cost == 800 * D(2) / 1_000_000
    assert no_output.cache_read_cost == 200 * D("0.5") / 1_000_000
    assert no_output.total_cost is None
    no_input = priced(Usage(input_tokens=None, output_tokens=10))
    assert no_input.input_cost is None
    assert no_input.output_cost == 10 * D(10) / 1_000_000
    assert no_input.total_cost is None
    assert no_input.total_tokens == 10


def test_tiers_apply_to_the_whole_call_above_the_threshold() -> None:
    tiered = ModelPrice(
        D(1), D(2), tiers=(PriceTier(above_input_tokens=1_000, price=ModelPrice.of(10, 20)),)
    )
    at = priced(Usage(input_tokens=1_000, output_tokens=1_000), tiered)
    above = priced(Usage(input_tokens=1_001, output_tokens=1_000), tiered)
    assert at.total_cost == (1_000 * D(1) + 1_000 * D(2)) / 1_000_000
    assert above.total_cost == (1_001 * D(10) + 1_000 * D(20)) / 1_000_000


def test_cost_metrics_keeps_the_old_convenience_views() -> None:
    metrics = priced(Usage(input_tokens=1_000_000, output_tokens=100_000))
    assert metrics.prompt_tokens == 1_000_000
    assert metrics.completion_tokens == 100_000
    assert metrics.total_tokens == 1_100_000
    assert metrics.cost_usd == 3.0
    assert metrics.tokens_per_dollar == pytest.approx(1_100_000 / 3.0)


# -- unknown models --------------------------------------------------------------------------


def test_an_unknown_model_costs_none_and_warns_once_per_process() -> None:
    model = unique_model()
    with capture_logs() as logs:
        first = CostCalculator().calculate_cost("openai", model, Usage(100, 100))
        CostCalculator().calculate_cost("openai", model, Usage(5, 5))  # another calculator
        get_cost_calculator().estimate_cost("openai", model, "hello")
        CostCalculator().calculate_cost("anthropic", model, Usage(5, 5))  # another provider
    assert first.total_cost is None
    assert first.priced is False
    assert first.source == "unknown"
    assert first.input_tokens == 100
    events = warnings_for(logs, model)
    assert [e["provider"] for e in events] == ["openai", "anthropic"]
    assert events[0]["log_level"] == "warning"
    assert f"openai/{model}" in str(events[0]["hint"])


# -- estimates -------------------------------------------------------------------------------


def test_estimate_from_text_uses_four_chars_per_token_and_the_output_cap() -> None:
    calc = CostCalculator(overrides={"m": ModelPrice.of(2, 10)})
    estimate = calc.estimate_cost("p", "m", "x" * 4_000, max_output_tokens=100)
    assert estimate == (1_000 * D(2) + 100 * D(10)) / 1_000_000
    assert estimate_tokens("abcde") == 2


def test_estimate_from_exact_prompt_tokens_and_the_default_output() -> None:
    calc = CostCalculator(overrides={"m": ModelPrice.of(2, 10)})
    estimate = calc.estimate_cost("p", "m", 1_234)
    assert estimate == (1_234 * D(2) + DEFAULT_ESTIMATE_OUTPUT_TOKENS * D(10)) / 1_000_000


def test_estimate_is_worst_case_uncached_at_the_tier_of_the_prompt() -> None:
    tiered = ModelPrice(D(1), D(2), D("0.1"), tiers=(PriceTier(100, ModelPrice.of(10, 20)),))
    calc = CostCalculator(overrides={"m": tiered})
    assert calc.estimate_cost("p", "m", 200, max_output_tokens=0) == 200 * D(10) / 1_000_000


def test_estimates_for_local_and_unknown_models() -> None:
    calc = CostCalculator()
    assert calc.estimate_cost("local", "qwen", "hi", provider_kind="llama_server") == D(0)
    assert calc.estimate_cost("openai", unique_model(), "hi") is None
    sonnet = calc.estimate_cost("anthropic", "claude-sonnet-4-5", 1_000, max_output_tokens=1_000)
    assert sonnet == (1_000 * D(3) + 1_000 * D(15)) / 1_000_000


# -- module functions ------------------------------------------------------------------------


def test_module_functions_use_one_process_wide_calculator() -> None:
    assert get_cost_calculator() is get_cost_calculator()
    metrics = calculate_cost("openai", "gpt-4o", Usage(input_tokens=1_000, output_tokens=1_000))
    assert metrics.total_cost == (1_000 * D("2.5") + 1_000 * D(10)) / 1_000_000
    assert metrics.source == "genai-prices"


def test_lookups_are_cached_per_provider_and_model() -> None:
    calc = CostCalculator()
    first = calc.get_pricing("anthropic", "claude-sonnet-4-5")
    assert calc.get_pricing("anthropic", "claude-sonnet-4-5") is first


def test_the_seed_form_with_prompt_and_completion_counts_prices_the_same() -> None:
    from airframe import Usage
    from avionics import calculate_cost

    calc = CostCalculator({"gpt-x": ModelPrice.of(2, 8)})
    by_counts = calc.calculate_cost("openai", "gpt-x", 1_000, 500)
    by_usage = calc.calculate_cost("openai", "gpt-x", Usage(1_000, 500))
    assert by_counts.total_cost == by_usage.total_cost == Decimal("0.006")
    assert calculate_cost("local", "anything", 10, 5, provider_kind="llama_server").total_cost == 0
