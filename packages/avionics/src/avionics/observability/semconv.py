"""Every telemetry name avionics emits: span names, attribute keys, metric names, units, buckets.

Names follow the OpenTelemetry GenAI semantic conventions v1.41 (the last release inside
open-telemetry/semantic-conventions; the GenAI names moved to semantic-conventions-genai after it
and are still changing). `opentelemetry-semantic-conventions` marks its GenAI constants deprecated,
so the strings live here, once. Nothing else in avionics spells a telemetry name.

Span tree of one gateway call (see docs/observability.md):

    invoke_agent {agent}      INTERNAL   one per LLMGateway call
     ├── chat {model}         CLIENT     one per HTTP attempt (airframe retries included)
     └── chat {model}         CLIENT     a fallback route's attempt
"""

from __future__ import annotations

from typing import Final

from airframe import BackendKind

# -- span names and operation names ------------------------------------------------------------

OPERATION_CHAT: Final = "chat"
"""`gen_ai.operation.name` of one inference attempt (span `chat {model}`)."""
OPERATION_INVOKE_AGENT: Final = "invoke_agent"
"""`gen_ai.operation.name` of one gateway call for an agent (span `invoke_agent {agent}`)."""

TRACER_NAME: Final = "avionics"
METER_NAME: Final = "avionics"


def call_span_name(agent: str) -> str:
    return f"{OPERATION_INVOKE_AGENT} {agent}"


def attempt_span_name(model: str) -> str:
    return f"{OPERATION_CHAT} {model}" if model else OPERATION_CHAT


# -- GenAI attributes (v1.41) ------------------------------------------------------------------

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"

GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_OUTPUT_TYPE: Final = "gen_ai.output.type"

GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
"""Seconds from sending the request to the first streamed chunk (streams only)."""

GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
"""Every input token, cache reads and writes included (as airframe's `Usage.input_tokens`)."""
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"

GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

# Opt-in content (JSON strings in the shapes of gen-ai-input-messages.json and friends).
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# -- general attributes --------------------------------------------------------------------------

SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"
"""On a `chat` span that airframe sent again after a retryable failure: 1 for the first resend."""

# -- avionics attributes -------------------------------------------------------------------------

AVIONICS_AGENT: Final = "avionics.agent"
AVIONICS_PROVIDER: Final = "avionics.provider"
"""The provider's settings name (`[providers.NAME]`), e.g. `groq` for an OpenAI-compatible one."""
AVIONICS_NODE: Final = "avionics.node"
AVIONICS_PROFILE: Final = "avionics.profile"
AVIONICS_REQUEST_ID: Final = "avionics.request_id"
AVIONICS_ATTEMPT: Final = "avionics.attempt"
"""Gateway attempt number (from 1). On the call span: the attempt that ended the call."""
AVIONICS_FALLBACK: Final = "avionics.fallback"
"""On a `chat` span: this attempt's route is a fallback. On the call span: a fallback was used."""
AVIONICS_COST_USD: Final = "avionics.cost_usd"
"""Exact cost in USD (of the attempt on `chat` spans, of every attempt on the call span)."""
AVIONICS_CLOSED_EARLY: Final = "avionics.stream.closed_early"
"""The consumer closed the stream before its end (not an error)."""

# -- error.type values avionics adds to airframe's ErrorCategory values -------------------------

ERROR_CANCELLED: Final = "cancelled"
ERROR_RATE_LIMITED_LOCALLY: Final = "rate_limited_locally"
ERROR_BUDGET: Final = "budget"
ERROR_OTHER: Final = "_OTHER"

# -- metrics ---------------------------------------------------------------------------------------

METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
METRIC_COST: Final = "avionics.client.cost"

UNIT_TOKEN: Final = "{token}"
UNIT_SECONDS: Final = "s"
UNIT_USD: Final = "USD"

TOKEN_BUCKETS: Final[tuple[float, ...]] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""Spec advisory boundaries of `gen_ai.client.token.usage`."""
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""Spec advisory boundaries of `gen_ai.client.operation.duration` and `.time_to_first_chunk`."""

# -- gen_ai.provider.name per backend kind ---------------------------------------------------------

PROVIDER_NAMES: Final[dict[BackendKind, str]] = {
    BackendKind.OPENAI: "openai",
    BackendKind.AZURE_OPENAI: "azure.ai.openai",
    BackendKind.ANTHROPIC: "anthropic",
    BackendKind.LLAMA_SERVER: "llama.cpp",
    BackendKind.OLLAMA: "ollama",
}
"""Spec well-known values where one exists; llama.cpp and Ollama have none and use their names.
OpenAI-compatible services (Groq, vLLM, ...) speak the `openai` dialect and report `openai`; their
settings name is in `avionics.provider` and their host in `server.address`."""


def provider_name(kind: object) -> str:
    """`gen_ai.provider.name` of a backend kind (its own value when unknown)."""
    found = PROVIDER_NAMES.get(kind) if isinstance(kind, BackendKind) else None
    return found if found is not None else str(getattr(kind, "value", kind))


# -- finish reasons ------------------------------------------------------------------------------

FINISH_REASONS: Final[dict[str, str]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_call",
    "content_filter": "content_filter",
}
"""airframe `FinishReason` value -> the spec's finish reason (`other` passes through)."""


def finish_reason(value: object) -> str:
    text = str(getattr(value, "value", value))
    return FINISH_REASONS.get(text, text)
