"""Endpoint configuration: where a backend lives, how to authenticate, how long to wait, retries."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["BackendKind", "EndpointSpec", "RetryPolicy", "Timeouts"]


class BackendKind(StrEnum):
    """The wire dialects airframe speaks. OpenAI-compatible services are `openai` + `base_url`."""

    OPENAI = "openai"
    AZURE_OPENAI = "azure_openai"
    ANTHROPIC = "anthropic"
    LLAMA_SERVER = "llama_server"
    OLLAMA = "ollama"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. `read` is the longest gap between two received bytes, not the whole response.

    `total` bounds a whole call including retries' waiting; `first_token` bounds the wait for the
    first streamed event of an attempt. `None` disables a bound.
    """

    connect: float = 5.0
    read: float = 120.0
    write: float = 30.0
    pool: float = 30.0
    total: float | None = None
    first_token: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool", "total", "first_token"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"Timeouts.{name} must be a positive number of seconds or None")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; server-requested delays are honoured up to a bound."""

    max_retries: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: tuple[float, float] = (0.75, 1.0)
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("RetryPolicy.max_retries must be >= 0")
        lo, hi = self.jitter
        if not 0 <= lo <= hi:
            raise ValueError("RetryPolicy.jitter must be (low, high) with 0 <= low <= high")

    def backoff(self, retry_index: int) -> float:
        """The delay before retry number `retry_index` (0-based) when the server named none."""
        base = min(self.max_delay, self.initial_delay * (2.0**retry_index))
        return base * random.uniform(*self.jitter)


def _default_name(base_url: str) -> str:
    parts = urlsplit(base_url)
    return parts.netloc.rsplit("@", 1)[-1] or base_url


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One backend endpoint. The API key never appears in `repr`, logs, spans or errors.

    `base_url` is what the official SDKs take: OpenAI and compatibles include `/v1`
    (`https://api.openai.com/v1`); Anthropic is the root; llama-server, Ollama and Azure are the
    server or resource root.
    """

    base_url: str
    backend_kind: BackendKind | str  # a BackendKind, or a plug-in adapter's registered name
    name: str = ""
    api_key: str | None = field(default=None, repr=False)
    api_type: Literal["native", "openai"] = "native"
    api_version: str | None = None
    deployment: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        kind: BackendKind | str
        try:
            kind = BackendKind(self.backend_kind)
        except ValueError:
            # A third-party adapter registered under the `airframe.adapters` entry-point group.
            from .adapters._registry import available_backends

            known = available_backends()
            if str(self.backend_kind) not in known:
                raise ValueError(
                    f"unknown backend_kind {self.backend_kind!r}; use one of: {', '.join(known)}"
                ) from None
            kind = str(self.backend_kind)
        object.__setattr__(self, "backend_kind", kind)
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"base_url {self.base_url!r} must be an absolute http(s) URL, "
                "e.g. http://127.0.0.1:8080 or https://api.openai.com/v1"
            )
        if parts.username or parts.password:
            raise ValueError("base_url must not carry credentials; pass api_key= instead")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not self.name:
            object.__setattr__(self, "name", _default_name(self.base_url))
        if self.api_type not in ("native", "openai"):
            raise ValueError("api_type must be 'native' or 'openai'")

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int | None:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)
