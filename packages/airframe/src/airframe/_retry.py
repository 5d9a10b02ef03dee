"""Retry rules: which failures are retried, and after how long. One owner: the transport."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from ._config import RetryPolicy
from ._errors import AirframeError, ErrorCategory

__all__ = ["parse_retry_after", "retry_delay"]

_STATUS_CATEGORY: dict[int, ErrorCategory] = {
    400: ErrorCategory.BAD_REQUEST,
    401: ErrorCategory.AUTH,
    403: ErrorCategory.AUTH,
    404: ErrorCategory.NOT_FOUND,
    408: ErrorCategory.TIMEOUT,
    409: ErrorCategory.SERVER,
    413: ErrorCategory.BAD_REQUEST,
    422: ErrorCategory.BAD_REQUEST,
    429: ErrorCategory.RATE_LIMIT,
    500: ErrorCategory.SERVER,
    502: ErrorCategory.SERVER,
    503: ErrorCategory.OVERLOADED,
    504: ErrorCategory.TIMEOUT,
    529: ErrorCategory.OVERLOADED,
}


def status_category(status: int) -> ErrorCategory:
    """The category of an HTTP status when the body says nothing more specific."""
    found = _STATUS_CATEGORY.get(status)
    if found is not None:
        return found
    return ErrorCategory.SERVER if status >= 500 else ErrorCategory.BAD_REQUEST


def _positive_seconds(value: float) -> float | None:
    if math.isnan(value) or value <= 0:
        return None
    return value


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms` wins over `retry-after`.

    `retry-after` may be seconds or an HTTP date. Zero, negative, NaN and unparseable values give
    None (use backoff). Infinity is returned as is (it exceeds any `max_retry_after`).
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            found = _positive_seconds(float(raw_ms) / 1000.0)
        except ValueError:
            found = None
        if found is not None:
            return found
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return _positive_seconds(float(raw))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # only for HTTP-date values (rare)

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return _positive_seconds(when.timestamp() - time.time())


def retry_delay(
    error: AirframeError,
    should_retry_header: str | None,
    retries_done: int,
    policy: RetryPolicy,
) -> float | None:
    """Seconds to wait before the next attempt, or None when `error` must surface now."""
    if retries_done >= policy.max_retries:
        return None
    if error.category in (ErrorCategory.QUOTA, ErrorCategory.PROTOCOL, ErrorCategory.INTERRUPTED):
        return None
    flag = should_retry_header.strip().lower() if should_retry_header else ""
    if flag == "false":
        return None
    if flag != "true" and not error.retryable:
        return None
    if error.retry_after is not None:
        if error.retry_after > policy.max_retry_after:
            return None
        return error.retry_after
    return policy.backoff(retries_done)
