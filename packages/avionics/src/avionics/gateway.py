"""`LLMGateway`: the one entry point agent code calls.

A call resolves the agent's route chain from settings (route, its fallback profiles, then the
gateway's fallback providers), skips routes lacking a needed capability, and tries each in order:
budget reservation and rate-limit permit first (no network I/O when refused), then the provider
call, then one ledger row per attempt. Failures move on by category (see `fallback.py`); a stream
falls back only before its first chunk reaches the caller.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from airframe import (
    AirframeError,
    ErrorCategory,
    InferenceRequest,
    InferenceResult,
    Message,
    StreamEventType,
    ToolSpec,
)

from .accounting import Accountant, AttemptRecord
from .errors import BudgetExceededError, GatewayError, RateLimitedLocally
from .factory import LLMFactory
from .fallback import DEFAULT_STOP_ON, Needs, after_context_error, moves_on, skip_reason
from .nodes import NODE_FAILURES
from .observability.telemetry import CallTelemetry, Telemetry
from .providers.base import LLMProvider
from .requests import build_request, for_route, needs_of
from .responses import LLMResponse, StreamingChunk
from .routing import Route, fallback_chain
from .settings import AvionicsSettings, get_settings
from .templates import render_template
from .toolloop import run_tool_loop

__all__ = ["LLMGateway", "ResourceCallback", "StreamingCallback"]

ResourceCallback = Callable[[dict[str, Any]], Any]
StreamingCallback = Callable[[StreamingChunk], Any]


@dataclass(slots=True)
class _Call:
    """One gateway call in flight."""

    agent: str
    request: InferenceRequest
    routes: list[Route]
    needs: Needs
    request_id: str
    started: float
    stream: bool
    telemetry: CallTelemetry
    attempts: list[AttemptRecord] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class LLMGateway:
    """Routing, fallback, cost, limits and telemetry around every LLM call of an agent fleet."""

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
        self.fallback_providers = list(fallback_providers or ())
        self.factory = factory or LLMFactory(self.settings)
        for name, provider in (providers or {}).items():
            self.factory.register(name, provider)
        self.accountant = Accountant(self.settings)
        self.telemetry = telemetry or Telemetry.from_settings(self.settings, logger=logger)
        self._resource_callback = resource_callback
        self._streaming_callback = streaming_callback
        self._stop_on = frozenset(
            ErrorCategory(c) for c in getattr(self.settings.fallback, "stop_on", DEFAULT_STOP_ON)
        )
        self._chains: dict[str, list[Route]] = {}
        self._counts = {"calls": 0, "failures": 0, "fallbacks": 0, "streams": 0}

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
        route failed, `BudgetExceededError` before any I/O when the budget cannot cover it."""
        call = self._start(
            prompt, messages, system, model, agent_name, tools, images, response_format,
            temperature, max_tokens, template, vars, params, stream=False,
        )  # fmt: skip
        try:
            for route, provider in self._candidates(call):
                result, record = await self._attempt(call, route, provider)
                if result is not None:
                    return self._finish(call, route, result)
                if not self._moves_on(call, route, record):
                    break
            raise self._failed(call)
        except BaseException as exc:
            call.telemetry.finish(None, exc)
            raise

    async def complete_stream(
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
    ) -> AsyncIterator[StreamingChunk]:
        """Stream chunks; the last has `is_final=True` and the whole `response`. Falls back only
        before the first chunk; after it a failure raises `airframe.InterruptedError` whose
        `partial` holds what was streamed (and is billed)."""
        call = self._start(
            prompt, messages, system, model, agent_name, tools, images, response_format,
            temperature, max_tokens, template, vars, params, stream=True,
        )  # fmt: skip
        return self._stream(call)

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
        """Run the tool loop: call, run requested tools, feed results back, until the model
        answers without tool calls or `max_iterations` is reached. Usage and cost accumulate
        over every turn (`metadata["turns"]`)."""
        return await run_tool_loop(
            self, messages, tools, tool_handlers, max_iterations, raise_on_tool_error, kwargs
        )

    def complete_sync(self, prompt: str | None = None, **kwargs: Any) -> LLMResponse:
        """Blocking `complete`, usable inside or outside a running event loop."""
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
        """Probe every configured provider (healthy nodes close their breakers)."""
        return {name: await p.health_check() for name, p in self.factory.all_providers().items()}

    # -- one call ---------------------------------------------------------------------------

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
    ) -> _Call:
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
        request_id = uuid.uuid4().hex
        return _Call(
            agent,
            request,
            routes,
            needs_of(request),
            request_id,
            time.perf_counter(),
            stream,
            self.telemetry.start_call(agent, request, stream=stream, request_id=request_id),
        )

    def _chain(self, agent: str) -> list[Route]:
        found = self._chains.get(agent)
        if found is None:
            found = self._chains[agent] = fallback_chain(
                self.settings, agent, self.fallback_providers
            )
        return found

    def _candidates(self, call: _Call) -> Iterator[tuple[Route, LLMProvider]]:
        """Routes in order, minus those lacking a capability the request needs."""
        for route in call.routes:
            provider = self.factory.provider(route.provider)
            reason = skip_reason(self.factory.capabilities(route, provider), call.needs)
            if reason is not None:
                call.skipped.append({"provider": route.provider, "model": route.model or "",
                                     "reason": reason})  # fmt: skip
                continue
            yield route, provider

    def _moves_on(self, call: _Call, route: Route, record: AttemptRecord) -> bool:
        error = call.errors[-1]
        if not moves_on(error, self._stop_on):
            return False
        if isinstance(error, AirframeError) and error.category is ErrorCategory.CONTEXT_LENGTH:
            window = self.factory.capabilities(route, self.factory.provider(route.provider))
            call.needs = after_context_error(call.needs, error, window.context_window)
        self._counts["fallbacks"] += 1
        self.telemetry.log_fallback(call.agent, record, error)
        return True

    async def _attempt(
        self, call: _Call, route: Route, provider: LLMProvider
    ) -> tuple[InferenceResult | None, AttemptRecord]:
        """Try one route (and its other nodes on node-level failures). Non-streaming."""
        request = for_route(call.request, route.model, route.params)
        tried: list[str] = []
        while True:
            record, error = await self._try_node(call, route, provider, request, tried)
            if error is None:
                assert record.result is not None
                return record.result, record
            if not self._next_node(provider, record, error, tried):
                return None, record

    async def _try_node(
        self,
        call: _Call,
        route: Route,
        provider: LLMProvider,
        request: InferenceRequest,
        tried: list[str],
    ) -> tuple[AttemptRecord, BaseException | None]:
        attempt_no = len(call.attempts) + 1
        record = AttemptRecord(attempt_no, route, provider, None)
        try:
            record.node = provider.pick_node(tried)
            async with await self.accountant.admit(call.agent, record, request):
                hooks = call.telemetry.attempt_hooks(record)
                record.started = time.perf_counter()
                try:
                    record.result = await provider.infer(request, node=record.node, hooks=hooks)
                finally:
                    record.ended = time.perf_counter()
        except BudgetExceededError:
            raise
        except (AirframeError, RateLimitedLocally) as exc:
            return self._record_failure(call, record, exc), exc
        provider.record_outcome(record.node)
        self._record(call, record)
        return record, None

    def _next_node(
        self, provider: LLMProvider, record: AttemptRecord, error: BaseException, tried: list[str]
    ) -> bool:
        if record.node is None or not isinstance(error, AirframeError):
            return False
        if error.category not in NODE_FAILURES:
            return False
        tried.append(record.node.name)
        pool = getattr(provider, "pool", None)
        return pool is not None and len(tried) < len(pool.nodes)

    def _record_failure(
        self, call: _Call, record: AttemptRecord, exc: BaseException
    ) -> AttemptRecord:
        if record.ended is None:
            record.ended = time.perf_counter()
        record.error = exc
        if isinstance(exc, AirframeError):
            record.provider.record_outcome(record.node, exc.category)
            if exc.partial is not None:
                record.partial = exc.partial
        call.errors.append(exc)
        self._record(call, record)
        return record

    def _record(self, call: _Call, record: AttemptRecord) -> None:
        row = self.accountant.record(call.agent, call.request_id, record, streamed=call.stream)
        call.attempts.append(record)
        call.telemetry.attempt_finished(record, row)
        if self._resource_callback is not None:
            try:
                self._resource_callback(row.to_dict())
            except Exception:  # a user callback never breaks a call
                self.telemetry.log_callback_error("resource_callback")

    def _finish(self, call: _Call, route: Route, result: InferenceResult) -> LLMResponse:
        response = self._response(call, route, result)
        call.telemetry.finish(response, None)
        return response

    def _response(self, call: _Call, route: Route, result: InferenceResult) -> LLMResponse:
        last = call.attempts[-1]
        rows = [a.row for a in call.attempts if a.row is not None]
        costs = [r.cost_usd for r in rows]
        total: Decimal | None = (
            None
            if any(c is None for c in costs)
            else sum((c for c in costs if c is not None), Decimal(0))
        )
        usage = result.usage
        prompt_tokens = sum(r.input_tokens or 0 for r in rows)
        completion_tokens = sum(r.output_tokens or 0 for r in rows)
        return LLMResponse(
            text=result.text,
            tool_calls=list(result.tool_calls),
            tokens_used=prompt_tokens + completion_tokens,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=(time.perf_counter() - call.started) * 1000.0,
            provider=route.provider,
            model=result.model or route.model or "",
            cost_usd=float(total) if total is not None else None,
            timestamp=datetime.now(UTC),
            metadata={
                "attempts": [r.to_dict() for r in rows],
                "skipped": call.skipped,
                "node": last.node.name if last.node is not None else None,
                "profile": route.profile,
                "response_id": result.response_id,
                "fallback_used": len(rows) > 1,
                **({"raw": result.raw} if result.raw else {}),
            },
            streamed=call.stream,
            finish_reason=result.finish_reason,
            usage=usage,
            cost=total,
            reasoning=result.reasoning,
            agent_name=call.agent,
            request_id=call.request_id,
        )

    def _failed(self, call: _Call) -> BaseException:
        self._counts["failures"] += 1
        if not call.attempts and not call.errors:
            reasons = "; ".join(f"{s['provider']}: {s['reason']}" for s in call.skipped)
            return GatewayError(
                f"no route of agent {call.agent!r} can serve this request ({reasons})",
                attempts=[],
                errors=[],
            )
        return GatewayError.from_attempts(
            call.agent, [a.summary() for a in call.attempts], list(call.errors)
        )

    # -- streaming --------------------------------------------------------------------------

    async def _stream(self, call: _Call) -> AsyncGenerator[StreamingChunk, None]:
        try:
            for route, provider in self._candidates(call):
                request = for_route(call.request, route.model, route.params)
                tried: list[str] = []
                while True:
                    record = AttemptRecord(len(call.attempts) + 1, route, provider, None)
                    delivered = False
                    try:
                        record.node = provider.pick_node(tried)
                        async with await self.accountant.admit(call.agent, record, request):
                            hooks = call.telemetry.attempt_hooks(record)
                            record.started = time.perf_counter()
                            async for chunk in self._relay(
                                call, route, provider, request, record, hooks
                            ):
                                delivered = True
                                yield chunk
                    except BudgetExceededError:
                        raise
                    except (AirframeError, RateLimitedLocally) as exc:
                        self._record_failure(call, record, exc)
                        if delivered:
                            raise
                        if self._next_node(provider, record, exc, tried):
                            continue
                        break
                    provider.record_outcome(record.node)
                    self._record(call, record)
                    assert record.result is not None
                    response = self._response(call, route, record.result)
                    final = StreamingChunk(
                        "", True, call.request_id, call.agent, route.provider,
                        response.model, response.completion_tokens, response.timestamp, response,
                    )  # fmt: skip
                    self._notify(final)
                    call.telemetry.finish(response, None)
                    yield final
                    return
                if not self._moves_on(call, route, call.attempts[-1]):
                    break
            raise self._failed(call)
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                call.telemetry.finish(None, exc)
            raise

    async def _relay(
        self,
        call: _Call,
        route: Route,
        provider: LLMProvider,
        request: InferenceRequest,
        record: AttemptRecord,
        hooks: Any,
    ) -> AsyncGenerator[StreamingChunk, None]:
        """Provider events -> `StreamingChunk`s; keeps the result (or partial) on the record."""
        events = provider.stream(request, node=record.node, hooks=hooks)
        count = 0
        model = route.model or ""
        try:
            async for event in events:
                kind = event.type
                if kind is StreamEventType.TOKEN or kind is StreamEventType.REASONING:
                    count += 1
                    chunk = StreamingChunk(
                        event.content, False, call.request_id, call.agent, route.provider, model,
                        count, datetime.now(UTC), None,
                        "token" if kind is StreamEventType.TOKEN else "reasoning",
                    )  # fmt: skip
                    self._notify(chunk)
                    yield chunk
                elif kind is StreamEventType.MESSAGE:
                    record.result = event.result
        finally:
            record.ended = time.perf_counter()
            await events.aclose()

    def _notify(self, chunk: StreamingChunk) -> None:
        if self._streaming_callback is not None:
            try:
                self._streaming_callback(chunk)
            except Exception:
                self.telemetry.log_callback_error("streaming_callback")
