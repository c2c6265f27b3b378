"""Issue 4: every line read is accounted for, through the real local stack.

``lines == events + user_property_rows + rejected_lines + duplicates`` (infra/local/stats.py), on a corpus that mixes good
records of every Segment type, duplicates (same messageId twice in one file and across two files, and a direct
publish repeating a file's event id) and bad records of many reason codes. Each corpus line is written next to the
outcome it must have, so the expected counts are derived from the corpus itself rather than typed twice. Lines that
arrive by direct publish count in ``lines`` too, and ``unaccounted`` (the difference) is printed and must be 0.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.publish_support import publish_raw
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

DAY = "1714521600000"
TS = "2024-05-01T10:00:00.000Z"
RECEIVED = "2024-05-01T10:00:01.000Z"

# Outcomes: "event", "user" (a user_properties row), "dup" (same messageId already seen), or a reason code.
EVENT, USER, DUP = "event", "user", "dup"


def call(kind: str, mid: str | None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": kind, "userId": "user-1", "timestamp": TS, "receivedAt": RECEIVED}
    if mid is not None:
        base["messageId"] = mid
    base.update(fields)
    return base


def line(value: dict[str, Any] | list[Any]) -> bytes:
    return json.dumps(value).encode()


FILE_1: list[tuple[str, bytes]] = [
    (EVENT, line(call("track", "m-track-1", event="Order Completed", properties={"total": 19.9}))),
    (USER, line(call("identify", "m-identify-1", traits={"email": "a@example.com", "plan": "pro"}))),
    (EVENT, line(call("page", "m-page-1", name="Home", properties={"path": "/"}))),
    (EVENT, line(call("screen", "m-screen-1", name="Settings"))),
    (EVENT, line(call("group", "m-group-1", groupId="org-9", traits={"plan": "enterprise"}))),
    (EVENT, line(call("alias", "m-alias-1", previousId="anon-77"))),
    (DUP, line(call("track", "m-track-1", event="Order Completed", properties={"total": 19.9}))),
    (EVENT, line(call("track", None, event="No Message Id"))),  # id = content hash
    (EVENT, line(call("track", "m-anon-1", event="Anonymous", userId=None, anonymousId="anon-1"))),
    ("blank", b""),  # a blank line: not a record, not counted as a line
    ("invalid_json", b'{"type":"track",,"event":"x","userId":"u"}'),
    ("invalid_json", line(call("track", "m-nan", event="x"))[:-1] + b',"properties":{"v":NaN}}'),
    ("invalid_unicode", line(call("track", "m-sur", event="x"))[:-1] + rb',"properties":{"s":"\ud800"}}'),
    ("invalid_utf8", b'{"type":"track","event":"x","userId":"\xff\xfe","timestamp":"2024-05-01T10:00:00Z"}'),
    ("missing_identity", line(call("track", "m-noid", event="x", userId=None))),
    ("missing_identity", line(call("track", "m-blankid", event="x", userId="  ", anonymousId=""))),
    ("missing_event_name", line(call("track", "m-noevent"))),
    ("missing_event_name", line(call("track", "m-blankevent", event=" "))),
    ("future_timestamp", line(call("track", "m-future", event="x", timestamp="2999-01-01T00:00:00Z"))),
    ("unknown_type", line(call("Track", "m-capital", event="x"))),
    ("unknown_type", line({"event": "x", "userId": "u", "timestamp": TS})),
    ("not_an_object", b"[1, 2, 3]"),
    ("missing_timestamp", line(call("track", "m-nots", event="x", timestamp=None, receivedAt=None))),
    ("invalid_timestamp", line(call("track", "m-naive", event="x", timestamp="2024-05-01T10:00:00"))),
    ("invalid_timestamp", line(call("track", "m-epoch", event="x", timestamp=1714557600))),
    ("missing_group_id", line(call("group", "m-nogroup"))),
    ("invalid_field", line(call("track", "m-props", event="x", properties=[1, 2]))),
]

FILE_2: list[tuple[str, bytes]] = [
    (DUP, line(call("track", "m-track-1", event="Order Completed", properties={"total": 19.9}))),  # across files
    (DUP, line(call("identify", "m-identify-1", traits={"email": "a@example.com", "plan": "pro"}))),
    (DUP, line(call("page", "m-page-1", name="Home", properties={"path": "/"}))),
    (EVENT, line(call("track", "m-track-2", event="Item Viewed"))),
    (USER, line(call("identify", "m-identify-2", userId="user-2", traits={"phone": "+14155552671"}))),
    ("missing_previous_id", line(call("alias", "m-noprev"))),
    ("invalid_json", b"not json at all"),
    ("invalid_json", line(call("track", "m-inf", event="x"))[:-1] + b',"properties":{"v":-Infinity}}'),
]


# A direct publish (native NDJSON, one message): counted by position, like a file's lines.
DIRECT: list[tuple[str, bytes]] = [
    (EVENT, line({"contact_id": "user-3", "event_name": "Direct", "timestamp": TS, "event_instance_id": "d-1"})),
    (USER, line({"kind": "user_properties", "contact_id": "user-3", "country": "FR", "updated_at": TS})),
    (DUP, line({"contact_id": "user-1", "event_name": "Again", "timestamp": TS, "event_instance_id": "m-track-2"})),
    ("invalid_timestamp", line({"contact_id": "user-3", "event_name": "No Time"})),
    ("invalid_json", b"{nope"),
]


def put(root: Path, name: str, corpus: list[tuple[str, bytes]]) -> None:
    folder = root / "segment-logs" / "src" / DAY
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(gzip.compress(b"".join(raw + b"\n" for _, raw in corpus)))


def expected(*corpora: list[tuple[str, bytes]]) -> Counter[str]:
    return Counter(outcome for corpus in corpora for outcome, _ in corpus if outcome != "blank")


def test_every_line_is_a_row_a_rejection_or_a_counted_duplicate(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a fresh tenant, two Segment files mixing good, duplicate and bad records (and one blank line), and a
    # direct publish of native records
    tenant = local_stack.add_tenant()
    root = tmp_path / unique("tree")
    put(root, "part-0001.gz", FILE_1)
    put(root, "part-0002.gz", FILE_2)
    want = expected(FILE_1, FILE_2, DIRECT)
    reasons = {k: v for k, v in want.items() if k not in (EVENT, USER, DUP)}

    # WHEN both files are dropped into the tenant's bucket, the message is published, and the pipeline settles
    local_stack.drop(tenant, root)
    publish_raw(local_stack, tenant, b"\n".join(raw for _, raw in DIRECT))
    local_stack.wait()

    # THEN `landline stats --json` accounts for every non-blank line exactly once, and says nothing is unaccounted
    stats = local_stack.stats(tenant)
    assert stats["files"] == {"loaded": 2}
    assert stats["lines"] == sum(want.values()) == len(FILE_1) + len(FILE_2) - 1 + len(DIRECT)
    assert (stats["file_lines"], stats["direct_lines"]) == (len(FILE_1) + len(FILE_2) - 1, len(DIRECT))
    assert stats["unaccounted"] == 0
    assert stats["events"] == want[EVENT]
    assert stats["user_property_rows"] == want[USER]
    assert stats["duplicates"] == want[DUP]
    assert stats["rejected_lines"] == sum(reasons.values())
    assert stats["events"] + stats["user_property_rows"] + stats["rejected_lines"] + stats["duplicates"] == stats["lines"]
    # AND each reason code is counted as expected
    assert stats["rejected"] == reasons
    # AND duplicates are stored (so they can be counted) but the deduplicated view has one row per event
    assert stats["event_rows"] == want[EVENT] + want[DUP] - 1  # the identify duplicate is a user_properties row
    [dedup] = local_stack.query(tenant, "SELECT COUNT(*) AS n, COUNT(DISTINCT event_instance_id) AS d FROM events_deduped")
    assert dedup["n"] == dedup["d"] == want[EVENT]


def test_rejected_rows_name_their_line_and_keep_the_payload(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a one-file corpus with a few bad lines between good ones
    tenant = local_stack.add_tenant()
    corpus = [FILE_1[0], FILE_1[10], FILE_1[14], FILE_1[19], FILE_1[3]]
    root = tmp_path / unique("tree")
    put(root, "part-0001.gz", corpus)

    # WHEN it is loaded
    [origin] = local_stack.drop(tenant, root)
    local_stack.wait()

    # THEN each rejected row names the file, the physical line, the reason, and keeps the original line as payload
    rows = local_stack.query(
        tenant, "SELECT reason_code, origin, line_number, payload, message FROM rejected_deduped ORDER BY line_number"
    )
    assert [(r["reason_code"], r["line_number"]) for r in rows] == [
        ("invalid_json", 2),
        ("missing_identity", 3),
        ("unknown_type", 4),
    ]
    assert {r["origin"] for r in rows} == {origin}
    assert [r["payload"].encode() for r in rows] == [corpus[1][1], corpus[2][1], corpus[3][1]]
    assert all(r["message"] for r in rows)
