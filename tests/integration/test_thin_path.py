"""The thin end-to-end path: bucket upload -> notification -> router -> ingest_file -> Pub/Sub -> load_events ->
BigQuery, all real processes, nothing mocked."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.stack_support import segment_file, unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack


def test_one_line_track_file_becomes_one_row(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a fresh tenant and a one-line Segment track file
    tenant = local_stack.add_tenant()
    message_id = unique("msg")
    root = segment_file(
        tmp_path,
        [
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "user-42",
                "messageId": message_id,
                "timestamp": "2024-05-01T10:00:00.000Z",
                "receivedAt": "2024-05-01T10:00:01.000Z",
                "properties": {"total": 19.9},
            }
        ],
    )

    # WHEN it is uploaded into the tenant's bucket and the pipeline settles
    objects = local_stack.drop(tenant, root)
    local_stack.wait()

    # THEN the event is in the tenant's events table, with its lineage
    rows = local_stack.query(tenant, "SELECT contact_id, event_name, event_instance_id, origin FROM events")
    assert len(rows) == 1
    assert rows[0]["contact_id"] == "user-42"
    assert rows[0]["event_name"] == "Order Completed"
    assert rows[0]["event_instance_id"] == message_id
    assert rows[0]["origin"] == objects[0]
    stats = local_stack.stats(tenant)
    assert stats["files"] == {"loaded": 1}
    assert stats["lines"] == 1
    assert stats["events"] == 1


def test_stack_reports_every_service_healthy(local_stack: StackHandle) -> None:
    # GIVEN the running stack WHEN asked for its status THEN every service is up and healthy
    rows = local_stack.stack.status()
    assert rows, "no services"
    assert all(row["healthy"] for row in rows), rows
