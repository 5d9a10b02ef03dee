"""The one error taxonomy of airframe.

Every failure a caller sees is an `AirframeError` whose `category` says what went wrong, whatever
the backend or the HTTP library said. Retry (airframe) and fallback (avionics) read the category,
never message text.

    AirframeError
    ├── RateLimitError          rate_limit       retryable
    ├── QuotaError              quota            (spend or billing limit; never retried)
    ├── AuthError               auth
    ├── NotFoundError           not_found
    ├── ContextLengthError      context_length   (.prompt_tokens, .context_window)
    ├── ContentFilterError      content_filter
    ├── BadRequestError         bad_request
    ├── TimeoutError            timeout          retryable
    ├── ConnectionError         connection       retryable
    ├── ServerError             server           retryable
    ├── OverloadedError         overloaded       retryable
    ├── ProtocolError           protocol         (malformed or truncated stream, wrong content type)
    └── InterruptedError        interrupted      (stream broke after output began; .partial,
                                                  the original typed error is __cause__)

`TimeoutError`, `ConnectionError` and `InterruptedError` shadow builtins inside this module only;
import them as `airframe.TimeoutError` etc. They are not subclasses of the builtins.
"""

from __future__ import annotations

import builtins
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._types import InferenceResult

__all__ = [
    "AirframeError",
    "AuthError",
    "BadRequestError",
    "ConnectionError",
    "ContentFilterError",
    "ContextLengthError",
    "ErrorCategory",
    "InterruptedError",
    "NotFoundError",
    "OverloadedError",
    "ProtocolError",
    "QuotaError",
    "RateLimitError",
    "ServerError",
    "TimeoutError",
    "error_class",
]


class ErrorCategory(StrEnum):
    RATE_LIMIT = "rate_limit"
    QUOTA = "quota"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"
    CONTENT_FILTER = "content_filter"
    BAD_REQUEST = "bad_request"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER = "server"
    OVERLOADED = "overloaded"
    PROTOCOL = "protocol"
    INTERRUPTED = "interrupted"


RETRYABLE_CATEGORIES = frozenset(
    {
        ErrorCategory.RATE_LIMIT,
        ErrorCategory.TIMEOUT,
        ErrorCategory.CONNECTION,
        ErrorCategory.SERVER,
        ErrorCategory.OVERLOADED,
    }
)


class AirframeError(Exception):
    """Base of every airframe error. Never contains an API key."""

    category: ErrorCategory = ErrorCategory.SERVER

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        backend: str | None = None,
        endpoint: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        partial: InferenceResult | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.backend = backend
        self.endpoint = endpoint
        self.request_id = request_id
        self.retry_after = retry_after
        self.partial = partial
        self.body = body

    @property
    def retryable(self) -> bool:
        """Whether this kind of failure is worth trying again (also after retries ran out)."""
        return self.category in RETRYABLE_CATEGORIES

    def __str__(self) -> str:
        where = " ".join(
            p
            for p in (
                f"[{self.backend}]" if self.backend else "",
                self.endpoint or "",
                f"HTTP {self.status_code}" if self.status_code is not None else "",
            )
            if p
        )
        tail = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.category.value}: {self.message}" + (f" — {where}" if where else "") + tail

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, category={self.category.value!r}, "
            f"status_code={self.status_code!r}, backend={self.backend!r}, "
            f"endpoint={self.endpoint!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[AirframeError], message: str, state: dict[str, Any]) -> AirframeError:
    err = cls.__new__(cls)
    builtins.Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class RateLimitError(AirframeError):
    category = ErrorCategory.RATE_LIMIT


class QuotaError(AirframeError):
    category = ErrorCategory.QUOTA


class AuthError(AirframeError):
    category = ErrorCategory.AUTH


class NotFoundError(AirframeError):
    category = ErrorCategory.NOT_FOUND


class ContextLengthError(AirframeError):
    category = ErrorCategory.CONTEXT_LENGTH

    def __init__(
        self,
        message: str,
        *,
        prompt_tokens: int | None = None,
        context_window: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window


class ContentFilterError(AirframeError):
    category = ErrorCategory.CONTENT_FILTER


class BadRequestError(AirframeError):
    category = ErrorCategory.BAD_REQUEST


class TimeoutError(AirframeError):
    category = ErrorCategory.TIMEOUT


class ConnectionError(AirframeError):
    category = ErrorCategory.CONNECTION


class ServerError(AirframeError):
    category = ErrorCategory.SERVER


class OverloadedError(AirframeError):
    category = ErrorCategory.OVERLOADED


class ProtocolError(AirframeError):
    category = ErrorCategory.PROTOCOL


class InterruptedError(AirframeError):
    category = ErrorCategory.INTERRUPTED


_BY_CATEGORY: dict[ErrorCategory, type[AirframeError]] = {
    cls.category: cls
    for cls in (
        RateLimitError,
        QuotaError,
        AuthError,
        NotFoundError,
        ContextLengthError,
        ContentFilterError,
        BadRequestError,
        TimeoutError,
        ConnectionError,
        ServerError,
        OverloadedError,
        ProtocolError,
        InterruptedError,
    )
}


def error_class(category: ErrorCategory) -> type[AirframeError]:
    """The exception class for a category."""
    return _BY_CATEGORY[category]
