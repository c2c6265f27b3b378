"""Issue 4: region pinning. A tenant whose dataset sits in another location than its configured region gets nothing
written, and the functions log an error naming both locations and the fix. Through the real local stack.

The emulator ignores job locations (README, "The local stack"), so this exercises the check in code
(shared/warehouse/client.py ``check_region``) against the location the emulator stores for the dataset.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from shared.config import Tenant, tenant_topic
from shared.errors import RegionMismatchError
from shared.warehouse.rows import EventRow, Lineage
from shared.warehouse.writer import write_rows
from tests.stack_support import segment_file, unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

HOME_REGION = "europe-west1"
WRONG_REGION = "us-east1"


def bq(stack: StackHandle) -> bigquery.Client:
    return bigquery.Client(
        project=stack.stack.cfg.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=stack.env["LANDLINE_BIGQUERY_ENDPOINT"]),
    )


def registered(stack: StackHandle, name: str) -> dict[str, Any]:
    return dict(json.loads(stack.stack.cfg.paths.tenants.read_text())[name])


def repin(stack: StackHandle, name: str, region: str) -> None:
    """Rewrite the tenant's region in the registry file, atomically (the functions re-read it when it changes)."""
    path = stack.stack.cfg.paths.tenants
    current = json.loads(path.read_text())
    current[name]["region"] = region
    tmp = path.with_name(f"{path.name}.{unique('edit')}")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
    time.sleep(0.01)  # a distinct mtime even on coarse-grained filesystems
    tmp.replace(path)


def count(client: bigquery.Client, dataset: str, table: str) -> int:
    [row] = client.query(f"SELECT COUNT(*) AS n FROM `{client.project}.{dataset}.{table}`").result()
    return int(row["n"])


def log_entries(stack: StackHandle, function: str, needle: str) -> list[dict[str, Any]]:
    path = stack.stack.cfg.paths.logs / f"{function}.log"
    out = []
    for text in path.read_text(errors="replace").splitlines():
        if needle in text and text.startswith("{"):
            try:
                out.append(json.loads(text))
            except ValueError:
                continue
    return out


def event(n: int) -> EventRow:
    lineage = Lineage("segment", f"gs://region-test/part#{n}", n)
    return EventRow(f"user-{n}", datetime(2024, 5, 1, 10, tzinfo=UTC), "Region Probe", unique("m"), lineage)


def dead_lettered(stack: StackHandle) -> int:
    return int(httpx.get(f"{stack.stack.cfg.url('router')}/stats", timeout=5).json()["dead_lettered"])


def test_write_rows_refuses_a_dataset_in_another_location(local_stack: StackHandle) -> None:
    # GIVEN a tenant whose dataset was created in europe-west1, but whose configuration now says us-east1
    name = local_stack.add_tenant(region=HOME_REGION)
    tenant = Tenant.model_validate({**registered(local_stack, name), "region": WRONG_REGION})
    client = bq(local_stack)

    # WHEN the writer is asked to write to it
    with pytest.raises(RegionMismatchError) as caught:
        write_rows(client, tenant, [event(1), event(2)], processor="test")

    # THEN it refuses, naming both locations and the fix, and nothing was written
    text = str(caught.value)
    assert HOME_REGION in text
    assert WRONG_REGION in text
    assert "Fix:" in text
    assert f"--region {HOME_REGION}" in caught.value.fix
    assert (caught.value.dataset_location, caught.value.region) == (HOME_REGION, WRONG_REGION)
    assert count(client, tenant.dataset, "events") == 0

    # AND with the right region the same rows are written (the check is about the location, not the rows)
    right = tenant.model_copy(update={"region": HOME_REGION})
    assert write_rows(client, right, [event(3)], processor="test").written["events"] == 1


def test_pipeline_writes_nothing_to_a_mispinned_dataset_and_logs_the_fix(
    local_stack: StackHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a tenant provisioned in europe-west1 whose registry entry is then changed to us-east1
    name = local_stack.add_tenant(region=HOME_REGION)
    dataset = registered(local_stack, name)["dataset"]
    repin(local_stack, name, WRONG_REGION)
    run = unique("r")
    track = {
        "type": "track",
        "event": "Order Completed",
        "userId": "user-1",
        "messageId": f"{run}-1",
        "timestamp": "2024-05-01T10:00:00Z",
    }

    dead_before = dead_lettered(local_stack)

    # WHEN a Segment file lands in its bucket (ingest_file path) and a direct publisher sends a native event to
    # raw-events (load_events path), and every retry is exhausted
    local_stack.drop(name, segment_file(tmp_path, [track]))
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", local_stack.env["PUBSUB_EMULATOR_HOST"])
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(local_stack.stack.cfg.project, tenant_topic("raw-events", name))  # the tenant's
    native = {"contact_id": "user-1", "event_name": "Direct", "timestamp": "2024-05-01T10:00:00Z"}
    publisher.publish(topic, json.dumps(native).encode(), tenant=name, format="native").result(timeout=30)
    local_stack.wait(timeout=240)

    # THEN both deliveries were retried until they went to the dead-letter topic (kept, not lost) ...
    assert dead_lettered(local_stack) - dead_before == 2
    # ... and nothing was written to the tenant's dataset: no event, no file ledger row, no rejection
    client = bq(local_stack)
    assert count(client, dataset, "events") == 0
    assert count(client, dataset, "files") == 0
    assert count(client, dataset, "rejected") == 0

    # AND both functions logged an ERROR naming the dataset's location, the configured region and the fix
    for function in ("ingest_file", "load_events"):
        entries = [e for e in log_entries(local_stack, function, dataset) if e.get("severity") == "ERROR"]
        assert entries, f"no error logged by {function} for {dataset}"
        entry = entries[-1]
        assert entry.get("error_class") == "setup"
        assert f"'{HOME_REGION}'" in entry["message"]
        assert f"'{WRONG_REGION}'" in entry["message"]
        assert "nothing was written" in entry["message"]
        assert f"--region {HOME_REGION}" in entry["fix"]
