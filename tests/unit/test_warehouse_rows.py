"""One source per column: each table's columns are its row type's (shared/warehouse/rows.py). The schema derives from
them; these tests prove that what ``to_bq`` writes agrees with the schema for every table (names and order, types,
modes), that no row field is left out of its table, and that the hand-unrolled hot-path ``to_bq`` (events,
user_properties) equals the derived one."""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.warehouse.rows import ROW_TYPES, WRITTEN_AT, Lineage, Row
from shared.warehouse.schema import TABLES, table_spec

PLUS2 = timezone(timedelta(hours=2))
WHEN = datetime(2026, 12, 1, 14, 30, 5, 123456, tzinfo=PLUS2)  # not UTC: to_bq must write UTC
WRITTEN = datetime(2026, 12, 1, 13, 0, tzinfo=PLUS2)


def sample(row_type: type[Row], *, full: bool) -> Row:
    """A row with every field set (``full``) or only the required ones, each value of its annotated type."""
    hints = typing.get_type_hints(row_type)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(row_type):  # type: ignore[arg-type]
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if has_default and not full:
            continue
        hint = hints[f.name]
        kinds = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
        if Lineage in kinds:
            values[f.name] = Lineage("segment", "gs://b/o#1", 7, WHEN) if full else Lineage("segment")
        elif datetime in kinds:
            values[f.name] = WHEN
        elif int in kinds:
            values[f.name] = 7
        elif any(typing.get_origin(k) is dict for k in kinds):
            values[f.name] = {"k": "v"}
        else:
            values[f.name] = f"{f.name}-value"
    return row_type(**values)


JSON_TYPES = {"STRING": str, "INT64": int, "INTEGER": int, "JSON": dict}


def test_every_table_is_one_row_type_and_every_row_type_one_table() -> None:
    assert [spec.name for spec in TABLES] == [row_type.table for row_type in ROW_TYPES]


@pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda t: t.table)
@pytest.mark.parametrize("full", [True, False], ids=["every field", "required fields"])
def test_to_bq_writes_exactly_the_schema_with_its_types_and_modes(row_type: type[Row], full: bool) -> None:
    schema = table_spec(row_type.table).schema
    written = sample(row_type, full=full).to_bq(WRITTEN)
    # THEN the keys are the schema's columns, in its order
    assert list(written) == [f.name for f in schema]
    for column in schema:
        value = written[column.name]
        if value is None:
            assert column.mode == "NULLABLE", f"{column.name} is REQUIRED but written as null"
            continue
        if column.field_type == "TIMESTAMP":
            parsed = datetime.fromisoformat(value)
            assert parsed.utcoffset() == timedelta(0) and parsed in (WHEN, WRITTEN), column.name
        else:
            assert isinstance(value, JSON_TYPES[column.field_type]), (column.name, value)


@pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda t: t.table)
def test_every_field_of_a_row_is_written_to_its_table(row_type: type[Row]) -> None:
    sources = {(c.source or c.name).split(".")[0] for c in row_type.columns} - {WRITTEN_AT}
    assert sources == {f.name for f in dataclasses.fields(row_type)}  # type: ignore[arg-type]


@pytest.mark.parametrize("row_type", [t for t in ROW_TYPES if "to_bq" in vars(t)], ids=lambda t: t.table)
@pytest.mark.parametrize("full", [True, False], ids=["every field", "required fields"])
@pytest.mark.parametrize("tz", [UTC, PLUS2], ids=["utc", "plus2"])
def test_a_hand_unrolled_to_bq_equals_the_derived_one(row_type: type[Row], full: bool, tz: timezone) -> None:
    row = sample(row_type, full=full)
    row = dataclasses.replace(  # type: ignore[type-var]
        row, **{f.name: getattr(row, f.name).astimezone(tz) for f in dataclasses.fields(row)  # type: ignore[arg-type]
                if isinstance(getattr(row, f.name), datetime)}
    )
    assert row.to_bq(WRITTEN.astimezone(tz)) == Row.to_bq(row, WRITTEN.astimezone(tz))


def test_the_hot_rows_are_the_ones_unrolled() -> None:
    # Only rows built once per input line may keep their own to_bq; any other row uses the derived one.
    assert {t.table for t in ROW_TYPES if "to_bq" in vars(t)} == {"events", "user_properties"}
