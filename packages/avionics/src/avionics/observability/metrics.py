"""The gateway's metric instruments (OpenTelemetry API only; no-ops until an SDK is configured).

One measurement per gateway attempt (an operation: airframe's retries inside it included):

| instrument                                    | kind      | unit      | when                    |
|-----------------------------------------------|-----------|-----------|-------------------------|
| `gen_ai.client.operation.duration`            | histogram | `s`       | every attempt sent      |
| `gen_ai.client.token.usage`                   | histogram | `{token}` | counts the backend gave |
| `gen_ai.client.operation.time_to_first_chunk` | histogram | `s`       | streams, first chunk    |
| `avionics.client.cost`                        | counter   | `USD`     | attempts that cost > 0  |

Histograms carry the spec's advisory bucket boundaries.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics

from . import semconv as sc

__all__ = ["Instruments"]


class Instruments:
    """The four instruments, created once per `Telemetry`."""

    __slots__ = ("cost", "duration", "time_to_first_chunk", "token_usage")

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        if meter_provider is None:
            meter = metrics.get_meter(sc.METER_NAME)
        else:
            meter = meter_provider.get_meter(sc.METER_NAME)
        self.duration = meter.create_histogram(
            sc.METRIC_OPERATION_DURATION,
            unit=sc.UNIT_SECONDS,
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        self.token_usage = meter.create_histogram(
            sc.METRIC_TOKEN_USAGE,
            unit=sc.UNIT_TOKEN,
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(sc.TOKEN_BUCKETS),
        )
        self.time_to_first_chunk = meter.create_histogram(
            sc.METRIC_TIME_TO_FIRST_CHUNK,
            unit=sc.UNIT_SECONDS,
            description=(
                "Time to receive the first chunk, measured from when the client issues the "
                "generation request to when the first chunk is received in the response stream."
            ),
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        self.cost = meter.create_counter(
            sc.METRIC_COST,
            unit=sc.UNIT_USD,
            description="Cost of LLM calls in US dollars, by agent, provider and model.",
        )

    def record_attempt(
        self,
        attributes: dict[str, Any],
        cost_attributes: dict[str, Any],
        *,
        duration: float | None,
        input_tokens: int | None,
        output_tokens: int | None,
        time_to_first_chunk: float | None,
        cost: float | None,
    ) -> None:
        """Record one attempt. `attributes` (error.type included) go on the histograms;
        the cost counter gets `cost_attributes`: agent, provider and model."""
        if duration is not None:
            self.duration.record(duration, attributes)
        if time_to_first_chunk is not None:
            self.time_to_first_chunk.record(time_to_first_chunk, attributes)
        if input_tokens is not None:
            attrs = {**attributes, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}
            self.token_usage.record(input_tokens, attrs)
        if output_tokens is not None:
            attrs = {**attributes, sc.GEN_AI_TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
            self.token_usage.record(output_tokens, attrs)
        if cost:  # unknown (None) or free (0) adds nothing
            self.cost.add(cost, cost_attributes)
