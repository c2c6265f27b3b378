"""Audience files: the model names the field that is wrong, and the compiler puts every value in a parameter."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from shared.campaigns.audience import Audience, AudienceError, compile_audience, load_audience
from shared.warehouse.schema import USERS_LATEST_COLUMNS

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
INJECTION = "x'; DROP TABLE events; --"
ISSUE_EXAMPLE = """\
name: with-token
where:
  push_token: {exists: true}
  country: {in: [DE, FR]}
did:    [{event: Product Viewed, within_days: 30, at_least: 1}]
did_not: [{event: Order Completed, within_days: 7}]
"""


def test_the_issues_minimum_file_loads_from_yaml_and_json(tmp_path: Path) -> None:
    # GIVEN the issue's example as YAML, and the same definition as JSON
    yaml_file = tmp_path / "a.yaml"
    yaml_file.write_text(ISSUE_EXAMPLE)
    audience = load_audience(yaml_file)
    json_file = tmp_path / "a.json"
    json_file.write_text(audience.to_json())
    # THEN both read the same, and what is stored reads back as it was
    assert load_audience(json_file) == audience == Audience.from_json(audience.to_json())
    assert audience.did[0].event == "Product Viewed" and audience.did_not[0].within_days == 7
    assert audience.where["country"].in_ == ["DE", "FR"]


@pytest.mark.parametrize(
    ("definition", "says"),
    [
        ({"name": "a", "where": {"favourite_colour": {"eq": "x"}}}, "where: unknown field 'favourite_colour'"),
        ({"name": "a", "where": {"country": {"like": "D%"}}}, "where.country.like: Extra inputs are not permitted"),
        ({"name": "a", "where": {"country": {}}}, "where.country: give at least one of"),
        ({"name": "a", "where": {"country": None}}, "where.country: give at least one of"),
        ({"name": "a", "activity": {"eq": None}}, "activity: give eq, ne or in"),
        ({"name": "a", "did": [{"event": "E", "within_days": 3, "between": ["2025-01-01", "2025-01-02"]}]},
         "did.0: give within_days or between, not both"),
        ({"name": "a", "did": [{"event": "E", "at_least": 0}]}, "did.0.at_least: Input should be greater than or equal"),
        ({"name": "a", "did_not": [{"within_days": 3}]}, "did_not.0.event: Field required"),
        ({"name": "a", "activity": {"in": ["sleepy"]}}, "activity.in.0: Input should be 'dormant'"),
        ({"name": "A B"}, "name: String should match pattern"),
        ({"name": "a", "where": {'properties.a"b': {"exists": True}}}, "where: property key 'a\"b'"),
    ],
)
def test_a_bad_definition_names_the_field(definition: dict[str, object], says: str, tmp_path: Path) -> None:
    import json

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(definition))
    with pytest.raises(AudienceError) as caught:
        load_audience(path)
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name: a\n")
    with pytest.raises(AudienceError, match="is a mapping"):
        load_audience(path)


def test_shorthands_mean_eq_and_in() -> None:
    audience = Audience.model_validate({"name": "a", "where": {"country": "DE", "timezone": ["Europe/Berlin"]},
                                        "activity": "high"})  # fmt: skip
    assert audience.where["country"].eq == "DE" and audience.where["timezone"].in_ == ["Europe/Berlin"]
    assert audience.activity is not None and audience.activity.eq == "high"


def _every_string_literal(sql: str) -> list[str]:
    return re.findall(r"'[^']*'", sql)


def test_values_only_ever_reach_the_query_as_parameters() -> None:
    # GIVEN a definition whose every value, event name and key looks like SQL
    audience = Audience.model_validate({
        "name": "evil",
        "where": {"country": {"in": ["DE", INJECTION]}, "timezone": {"ne": INJECTION},
                  f"properties.{INJECTION}": {"eq": INJECTION}},
        "did": [{"event": INJECTION, "metadata": {INJECTION: {"gt": 1}}, "within_days": 30}],
        "did_not": [{"event": "Order Completed; DELETE FROM users", "at_least": 2}],
    })  # fmt: skip
    # WHEN it is compiled
    compiled = compile_audience(audience, NOW)
    # THEN none of that text is in the SQL: each is a parameter, and the SQL has only the compiler's literals
    for text in (INJECTION, "DROP", "DELETE", "Order Completed"):
        assert text not in compiled.sql
    assert set(_every_string_literal(compiled.sql)) == set()
    values = list(compiled.params.values())
    assert INJECTION in values and "Order Completed; DELETE FROM users" in values
    assert f'$."{INJECTION}"' in values  # the property key is the path parameter's value
    placeholders = set(re.findall(r"@(p\d+)", compiled.sql))
    assert placeholders == set(compiled.params)


def test_each_condition_compiles_to_its_comparison() -> None:
    audience = Audience.model_validate({
        "name": "a",
        "where": {"push_token": {"exists": True}, "country": {"in": ["DE", "FR"]},
                  "properties.plan_level": {"between": [2, 5]}, "properties.vip": {"eq": True},
                  "properties.tier": {"ne": "gold"}},
        "did": [{"event": "Product Viewed", "within_days": 30, "at_least": 3}],
        "did_not": [{"event": "Order Completed", "between": ["2025-01-01", "2025-01-31"]}],
        "activity": {"in": ["medium", "high"]},
    })  # fmt: skip
    compiled = compile_audience(audience, NOW)
    p = compiled.params
    assert "(u.push_token IS NOT NULL)" in compiled.sql
    assert "u.country IN (@p0, @p1)" in compiled.sql and (p["p0"], p["p1"]) == ("DE", "FR")
    assert "SAFE_CAST(JSON_VALUE(u.properties, @p2) AS FLOAT64) >= @p3" in compiled.sql
    assert (p["p2"], p["p3"], p["p4"]) == ('$."plan_level"', 2.0, 5.0)
    assert "JSON_VALUE(u.properties, @p5) = @p6" in compiled.sql and p["p6"] == "true"
    assert "(JSON_VALUE(u.properties, @p7) IS NULL OR JSON_VALUE(u.properties, @p7) != @p8)" in compiled.sql
    assert "u.contact_id IN (SELECT contact_id FROM events_deduped WHERE event_name = @p9 AND timestamp >= @p10 " \
           "GROUP BY contact_id HAVING COUNT(*) >= @p11)" in compiled.sql  # fmt: skip
    assert p["p10"] == NOW - timedelta(days=30) and p["p11"] == 3
    assert "u.contact_id NOT IN (SELECT contact_id FROM events_deduped WHERE event_name = @p12" in compiled.sql
    assert p["p13"] == datetime(2025, 1, 1, tzinfo=UTC) and p["p14"] == datetime(2025, 2, 1, tzinfo=UTC)  # whole day
    assert "a.activity IN (@p16, @p17)" in compiled.sql and (p["p16"], p["p17"]) == ("medium", "high")


def test_an_empty_audience_is_every_contact() -> None:
    compiled = compile_audience(Audience(name="all"), NOW)
    assert compiled.sql.endswith("WHERE TRUE") and compiled.params == {}


def test_an_unknown_column_is_a_clear_error_even_past_the_model() -> None:
    # GIVEN a definition built without validation (as code could): the compiler still checks against the schema
    audience = Audience.model_construct(name="a", where={"nickname); DROP TABLE x; --": Audience.model_validate(
        {"name": "b", "where": {"country": "DE"}}).where["country"]}, did=[], did_not=[], activity=None)
    with pytest.raises(AudienceError, match=r"where\.nickname\); DROP TABLE x; --: unknown column"):
        compile_audience(audience, NOW)


def test_column_values_have_the_columns_type() -> None:
    with pytest.raises(AudienceError, match=r"where\.country: 49 is not text"):
        compile_audience(Audience.model_validate({"name": "a", "where": {"country": {"eq": 49}}}), NOW)
    compiled = compile_audience(
        Audience.model_validate({"name": "a", "where": {"updated_at": {"gt": "2026-01-01"}}}), NOW
    )
    assert compiled.params["p0"] == datetime(2026, 1, 1, tzinfo=UTC)


def test_where_names_the_columns_users_latest_has() -> None:
    from shared.campaigns.audience import WHERE_COLUMNS

    assert set(WHERE_COLUMNS) == set(USERS_LATEST_COLUMNS) - {"properties"}
    assert {"country", "timezone", "push_token", "contact_id"} <= set(WHERE_COLUMNS)


def test_true_and_false_cannot_be_ordered() -> None:
    with pytest.raises(AudienceError, match=r"properties\.vip: true/false cannot be compared"):
        compile_audience(Audience.model_validate({"name": "a", "where": {"properties.vip": {"gt": True}}}), NOW)


def test_validation_errors_are_pydantics() -> None:
    with pytest.raises(ValidationError):
        Audience.model_validate({"name": "a", "where": {"nope": {"eq": "x"}}})


# -- activity levels --------------------------------------------------------------------------------------------------
def test_activity_thresholds_default_and_per_tenant() -> None:
    from shared.config import ActivityLevels, Tenant
    from shared.warehouse.schema import view_sql

    tenant = Tenant(name="acme", region="europe-west1", bucket="b-acme", dataset="d_acme")
    assert tenant.activity == ActivityLevels(low=1, medium=3, high=10)
    default = view_sql("contact_activity", "p.d", tenant.activity)
    assert ">= 10 THEN 'high'" in default and ">= 3 THEN 'medium'" in default and ">= 1 THEN 'low'" in default
    assert "INTERVAL 30 DAY" in default and "`p.d.users_latest`" in default
    custom = Tenant.model_validate({**tenant.model_dump(), "activity": {"low": 2, "medium": 5, "high": 20}})
    assert ">= 20 THEN 'high'" in view_sql("contact_activity", "p.d", custom.activity)
    with pytest.raises(ValidationError, match="thresholds must rise"):
        ActivityLevels(low=3, medium=3, high=10)


def test_unquoted_yaml_dates_compare_as_iso_text(tmp_path: Path) -> None:
    path = tmp_path / "dates.yaml"
    path.write_text("name: a\nwhere:\n  updated_at: {gt: 2026-01-01}\n  properties.signup: {between: [2025-01-01, 2025-12-31]}\n")
    audience = load_audience(path)
    assert audience.where["properties.signup"].between == ("2025-01-01", "2025-12-31")
    compiled = compile_audience(audience, NOW)
    assert compiled.params["p0"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert (compiled.params["p1"], compiled.params["p2"], compiled.params["p3"]) == ('$."signup"', "2025-01-01",
                                                                                     "2025-12-31")


# -- the CLI, without a stack -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: a\nwhere: {colour: red}\n", "where: unknown field 'colour'"),
        ("name: a\nwhere: {country: {eq: 49}}\n", "where.country: 49 is not text"),
        ("name: a\ndid: [{event: E, at_least: many}]\n", "did.0.at_least: Input should be a valid integer"),
        ("name: [unclosed\n", "not YAML or JSON"),
    ],
)
def test_audience_create_refuses_a_bad_file_in_one_line_before_asking_the_stack(
    text: str, says: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from infra.local.cli import app

    # GIVEN no stack (an empty state folder) and a bad audience file
    path = tmp_path / "audience.yaml"
    path.write_text(text)
    # WHEN it is created
    result = CliRunner().invoke(app, ["audience", "create", str(path), "-t", "acme"],
                                env={"LANDLINE_HOME": str(tmp_path / "home")})  # fmt: skip
    # THEN it is a value mistake (exit 2) in one line naming the field, and the stack was never asked
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert not (tmp_path / "home").exists()
