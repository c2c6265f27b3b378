"""Mixpanel and Amplitude raw event exports dropped into a tenant bucket, through the real local stack.

The corpus is the captured lines of ``tests/events/mixpanel.ndjson`` and ``tests/events/amplitude.ndjson`` plus bad
and duplicate lines, each written next to the outcome it must have, so the expected counts come from the corpus.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.stack_support import unique

if TYPE_CHECKING:
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

EVENTS = Path(__file__).resolve().parents[1] / "events"
EVENT, USER, DUP = "event", "user", "dup"
MIXPANEL_OBJECT = "mixpanel/3141592/2024/05/14/full_day/export-0.json.gz"
MIXPANEL_MARKER = "mixpanel/3141592/2024/05/14/full_day/complete"
AMPLITUDE_OBJECT = "amplitude/187520/187520_2024-05-14_9#1.json.gz"  # Amplitude's own file name, '#' included
# Personal values in the captured lines that must never reach events.metadata.
PII = {
    "ip": "203.0.113.42",
    "other ip": "198.51.100.7",
    "android ip": "192.0.2.10",
    "device id": "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90",
    "web device id": "2b6c1f3e-0d9a-4e8b-b7c6-5d4e3f2a1b0c",
    "mixpanel web device id": "18f6f0c2a1b9c-0d5e7f1a2b3c4d-26011b51-1fa400-18f6f0c2a1b9c",
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "adid": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "city": "London",
    "other city": "Manchester",
    "region": "England",
    "latitude": "51.5072",
    "email": "jane.doe@example.com",
    "phone": "+44 7700 900123",
    "phone digits": "7700900123",
    "phone in free text": "(415) 555-2671",
    "mixpanel token": "6972694d809c7390676a138834f8c890",
}


def captured(fmt: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (EVENTS / f"{fmt}.ndjson").read_text().splitlines() if line]


def line(value: Any) -> bytes:
    return json.dumps(value).encode()


MP = captured("mixpanel")
MIXPANEL_FILE: list[tuple[str, bytes]] = [
    (EVENT, line(MP[0])),
    (EVENT, line(MP[1])),
    ("blank", b""),  # not a record, not a line
    (EVENT, line(MP[2])),
    ("missing_identity", line({"event": "Anonymous", "properties": {"time": 1715678463}})),
    ("invalid_timestamp", line({"event": "x", "properties": {"time": "yesterday", "distinct_id": "u1"}})),
    ("missing_timestamp", line({"event": "x", "properties": {"distinct_id": "u1"}})),
    ("missing_event_name", line({"properties": {"time": 1715678463, "distinct_id": "u1"}})),
    ("invalid_json", b'{"event": "x", "properties": {"time": NaN, "distinct_id": "u1"}}'),
]

AMP = captured("amplitude")
AMPLITUDE_FILE: list[tuple[str, bytes]] = [
    (EVENT, line(AMP[0])),
    (EVENT, line(AMP[1])),
    (USER, line(AMP[2])),  # $identify
    (EVENT, line(AMP[3])),
    (DUP, line(AMP[0])),  # the same $insert_id again (a re-export): stored, counted as a duplicate
    ("missing_identity", line({**AMP[3], "user_id": None, "device_id": None})),
    ("invalid_timestamp", line({**AMP[3], "event_time": "14/05/2024 10:02"})),
    ("missing_event_name", line({**AMP[3], "event_type": " "})),
    ("not_an_object", b"[]"),
]


def put(root: Path, name: str, corpus: list[tuple[str, bytes]]) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"".join(raw + b"\n" for _, raw in corpus)))


def expected(*corpora: list[tuple[str, bytes]]) -> Counter[str]:
    return Counter(outcome for corpus in corpora for outcome, _ in corpus if outcome != "blank")


def test_mixpanel_and_amplitude_exports_load_every_line_and_keep_pii_out_of_events(
    local_stack: StackHandle, tmp_path: Path
) -> None:
    # GIVEN a fresh tenant, a gzipped Mixpanel raw export with its "complete" marker, and a gzipped Amplitude export,
    # laid out as the exporters write them, mixing good, $identify, duplicate and bad lines
    tenant = local_stack.add_tenant()
    root = tmp_path / unique("tree")
    put(root, MIXPANEL_OBJECT, MIXPANEL_FILE)
    (root / MIXPANEL_MARKER).write_bytes(b"")
    put(root, AMPLITUDE_OBJECT, AMPLITUDE_FILE)
    want = expected(MIXPANEL_FILE, AMPLITUDE_FILE)
    reasons = {k: v for k, v in want.items() if k not in (EVENT, USER, DUP)}

    # WHEN the tree is dropped into the tenant's bucket and the pipeline settles
    local_stack.drop(tenant, root)
    local_stack.wait()

    # THEN both export files are loaded and the marker is ignored with its reason
    files = local_stack.query(tenant, "SELECT object_name, status, lines, error FROM files_latest ORDER BY object_name")
    assert [(f["object_name"], f["status"], f["error"]) for f in files] == [
        (AMPLITUDE_OBJECT, "loaded", None),
        (MIXPANEL_MARKER, "ignored", "export_marker"),
        (MIXPANEL_OBJECT, "loaded", None),
    ]
    # AND every non-blank line is exactly one event, user_properties row, rejection or counted duplicate
    stats = local_stack.stats(tenant)
    assert stats["files"] == {"loaded": 2, "ignored": 1}
    assert stats["lines"] == sum(want.values()) == len(MIXPANEL_FILE) + len(AMPLITUDE_FILE) - 1
    assert stats["events"] == want[EVENT]
    assert stats["user_property_rows"] == want[USER]
    assert stats["duplicates"] == want[DUP]
    assert stats["rejected_lines"] == sum(reasons.values())
    assert (
        stats["events"] + stats["user_property_rows"] + stats["rejected_lines"] + stats["duplicates"] == stats["lines"]
    )
    assert stats["rejected"] == reasons

    # AND each row says which exporter it came from
    by_format = local_stack.query(
        tenant, "SELECT source_format, COUNT(DISTINCT event_instance_id) AS n FROM events GROUP BY source_format"
    )
    assert {r["source_format"]: r["n"] for r in by_format} == {"mixpanel": 3, "amplitude": 3}
    rejected_formats = local_stack.query(tenant, "SELECT DISTINCT source_format FROM rejected")
    assert {r["source_format"] for r in rejected_formats} == {"mixpanel", "amplitude"}

    # AND no personal value appears in any event's metadata, while the descriptive fields survive
    rows = local_stack.query(
        tenant, "SELECT event_name, source_format, TO_JSON_STRING(metadata) AS m FROM events_deduped"
    )
    dump = "\n".join(r["m"] for r in rows)
    decoded = "\n".join(json.dumps(json.loads(r["m"]), ensure_ascii=False) for r in rows)
    leaks = {what for what, value in PII.items() if value in dump or value in decoded}
    assert leaks == set(), f"personal data in events.metadata: {sorted(leaks)}"

    def metadata(name: str, source: str) -> dict[str, Any]:
        [m] = [r["m"] for r in rows if (r["event_name"], r["source_format"]) == (name, source)]
        value = json.loads(m)
        return value if isinstance(value, dict) else dict(json.loads(value))

    assert metadata("Support Ticket Opened", "mixpanel")["mp_lib"] == "web"
    assert metadata("Support Ticket Opened", "amplitude")["context"]["library"] == "amplitude-swift/1.4.3"
    assert metadata("Order Completed", "amplitude")["order_id"] == "O-5521"

    # AND the $identify line is the contact's user_properties row, addresses included
    [user] = local_stack.query(
        tenant, "SELECT contact_id, email_address, phone_number, country, timezone, source_format FROM user_properties"
    )
    assert user == {
        "contact_id": "user_8412",
        "email_address": "jane.doe@example.com",
        "phone_number": "+447700900123",
        "country": "United Kingdom",
        "timezone": "Europe/London",
        "source_format": "amplitude",
    }
