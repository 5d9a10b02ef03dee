"""Prompt templates: `{{var}}` substitution; a missing variable is an error, never left in."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from avionics import TemplateError, render_template


def test_variables_are_substituted() -> None:
    assert render_template("Hi {{name}}!", {"name": "Ada"}) == "Hi Ada!"
    assert render_template("{{ a }}+{{b}}={{ c }}", {"a": 1, "b": 2, "c": 3}) == "1+2=3"


def test_dotted_names_reach_into_mappings_and_attributes() -> None:
    @dataclass
    class User:
        name: str

    values = {"user": User("Grace"), "team": {"lead": {"name": "Linus"}}}
    assert render_template("{{user.name}} and {{team.lead.name}}", values) == "Grace and Linus"


def test_missing_variables_are_all_named() -> None:
    with pytest.raises(TemplateError) as info:
        render_template("{{a}} {{b}} {{a}} {{c.d}}", {"c": {}})
    assert info.value.missing == ["a", "b", "c.d"]
    assert "a, b, c.d" in str(info.value)
    assert "vars=" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_text_without_placeholders_is_unchanged() -> None:
    assert render_template("no {braces} here {{ }}", None) == "no {braces} here {{ }}"


def test_values_are_not_rendered_again() -> None:
    assert render_template("{{x}}", {"x": "{{y}}"}) == "{{y}}"
