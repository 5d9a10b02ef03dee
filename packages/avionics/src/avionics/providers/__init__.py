"""Providers: a configured backend the gateway calls. All protocol work is airframe's."""

from .base import LLMProvider, TokenChunk
from .llamacpp import LlamaCppProvider
from .mock import MockProvider
from .remote import (
    AirframeProvider,
    AnthropicProvider,
    AzureAIFoundryProvider,
    LlamaServerProvider,
    OllamaProvider,
    OpenAIProvider,
)

__all__ = [
    "AirframeProvider",
    "AnthropicProvider",
    "AzureAIFoundryProvider",
    "LLMProvider",
    "LlamaCppProvider",
    "LlamaServerProvider",
    "MockProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "TokenChunk",
]
