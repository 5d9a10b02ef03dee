"""Which routes a call may try, and whether a failure moves it on to the next one.

Decisions read `ErrorCategory`, never message text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from airframe import AirframeError, ContextLengthError, ErrorCategory

__all__ = ["DEFAULT_STOP_ON", "Needs", "RouteCapabilities", "moves_on", "skip_reason"]

DEFAULT_STOP_ON = frozenset({ErrorCategory.BAD_REQUEST, ErrorCategory.CONTENT_FILTER})


@dataclass(frozen=True, slots=True)
class Needs:
    """What a request requires of a route."""

    vision: bool = False
    tools: bool = False
    json_schema: bool = False
    min_context_window: int | None = None  # set after a context_length failure


@dataclass(frozen=True, slots=True)
class RouteCapabilities:
    vision: bool = True
    tools: bool = True
    json_schema: bool = True
    context_window: int | None = None  # None: unknown


def skip_reason(caps: RouteCapabilities, needs: Needs) -> str | None:
    """Why a route cannot serve a request, or None when it can."""
    if needs.vision and not caps.vision:
        return "no vision support"
    if needs.tools and not caps.tools:
        return "no tool support"
    if needs.json_schema and not caps.json_schema:
        return "no json_schema support"
    if needs.min_context_window is not None and (
        caps.context_window is None or caps.context_window <= needs.min_context_window
    ):
        return f"context window not larger than {needs.min_context_window}"
    return None


def moves_on(error: BaseException, stop_on: Iterable[ErrorCategory] = DEFAULT_STOP_ON) -> bool:
    """Whether a failed attempt falls back to the next route (False: the error surfaces)."""
    if not isinstance(error, AirframeError):
        return False
    if error.category is ErrorCategory.INTERRUPTED:
        return False
    return error.category not in set(stop_on)


def after_context_error(needs: Needs, error: AirframeError, window: int | None) -> Needs:
    """Needs for the next route after a context_length failure: a strictly larger window."""
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
    return Needs(needs.vision, needs.tools, needs.json_schema, floor)
