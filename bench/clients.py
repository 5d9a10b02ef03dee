"""The clients compared: one class per way of calling an LLM, all against the same upstream.

Each client makes the same two calls as a user of that library would write them:

- `call()`: one non-streamed chat completion, returning the answer text;
- `stream(tokens)`: one streamed chat completion of `tokens` tokens, consumed to the end,
  returning how many content chunks reached the consumer and when the first one did.

Every client builds its request per call (as application code does) and reads the text out of
the answer, so each pays for what its library makes a caller pay for. Third-party imports happen
in `setup()`, so a worker process imports only the client it measures.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from .upstream import prompt_for

__all__ = ["CLIENTS", "Client", "Urls", "make_client"]

MODEL = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"
API_KEY = "sk-bench-0000000000000000"
MAX_TOKENS = 8192  # Anthropic requires one; above every reply length used here
POOL = 2048  # connection limit for clients that take one (1,000 concurrent streams)


class Urls:
    """Where the upstream listens: OpenAI-style base (with /v1) and Anthropic root."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.openai = self.root + "/v1"
        self.anthropic = self.root


class Client(ABC):
    """One way of calling the upstream."""

    name: ClassVar[str]
    protocol: ClassVar[str] = "openai"  # which wire protocol (and which floor) it is compared on
    calls: ClassVar[bool] = True  # takes part in the non-streamed figures
    streams: ClassVar[bool] = True  # takes part in the streaming figures
    import_stmt: ClassVar[str]  # what `python -X importtime -c ...` runs for figure 3
    note: ClassVar[str] = ""

    @abstractmethod
    async def setup(self, urls: Urls) -> None: ...

    @abstractmethod
    async def call(self) -> str: ...

    @abstractmethod
    async def stream(self, tokens: int) -> tuple[int, float]:
        """(content chunks delivered, perf_counter() when the first one arrived)."""

    async def aclose(self) -> None:
        return None


def _openai_body(tokens: int | None, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt_for(tokens)}],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _anthropic_body(tokens: int | None, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": prompt_for(tokens)}],
    }
    if stream:
        body["stream"] = True
    return body


# -- the floors: bare httpx ----------------------------------------------------------------------


class _HttpxBase(Client):
    def __init__(self) -> None:
        self.client: Any = None
        self.url = ""
        self.headers: dict[str, str] = {}

    async def setup(self, urls: Urls) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=256),
            timeout=httpx.Timeout(120.0, connect=5.0),
        )
        if self.protocol == "openai":
            self.url = urls.openai + "/chat/completions"
            self.headers = {"authorization": f"Bearer {API_KEY}"}
        else:
            self.url = urls.anthropic + "/v1/messages"
            self.headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}

    async def aclose(self) -> None:
        await self.client.aclose()


class HttpxOpenAI(_HttpxBase):
    """POST + json.loads; streamed: aiter_lines + json.loads per `data:` line."""

    name = "httpx"
    import_stmt = "import httpx"
    note = "floor (non-streamed)"

    async def call(self) -> str:
        response = await self.client.post(
            self.url, json=_openai_body(None, False), headers=self.headers
        )
        response.raise_for_status()
        payload = json.loads(response.content)
        text: str = payload["choices"][0]["message"]["content"]
        return text

    async def stream(self, tokens: int) -> tuple[int, float]:
        n = 0
        first = 0.0
        body = _openai_body(tokens, True)
        async with self.client.stream("POST", self.url, json=body, headers=self.headers) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    continue  # read on to the end of the body: the connection is reused
                chunk = json.loads(data)
                choices = chunk["choices"]
                if choices and choices[0]["delta"].get("content"):
                    if not n:
                        first = time.perf_counter()
                    n += 1
        return n, first


class HttpxSSEOpenAI(_HttpxBase):
    """httpx-sse `aconnect_sse` loop + json.loads per event."""

    name = "httpx-sse"
    calls = False
    import_stmt = "import httpx, httpx_sse"
    note = "floor (streamed)"

    async def call(self) -> str:  # pragma: no cover - not measured
        raise NotImplementedError

    async def stream(self, tokens: int) -> tuple[int, float]:
        from httpx_sse import aconnect_sse

        n = 0
        first = 0.0
        body = _openai_body(tokens, True)
        async with aconnect_sse(
            self.client, "POST", self.url, json=body, headers=self.headers
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if sse.data == "[DONE]":
                    continue  # read on to the end of the body: the connection is reused
                chunk = json.loads(sse.data)
                choices = chunk["choices"]
                if choices and choices[0]["delta"].get("content"):
                    if not n:
                        first = time.perf_counter()
                    n += 1
        return n, first


class HttpxAnthropic(_HttpxBase):
    name = "httpx (anthropic)"
    protocol = "anthropic"
    import_stmt = "import httpx"
    note = "floor (non-streamed)"

    async def call(self) -> str:
        response = await self.client.post(
            self.url, json=_anthropic_body(None, False), headers=self.headers
        )
        response.raise_for_status()
        payload = json.loads(response.content)
        text: str = payload["content"][0]["text"]
        return text

    async def stream(self, tokens: int) -> tuple[int, float]:
        n = 0
        first = 0.0
        event = ""
        body = _anthropic_body(tokens, True)
        async with self.client.stream("POST", self.url, json=body, headers=self.headers) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "content_block_delta" and data["delta"].get("text"):
                        if not n:
                            first = time.perf_counter()
                        n += 1
        return n, first


class HttpxSSEAnthropic(_HttpxBase):
    name = "httpx-sse (anthropic)"
    protocol = "anthropic"
    calls = False
    import_stmt = "import httpx, httpx_sse"
    note = "floor (streamed)"

    async def call(self) -> str:  # pragma: no cover - not measured
        raise NotImplementedError

    async def stream(self, tokens: int) -> tuple[int, float]:
        from httpx_sse import aconnect_sse

        n = 0
        first = 0.0
        body = _anthropic_body(tokens, True)
        async with aconnect_sse(
            self.client, "POST", self.url, json=body, headers=self.headers
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                data = json.loads(sse.data)
                if sse.event == "content_block_delta" and data["delta"].get("text"):
                    if not n:
                        first = time.perf_counter()
                    n += 1
        return n, first


# -- official SDKs -------------------------------------------------------------------------------


class OpenAISDK(Client):
    name = "openai SDK"
    import_stmt = "from openai import AsyncOpenAI"
    note = "AsyncOpenAI, default settings"

    async def setup(self, urls: Urls) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=urls.openai, api_key=API_KEY)

    async def call(self) -> str:
        completion = await self.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt_for(None)}]
        )
        text: str = completion.choices[0].message.content
        return text

    async def stream(self, tokens: int) -> tuple[int, float]:
        n = 0
        first = 0.0
        response = await self.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt_for(tokens)}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                if not n:
                    first = time.perf_counter()
                n += 1
        return n, first

    async def aclose(self) -> None:
        await self.client.close()


class AnthropicSDK(Client):
    name = "anthropic SDK"
    protocol = "anthropic"
    import_stmt = "from anthropic import AsyncAnthropic"
    note = "AsyncAnthropic, messages.create(stream=True)"

    async def setup(self, urls: Urls) -> None:
        from anthropic import AsyncAnthropic

        self.client = AsyncAnthropic(base_url=urls.anthropic, api_key=API_KEY)

    async def call(self) -> str:
        message = await self.client.messages.create(
            model=CLAUDE,
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": prompt_for(None)}],
        )
        text: str = message.content[0].text
        return text

    async def stream(self, tokens: int) -> tuple[int, float]:
        n = 0
        first = 0.0
        events = await self.client.messages.create(
            model=CLAUDE,
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": prompt_for(tokens)}],
            stream=True,
        )
        async for event in events:
            if event.type == "content_block_delta" and getattr(event.delta, "text", None):
                if not n:
                    first = time.perf_counter()
                n += 1
        return n, first

    async def aclose(self) -> None:
        await self.client.close()


# -- LiteLLM -------------------------------------------------------------------------------------


def _quiet_litellm() -> None:
    # No network at import (bundled price map), no telemetry, no banner.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    os.environ.setdefault("LITELLM_LOG", "ERROR")


class LiteLLM(Client):
    name = "litellm"
    import_stmt = "import litellm"
    note = "litellm.acompletion"

    async def setup(self, urls: Urls) -> None:
        _quiet_litellm()
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        self.litellm = litellm
        self.base = urls.openai

    async def call(self) -> str:
        response = await self.litellm.acompletion(
            model=f"openai/{MODEL}",
            messages=[{"role": "user", "content": prompt_for(None)}],
            api_base=self.base,
            api_key=API_KEY,
        )
        text: str = response.choices[0].message.content
        return text

    async def stream(self, tokens: int) -> tuple[int, float]:
        n = 0
        first = 0.0
        response = await self.litellm.acompletion(
            model=f"openai/{MODEL}",
            messages=[{"role": "user", "content": prompt_for(tokens)}],
            api_base=self.base,
            api_key=API_KEY,
            stream=True,
        )
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                if not n:
                    first = time.perf_counter()
                n += 1
        return n, first

    async def aclose(self) -> None:
        # LiteLLM caches its HTTP clients module-wide; this is its documented cleanup.
        await self.litellm.close_litellm_async_clients()


class LiteLLMRouter(LiteLLM):
    name = "litellm Router"
    import_stmt = "from litellm import Router"
    note = "Router, one fallback deployment"

    async def setup(self, urls: Urls) -> None:
        await super().setup(urls)
        params = {"model": f"openai/{MODEL}", "api_base": urls.openai, "api_key": API_KEY}
        self.router = self.litellm.Router(
            model_list=[
                {"model_name": "primary", "litellm_params": dict(params)},
                {"model_name": "backup", "litellm_params": dict(params)},
            ],
            fallbacks=[{"primary": ["backup"]}],
        )

    async def aclose(self) -> None:
        await self.router.aclose()
        await super().aclose()

    async def call(self) -> str:
        response = await self.router.acompletion(
            model="primary", messages=[{"role": "user", "content": prompt_for(None)}]
        )
        text: str = response.choices[0].message.content
        return text

    async def stream(self, tokens: int) -> tuple[int, float]:
        n = 0
        first = 0.0
        response = await self.router.acompletion(
            model="primary",
            messages=[{"role": "user", "content": prompt_for(tokens)}],
            stream=True,
        )
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                if not n:
                    first = time.perf_counter()
                n += 1
        return n, first


# -- airframe and avionics -----------------------------------------------------------------------


class Airframe(Client):
    """`get_adapter(kind).infer / stream_infer` with an `EndpointSpec`."""

    name = "airframe"
    kind = "openai"
    import_stmt = "import airframe; airframe.get_adapter('openai')"
    note = "get_adapter('openai').infer / stream_infer"

    async def setup(self, urls: Urls) -> None:
        import airframe

        self.af = airframe
        base = urls.openai if self.kind == "openai" else urls.anthropic
        self.adapter = airframe.get_adapter(self.kind)
        self.endpoint = airframe.EndpointSpec(
            base, airframe.BackendKind(self.kind), name="bench", api_key=API_KEY
        )
        self.model = MODEL if self.kind == "openai" else CLAUDE
        self.max_tokens = None if self.kind == "openai" else MAX_TOKENS

    def _request(self, tokens: int | None) -> Any:
        return self.af.InferenceRequest(
            [self.af.Message.user(prompt_for(tokens))],
            model=self.model,
            max_tokens=self.max_tokens,
        )

    async def call(self) -> str:
        result = await self.adapter.infer(self.endpoint, self._request(None))
        text: str = result.text
        return text

    async def stream(self, tokens: int) -> tuple[int, float]:
        token = self.af.StreamEventType.TOKEN
        n = 0
        first = 0.0
        async for event in self.adapter.stream_infer(self.endpoint, self._request(tokens)):
            if event.type is token:
                if not n:
                    first = time.perf_counter()
                n += 1
        return n, first

    async def aclose(self) -> None:
        await self.af.aclose_all()


class AirframeAnthropic(Airframe):
    name = "airframe (anthropic)"
    protocol = "anthropic"
    kind = "anthropic"
    import_stmt = "import airframe; airframe.get_adapter('anthropic')"
    note = "get_adapter('anthropic').infer / stream_infer"


class _Spans:
    """OTel SDK providers exporting to memory (what an application with tracing on runs)."""

    def __init__(self) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        trace.set_tracer_provider(provider)
        self.reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.reader]))
        self.spans = 0

    def drain(self) -> None:
        self.spans += len(self.exporter.get_finished_spans())
        self.exporter.clear()


class Avionics(Client):
    """`LLMGateway.complete / complete_stream`: routing, ledger + cost, rate limiter, spans."""

    name = "avionics"
    import_stmt = "from avionics import AvionicsSettings, LLMGateway"
    note = "LLMGateway: route, limiter, ledger, cost, OTel SDK spans to memory"
    otel_sdk = True

    async def setup(self, urls: Urls) -> None:
        self.spans = _Spans() if self.otel_sdk else None
        from avionics import AvionicsSettings, LLMGateway

        settings = AvionicsSettings(
            providers={
                "bench": {
                    "kind": "openai",
                    "base_url": urls.openai,
                    "api_key": API_KEY,
                    "rpm": 100_000_000,
                    "tpm": 10_000_000_000,
                    "max_concurrency": 100_000,
                }
            },
            profiles={"default": {"provider": "bench", "model": MODEL}},
            pricing={f"bench/{MODEL}": {"input": "0.15", "output": "0.60"}},
        )
        self.gateway = LLMGateway(settings)
        self.cost_seen = False

    async def call(self) -> str:
        response = await self.gateway.complete(prompt_for(None))
        self.cost_seen = self.cost_seen or response.cost_usd is not None
        return response.text

    async def stream(self, tokens: int) -> tuple[int, float]:
        n = 0
        first = 0.0
        async for chunk in await self.gateway.complete_stream(prompt_for(tokens)):
            if not chunk.is_final and chunk.text:
                if not n:
                    first = time.perf_counter()
                n += 1
        return n, first

    def extra(self) -> dict[str, Any]:
        """What the gateway did besides the call, to show the figures measured real work."""
        stats = self.gateway.get_stats()
        spans = None
        if self.spans is not None:
            self.spans.drain()
            spans = self.spans.spans
        return {
            "calls": stats.get("calls"),
            "ledger_cost_usd": stats.get("totals", {}).get("cost_usd"),
            "priced": self.cost_seen,
            "spans_exported": spans,
        }

    async def aclose(self) -> None:
        import airframe

        await airframe.aclose_all()


class AvionicsNoSDK(Avionics):
    name = "avionics (no OTel SDK)"
    note = "LLMGateway as above, OpenTelemetry API only (no SDK installed as provider)"
    otel_sdk = False


CLIENTS: dict[str, type[Client]] = {
    cls.name: cls
    for cls in (
        HttpxOpenAI,
        HttpxSSEOpenAI,
        OpenAISDK,
        LiteLLM,
        LiteLLMRouter,
        Airframe,
        Avionics,
        AvionicsNoSDK,
        HttpxAnthropic,
        HttpxSSEAnthropic,
        AnthropicSDK,
        AirframeAnthropic,
    )
}

FLOOR_CALL = {"openai": "httpx", "anthropic": "httpx (anthropic)"}
FLOOR_STREAM = {"openai": "httpx-sse", "anthropic": "httpx-sse (anthropic)"}


def make_client(name: str) -> Client:
    return CLIENTS[name]()
