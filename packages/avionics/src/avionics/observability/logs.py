"""structlog processors for applications: trace ids on every event, secrets masked.

Plain callables (`processor(logger, method_name, event_dict) -> event_dict`); avionics never
installs them itself. Add them to your own `structlog.configure(processors=[...])`, or call
`avionics.observability.configure_logging()` which does it for you:

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_trace_context,
        structlog.processors.format_exc_info,
        redact_secrets,                     # after format_exc_info: tracebacks are scanned too
        structlog.processors.JSONRenderer(),
    ])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import trace

__all__ = ["MASK", "add_trace_context", "redact_secrets", "redact_text", "trace_ids"]

MASK = "***"

_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "api_token",
        "authorization",
        "proxy_authorization",
        "auth",
        "bearer",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "cookie",
        "set_cookie",
    }
)
_SECRET_SUFFIXES = ("_api_key", "_apikey", "_secret", "_password", "_access_token")

# Values that look like credentials wherever they appear in a string.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token> / Basic <b64>
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/\-]+=*"), r"\1 " + MASK),
    # key=value / "api_key": "value" / x-api-key: value
    (
        re.compile(
            r"(?i)((?:x[-_])?api[-_]?key|access[-_]token|client[-_]secret|password)"
            r"([\"']?\s*[:=]\s*[\"']?)([^\s\"',;&]{4,})"
        ),
        r"\1\2" + MASK,
    ),
    # Provider key formats: OpenAI sk-/sk-proj-, Anthropic sk-ant-, Groq gsk_, xAI, HF, Google.
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"), "sk-" + MASK),
    (re.compile(r"\bgsk_[A-Za-z0-9]{16,}"), "gsk_" + MASK),
    (re.compile(r"\bxai-[A-Za-z0-9]{16,}"), "xai-" + MASK),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), "hf_" + MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "AIza" + MASK),
    # Credentials in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*):[^@\s/]+@"), r"\1:" + MASK + "@"),
)
_HINTS = ("sk-", "gsk_", "xai-", "hf_", "aiza", "@", "bearer", "basic", "key", "token", "secret",
          "password")  # fmt: skip


def redact_text(text: str) -> str:
    """`text` with anything that looks like a credential replaced by `***`."""
    lowered = text.lower()
    if not any(h in lowered for h in _HINTS):  # the common case: nothing to scan for
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def _redact(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth >= 4:
        return value
    if isinstance(value, Mapping):
        return {
            k: (MASK if _is_secret_key(k) and v is not None else _redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact(v, depth + 1) for v in value)
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask API keys, bearer tokens and passwords in an event dict.

    Values under secret-looking keys (`api_key`, `authorization`, `password`, `token`, ...) are
    replaced whole; every other string (the event, error messages, formatted tracebacks, nested
    dicts and lists) has credential-shaped substrings masked.
    """
    for key, value in event_dict.items():
        if _is_secret_key(key) and value is not None:
            event_dict[key] = MASK
        elif isinstance(value, str | Mapping | list | tuple):
            event_dict[key] = _redact(value)
    return event_dict


def trace_ids(span: trace.Span | None = None) -> tuple[str, str] | None:
    """(trace_id, span_id) in W3C hex of `span` (default: the current span), None if invalid."""
    ctx = (span if span is not None else trace.get_current_span()).get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add `trace_id` and `span_id` of the current span (when there is one
    and the event does not carry its own, as avionics' call events do)."""
    if "trace_id" not in event_dict:
        ids = trace_ids()
        if ids is not None:
            event_dict["trace_id"], event_dict["span_id"] = ids
    return event_dict
