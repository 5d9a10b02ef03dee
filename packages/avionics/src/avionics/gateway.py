"""`LLMGateway`: the one entry point agent code calls.

A call resolves the agent's route chain from settings (its route, its `fallbacks` profiles, then
the gateway's fallback providers), skips routes lacking a needed capability, and tries each in
order: budget reservation and rate-limit permit first (no network I/O when refused), then the
provider call, then one ledger row per attempt. Failures move on by category (`fallback.py`); a
stream falls back only before its first chunk reaches the caller (`streaming.py`). The attempt
loop and accounting glue live in `engine.py`.

Response totals (`tokens_used`, `prompt_tokens`, `completion_tokens`, `cost`, `cost_usd`) cover
every attempt of the call, so they equal the sum of its ledger rows (`metadata["attempts"]`);
`usage` is the answering attempt's own report.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airframe import ErrorCategory, Message, ToolSpec

from .accounting import Accountant
from .engine import Call, CallEngine
from .factory import LLMFactory
from .observability.telemetry import Telemetry
from .providers.base import LLMProvider
from .requests import build_request, needs_of
from .responses import LLMResponse, StreamingChunk
from .settings import AvionicsSettings, SettingsError, get_settings
from .streaming import ChunkStream, stream_call
from .templates import render_template
from .toolloop import run_tool_loop

__all__ = ["ChunkStream", "LLMGateway", "ResourceCallback", "StreamingCallback"]

ResourceCallback = Callable[[dict[str, Any]], Any]
StreamingCallback = Callable[[StreamingChunk], Any]


class LLMGateway(CallEngine):
    """Routing, fallback, cost, limits and telemetry around every LLM call of an agent fleet.

    `fallback_providers` (provider names, each with its `default_model`) are tried after every
    agent's own chain; None means settings' `[fallback] providers`. `providers=` registers
    provider objects (a `MockProvider`, a custom one) under settings names.
    """

    def __init__(
        self,
        settings: AvionicsSettings | None = None,
        fallback_providers: Sequence[str] | None = None,
        logger: Any = None,
        resource_callback: ResourceCallback | None = None,
        streaming_callback: StreamingCallback | None = None,
        *,
        factory: LLMFactory | None = None,
        providers: Mapping[str, LLMProvider] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings if settings is not None else get_settings()
        self.fallback_providers = list(
            self.settings.fallback.providers if fallback_providers is None else fallback_providers
        )
        self.factory = factory or LLMFactory(self.settings)
        for name, provider in (providers or {}).items():
            self.factory.register(name, provider)
        self.accountant = Accountant(self.settings)
        self.telemetry = telemetry or Telemetry.from_settings(self.settings, logger=logger)
        self._resource_callback = resource_callback
        self._streaming_callback = streaming_callback
        self._stop_on = frozenset(ErrorCategory(c) for c in self.settings.fallback.stop_on)
        self._chains = {}
        self._counts = {"calls": 0, "failures": 0, "fallbacks": 0, "streams": 0}
        self._pending = set()

    # -- public API -----------------------------------------------------------------------

    def set_resource_callback(self, callback: ResourceCallback | None) -> None:
        self._resource_callback = callback

    def set_streaming_callback(self, callback: StreamingCallback | None) -> None:
        self._streaming_callback = callback

    async def complete(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        system: str | None = None,
        model: str | None = None,
        agent_name: str = "default",
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        images: Sequence[Any] | None = None,
        response_format: Any = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        template: str | None = None,
        vars: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> LLMResponse:
        """One answer, with fallback across the agent's routes. Raises `GatewayError` when every
        route failed, `BudgetExceededError` before any I/O when the budget cannot cover it,
        `TemplateError` (before any I/O) when `template=` names a variable `vars=` lacks."""
        call = self._start(
            prompt, messages, system, model, agent_name, tools, images, response_format,
            temperature, max_tokens, template, vars, params, stream=False,
        )  # fmt: skip
        return await self._run(call)

    def complete_stream(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        system: str | None = None,
        model: str | None = None,
        agent_name: str = "default",
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        images: Sequence[Any] | None = None,
        response_format: Any = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        template: str | None = None,
        vars: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> ChunkStream:
        """Stream chunks; the last has `is_final=True` and the whole `response`. Falls back only
        before the first chunk; after it a failure raises `airframe.InterruptedError` whose
        `partial` holds what was streamed (and is billed). Use `async for chunk in
        gateway.complete_stream(...)` (awaiting it first also works). Argument errors
        (`TemplateError`, a bad message) raise here, before any I/O."""
        call = self._start(
            prompt, messages, system, model, agent_name, tools, images, response_format,
            temperature, max_tokens, template, vars, params, stream=True,
        )  # fmt: skip
        return ChunkStream(stream_call(self, call))

    async def chat_with_tools(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        tools: Sequence[ToolSpec | Mapping[str, Any]],
        tool_handlers: Mapping[str, Callable[..., Any]],
        max_iterations: int = 10,
        *,
        raise_on_tool_error: bool = False,
        **kwargs: Any,
    ) -> LLMResponse:
        """Run the tool loop: call, run requested tools (sync or async handlers), feed results
        back, until the model answers without tool calls or `max_iterations` model calls were
        made. A handler's exception goes back to the model as a tool error, unless
        `raise_on_tool_error` (then `ToolLoopError`, the handler's exception as its cause).
        Tokens and cost add up over every turn and attempt (`metadata["turns"]`,
        `metadata["attempts"]`); other keywords go to `complete`."""
        return await run_tool_loop(
            self, messages, tools, tool_handlers, max_iterations, raise_on_tool_error, kwargs
        )

    def complete_sync(self, prompt: str | None = None, **kwargs: Any) -> LLMResponse:
        """Blocking `complete`, usable inside or outside a running event loop.

        The call runs on airframe's private event-loop thread (the same HTTP code and pools as
        `airframe.infer_sync`), so calling it from inside a running loop works, though it blocks
        that loop until the answer arrives. Argument errors raise before any I/O."""
        from airframe._calls import run_sync

        return run_sync(self.complete(prompt, **kwargs))

    def get_stats(self) -> dict[str, Any]:
        """Call counts and ledger totals overall, per agent and per provider."""
        ledger = self.accountant.ledger
        return {
            **self._counts,
            "totals": ledger.totals().to_dict(),
            "by_agent": {k: v.to_dict() for k, v in ledger.by_agent().items()},
            "by_provider": {k: v.to_dict() for k, v in ledger.by_provider().items()},
            "providers": self.factory.stats(),
        }

    async def health_check(self) -> dict[str, bool]:
        """Probe every configured provider: healthy nodes close their breakers, unhealthy ones
        open them. A provider that cannot be built (its API key env var unset) is False."""
        results: dict[str, bool] = {}
        for name in self.settings.providers:
            try:
                provider = self.factory.provider(name)
            except SettingsError:
                results[name] = False
                continue
            results[name] = await provider.health_check()
        return results

    # -- building a call -------------------------------------------------------------------

    def _start(
        self,
        prompt: str | None,
        messages: Sequence[Message | Mapping[str, Any]] | None,
        system: str | None,
        model: str | None,
        agent: str,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None,
        images: Sequence[Any] | None,
        response_format: Any,
        temperature: float | None,
        max_tokens: int | None,
        template: str | None,
        vars: Mapping[str, Any] | None,
        params: dict[str, Any],
        *,
        stream: bool,
    ) -> Call:
        """Validate the arguments and resolve the chain: everything that can fail before I/O."""
        if template is not None:
            if prompt is not None:
                raise ValueError("pass prompt= or template=, not both")
            prompt = render_template(template, vars)
        elif vars:
            if prompt is None:
                raise ValueError("vars= needs template= (or a prompt with {{placeholders}})")
            prompt = render_template(prompt, vars)
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        request = build_request(
            prompt=prompt,
            messages=messages,
            system=system,
            tools=tools,
            images=images,
            response_format=response_format,
            params=params,
        )
        routes = self._chain(agent)
        if model is not None:
            routes = [routes[0].with_model(model, self.settings), *routes[1:]]
        self._counts["calls"] += 1
        if stream:
            self._counts["streams"] += 1
        return Call(agent, request, list(routes), needs_of(request), uuid.uuid4().hex, stream)
