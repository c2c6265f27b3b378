"""shared.ingest.layout: Segment object names -> data or ignored-with-reason."""

from __future__ import annotations

from datetime import date

import pytest

from shared.ingest.layout import ObjectLayout, classify_object


@pytest.mark.parametrize(
    ("name", "prefix", "source", "day"),
    [
        ("segment-logs/src1/1432684800000/part-0001.gz", "", "src1", date(2015, 5, 27)),
        ("custom/prefix/segment-logs/AbC_9/1714521600000/x.json.gz", "", "AbC_9", date(2024, 5, 1)),
        ("acme/segment-logs/src1/1714521600000/file", "acme", "src1", date(2024, 5, 1)),
        ("acme/segment-logs/src1/1714521600000/file", "/acme/", "src1", date(2024, 5, 1)),
        ("acme/x/segment-logs/src1/1714521600000/file", "acme", "src1", date(2024, 5, 1)),
        ("segment-logs/src1/0/file.gz", "", "src1", date(1970, 1, 1)),  # tolerant: any all-digit epoch-ms
        ("segment-logs/src1/1714525200000/file.gz", "", "src1", date(2024, 5, 1)),  # not midnight: its UTC day
    ],
)
def test_segment_objects_are_data(name: str, prefix: str, source: str, day: date) -> None:
    # GIVEN an object name in Segment's layout WHEN classified THEN it is data with its source and UTC day
    assert classify_object(name, prefix) == ObjectLayout(kind="segment", source_id=source, day=day)
    assert classify_object(name, prefix).is_data


@pytest.mark.parametrize(
    ("name", "prefix", "reason"),
    [
        ("segment-logs/dummy-object.txt", "", "dummy_object"),
        ("acme/segment-logs/dummy-object.txt", "acme", "dummy_object"),
        ("segment-logs/src1/1714521600000/", "", "directory_placeholder"),
        ("segment-logs/", "", "directory_placeholder"),
        ("", "", "directory_placeholder"),
        ("other/segment-logs/src1/1714521600000/f.gz", "acme", "outside_tenant_prefix"),
        ("acmecorp/segment-logs/src1/1714521600000/f.gz", "acme", "outside_tenant_prefix"),
        ("segment-logs/src1/1714521600000", "", "not_segment_layout"),  # no file part
        ("segment-logs/src1/f.gz", "", "not_segment_layout"),
        ("logs/src1/1714521600000/f.gz", "", "not_segment_layout"),
        ("segment-logs/src1/1714521600000/deeper/f.gz", "", "not_segment_layout"),
        ("segment-logs/src1/2024-05-01/f.gz", "", "bad_day"),
        ("segment-logs/src1/１２３/f.gz", "", "bad_day"),  # non-ASCII digits
        ("segment-logs/src1/99999999999999999999/f.gz", "", "bad_day"),  # out of range
        ("segment-logs/../1714521600000/f.gz", "", "unsafe_name"),
        ("acme/../segment-logs/src1/1714521600000/f.gz", "acme", "unsafe_name"),
        ("segment-logs/src1//1714521600000/f.gz", "", "unsafe_name"),
        ("segment-logs/./src1/1714521600000/f.gz", "", "unsafe_name"),
    ],
)
def test_non_data_objects_are_ignored_with_a_reason(name: str, prefix: str, reason: str) -> None:
    # GIVEN a name that is not a data file in the tenant's layout
    # WHEN classified
    layout = classify_object(name, prefix)
    # THEN it is ignored (acked, not failed) and says why
    assert layout.kind == "ignored" and layout.reason == reason
    assert layout.source_id is None and layout.day is None and not layout.is_data
