"""Prompt templates with `{{var}}` placeholders. A missing variable is an error, never left in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["TemplateError", "render_template"]

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")


class TemplateError(ValueError):
    """A template names variables that were not given."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        names = ", ".join(missing)
        super().__init__(f"template variables not provided: {names} (pass them in vars=)")


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    current: Any = values
    for part in dotted.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif hasattr(current, part) and not isinstance(current, Mapping):
            current = getattr(current, part)
        else:
            raise KeyError(dotted)
    return current


def render_template(template: str, vars: Mapping[str, Any] | None = None) -> str:
    """Replace each `{{name}}` (or `{{obj.attr}}`) with its value from `vars`."""
    values = vars or {}
    missing: list[str] = []

    def sub(match: re.Match[str]) -> str:
        try:
            return str(_lookup(values, match.group(1)))
        except KeyError:
            missing.append(match.group(1))
            return match.group(0)

    rendered = _VAR.sub(sub, template)
    if missing:
        raise TemplateError(sorted(set(missing)))
    return rendered
