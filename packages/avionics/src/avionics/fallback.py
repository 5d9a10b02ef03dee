"""Which routes a call may try, and whether a failure moves it on to the next one.

Decisions read `ErrorCategory`, never message text:

- rate_limit, quota, overloaded, server, timeout, connection, not_found, auth and protocol move
  on; so does `RateLimitedLocally` (this process's own limit for that provider);
- the categories in `stop_on` (default bad_request and content_filter: another route would refuse
  the same request) end the chain and the error surfaces;
- context_length moves on only to routes whose known context window is larger;
- interrupted ends the chain once output reached the caller (a stream cannot be spliced); a
  stream cut before any chunk reached the caller is judged by the error that cut it.

Routes lacking a capability the request needs are skipped without an attempt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from airframe import AirframeError, ContextLengthError, ErrorCategory

from .errors import RateLimitedLocally

__all__ = [
    "DEFAULT_STOP_ON",
    "Needs",
    "RouteCapabilities",
    "after_context_error",
    "moves_on",
    "skip_reason",
]

DEFAULT_STOP_ON = frozenset({ErrorCategory.BAD_REQUEST, ErrorCategory.CONTENT_FILTER})


@dataclass(frozen=True, slots=True)
class Needs:
    """What a request requires of a route."""

    vision: bool = False
    tools: bool = False
    json_schema: bool = False
    min_context_window: int | None = None  # set after a context_length failure
    image_urls: bool = False  # images given by URL (some protocols take bytes only)


@dataclass(frozen=True, slots=True)
class RouteCapabilities:
    vision: bool = True
    tools: bool = True
    json_schema: bool = True
    context_window: int | None = None  # None: unknown
    image_urls: bool = True


def skip_reason(caps: RouteCapabilities, needs: Needs) -> str | None:
    """Why a route cannot serve a request, or None when it can."""
    if needs.vision and not caps.vision:
        return "no vision support"
    if needs.image_urls and not caps.image_urls:
        return "takes image bytes only, not image URLs"
    if needs.tools and not caps.tools:
        return "no tool support"
    if needs.json_schema and not caps.json_schema:
        return "no json_schema support"
    if needs.min_context_window is not None and (
        caps.context_window is None or caps.context_window <= needs.min_context_window
    ):
        return f"context window not known to be larger than {needs.min_context_window}"
    return None


def moves_on(
    error: BaseException,
    stop_on: Iterable[ErrorCategory] = DEFAULT_STOP_ON,
    *,
    delivered: bool = False,
) -> bool:
    """Whether a failed attempt falls back to the next route (False: the error surfaces).

    `delivered`: output of this attempt already reached the caller (a stream)."""
    if isinstance(error, RateLimitedLocally):
        return True
    if not isinstance(error, AirframeError):
        return False
    category = error.category
    if category is ErrorCategory.INTERRUPTED:
        if delivered or not isinstance(error.__cause__, AirframeError):
            return False
        category = error.__cause__.category
    return category not in set(stop_on)


def after_context_error(needs: Needs, error: AirframeError, window: int | None) -> Needs:
    """Needs for the next route after a context_length failure: a strictly larger window than
    the failing route's (as the backend reported it, else as settings say, else the prompt)."""
    reported = error if isinstance(error, ContextLengthError) else None
    floor = (
        (reported.context_window if reported else None)
        or window
        or (reported.prompt_tokens if reported else None)
    )
    if floor is None:
        floor = 0
    if needs.min_context_window is not None:
        floor = max(floor, needs.min_context_window)
    return Needs(needs.vision, needs.tools, needs.json_schema, floor, needs.image_urls)
