"""Bulk backfill (shared/bulk.py, ``landline backfill --bulk``) on the local stack: parallel tasks validate the held
Segment sample into files in the tenant's staging bucket, and BigQuery load jobs (the emulator's, reading them
from fake-gcs-server) replace the objects' rows. The rows must be the streaming path's exactly, and a second run
must replace, not add."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "segment"
# What only says when a row was written (the bulk run's time instead of the stream's): everything else must match.
WRITTEN_AT = {"received_at", "loaded_at", "rejected_at"}
TABLES = ("events", "user_properties", "rejected")


def rows(stack: StackHandle, tenant: str, table: str) -> list[dict[str, Any]]:
    found = stack.query(tenant, f"SELECT * FROM {table}")
    kept = [{k: v for k, v in r.items() if k not in WRITTEN_AT} for r in found]
    return sorted(kept, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def written_at(stack: StackHandle, tenant: str, table: str) -> set[str]:
    column = "rejected_at" if table == "rejected" else "loaded_at"
    return {str(r["t"]) for r in stack.query(tenant, f"SELECT DISTINCT {column} AS t FROM {table}")}


def test_a_bulk_backfill_of_the_sample_equals_the_streaming_path_and_replaces_on_rerun(
    local_stack: StackHandle,
) -> None:
    # GIVEN the held Segment sample, ingested by the streaming path (ingest_file -> Pub/Sub -> load_events)
    tenant = local_stack.add_tenant()
    local_stack.drop(tenant, SAMPLE)
    local_stack.wait()
    streamed = {table: rows(local_stack, tenant, table) for table in TABLES}
    stats_before = json.loads(local_stack.cli("stats", "--tenant", tenant, "--json").stdout)
    assert streamed["events"] and streamed["user_properties"]

    # WHEN the same objects are bulk backfilled with two tasks, twice
    runs = []
    for _ in range(2):
        out = local_stack.cli("backfill", "--tenant", tenant, "--bulk", "--tasks", "2", "--json").stdout
        runs.append(json.loads(out))
        after = {table: rows(local_stack, tenant, table) for table in TABLES}
        # THEN each time the rows are exactly the streaming path's (every column but the write times) ...
        for table in TABLES:
            assert after[table] == streamed[table], table
            # ... and every one of them was written by this run's load jobs, not left from before
            assert len(written_at(local_stack, tenant, table) - {""}) <= 1 or not after[table]

    first, second = runs
    counts = {table: len(streamed[table]) for table in TABLES}
    # ... each run loaded every row, one load job per table and day, and replaced what was there (the stream's rows
    # the first time, the first run's the second time): nothing was added
    assert first["rows"] == {t: n for t, n in counts.items() if n} == second["rows"]
    assert first["replaced"] == counts == second["replaced"]
    assert first["load_jobs"] == second["load_jobs"] >= len([n for n in counts.values() if n])
    assert first["statuses"] == {"loaded": 2} and first["lines"] == stats_before["lines"]
    # ... and the pipeline's accounting still balances: every line read is a row, a rejection or a duplicate
    stats = json.loads(local_stack.cli("stats", "--tenant", tenant, "--json").stdout)
    for key in ("lines", "events", "user_property_rows", "rejected_lines", "duplicates", "unaccounted"):
        assert stats[key] == stats_before[key], key
