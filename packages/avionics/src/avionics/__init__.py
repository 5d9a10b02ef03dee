"""avionics: orchestration of LLM calls for agent fleets.

    from avionics import LLMGateway
    gateway = LLMGateway()                      # settings from ./avionics.toml and AVIONICS_* env
    response = await gateway.complete("Plan the release", agent_name="planner")

Settings-driven routing per agent, fallback across providers, a cost ledger per attempt, local
rate limits and budgets, OpenTelemetry spans and metrics. Importing avionics does no network I/O.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import AvionicsError, BudgetExceededError, GatewayError, RateLimitedLocally
    from .factory import (
        LLMFactory,
        create_agent_provider,
        create_agent_provider_with_node_awareness,
        create_llm_provider,
    )
    from .gateway import LLMGateway
    from .ledger import Ledger, LedgerRow
    from .pricing import CostCalculator, CostMetrics, calculate_cost, get_cost_calculator
    from .providers import (
        AnthropicProvider,
        AzureAIFoundryProvider,
        LlamaCppProvider,
        LlamaServerProvider,
        LLMProvider,
        MockProvider,
        OllamaProvider,
        OpenAIProvider,
        TokenChunk,
    )
    from .responses import LLMResponse, StreamingChunk
    from .settings import AvionicsSettings, SettingsError, get_settings
    from .templates import TemplateError, render_template

__version__ = "0.1.0"

# Public name -> defining module. Modules load on first attribute access, so `import avionics`
# stays cheap and an application that only needs settings never imports the gateway.
_EXPORTS: dict[str, str] = {
    "AnthropicProvider": "providers",
    "AvionicsError": "errors",
    "AvionicsSettings": "settings",
    "AzureAIFoundryProvider": "providers",
    "BudgetExceededError": "errors",
    "CostCalculator": "pricing",
    "CostMetrics": "pricing",
    "GatewayError": "errors",
    "LLMFactory": "factory",
    "LLMGateway": "gateway",
    "LLMProvider": "providers",
    "LLMResponse": "responses",
    "Ledger": "ledger",
    "LedgerRow": "ledger",
    "LlamaCppProvider": "providers",
    "LlamaServerProvider": "providers",
    "MockProvider": "providers",
    "OllamaProvider": "providers",
    "OpenAIProvider": "providers",
    "RateLimitedLocally": "errors",
    "SettingsError": "settings",
    "StreamingChunk": "responses",
    "TemplateError": "templates",
    "TokenChunk": "providers",
    "calculate_cost": "pricing",
    "create_agent_provider": "factory",
    "create_agent_provider_with_node_awareness": "factory",
    "create_llm_provider": "factory",
    "get_cost_calculator": "pricing",
    "get_settings": "settings",
    "render_template": "templates",
}

__all__ = [
    "AnthropicProvider",
    "AvionicsError",
    "AvionicsSettings",
    "AzureAIFoundryProvider",
    "BudgetExceededError",
    "CostCalculator",
    "CostMetrics",
    "GatewayError",
    "LLMFactory",
    "LLMGateway",
    "LLMProvider",
    "LLMResponse",
    "Ledger",
    "LedgerRow",
    "LlamaCppProvider",
    "LlamaServerProvider",
    "MockProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "RateLimitedLocally",
    "SettingsError",
    "StreamingChunk",
    "TemplateError",
    "TokenChunk",
    "__version__",
    "calculate_cost",
    "create_agent_provider",
    "create_agent_provider_with_node_awareness",
    "create_llm_provider",
    "get_cost_calculator",
    "get_settings",
    "render_template",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'avionics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"avionics.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
