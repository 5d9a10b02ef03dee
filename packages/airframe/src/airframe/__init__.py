"""airframe: fast, typed transport to LLM backends (llama.cpp, OpenAI, Azure, Anthropic, Ollama).

    import airframe
    endpoint = airframe.EndpointSpec("http://127.0.0.1:8080", airframe.BackendKind.LLAMA_SERVER)
    result = await airframe.infer(endpoint, airframe.InferenceRequest.from_prompt("Hello"))

Importing airframe does no network I/O; adapters are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._config import BackendKind, EndpointSpec, RetryPolicy, Timeouts
from ._errors import (
    AirframeError,
    AuthError,
    BadRequestError,
    ConnectionError,
    ContentFilterError,
    ContextLengthError,
    ErrorCategory,
    InterruptedError,
    NotFoundError,
    OverloadedError,
    ProtocolError,
    QuotaError,
    RateLimitError,
    ServerError,
    TimeoutError,
)
from ._hooks import AttemptInfo, TransportHooks
from ._types import (
    FinishReason,
    ImagePart,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    Message,
    ResponseFormat,
    StreamEventType,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
)
from .adapters._base import BackendAdapter, HealthStatus

if TYPE_CHECKING:
    from ._calls import infer, infer_sync, stream_infer, stream_infer_sync
    from ._pool import aclose_all
    from .adapters._registry import available_backends, get_adapter

# Names whose modules pull in httpx and asyncio load on first use: `import airframe` stays cheap.
_LAZY: dict[str, str] = {
    "aclose_all": "airframe._pool",
    "available_backends": "airframe.adapters._registry",
    "get_adapter": "airframe.adapters._registry",
    "infer": "airframe._calls",
    "infer_sync": "airframe._calls",
    "stream_infer": "airframe._calls",
    "stream_infer_sync": "airframe._calls",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'airframe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "AirframeError",
    "AttemptInfo",
    "AuthError",
    "BackendAdapter",
    "BackendKind",
    "BadRequestError",
    "ConnectionError",
    "ContentFilterError",
    "ContextLengthError",
    "EndpointSpec",
    "ErrorCategory",
    "FinishReason",
    "HealthStatus",
    "ImagePart",
    "InferenceRequest",
    "InferenceResult",
    "InferenceStreamEvent",
    "InterruptedError",
    "Message",
    "NotFoundError",
    "OverloadedError",
    "ProtocolError",
    "QuotaError",
    "RateLimitError",
    "ResponseFormat",
    "RetryPolicy",
    "ServerError",
    "StreamEventType",
    "TextPart",
    "TimeoutError",
    "Timeouts",
    "ToolCall",
    "ToolSpec",
    "TransportHooks",
    "Usage",
    "__version__",
    "aclose_all",
    "available_backends",
    "get_adapter",
    "infer",
    "infer_sync",
    "stream_infer",
    "stream_infer_sync",
]
