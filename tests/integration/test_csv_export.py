"""CSV exports in the native data model dropped into a tenant bucket, through the real local stack.

The corpus is the sample files ``tests/events/csv_events.csv`` and ``tests/events/csv_users.csv`` plus bad and
duplicate lines, each written next to the outcome it must have, so the expected counts come from the corpus.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.stack_support import unique

if TYPE_CHECKING:
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

EVENTS = Path(__file__).resolve().parents[1] / "events"
EVENT, USER, DUP = "event", "user", "dup"
EVENTS_OBJECT = "csv/crm/2024-05-14/events.csv.gz"
USERS_OBJECT = "csv/crm/users.csv"
BAD_HEADER_OBJECT = "csv/crm/bad-header.csv"
# Personal values in the sample events that must never reach events.metadata.
PII = {
    "email": "jane.doe@example.com",
    "phone in free text": "+44 7700 900123",
    "device id": "B9E6D4B3-3C6F-4E0A-9F21-8E7B2C5D1A90",
}

EV = (EVENTS / "csv_events.csv").read_bytes().splitlines()
US = (EVENTS / "csv_users.csv").read_bytes().splitlines()
# (outcome, line) after the header; the events file has 11 columns
EVENTS_FILE: list[tuple[str, bytes]] = [
    (EVENT, EV[1]),
    (EVENT, EV[2]),
    ("blank", b""),  # not a record, not a line
    (EVENT, EV[3]),
    (DUP, EV[1]),  # the same event_instance_id again: stored, counted as a duplicate
    ("missing_identity", b",Viewed,2024-05-14T09:21:03Z,,,,,,,,"),
    ("missing_event_name", b"u1,,2024-05-14T09:21:03Z,,,,,,,,"),
    ("invalid_timestamp", b"u1,Viewed,2024-05-14 09:21,,,,,,,,"),
    ("missing_timestamp", b"u1,Viewed,,,,,,,,,"),
    ("invalid_csv", b"u1,Viewed,2024-05-14T09:21:03Z"),  # too few fields
    ("invalid_csv", b'u1,Viewed,2024-05-14T09:21:03Z,,,,,,"a note that goes on'),  # a field spanning lines...
    ("invalid_csv", b'on the next line",,'),  # ...leaves an unbalanced quote on both lines
]
USERS_FILE: list[tuple[str, bytes]] = [
    (USER, US[1]),
    (USER, US[2]),
    ("missing_identity", b",,,FR,,,,,"),
]
BAD_HEADER = b"contact_id,name,when,plan,plan\nu1,Viewed,2024-05-14T09:21:03Z,pro,pro\n"


def body(header: bytes, corpus: list[tuple[str, bytes]]) -> bytes:
    return header + b"\n" + b"".join(raw + b"\n" for _, raw in corpus)


def expected(*corpora: list[tuple[str, bytes]]) -> Counter[str]:
    return Counter(outcome for corpus in corpora for outcome, _ in corpus if outcome != "blank")


def test_csv_exports_load_every_data_line_and_reject_a_bad_header(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a fresh tenant, a gzipped CSV events file, a plain CSV user-properties file and a CSV whose header lacks
    # required columns and repeats one, under the tenant bucket's csv/ folder
    tenant = local_stack.add_tenant()
    root = tmp_path / unique("tree")
    for name, data in (
        (EVENTS_OBJECT, gzip.compress(body(EV[0], EVENTS_FILE))),
        (USERS_OBJECT, body(US[0], USERS_FILE)),
        (BAD_HEADER_OBJECT, BAD_HEADER),
    ):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    want = expected(EVENTS_FILE, USERS_FILE)
    reasons = {k: v for k, v in want.items() if k not in (EVENT, USER, DUP)}

    # WHEN the tree is dropped into the tenant's bucket and the pipeline settles
    local_stack.drop(tenant, root)
    local_stack.wait()

    # THEN both good files are loaded, counting data lines only, and the bad-header file is rejected whole, with a
    # reason that names the columns
    files = local_stack.query(
        tenant, "SELECT object_name, status, lines, encoding, error FROM files_latest ORDER BY object_name"
    )
    assert [(f["object_name"], f["status"], f["lines"]) for f in files] == [
        (EVENTS_OBJECT, "loaded", len(EVENTS_FILE) - 1),
        (BAD_HEADER_OBJECT, "rejected", 0),
        (USERS_OBJECT, "loaded", len(USERS_FILE)),
    ]
    assert files[0]["encoding"] == "gzip" and files[2]["encoding"] == "plain"
    error = files[1]["error"]
    assert error.startswith("invalid_csv_header") and "duplicate column(s): plan" in error
    assert "missing required column(s) event_name, timestamp" in error

    # AND every data line is exactly one event, user_properties row, rejection or counted duplicate
    stats = local_stack.stats(tenant)
    assert stats["files"] == {"loaded": 2, "rejected": 1}
    assert stats["lines"] == sum(want.values())
    assert stats["events"] == want[EVENT]
    assert stats["user_property_rows"] == want[USER]
    assert stats["duplicates"] == want[DUP]
    assert stats["rejected_lines"] == sum(reasons.values())
    assert stats["rejected"] == reasons
    assert (
        stats["events"] + stats["user_property_rows"] + stats["rejected_lines"] + stats["duplicates"] == stats["lines"]
    )

    # AND rows say they came from CSV, at their real line numbers (the header is line 1, line 4 is blank)
    rows = local_stack.query(
        tenant,
        "SELECT event_name, source_format, line_number, TO_JSON_STRING(metadata) AS m FROM events_deduped "
        "ORDER BY line_number",
    )
    assert [(r["event_name"], r["source_format"], r["line_number"]) for r in rows] == [
        ("Order Completed", "csv", 2),
        ("Support Ticket Opened", "csv", 3),
        ("Signed Up", "csv", 5),
    ]
    [bad_csv] = local_stack.query(tenant, "SELECT payload FROM rejected WHERE line_number = 11 AND origin LIKE '%events%'")
    assert bad_csv["payload"] == (EV[0] + b"\n" + EVENTS_FILE[9][1]).decode()

    # AND no personal value appears in any event's metadata, while the other columns survive as strings
    dump = "\n".join(r["m"] for r in rows)
    decoded = "\n".join(json.dumps(json.loads(r["m"]), ensure_ascii=False) for r in rows)
    leaks = {what for what, value in PII.items() if value in dump or value in decoded}
    assert leaks == set(), f"personal data in events.metadata: {sorted(leaks)}"
    first = json.loads(rows[0]["m"])
    first = first if isinstance(first, dict) else json.loads(first)
    assert first["order_total"] == "42.50" and first["note"] == "gift wrap, please"

    # AND the user-properties file is the contacts' rows, addresses in their columns, other columns as properties
    users = local_stack.query(
        tenant,
        "SELECT contact_id, email_address, phone_number, country, push_token, timezone, "
        "TO_JSON_STRING(properties) AS p FROM user_properties ORDER BY contact_id",
    )
    assert [(u["contact_id"], u["email_address"], u["country"], u["push_token"]) for u in users] == [
        ("user_8412", "jane.doe@example.com", "United Kingdom", "fcm-token-8412"),
        ("user_9001", None, "US", None),
    ]
    props = json.loads(users[0]["p"])
    props = props if isinstance(props, dict) else json.loads(props)
    assert props == {"plan": "pro", "favourite_colour": "green, mostly"}
