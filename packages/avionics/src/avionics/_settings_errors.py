"""Settings errors: every problem names the file, the key and the fix."""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ValidationError,
)

# --------------------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class SettingsIssue:
    """One problem: the key path, what is wrong, how to fix it, and the env var that set it."""

    key: str
    problem: str
    fix: str = ""
    env_var: str | None = None

    def __str__(self) -> str:
        where = f"{self.key} (set by {self.env_var})" if self.env_var else self.key
        text = f"{where}: {self.problem}" if where else self.problem
        return f"{text}. Fix: {self.fix}" if self.fix else text


class SettingsError(ValueError):
    """Invalid or incomplete avionics settings. `issues` lists every problem found."""

    def __init__(
        self,
        issues: str | SettingsIssue | Sequence[SettingsIssue],
        *,
        source: Path | None = None,
    ) -> None:
        if isinstance(issues, str):  # a plain message (also what unpickling passes back)
            issues = SettingsIssue("", issues)
        self.issues: tuple[SettingsIssue, ...] = (
            (issues,) if isinstance(issues, SettingsIssue) else tuple(issues)
        )
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" in {self.source}" if self.source else ""
        if len(self.issues) == 1:
            prefix = f"invalid avionics settings{where}: " if self.source else ""
            return prefix + str(self.issues[0])
        lines = [f"invalid avionics settings{where} ({len(self.issues)} problems):"]
        lines += [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)

    def one_line(self) -> str:
        """The whole error on one line (for CLIs)."""
        where = f"invalid avionics settings in {self.source}: " if self.source else ""
        return where + "; ".join(str(issue) for issue in self.issues)


class _AliasCycleError(SettingsError):
    def __init__(self, issue: SettingsIssue, members: frozenset[str]) -> None:
        super().__init__(issue)
        self.members = members


def did_you_mean(word: str, candidates: Sequence[str] | Any) -> str:
    """` (did you mean 'x'?)` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choices(names: Any) -> str:
    listed = ", ".join(sorted(str(n) for n in names))
    return listed or "(none defined)"


# ------------------------------------------------------------------------------- error helpers


def _key(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'


def _join(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        piece = _key(part)
        text += piece if piece.startswith("[") or not text else "." + piece
    return text


def _unknown(what: str, name: str, defined: Any, key: str) -> SettingsIssue:
    return SettingsIssue(
        key,
        f"unknown {what} {name!r}{did_you_mean(name, defined)}",
        f"use one of the defined {what}s: {_choices(defined)}",
    )


def _case_collisions(section: str, entries: dict[str, Any]) -> list[SettingsIssue]:
    seen: dict[str, str] = {}
    issues = []
    for name in entries:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            issues.append(
                SettingsIssue(
                    f"{section}.{_key(name)}",
                    f"{name!r} and {other!r} differ only in case",
                    f"use one lowercase name ({name.lower()!r}): env variables address "
                    "lowercase names",
                )
            )
    return issues


def _with_env(issue: SettingsIssue) -> SettingsIssue:
    """Name the AVIONICS_* variable that set this key (or a parent table), if one did."""
    parts = [p for p in re.split(r"\.|\[\d+\]", issue.key.replace('"', "")) if p]
    env = {k.upper(): k for k in os.environ}
    for length in range(len(parts), 0, -1):
        name = "AVIONICS_" + "__".join(parts[:length]).upper()
        if name in env:
            return replace(issue, env_var=env[name])
    return issue


def _fields_at(loc: Sequence[str | int]) -> list[str]:
    """Field names of the settings table at `loc`, for did-you-mean on unknown keys."""
    from .settings import AvionicsSettings

    tp: Any = AvionicsSettings
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            models = [m for m in members if _is_model(_unwrap(m))]
            tp = models[0] if models else members[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


_SECRETISH = re.compile(r"api_key|headers|redis_url|secret|password", re.IGNORECASE)


def _settings_error(exc: ValidationError, source: Path | None) -> SettingsError:
    issues: list[SettingsIssue] = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        if len(loc) >= 3 and loc[0] == "profiles" and loc[2] in ("alias", "profile"):
            del loc[2]
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, SettingsError):
            prefix = _join(loc)
            for issue in inner.issues:
                key = ".".join(p for p in (prefix, issue.key) if p)
                issues.append(replace(issue, key=key))
            continue
        key = _join(loc)
        if err["type"] == "extra_forbidden":
            valid = _fields_at(loc[:-1])
            issues.append(
                SettingsIssue(
                    key,
                    f"unknown key {str(loc[-1])!r}{did_you_mean(str(loc[-1]), valid)}",
                    f"remove it; valid keys here: {_choices(valid)}",
                )
            )
            continue
        if err["type"] == "missing":
            issues.append(SettingsIssue(key, "required key is missing", f"add {loc[-1]} = ..."))
            continue
        value = err.get("input")
        shown = ""
        if isinstance(value, str | int | float | bool) and not _SECRETISH.search(key):
            shown = f" (got {value!r})" if len(repr(value)) <= 60 else ""
        issues.append(SettingsIssue(key, f"{err['msg']}{shown}", "set a valid value"))
    return SettingsError([_with_env(issue) for issue in issues], source=source)
