"""Issue 4: `landline replay` republishes rejected lines to the tenant's raw-events topic, through the real local stack.

The fix a replay needs must happen between the rejection and the replay, and the functions are shared by the whole
session, so no setting can change per test. The case chosen is one that time fixes: a Segment call without
``receivedAt`` whose ``timestamp`` is slightly more than the 24 h skew policy ahead of its arrival (a device clock
running ahead) is rejected as ``future_timestamp``; once real time has caught up, a replay loads it under its own
messageId at its original position. A line that is still bad (``missing_identity``) is rejected again under the same
``rejected_id``, so ``rejected_deduped`` does not grow.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.stack_support import segment_file, unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

AHEAD_BY = 15.0  # seconds beyond the 24 h policy; the file must be ingested within this, the replay must come after


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def replay(stack: StackHandle, tenant: str, *args: str) -> dict[str, Any]:
    return dict(json.loads(stack.cli("replay", "--tenant", tenant, "--json", *args).stdout))


def test_replay_loads_a_line_that_now_validates_and_rejects_a_still_bad_one_under_the_same_id(
    local_stack: StackHandle, tmp_path: Path
) -> None:
    # GIVEN a file with a good call, a call stamped 24 h + 15 s ahead of now (no receivedAt), and a call with no identity
    tenant, run = local_stack.add_tenant(), unique("r")
    start = time.time()
    ahead = datetime.fromtimestamp(start, UTC) + timedelta(hours=24, seconds=AHEAD_BY)
    records = [
        {"type": "track", "event": "Good", "userId": "u1", "messageId": f"{run}-good", "timestamp": "2024-05-01T10:00:00Z"},
        {"type": "track", "event": "Clock Ahead", "userId": "u2", "messageId": f"{run}-ahead", "timestamp": iso(ahead)},
        {"type": "track", "event": "Nobody", "messageId": f"{run}-nobody", "timestamp": "2024-05-01T10:00:00Z"},
    ]
    [origin] = local_stack.drop(tenant, segment_file(tmp_path, records))
    local_stack.wait()
    before = local_stack.query(tenant, "SELECT rejected_id, reason_code, line_number FROM rejected_deduped ORDER BY 3")
    assert [(r["reason_code"], r["line_number"]) for r in before] == [("future_timestamp", 2), ("missing_identity", 3)], (
        "the file was not ingested within AHEAD_BY seconds" if time.time() - start > AHEAD_BY else before
    )

    # WHEN a dry run is asked for, for one reason and for all
    one = replay(local_stack, tenant, "--reason", "future_timestamp", "--dry-run")
    every = replay(local_stack, tenant, "--dry-run")
    # THEN it counts what would be republished, per the filter, and publishes nothing
    assert (one["selected"], one["republished"], one["dry_run"]) == (1, 1, True)
    assert (every["selected"], every["republished"]) == (2, 2)
    local_stack.wait()
    assert local_stack.stats(tenant)["events"] == 1

    # WHEN real time has caught up with the clock that ran ahead, and the rejected lines are replayed, twice
    # (as two operators might), the second run starting before the first one's lines are loaded
    time.sleep(max(0.0, start + AHEAD_BY + 1.0 - time.time()))
    first = replay(local_stack, tenant)
    second = replay(local_stack, tenant)
    local_stack.wait()

    # THEN the first run republished both lines
    assert (first["selected"], first["republished"], first["skipped"]) == (2, 2, {})
    assert second["republished"] >= 1  # the still-bad line at least; the other one too if it was not loaded yet
    # AND the line that now validates is one event, with its messageId, at its original position
    rows = local_stack.query(
        tenant, "SELECT event_instance_id, origin, line_number FROM events_deduped ORDER BY line_number"
    )
    assert rows == [
        {"event_instance_id": f"{run}-good", "origin": origin, "line_number": 1},
        {"event_instance_id": f"{run}-ahead", "origin": origin, "line_number": 2},
    ]
    stats = local_stack.stats(tenant)
    assert (stats["events"], stats["duplicates"]) == (2, 0)
    # AND the still-bad line was rejected again under the same rejected_id: nothing new in rejected_deduped
    after = local_stack.query(tenant, "SELECT rejected_id, reason_code, line_number FROM rejected_deduped ORDER BY 3")
    assert after == before
    replayed = local_stack.query(
        tenant, f"SELECT COUNT(*) AS n FROM rejected WHERE rejected_id = '{before[1]['rejected_id']}'"
    )
    assert replayed[0]["n"] >= 1

    # WHEN replay runs once more
    third = replay(local_stack, tenant)
    # THEN the loaded line is skipped as already loaded; only the still-bad line goes again
    assert (third["selected"], third["republished"], third["skipped"]) == (2, 1, {"already_loaded": 1})


def test_payloads_that_are_not_the_original_record_are_not_replayed(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a rejected line whose bytes were not UTF-8 (stored with replacement characters) and an ordinary bad line
    tenant = local_stack.add_tenant()
    root = segment_file(
        tmp_path,
        [
            '{"type":"track","event":"x","userId":"u","timestamp":"2024-05-01T10:00:00Z"}',
            '{"type":"track","event":"x","timestamp":"2024-05-01T10:00:00Z"}',
        ],
        compress=False,
    )
    path = next(root.rglob("part-*"))
    path.write_bytes(path.read_bytes() + b'{"type":"track","event":"\xff","userId":"u","timestamp":"2024-05-01T10:00:00Z"}\n')
    local_stack.drop(tenant, root)
    local_stack.wait()
    assert local_stack.stats(tenant)["rejected"] == {"missing_identity": 1, "invalid_utf8": 1}

    # WHEN everything is replayed
    result = replay(local_stack, tenant)
    local_stack.wait()

    # THEN the lossy payload is skipped with its reason, the other one is republished (and rejected again)
    assert (result["selected"], result["republished"], result["skipped"]) == (2, 1, {"invalid_utf8": 1})
    stats = local_stack.stats(tenant)
    assert stats["rejected"] == {"missing_identity": 1, "invalid_utf8": 1}
    assert stats["events"] == 1
