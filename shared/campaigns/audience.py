"""Audience definitions (a YAML or JSON file, validated here) and their compilation to one BigQuery query.

A definition selects contacts of ``users_latest`` by their columns and properties (``where``), by what they did or did
not do (``did`` / ``did_not``: an event, optionally with metadata conditions, at least N times, within the last D
days or between two dates) and by their activity level (the ``contact_activity`` view). README, "Audiences".

No text from a definition is ever spliced into SQL. Column names are looked up in the schema
(``shared.warehouse.schema.USERS_LATEST_COLUMNS``) and the SQL names the schema's spelling; every value, event name
and property key is a query parameter (``@p0``, ``@p1``, ...). A property key reaches the query as a JSONPath
parameter, ``JSON_VALUE(properties, @p3)`` with ``@p3 = '$."plan"'``: BigQuery accepts a query parameter as the path,
and so does the local emulator (local-bigquery on DuckDB). Other constructs chosen because both engines run them:
``SAFE_CAST(... AS FLOAT64)`` for numeric comparisons of JSON values (a JSON number comes back as text, ``3`` or
``3.0`` depending on the engine, so numbers compare as numbers, never as text), ``IN (@p1, @p2)`` with one scalar
parameter per value (no array parameters), and time windows as TIMESTAMP parameters computed from ``now`` at compile
time (rather than ``TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @d DAY)``), so a preview and a test agree on "now".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.warehouse.schema import ACTIVITY_LEVELS, USERS_LATEST_COLUMNS

Scalar = str | int | float | bool
ActivityLevel = Literal["dormant", "low", "medium", "high"]
AUDIENCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Property and metadata keys become a JSONPath ``$."key"`` (a parameter): no quote, backslash or control character,
# so a key can only ever name one member.
PROPERTY_KEY = re.compile(r'[^"\\\x00-\x1f]{1,128}')
PROPERTIES_PREFIX = "properties."
# Columns a ``where`` may name: users_latest's, except the properties JSON itself (``properties.<key>`` instead).
WHERE_COLUMNS: tuple[str, ...] = tuple(c for c in USERS_LATEST_COLUMNS if c != "properties")


class AudienceError(ValueError):
    """A definition the compiler cannot turn into a query (the message names the field)."""


def _shorthand(value: Any) -> Any:
    """``country: DE`` means ``country: {eq: DE}``; ``country: [DE, FR]`` means ``{in: [DE, FR]}``."""
    if isinstance(value, list):
        return {"in": value}
    return value if isinstance(value, dict) else {"eq": value}


class ValueCondition(BaseModel):
    """Conditions on one value; several operators in one condition must all hold.

    ``ne`` and a missing value: a contact without the value counts as "not equal" (``ne: DE`` keeps contacts whose
    country is unknown). Every other operator needs the value to be there.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1, max_length=1000)
    exists: bool | None = None
    gt: Scalar | None = None
    lt: Scalar | None = None
    between: tuple[Scalar, Scalar] | None = None

    @model_validator(mode="before")
    @classmethod
    def _dates_as_text(cls, value: Any) -> Any:
        """YAML reads an unquoted 2025-01-01 as a date: compare it as its ISO text (properties hold JSON text)."""
        if not isinstance(value, dict):
            return value

        def iso(item: Any) -> Any:
            if isinstance(item, date):
                return item.isoformat()
            return [iso(i) for i in item] if isinstance(item, list | tuple) else item

        return {key: iso(item) for key, item in value.items()}

    @model_validator(mode="after")
    def _at_least_one(self) -> ValueCondition:
        if _no_operator(self):
            raise ValueError("give at least one of eq, ne, in, exists, gt, lt, between (null is no value)")
        return self


Condition = Annotated[ValueCondition, BeforeValidator(_shorthand)]


def _no_operator(condition: BaseModel) -> bool:
    """No operator has a value (``country: null`` would otherwise compile to an empty condition)."""
    return all(getattr(condition, name) is None for name in type(condition).model_fields)


class LevelCondition(BaseModel):
    """Which activity levels (the ``contact_activity`` view) are in; ``activity: high`` or ``[medium, high]`` too."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    eq: ActivityLevel | None = None
    ne: ActivityLevel | None = None
    in_: list[ActivityLevel] | None = Field(default=None, alias="in", min_length=1)

    @model_validator(mode="after")
    def _at_least_one(self) -> LevelCondition:
        if _no_operator(self):
            raise ValueError("give eq, ne or in with levels dormant, low, medium or high")
        return self


def _check_keys(value: dict[str, Any], what: str) -> dict[str, Any]:
    bad = [key for key in value if not PROPERTY_KEY.fullmatch(key)]
    if bad:
        raise ValueError(f"{what} key {bad[0]!r} has a quote, backslash or control character, or is empty or too long")
    return value


class EventCondition(BaseModel):
    """A behaviour: the contact did ``event`` at least ``at_least`` times (in the window, if one is given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str = Field(min_length=1, max_length=500)
    metadata: dict[str, Condition] = Field(default_factory=dict, description="conditions on the event's metadata")
    at_least: int = Field(default=1, ge=1)
    within_days: int | None = Field(default=None, ge=1, le=3650)
    between: tuple[date | datetime, date | datetime] | None = Field(
        default=None, description="two dates (both whole days included) or times (start included, end excluded)"
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_keys(value, "metadata")

    @model_validator(mode="after")
    def _one_window(self) -> EventCondition:
        if self.within_days is not None and self.between is not None:
            raise ValueError("give within_days or between, not both")
        if self.between is not None:
            start, end = self.window(datetime.now(UTC))
            if start is not None and end is not None and start >= end:
                raise ValueError("between: the first date must come before the second")
        return self

    def window(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """[start, end) of the events that count (None: unbounded)."""
        if self.within_days is not None:
            return now - timedelta(days=self.within_days), None
        if self.between is None:
            return None, None
        start, end = self.between
        return _instant(start), _instant(end, end_of_day=True)


def _instant(value: date | datetime, *, end_of_day: bool = False) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    day = value + timedelta(days=1) if end_of_day else value
    return datetime.combine(day, time(), tzinfo=UTC)


class Audience(BaseModel):
    """An audience file: every condition must hold (AND)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=AUDIENCE_NAME_PATTERN)
    description: str = ""
    where: dict[str, Condition] = Field(default_factory=dict)
    did: list[EventCondition] = Field(default_factory=list)
    did_not: list[EventCondition] = Field(default_factory=list)
    activity: Annotated[LevelCondition, BeforeValidator(_shorthand)] | None = None

    @field_validator("where")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key.startswith(PROPERTIES_PREFIX):
                _check_keys({key.removeprefix(PROPERTIES_PREFIX): None}, "property")
            elif key not in WHERE_COLUMNS:
                raise ValueError(
                    f"unknown field {key!r}: use a users_latest column ({', '.join(WHERE_COLUMNS)}) or properties.<key>"
                )
        return value

    def to_json(self) -> str:
        """The definition as stored (``audiences.definition``): stable JSON that ``Audience.from_json`` reads back."""
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_defaults=True))

    @classmethod
    def from_json(cls, text: str) -> Audience:
        return cls.model_validate_json(text)


def load_audience(path: Path) -> Audience:
    """Read and validate an audience file (YAML or JSON: JSON is YAML). Errors name the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AudienceError(f"{path}: not YAML or JSON ({' '.join(str(exc).split())})") from exc
    if not isinstance(raw, dict):
        raise AudienceError(f"{path}: an audience file is a mapping (name, where, did, did_not, activity)")
    try:
        return Audience.model_validate(raw)
    except ValidationError as exc:
        from shared.config import validation_message

        raise AudienceError(f"{path}: {validation_message(exc)}") from exc


# -- compilation ----------------------------------------------------------------------------------------------------
@dataclass
class CompiledQuery:
    """SQL over the tenant's dataset (unqualified names: run it with the dataset as default) and its parameters."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Params:
    values: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"@{name}"


# What an audience query returns per member: its id, and what preview counts by (country, activity level).
MEMBER_COLUMNS = ("contact_id", "country", "activity")


def compile_audience(audience: Audience, now: datetime | None = None, *, extra: tuple[str, ...] = ()) -> CompiledQuery:
    """One SELECT of the audience's members (``MEMBER_COLUMNS``, then the users_latest columns ``extra``), over
    users_latest and contact_activity."""
    now = now or datetime.now(UTC)
    columns = ["u.contact_id", "u.country", "a.activity", *(_users_column(name) for name in extra)]
    params = _Params()
    clauses: list[str] = []
    for key, condition in audience.where.items():
        clauses.append(_where_clause(key, condition, params))
    for behaviour in audience.did:
        clauses.append(f"u.contact_id IN ({_event_counts(behaviour, now, params)})")
    for behaviour in audience.did_not:
        clauses.append(f"u.contact_id NOT IN ({_event_counts(behaviour, now, params)})")
    if audience.activity is not None:
        clauses.append(_level_clause(audience.activity, params))
    sql = (
        f"SELECT {', '.join(columns)}\n"
        "FROM users_latest AS u JOIN contact_activity AS a ON a.contact_id = u.contact_id\n"
        "WHERE " + ("\n  AND ".join(clauses) or "TRUE")
    )
    return CompiledQuery(sql, params.values)


def _users_column(name: str) -> str:
    for column in USERS_LATEST_COLUMNS:  # the schema's spelling, never the caller's text
        if column == name:
            return f"u.{column}"
    raise AudienceError(f"{name}: not a users_latest column")


def _column(name: str) -> str:
    """The schema's spelling of a users_latest column (so the SQL never holds the definition's text)."""
    for column in WHERE_COLUMNS:
        if column == name:
            return f"u.{column}"
    raise AudienceError(f"where.{name}: unknown column (users_latest has {', '.join(WHERE_COLUMNS)})")


def _json_path(key: str) -> str:
    if not PROPERTY_KEY.fullmatch(key):
        raise AudienceError(f"key {key!r} has a quote, backslash or control character, or is empty or too long")
    return f'$."{key}"'


def _where_clause(key: str, condition: ValueCondition, params: _Params) -> str:
    if key.startswith(PROPERTIES_PREFIX):
        path = params.add(_json_path(key.removeprefix(PROPERTIES_PREFIX)))
        return _json_condition(f"u.properties, {path}", condition, params, field=f"where.{key}")
    column = _column(key)
    kind = USERS_LATEST_COLUMNS[key]
    return _typed_condition(column, condition, params, lambda v: _column_value(v, kind, f"where.{key}"))


def _column_value(value: Scalar, kind: str, where: str) -> Any:
    if kind == "TIMESTAMP":
        if isinstance(value, str):
            try:
                return _instant(datetime.fromisoformat(value))
            except ValueError:
                pass
        raise AudienceError(f"{where}: {value!r} is not an ISO date or time")
    if not isinstance(value, str):
        raise AudienceError(f"{where}: {value!r} is not text (the column is a string; quote it)")
    return value


def _typed_condition(expr: str, condition: ValueCondition, params: _Params, convert: Any) -> str:
    """Conditions on one typed column: one comparison per operator, values converted to the column's type."""
    parts: list[str] = []
    if condition.exists is not None:
        parts.append(f"{expr} IS {'NOT ' if condition.exists else ''}NULL")
    if condition.eq is not None:
        parts.append(f"{expr} = {params.add(convert(condition.eq))}")
    if condition.ne is not None:
        parts.append(f"({expr} IS NULL OR {expr} != {params.add(convert(condition.ne))})")
    if condition.in_ is not None:
        parts.append(f"{expr} IN ({', '.join(params.add(convert(v)) for v in condition.in_)})")
    if condition.gt is not None:
        parts.append(f"{expr} > {params.add(convert(condition.gt))}")
    if condition.lt is not None:
        parts.append(f"{expr} < {params.add(convert(condition.lt))}")
    if condition.between is not None:
        low, high = (params.add(convert(v)) for v in condition.between)
        parts.append(f"{expr} BETWEEN {low} AND {high}")
    return "(" + " AND ".join(parts) + ")"


def _json_condition(args: str, condition: ValueCondition, params: _Params, *, field: str) -> str:
    """Conditions on one member of a JSON column (``args``: the column and its path parameter).

    A JSON value is compared as what the definition's value is: a number as FLOAT64 (SAFE_CAST, so text that is not
    a number matches nothing instead of failing the query), true/false as JSON's spelling, text as text.
    """
    text = f"JSON_VALUE({args})"
    number = f"SAFE_CAST({text} AS FLOAT64)"

    def compared(value: Scalar, op: str) -> str:
        if isinstance(value, bool):
            return f"{text} {op} {params.add('true' if value else 'false')}"
        if isinstance(value, int | float):
            return f"{number} {op} {params.add(float(value))}"
        return f"{text} {op} {params.add(value)}"

    parts: list[str] = []
    if condition.exists is not None:
        parts.append(f"{text} IS {'NOT ' if condition.exists else ''}NULL")
    if condition.eq is not None:
        parts.append(compared(condition.eq, "="))
    if condition.ne is not None:
        parts.append(f"({text} IS NULL OR {compared(condition.ne, '!=')})")
    if condition.in_ is not None:
        parts.append("(" + " OR ".join(compared(v, "=") for v in condition.in_) + ")")
    for op, value in ((">", condition.gt), ("<", condition.lt)):
        if value is not None:
            _orderable(value, field)
            parts.append(compared(value, op))
    if condition.between is not None:
        low, high = condition.between
        _orderable(low, field)
        _orderable(high, field)
        if isinstance(low, str) != isinstance(high, str):
            raise AudienceError(f"{field}.between: give two numbers or two texts")
        parts.append(f"({compared(low, '>=')} AND {compared(high, '<=')})")
    return "(" + " AND ".join(parts) + ")"


def _orderable(value: Scalar, field: str) -> None:
    if isinstance(value, bool):
        raise AudienceError(f"{field}: true/false cannot be compared with gt, lt or between")


def _event_counts(behaviour: EventCondition, now: datetime, params: _Params) -> str:
    """The contacts that did ``behaviour.event`` at least ``at_least`` times in its window (one subquery)."""
    where = [f"event_name = {params.add(behaviour.event)}"]
    start, end = behaviour.window(now)
    if start is not None:
        where.append(f"timestamp >= {params.add(start)}")
    if end is not None:
        where.append(f"timestamp < {params.add(end)}")
    for key, condition in behaviour.metadata.items():
        path = params.add(_json_path(key))
        where.append(_json_condition(f"metadata, {path}", condition, params, field=f"metadata.{key}"))
    return (
        f"SELECT contact_id FROM events_deduped WHERE {' AND '.join(where)} "
        f"GROUP BY contact_id HAVING COUNT(*) >= {params.add(behaviour.at_least)}"
    )


def _level_clause(condition: LevelCondition, params: _Params) -> str:
    def level(value: str) -> str:
        if value not in ACTIVITY_LEVELS:  # the model already checks; the SQL never depends on that alone
            raise AudienceError(f"activity: unknown level {value!r}")
        return params.add(value)

    parts: list[str] = []
    if condition.eq is not None:
        parts.append(f"a.activity = {level(condition.eq)}")
    if condition.ne is not None:
        parts.append(f"a.activity != {level(condition.ne)}")
    if condition.in_ is not None:
        parts.append(f"a.activity IN ({', '.join(level(v) for v in condition.in_)})")
    return "(" + " AND ".join(parts) + ")"
