"""bench/cost's measuring pieces: BigQuery's data-size rules, Cloud Storage operation classes from an access log line,
and the arithmetic from quantities to dollars per million events."""

from __future__ import annotations

import pytest
from google.cloud.bigquery import SchemaField

from bench.cost.__main__ import PRICES, costs, data_size, storage_operation, storage_requests


def test_data_size_follows_bigquerys_rules() -> None:
    # GIVEN a row with each kind of column, nested and repeated ones included
    fields = [
        SchemaField("id", "STRING"), SchemaField("n", "INTEGER"), SchemaField("at", "TIMESTAMP"),
        SchemaField("ok", "BOOLEAN"), SchemaField("meta", "JSON"), SchemaField("none", "STRING"),
        SchemaField("tags", "STRING", mode="REPEATED"),
        SchemaField("lineage", "RECORD", fields=[SchemaField("origin", "STRING"), SchemaField("line", "INTEGER")]),
    ]  # fmt: skip
    row = {"id": "héllo", "n": 5, "at": "2026-12-03T00:00:00Z", "ok": True, "meta": {"a": 1}, "none": None,
           "tags": ["x", "yz"], "lineage": {"origin": "gs://b/o", "line": 3}}  # fmt: skip
    # WHEN each value is sized / THEN STRING is 2 + UTF-8 bytes, fixed types their width, JSON its compact text,
    # NULL nothing, REPEATED the sum of its elements, RECORD the sum of its fields
    sizes = [data_size(row[f.name], f) for f in fields]
    assert sizes == [2 + 6, 8, 8, 1, len('{"a":1}'), 0, (2 + 1) + (2 + 2), (2 + 8) + 8]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/upload/storage/v1/b/in/o?uploadType=multipart&name=a.gz", ("in", "objects.insert", "A")),
        ("GET", "/storage/v1/b/in/o?prefix=x", ("in", "objects.list", "A")),
        ("GET", "/storage/v1/b/in/o/segment-logs%2Fa.gz?generation=1", ("in", "objects.get", "B")),
        ("GET", "/download/storage/v1/b/in/o/a.gz?alt=media", ("in", "objects.get", "B")),
        ("PATCH", "/storage/v1/b/in/o/a.gz", ("in", "objects.patch", "A")),
        ("DELETE", "/storage/v1/b/in/o/a.gz", ("in", "delete", "free")),
        ("GET", "/storage/v1/b/in", ("in", "buckets.get", "B")),
        ("POST", "/storage/v1/b?project=p", ("", "buckets.insert", "A")),
        ("GET", "/in/a.gz", ("in", "xml.get", "B")),
    ],
)
def test_storage_operations_are_classed_as_cloud_storage_bills_them(
    method: str, path: str, expected: tuple[str, str, str]
) -> None:
    assert storage_operation(method, path) == expected


def test_the_access_log_of_fake_gcs_server_is_read_line_by_line() -> None:
    log = (
        'time=2026-12-03T13:23:31.494Z level=INFO msg="127.0.0.1 - - [03/Dec/2026:13:23:31 +0000] '
        '\\"POST /storage/v1/b?project=p HTTP/1.1\\" 200 377\\n"\n'
        'time=2026-12-03T13:23:31.521Z level=INFO msg="127.0.0.1 - - [03/Dec/2026:13:23:31 +0000] '
        '\\"GET /storage/v1/b/bk/o/x HTTP/1.1\\" 404 119\\n"\n'
        "time=2026-12-03T13:23:32.000Z level=WARN msg=\"something else\"\n"
    )
    assert storage_requests(log) == [("POST", "/storage/v1/b?project=p", "A", 200),
                                     ("GET", "/storage/v1/b/bk/o/x", "B", 404)]  # fmt: skip


def test_costs_apply_the_minimums_and_scale_to_a_million_events() -> None:
    # GIVEN 2,000 events: one 300-byte and one 3,000,000-byte message, 2,000 rows of 500 bytes, 100 request-seconds
    # on a 1 GiB function, 10 requests, 1,000 class A and 10,000 class B operations
    m = {"events": 2000, "pubsub_message_sizes": [300, 3_000_000], "bq_row_sizes": [500] * 2000,
         "request_seconds": {"load_events": 100.0}, "requests": 10, "storage_ops": {"A": 1000, "B": 10_000}}  # fmt: skip
    c = costs(m, {"load_events": "1Gi"})
    # THEN Pub/Sub bills the small message as 1,000 bytes, twice (publish and push); streaming bills each row as 1 KB,
    # the Write API its 500 bytes; and every line is multiplied by 500 to reach a million events
    assert c["billed_bytes"] == {"pubsub": 2 * (1000 + 3_000_000), "bigquery_streaming": 2000 * 1024,
                                 "bigquery_write_api": 2000 * 500}  # fmt: skip
    assert c["dollars"]["functions"] == pytest.approx(100 * (0.583 * PRICES.vcpu_second + PRICES.gib_second) + 10 * 0.4e-6)
    assert c["dollars"]["storage_operations"] == pytest.approx(0.005 + 0.004)
    assert c["per_million_events"]["bigquery_streaming"] == pytest.approx(500 * 2000 * 1024 / (200 * 2**20) * 0.01)
    common = c["dollars"]["pubsub"] + c["dollars"]["functions"] + c["dollars"]["storage_operations"]
    assert c["total_per_million_write_api"] == pytest.approx(500 * (common + c["dollars"]["bigquery_write_api"]))
