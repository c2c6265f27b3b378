"""parse_message: every Pub/Sub input is bounded (review findings 5b, 5c, 18). Attributes come from any publisher, so
malformed or huge ones are ignored (lines numbered from 1) instead of raising or building huge lists, and a message
of more lines than one message may carry is one recorded rejection, not gigabytes of Python objects. And what
load_message refuses before it parses or writes anything: a message naming another tenant, or its bucket."""

from __future__ import annotations

import base64
import json
import tracemalloc
from types import SimpleNamespace

import pytest

from shared.config import Tenant
from shared.envelopes import PubSubMessage
from shared.errors import SetupError
from shared.load import pipeline
from shared.load.pipeline import MAX_LINES_PER_MESSAGE, load_message, parse_message
from shared.sources.common import RejectReason
from shared.warehouse.rows import EventRow

EVENT = {"contact_id": "u1", "event_name": "opened", "timestamp": "2024-05-14T09:00:00Z"}


def message(payload: bytes, **attributes: str) -> PubSubMessage:
    return PubSubMessage.model_validate(
        {
            "data": base64.b64encode(payload).decode(),
            "messageId": "m-1",
            "publishTime": "2024-05-14T09:00:05Z",
            "attributes": {"tenant": "acme", **attributes},
        }
    )


def ndjson(n: int) -> bytes:
    return b"\n".join(json.dumps({**EVENT, "event_instance_id": f"e{i}"}).encode() for i in range(n))


@pytest.mark.parametrize(
    "attributes",
    [
        {"first_line": "x", "last_line": "3"},
        {"first_line": "1", "last_line": "1e9"},
        {"first_line": "1", "last_line": "1000000000"},
        {"first_line": "1", "last_line": "1" + "0" * 4400},
        {"first_line": "1", "last_line": "3", "partial_line": "zz"},
        {"first_line": "1", "last_line": "3", "partial_line": "1e9"},
        {"first_line": "2", "last_line": "4", "skipped_lines": "-,,x-y"},
        {"first_line": "1", "last_line": "3", "line_count": "999999999"},
        {"partial_line": "-1"},
        {"oversized": "maybe", "original_bytes": "lots"},
    ],
)
def test_malformed_or_huge_attributes_are_ignored_and_lines_numbered_from_1(attributes: dict[str, str]) -> None:
    # GIVEN a direct publish of 3 good events with attributes that are malformed, inconsistent or huge
    msg = message(ndjson(3), **attributes)
    # WHEN parsed, with the memory it allocates traced
    tracemalloc.start()
    try:
        parsed = parse_message(msg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN nothing raises, the 3 events load numbered 1..3, and no list the size of an attribute was built
    assert [r.lineage.line_number for r in parsed.rows] == [1, 2, 3] and not parsed.rejected
    assert peak < 1 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_consistent_attributes_still_number_lines_and_mark_the_partial_one() -> None:
    # GIVEN an ingest batch: lines 5..9 of a file, 7 blank, 9 the broken tail of a truncated file
    payload = ndjson(3) + b'\n{"contact_id": "u1", "event_na'
    msg = message(payload, first_line="5", last_line="9", skipped_lines="7", line_count="4", partial_line="9")
    # WHEN parsed THEN the lines keep their numbers and the partial one is truncated_line
    parsed = parse_message(msg)
    assert [r.lineage.line_number for r in parsed.rows] == [5, 6, 8]
    assert [(r.lineage.line_number, r.reason_code) for r in parsed.rejected] == [(9, RejectReason.TRUNCATED_LINE)]


def test_an_oversized_line_with_a_malformed_size_is_still_rejected_with_its_size() -> None:
    parsed = parse_message(message(b'{"big": "xxxx', oversized="true", original_bytes="1e12", first_line="4",
                                   last_line="4", line_count="1"))
    [bad] = parsed.rejected
    assert (bad.reason_code, bad.lineage.line_number) == (RejectReason.LINE_TOO_LARGE, 4)
    assert "13 bytes" in bad.message  # what it can tell from the payload, not the attribute


def test_a_message_at_the_line_cap_is_parsed_line_by_line() -> None:
    parsed = parse_message(message(ndjson(MAX_LINES_PER_MESSAGE)))
    assert len(parsed.rows) == MAX_LINES_PER_MESSAGE and not parsed.rejected
    assert all(isinstance(r, EventRow) for r in parsed.rows[:3])


def test_a_10_mb_message_of_tiny_lines_is_one_rejection_with_bounded_memory() -> None:
    # GIVEN a direct publish of 10 MB of "{}" lines (3.3 million lines; about 1 KB of Python objects each if parsed
    # one by one: ~3 GiB)
    payload = b"{}\n" * (10_000_000 // 3)
    msg = message(payload)
    # WHEN parsed, with the memory it allocates traced
    tracemalloc.start()
    try:
        parsed = parse_message(msg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN the whole message is one rejected row saying why (its head kept), and memory stayed near the payload size
    [bad] = parsed.rejected
    assert not parsed.rows
    assert bad.reason_code == RejectReason.TOO_MANY_LINES and str(MAX_LINES_PER_MESSAGE) in bad.message
    assert bad.payload.startswith("{}\n{}") and len(bad.payload) <= 100_000
    assert bad.lineage.line_number is None and bad.lineage.origin == "pubsub://raw-events/m-1"
    assert peak < 3 * len(payload), f"peak {peak / 2**20:.1f} MiB for a {len(payload) / 2**20:.1f} MiB payload"
    # AND its id is stable (a redelivery writes the same rejected row)
    assert parse_message(msg).rejected[0].rejected_id == bad.rejected_id


@pytest.fixture
def only_acme(monkeypatch: pytest.MonkeyPatch) -> None:
    acme = Tenant(name="acme", region="europe-west1", bucket="b-acme", dataset="landline_acme")
    monkeypatch.setattr(pipeline, "tenants", lambda: SimpleNamespace(get={"acme": acme}.__getitem__))


@pytest.mark.usefixtures("only_acme")
@pytest.mark.parametrize(
    ("attributes", "refused"),
    [
        ({"tenant": "globex"}, "names tenant 'globex'"),
        ({"origin": "gs://b-globex/segment-logs/s/1/f.gz#1"}, "origin in bucket 'b-globex'"),
        ({"tenant": "acme", "origin": "gs://b-globex/csv/s/f.csv#1", "format": "csv"}, "origin in bucket 'b-globex'"),
    ],
)
def test_a_message_naming_another_tenant_or_its_bucket_writes_nothing(attributes: dict[str, str], refused: str) -> None:
    # GIVEN a message on acme's topic that names globex, or carries a file of globex's bucket
    msg = message(ndjson(2), **attributes)
    # WHEN loaded THEN it is a setup error before anything is parsed or written (no BigQuery client is needed)
    with pytest.raises(SetupError, match=refused):
        load_message(msg, "raw-events.acme")
