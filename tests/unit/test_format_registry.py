"""The format registry: one list that ingest's layout and the loader both read, and extra formats from a module."""

from __future__ import annotations

import json
import sys
import types
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from shared.errors import SetupError
from shared.ingest.layout import classify_object
from shared.load.parse import parse_lines
from shared.sources import registry
from shared.sources.format import Format
from shared.warehouse.rows import EventRow, Lineage

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shared.sources.format import MappingContext, Row

NOW = datetime(2024, 5, 14, 12, 0, tzinfo=UTC)
TOY_MODULE = "tests.integration.test_add_format"


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The registry re-read under the test's environment, and re-read again afterwards."""
    registry.formats.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    registry.formats.cache_clear()


def test_the_built_in_formats_are_registered_once_each() -> None:
    # THEN the five formats are there, in the order layouts are asked (Segment first), with distinct bucket folders
    assert registry.names() == ("segment", "native", "mixpanel", "amplitude", "csv")
    roots = [f.layout_root for f in registry.formats().values() if f.layout_root is not None]
    assert roots == ["segment-logs", "mixpanel", "amplitude", "csv"]
    # AND only CSV has a header row, read as CSV text
    assert {(f.name, f.reader, f.header) for f in registry.BUILT_IN if f.header or f.reader != "ndjson"} == {
        ("csv", "csv", True)
    }
    # AND a Segment path below another format's folder stays Segment's (it is asked first)
    assert classify_object("mixpanel/segment-logs/src/1715644800000/part-0.gz").kind == "segment"


def test_a_module_named_in_the_environment_adds_a_format_to_ingest_and_load(
    fresh_registry: pytest.MonkeyPatch,
) -> None:
    # GIVEN the toy format's module named in LANDLINE_FORMAT_MODULES
    fresh_registry.setenv(registry.EXTRA_MODULES_ENV, f" {TOY_MODULE} ,")
    # THEN the registry lists it after the built-ins
    assert registry.names()[-1] == "toy"
    # AND ingest recognises its files by the format's own layout
    layout = classify_object("acme/toy/crm/2024-05-14.jsonl", "acme")
    assert (layout.kind, layout.source_id, layout.is_data) == ("toy", "crm", True)
    # AND the loader maps its lines with the format's mapper, and rejects its bad ones through the common driver
    good = json.dumps({"who": "u1", "what": "Signed Up", "when": "2024-05-14T09:00:00Z", "ref": "r1"}).encode()
    batch = parse_lines([(1, good), (2, b"[]")], fmt="toy", lineage=Lineage("toy", "gs://b/o#1", None, NOW), now=NOW)
    [row] = batch.rows
    assert isinstance(row, EventRow)
    assert (row.contact_id, row.event_name, row.event_instance_id, row.lineage.line_number) == ("u1", "Signed Up", "r1", 1)
    assert [(r.reason_code, r.lineage.line_number) for r in batch.rejected] == [("not_an_object", 2)]


def test_without_the_module_the_format_is_unknown_and_its_lines_are_rejected_as_they_came(
    fresh_registry: pytest.MonkeyPatch,
) -> None:
    fresh_registry.delenv(registry.EXTRA_MODULES_ENV, raising=False)
    raw = b"\xef\xbb\xbf" + b"x" * 2_000_000  # a BOM and more than a line may hold: the format decides first
    batch = parse_lines([(7, raw)], fmt="toy", lineage=Lineage("toy", "o", None, NOW), now=NOW)
    [rejected] = batch.rejected
    assert rejected.reason_code == "unknown_format" and rejected.lineage.line_number == 7
    assert "expected one of ('segment', 'native', 'mixpanel', 'amplitude', 'csv')" in rejected.message
    assert classify_object("toy/crm/x.jsonl").reason == "not_segment_layout"


class _Clash(Format):
    name = "segment"

    def map(self, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Row:  # pragma: no cover - never mapped
        raise NotImplementedError


class _SameFolder(_Clash):
    name = "other"
    layout_root = "csv"


@pytest.mark.parametrize(
    ("module_format", "problem"),
    [
        (None, "has no FORMAT"),
        (_Clash(), "two formats are named 'segment'"),
        (_SameFolder(), "formats 'csv' and 'other' both read the bucket folder 'csv'"),
    ],
)
def test_a_bad_extra_format_is_a_setup_error_naming_it(
    fresh_registry: pytest.MonkeyPatch, module_format: Format | None, problem: str
) -> None:
    # GIVEN a module named in the environment whose FORMAT is missing or collides with a built-in one
    module = types.ModuleType("landline_test_extra_format")
    if module_format is not None:
        module.FORMAT = module_format  # type: ignore[attr-defined]
    fresh_registry.setitem(sys.modules, module.__name__, module)
    fresh_registry.setenv(registry.EXTRA_MODULES_ENV, module.__name__)
    # THEN reading the registry says what is wrong and how to fix it
    with pytest.raises(SetupError, match=problem):
        registry.formats()
