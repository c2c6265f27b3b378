"""Campaign templates: absent data gives Missing (never an empty string), and a template can reach only its context."""

from __future__ import annotations

from typing import Any

import pytest

from shared.campaigns.template import (
    ERROR_VARIABLE,
    OUTPUT_LIMIT,
    Missing,
    TemplateError,
    check_template,
    contact_context,
    render,
)

GREETING = 'Hi {{ first_name | default: "there" }}'
ALLOWED = "(allowed: if/elsif/else, unless, case/when, comment, raw)"


@pytest.mark.parametrize("context", [{}, {"first_name": None}, {"first_name": ""}], ids=["absent", "null", "empty"])
def test_default_replaces_an_absent_null_or_empty_value(context: dict[str, Any]) -> None:
    assert render(GREETING, context) == "Hi there"


def test_default_keeps_a_present_value() -> None:
    assert render(GREETING, {"first_name": "Ann"}) == "Hi Ann"


@pytest.mark.parametrize("context", [{}, {"first_name": None}, {"first_name": ""}], ids=["absent", "null", "empty"])
def test_a_variable_without_value_or_default_is_missing_not_empty(context: dict[str, Any]) -> None:
    result = render("Hi {{ first_name }}!", context)
    assert result == Missing("first_name")
    assert isinstance(result, Missing)
    assert result.reason == "template_missing:first_name"


def test_a_filter_on_an_absent_variable_is_missing_too() -> None:
    assert render("{{ first_name | upcase }}", {}) == Missing("first_name")
    assert render("{{ tags | join: ', ' }}", {}) == Missing("tags")


def test_a_nested_property_reads_its_root_variable() -> None:
    source = "See you in {{ address.city }}"
    assert check_template(source) == frozenset({"address"})
    assert render(source, {"address": {"city": "Paris"}}) == "See you in Paris"
    assert render(source, {}) == Missing("address")
    assert render(source, {"address": {"city": None}}) == Missing("address")


def test_check_template_returns_every_root_variable() -> None:
    source = '{% if plan == "gold" %}{{ first_name | default: country }}{% endif %}{{ offers[contact_id] }}'
    assert check_template(source) == frozenset({"plan", "first_name", "country", "offers", "contact_id"})


@pytest.mark.parametrize(
    ("context", "expected"),
    [({"first_name": "Ann"}, "Hi Ann, welcome"), ({}, "Hi, welcome"), ({"first_name": None}, "Hi, welcome")],
    ids=["present", "absent", "null"],
)
def test_if_else_renders_both_ways(context: dict[str, Any], expected: str) -> None:
    assert render("Hi{% if first_name %} {{ first_name }}{% else %}{% endif %}, welcome", context) == expected


def test_unless_and_case_when() -> None:
    unless = "{% unless vip %}Upgrade now{% endunless %}"
    assert render(unless, {}) == "Upgrade now"
    assert render(unless, {"vip": True}) == ""
    case = '{% case plan %}{% when "gold" %}Gold{% when "silver" %}Silver{% else %}Free{% endcase %}'
    assert render(case, {"plan": "silver"}) == "Silver"
    assert render(case, {}) == "Free"


def test_comment_and_raw_are_allowed() -> None:
    source = "{% comment %}internal note{% endcomment %}{% # why %}{% raw %}{{ literal }}{% endraw %}"
    assert check_template(source) == frozenset()
    assert render(source, {}) == "{{ literal }}"


@pytest.mark.parametrize(
    "value",
    ["{{ contact_id }}{% include 'x' %}", "'; DROP TABLE message_sends; --", "{{ x.__class__ }}"],
    ids=["liquid", "sql", "internals"],
)
def test_a_value_renders_literally_never_evaluated(value: str) -> None:
    assert render("Hello {{ first_name }}!", {"first_name": value, "contact_id": "c-1"}) == f"Hello {value}!"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% include 'x' %}", f"tag 'include' is not allowed {ALLOWED} (line 1, column 4)"),
        ("Hi {% render 'x' %}", f"tag 'render' is not allowed {ALLOWED} (line 1, column 7)"),
        ("{% for i in (1..3) %}{{ i }}{% endfor %}", f"tag 'for' is not allowed {ALLOWED} (line 1, column 4)"),
        ("{% assign a = 1 %}{{ a }}", f"tag 'assign' is not allowed {ALLOWED} (line 1, column 4)"),
        ("{% capture a %}x{% endcapture %}", f"tag 'capture' is not allowed {ALLOWED} (line 1, column 4)"),
        ("{% cycle 'a', 'b' %}", f"tag 'cycle' is not allowed {ALLOWED} (line 1, column 4)"),
        ("{% increment n %}", f"tag 'increment' is not allowed {ALLOWED} (line 1, column 4)"),
        ("{% liquid echo first_name %}", f"tag 'liquid' is not allowed {ALLOWED} (line 1, column 4)"),
        ("{% echo first_name %}", f"tag 'echo' is not allowed {ALLOWED} (line 1, column 4)"),
    ],
    ids=["include", "render", "for", "assign", "capture", "cycle", "increment", "liquid", "echo"],
)
def test_tags_outside_the_allow_list_are_refused(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(source)
    assert str(caught.value) == message
    with pytest.raises(TemplateError):  # render vets the same way: a refused template never runs
        render(source, {"first_name": "Ann"})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ x.__class__ }}", "'x.__class__': a name starting with '_' is not allowed (line 1, column 4)"),
        ("{{ x['__dict__'] }}", "'x.__dict__': a name starting with '_' is not allowed (line 1, column 4)"),
        ("{{ _secret }}", "'_secret': a name starting with '_' is not allowed (line 1, column 4)"),
        ("{{ a[b._c] }}", "'a[b._c]': a name starting with '_' is not allowed (line 1, column 4)"),
    ],
    ids=["attribute", "bracket", "root", "nested"],
)
def test_names_that_look_like_python_internals_are_refused(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(source)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hi {{ first_name", "syntax error: expected '}}', found end of file (line 1, column 4)"),
        ("Hi\n{% if %}x{% endif %}", "syntax error: missing expression (line 2, column 4)"),
        ("{% if a %}x", "syntax error: expected tag endif, found end of expression (at the end of the template)"),
        ("{% else %}", "syntax error: unexpected tag 'else' (line 1, column 4)"),
    ],
    ids=["unclosed-output", "if-without-expression", "unclosed-if", "stray-else"],
)
def test_syntax_errors_are_refused_with_a_readable_message(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(source)
    assert str(caught.value) == message


def test_unknown_filters_and_ranges_are_refused() -> None:
    with pytest.raises(TemplateError) as caught:
        check_template("{{ first_name | shout }}")
    assert str(caught.value) == "unknown filter 'shout' (line 1, column 17)"
    with pytest.raises(TemplateError) as caught:
        check_template("Hi\n  {{ (1..1000000000) | join }}")
    assert str(caught.value) == "range expressions are not allowed (line 2, column 6)"


def test_output_is_capped() -> None:
    source = "{{ note }}"
    assert render(source, {"note": "a" * OUTPUT_LIMIT}) == "a" * OUTPUT_LIMIT
    assert render(source, {"note": "a" * (OUTPUT_LIMIT + 1)}) == Missing(ERROR_VARIABLE)
    assert render(source, {"note": "é" * (OUTPUT_LIMIT // 2 + 1)}) == Missing(ERROR_VARIABLE)  # bytes, not chars


def test_a_render_error_from_data_is_missing_error_not_an_exception() -> None:
    result = render("{{ points | divided_by: 0 }}", {"points": 10})
    assert result == Missing("<error>")
    assert isinstance(result, Missing)
    assert result.reason == "template_missing:<error>"


def test_contact_context_columns_win_over_properties() -> None:
    context = contact_context(
        {"first_name": "Ann", "contact_id": "spoofed", "country": "XX"}, contact_id="c-1", country="DE", timezone=None
    )
    assert context == {"first_name": "Ann", "contact_id": "c-1", "country": "DE", "timezone": None}
    assert render("{{ first_name }} {{ contact_id }} {{ country }}", context) == "Ann c-1 DE"
    assert render("{{ timezone }}", context) == Missing("timezone")
