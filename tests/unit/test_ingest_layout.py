"""shared.ingest.layout: object names (Segment, Mixpanel, Amplitude layouts) -> data or ignored-with-reason."""

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


@pytest.mark.parametrize(
    ("name", "prefix", "kind", "source"),
    [
        # Mixpanel raw pipeline with the prefix "mixpanel": <project>/<YYYY>/<MM>/<DD>/<HH or full_day>/<file>
        ("mixpanel/3141592/2024/05/14/full_day/export-0.json.gz", "", "mixpanel", "3141592"),
        ("mixpanel/3141592/2024/05/14/09/part-1.json.gz", "", "mixpanel", "3141592"),
        ("acme/mixpanel/3141592/2024/05/14/09/part-1.json.gz", "acme", "mixpanel", "3141592"),
        ("mixpanel/export.json.gz", "", "mixpanel", None),  # a Raw Export API file uploaded by hand
        # Amplitude's Cloud Storage export with the folder "amplitude": <project>/<project>_<day>_<hour>#<n>.json.gz
        ("amplitude/187520/187520_2020-01-25_17#1.json.gz", "", "amplitude", "187520"),
        ("acme/amplitude/187520/187520_2020-01-25_17#1.json.gz", "/acme/", "amplitude", "187520"),
        ("amplitude/export.json.gz", "", "amplitude", None),
        # a Segment path stays Segment's, even below a folder named like another exporter
        ("mixpanel/segment-logs/src1/1714521600000/f.gz", "", "segment", "src1"),
    ],
)
def test_exporter_folders_are_data_of_that_format(name: str, prefix: str, kind: str, source: str | None) -> None:
    # GIVEN an object under a top-level mixpanel/ or amplitude/ folder (after the tenant prefix)
    # WHEN classified
    layout = classify_object(name, prefix)
    # THEN it is data whose kind is the loader's format, with the exporter's project id when the path has one
    assert layout.is_data
    assert (layout.kind, layout.source_id, layout.reason) == (kind, source, None)


@pytest.mark.parametrize(
    ("name", "prefix", "reason"),
    [
        ("mixpanel/3141592/2024/05/14/full_day/complete", "", "export_marker"),  # Mixpanel's "period done" marker
        ("acme/mixpanel/3141592/2024/05/14/09/complete", "acme", "export_marker"),
        ("amplitude/-189524/-189524_2020-01-25_17.json.gz", "", "not_event_export"),  # merged Amplitude IDs
        ("mixpanel/", "", "directory_placeholder"),
        ("amplitude/187520/", "", "directory_placeholder"),
        ("mixpanel", "", "not_segment_layout"),  # a file named like the folder
        ("x/mixpanel/3141592/f.json.gz", "", "not_segment_layout"),  # not top-level
        ("acme/x/amplitude/187520/f.json.gz", "acme", "not_segment_layout"),
        ("Mixpanel/3141592/f.json.gz", "", "not_segment_layout"),  # folder names are case-sensitive
        ("mixpanel/dummy-object.txt", "", "dummy_object"),
        ("other/mixpanel/3141592/f.json.gz", "acme", "outside_tenant_prefix"),
        ("mixpanel/../amplitude/f.json.gz", "", "unsafe_name"),
        ("amplitude//187520/f.json.gz", "", "unsafe_name"),
    ],
)
def test_exporter_non_data_objects_are_ignored_with_a_reason(name: str, prefix: str, reason: str) -> None:
    # GIVEN a name under (or next to) an exporter folder that is not an event file
    # WHEN classified
    layout = classify_object(name, prefix)
    # THEN it is ignored (acked, not failed) and says why
    assert (layout.kind, layout.reason, layout.is_data) == ("ignored", reason, False)


@pytest.mark.parametrize(
    ("name", "prefix", "source"),
    [
        ("csv/crm/2024-05-14/events.csv", "", "crm"),
        ("csv/crm/events.csv.gz", "", "crm"),
        ("acme/csv/warehouse/users.csv", "acme", "warehouse"),
        ("acme/csv/warehouse/users.csv", "/acme/", "warehouse"),
        ("csv/events.csv", "", None),  # no source folder: still CSV
        ("csv/crm/export", "", "crm"),  # any name: the encoding comes from the bytes, not the extension
    ],
)
def test_csv_folder_objects_are_csv_data(name: str, prefix: str, source: str | None) -> None:
    # GIVEN an object under a top-level csv/ folder (after the tenant prefix)
    # WHEN classified
    layout = classify_object(name, prefix)
    # THEN it is CSV data, with the folder right under csv/ as its source
    assert layout.is_data
    assert (layout.kind, layout.source_id, layout.reason) == ("csv", source, None)


@pytest.mark.parametrize(
    ("name", "prefix", "kind", "reason"),
    [
        ("csv/segment-logs/src1/1714521600000/f.gz", "", "segment", None),  # a Segment path stays Segment's
        ("csv/", "", "ignored", "directory_placeholder"),
        ("csv/crm/", "", "ignored", "directory_placeholder"),
        ("csv", "", "ignored", "not_segment_layout"),  # a file named like the folder
        ("x/csv/crm/events.csv", "", "ignored", "not_segment_layout"),  # not top-level
        ("CSV/crm/events.csv", "", "ignored", "not_segment_layout"),  # folder names are case-sensitive
        ("csv/dummy-object.txt", "", "ignored", "dummy_object"),
        ("other/csv/crm/events.csv", "acme", "ignored", "outside_tenant_prefix"),
        ("csv/../crm/events.csv", "", "ignored", "unsafe_name"),
    ],
)
def test_csv_folder_keeps_the_other_rules(name: str, prefix: str, kind: str, reason: str | None) -> None:
    # GIVEN a name under or next to a csv/ folder that another rule decides
    # WHEN classified
    layout = classify_object(name, prefix)
    # THEN that rule wins, as for the other exporter folders
    assert (layout.kind, layout.reason) == (kind, reason)
