"""Backend adapters: one module per wire dialect, loaded on first use by `get_adapter`."""

from ._base import (
    BackendAdapter,
    Capabilities,
    ErrorInfo,
    HealthStatus,
    StreamFormat,
    StreamParser,
    WireRequest,
)
from ._registry import available_backends, get_adapter  # importlib.metadata only

__all__ = [
    "BackendAdapter",
    "Capabilities",
    "ErrorInfo",
    "HealthStatus",
    "StreamFormat",
    "StreamParser",
    "WireRequest",
    "available_backends",
    "get_adapter",
]
