"""``bench/cost`` on the demo's Segment sample (a private stack, ~35 s): the quantities it bills are the ones the
pipeline really moved. The full size (100,000 events) is the command ``python -m bench.cost`` (BENCHMARKS.md)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bench.cost.__main__ import measure, report

pytestmark = pytest.mark.stack

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "segment"


def test_cost_measures_what_ingesting_the_sample_moved() -> None:
    # GIVEN the demo's sample: two gzipped Segment exports and one object that is not an export
    exports = sorted(SAMPLE.rglob("*.json.gz"))
    objects = [p for p in SAMPLE.rglob("*") if p.is_file()]
    lines = [line for p in exports for line in gzip.decompress(p.read_bytes()).splitlines() if line.strip()]
    # WHEN bench/cost ingests it on a private stack
    m = measure(SAMPLE, timeout=300)
    # THEN every line is an event of the bill, each object was announced once and each export's lines travelled on
    # raw-events (as message data, so at least their own bytes)
    assert m["events"] == len(lines) == m["stats"]["lines"]
    assert m["pubsub_topics"]["object-notifications"]["messages"] == len(objects)
    assert m["pubsub_topics"]["raw-events"]["bytes"] >= sum(len(line) for line in lines)
    # ... the stored event rows are the stats' events plus the duplicate lines stored beside them (the views hide
    # them; the bill does not), and streaming bills each row at 1 KB at least
    assert m["stats"]["events"] <= m["rows"]["events"] <= m["stats"]["events"] + m["stats"]["duplicates"]
    assert sum(m["bq_bytes"].values()) > 0
    assert m["cost"]["billed_bytes"]["bigquery_streaming"] >= 1024 * sum(m["rows"].values())
    # ... the input's uploads are the customer's, and ingest read each export at least once (class B)
    assert m["customer_uploads"] == len(objects) and m["storage_ops"].get("B", 0) >= len(exports)
    # ... both ingestion functions did the work, and the report ends with the two totals
    assert m["cpu_seconds"]["ingest_file"] > 0 and m["cpu_seconds"]["load_events"] > 0
    assert {"ingest_file", "load_events"} <= set(m["request_seconds"])
    assert report(m).splitlines()[-1].startswith("cost per million events = $")
