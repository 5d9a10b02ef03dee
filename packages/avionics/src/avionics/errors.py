"""Errors raised by avionics itself. airframe errors pass through unchanged (in attempts/__cause__).

    AvionicsError
     ├── BudgetExceededError   a reservation would take an agent's (or the global) budget over
     │                         its limit; raised before any network I/O
     ├── RateLimitedLocally    a provider's local rpm/tpm/concurrency limit had no room in time
     ├── AttemptFailed         stands in for an attempt that has no exception (a skipped route)
     └── GatewayError          every route failed; an ExceptionGroup of one cause per attempt

Every message says what happened and what to change. No message ever contains an API key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

__all__ = [
    "AttemptFailed",
    "AttemptSummary",
    "AvionicsError",
    "BudgetExceededError",
    "GatewayError",
    "LimitKind",
    "RateLimitedLocally",
    "summarize_attempts",
]

_REASON_MAX_CHARS = 200


class AvionicsError(Exception):
    """Base of every error avionics raises itself."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword arguments; rebuild from the message and attributes instead.
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls: type[AvionicsError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class BudgetExceededError(AvionicsError):
    """Reserving `estimate_usd` would take the budget over `budget_usd` for `period`.

    `scope` is "agent" for the agent's own budget, "global" for the process-wide one.
    """

    def __init__(
        self,
        agent: str,
        *,
        budget_usd: Decimal,
        spent_usd: Decimal,
        estimate_usd: Decimal,
        period: str,
        reserved_usd: Decimal = Decimal(0),
        scope: str = "agent",
    ) -> None:
        self.agent = agent
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.estimate_usd = estimate_usd
        self.period = period
        self.scope = scope
        which = f"agent {agent!r}" if scope == "agent" else f"the global budget (agent {agent!r})"
        fix = f"raise agents.{agent}.budget_usd" if scope == "agent" else "raise the global budget"
        reset = "" if period == "total" else f", wait for the {period} to roll over"
        super().__init__(
            f"Budget exceeded for {which}: ${spent_usd} spent + ${reserved_usd} reserved "
            f"+ ${estimate_usd} estimated > ${budget_usd} per {period}. "
            f"To continue: {fix}{reset}, or lower max_tokens."
        )


class LimitKind(StrEnum):
    """Which local limit ran out."""

    RPM = "rpm"
    TPM = "tpm"
    CONCURRENCY = "concurrency"


class RateLimitedLocally(AvionicsError):
    """A provider's local limit had no room within `max_wait`.

    `retry_after`: seconds until the limit should have room (for concurrency, the seconds waited);
    None when waiting cannot help (a single request larger than the whole tpm limit).
    `waited`: seconds this call already spent waiting before giving up.
    """

    def __init__(
        self,
        provider: str,
        kind: LimitKind | str,
        retry_after: float | None,
        *,
        limit: int | None = None,
        waited: float = 0.0,
        detail: str = "",
    ) -> None:
        self.provider = provider
        self.kind = LimitKind(kind)
        self.retry_after = retry_after
        self.limit = limit
        self.waited = waited
        setting = {
            LimitKind.RPM: "rpm",
            LimitKind.TPM: "tpm",
            LimitKind.CONCURRENCY: "max_concurrency",
        }[self.kind]
        limit_text = f"{setting}={limit}" if limit is not None else setting
        when = "waiting cannot help" if retry_after is None else f"room in {retry_after:.2f}s"
        detail_text = f"{detail}; " if detail else ""
        super().__init__(
            f"Local {self.kind} limit of provider {provider!r} ({limit_text}) is full: "
            f"{detail_text}{when} (waited {waited:.2f}s). "
            f"Raise providers.{provider}.{setting} or the limiter's max_wait, or send less."
        )


@dataclass(frozen=True, slots=True)
class AttemptSummary:
    """One route the gateway tried: where, what kind of failure, and a one-line reason.

    `category` is an airframe `ErrorCategory` value, or an avionics one such as "skipped",
    "budget" or "rate_limited_locally". `error` keeps the original exception when there was one.
    """

    provider: str
    model: str
    node: str | None = None
    category: str | None = None
    reason: str = ""
    error: BaseException | None = None

    @classmethod
    def from_error(
        cls, provider: str, model: str, error: BaseException, *, node: str | None = None
    ) -> AttemptSummary:
        """Build a summary from an exception, reading its `category` when it has one."""
        category = _category_of(error)
        return cls(
            provider=provider,
            model=model,
            node=node,
            category=category,
            reason=_first_line(error, category),
            error=error,
        )

    @classmethod
    def coerce(cls, value: AttemptSummary | Mapping[str, Any]) -> AttemptSummary:
        """Accept a summary or a mapping with the same keys (`error_category` also works)."""
        if isinstance(value, AttemptSummary):
            return value
        error = value.get("error")
        category = value.get("category", value.get("error_category"))
        reason = value.get("reason")
        return cls(
            provider=str(value.get("provider", "?")),
            model=str(value.get("model") or "?"),
            node=None if value.get("node") is None else str(value.get("node")),
            category=str(category) if category is not None else _category_of(error),
            reason=str(reason) if reason else (_first_line(error, category) if error else ""),
            error=error if isinstance(error, BaseException) else None,
        )

    def describe(self) -> str:
        """`provider/model @ node: category: reason`, one line."""
        where = f"{self.provider}/{self.model}"
        if self.node:
            where += f" @ {self.node}"
        what = self.category or "error"
        return f"{where}: {what}: {self.reason}" if self.reason else f"{where}: {what}"


def _category_of(error: object) -> str | None:
    category = getattr(error, "category", None)
    if category is not None:
        return str(category)
    if isinstance(error, RateLimitedLocally):
        return "rate_limited_locally"
    if isinstance(error, BudgetExceededError):
        return "budget"
    return None


def _first_line(error: object, category: object = None) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    prefix = f"{category}: "
    if category is not None and line.startswith(prefix):  # airframe errors lead with it
        line = line.removeprefix(prefix)
    return line if len(line) <= _REASON_MAX_CHARS else line[: _REASON_MAX_CHARS - 1] + "…"


class AttemptFailed(AvionicsError):
    """Stands in, inside a GatewayError, for an attempt that has no exception of its own."""

    def __init__(self, attempt: AttemptSummary) -> None:
        self.attempt = attempt
        super().__init__(attempt.describe())


def _causes(
    message: str, attempts: Sequence[AttemptSummary], errors: Sequence[BaseException]
) -> list[Exception]:
    causes = [error for error in errors if isinstance(error, Exception)]
    if not errors:
        for attempt in attempts:
            if isinstance(attempt.error, Exception):
                causes.append(attempt.error)
            else:
                causes.append(AttemptFailed(attempt))
    if not causes:
        causes.append(AvionicsError(message))
    return causes


def summarize_attempts(attempts: Sequence[AttemptSummary], agent: str | None = None) -> str:
    """The GatewayError message: a headline, then one numbered line per attempt."""
    who = f" for agent {agent!r}" if agent else ""
    if not attempts:
        return f"No route to try{who}: check the agent's profile, fallbacks and providers."
    noun = "route attempt" if len(attempts) == 1 else "route attempts"
    lines = [f"All {len(attempts)} {noun} failed{who}:"]
    lines.extend(f"  {i}. {attempt.describe()}" for i, attempt in enumerate(attempts, 1))
    return "\n".join(lines)


class GatewayError(AvionicsError, ExceptionGroup[Exception]):
    """Every route failed. `attempts` lists them in order; the message has one line per attempt.

    Also an `ExceptionGroup`: `.exceptions` holds the causes (the `errors` given, else each
    attempt's own error or an `AttemptFailed` for one without), so `except* airframe.RateLimitError`
    works; `.errors` is the same tuple. The parts `except*` splits off are plain ExceptionGroups.

        raise GatewayError.from_attempts("planner", summaries, errors)
    """

    attempts: tuple[AttemptSummary, ...]
    agent: str | None

    def __new__(
        cls,
        message: str,
        attempts: Sequence[AttemptSummary | Mapping[str, Any]] = (),
        errors: Sequence[BaseException] = (),
        *,
        agent: str | None = None,
    ) -> Self:
        records = tuple(AttemptSummary.coerce(a) for a in attempts)
        self = super().__new__(cls, message, _causes(message, records, errors))
        self.attempts = records
        self.agent = agent
        return self

    def __init__(
        self,
        message: str,
        attempts: Sequence[AttemptSummary | Mapping[str, Any]] = (),
        errors: Sequence[BaseException] = (),
        *,
        agent: str | None = None,
    ) -> None:
        super().__init__(message, list(self.exceptions))

    @classmethod
    def from_attempts(
        cls,
        agent: str | None,
        attempts: Sequence[AttemptSummary | Mapping[str, Any]],
        errors: Sequence[BaseException] = (),
    ) -> GatewayError:
        """The usual way to build one: the message lists every attempt, one per line."""
        records = [AttemptSummary.coerce(a) for a in attempts]
        return cls(summarize_attempts(records, agent), records, errors, agent=agent)

    @property
    def errors(self) -> tuple[Exception, ...]:
        return self.exceptions

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_gateway_error, (self.message, self.attempts, self.exceptions, self.agent))


def _rebuild_gateway_error(
    message: str,
    attempts: tuple[AttemptSummary, ...],
    errors: tuple[Exception, ...],
    agent: str | None,
) -> GatewayError:
    return GatewayError(message, attempts, errors, agent=agent)
