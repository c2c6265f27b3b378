"""Send requests (no stack): the tenant comes from the topic, every line becomes a schedule row or a rejected row that
says why (never an exception), and rows carry the request's publish time and line so the newest request wins."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import Tenant
from shared.envelopes import PubSubMessage
from shared.errors import SetupError
from shared.push import schedule
from shared.push.schedule import SendRequest, parse_send_requests, tenant_of_send_request
from shared.warehouse.rows import RejectedRow, ScheduleRow

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GOOD = {"message_id": "m-1", "contact_id": "c1", "title": "Hi", "body": "There"}


def message(lines: list[bytes | dict[str, Any]], publish_time: str | None = "2026-12-01T11:59:00.123456789Z",
            **attributes: str) -> PubSubMessage:
    data = b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines)
    return PubSubMessage(data=base64.b64encode(data).decode(), attributes=attributes, messageId="42",
                         publishTime=publish_time)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    known = {n: Tenant(name=n, region="europe-west1", bucket=f"b-{n}", dataset=f"d_{n}") for n in ("acme", "globex")}

    class Registry:
        def get(self, name: str) -> Tenant:
            if name not in known:
                raise SetupError(f"unknown tenant {name!r}", "add it")
            return known[name]

    monkeypatch.setattr(schedule, "tenants", Registry)


def test_the_tenant_is_the_topics_and_a_contradicting_attribute_is_refused(registry: None) -> None:
    # GIVEN requests on acme's topic: without attribute, with tenant=acme, with tenant=globex; one on the shared topic
    # WHEN their tenant is decided
    # THEN acme's topic means acme, whatever a publisher wrote, and a different tenant attribute is a setup error
    assert tenant_of_send_request(message([GOOD]), "send-requests.acme").name == "acme"
    assert tenant_of_send_request(message([GOOD], tenant="acme"), "send-requests.acme").name == "acme"
    with pytest.raises(SetupError, match="says tenant='globex'") as other:
        tenant_of_send_request(message([GOOD], tenant="globex"), "send-requests.acme")
    assert "send-requests.globex" in other.value.fix
    # AND the shared legacy topic names no tenant: refused with the topic to use instead
    with pytest.raises(SetupError, match="shared topic") as shared:
        tenant_of_send_request(message([GOOD], tenant="acme"), "send-requests")
    assert "send-requests.acme" in shared.value.fix
    with pytest.raises(SetupError, match="unknown tenant"):
        tenant_of_send_request(message([GOOD]), "send-requests.nobody")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"local_send_time": "2024-13-45T99:99"}, "local_send_time"),  # matches the old pattern, is no time
        ({"local_send_time": "0001-01-01T00:00"}, "local_send_time"),  # any offset takes it out of range
        ({"send_at": "0001-01-01T00:00:00+01:00"}, "send_at"),  # before year 1 in UTC
        ({"expires_at": "0001-01-01T00:30:00+05:00"}, "expires_at"),
        ({"message_id": "a\nb"}, "message_id"),  # Cloud Storage refuses CR/LF in the claim's object name
        ({"message_id": "a/b"}, "message_id"),
        ({"message_id": "c.0123abcd"}, "message_id"),  # campaigns' prefix: their messages are claimed per chunk
        ({"send_at": "2026-12-01T12:00:00Z", "local_send_time": "2026-12-01T12:00"}, "-"),
    ],
)
def test_bad_requests_are_rejected_lines_not_crashes(change: dict[str, str], field: str) -> None:
    # GIVEN a message with a good request and a bad one
    # WHEN it is parsed
    rows = parse_send_requests(message([GOOD, {**GOOD, "message_id": "m-2", **change}]), "pubsub://t/42", NOW)
    # THEN the good one is scheduled and the bad one rejected, naming the field
    assert isinstance(rows[0], ScheduleRow)
    assert isinstance(rows[1], RejectedRow) and rows[1].reason_code == "invalid_send_request"
    assert rows[1].message.startswith(f"{field}:"), rows[1].message


def test_rows_carry_the_publish_time_and_line_so_a_redelivered_older_request_loses() -> None:
    # GIVEN a message published at 11:59 with two versions of one message on lines 1 and 3
    rows = parse_send_requests(message([GOOD, b"", {**GOOD, "title": "Newer"}]), "pubsub://t/42", NOW)
    # THEN both rows carry the publish time (not the processing time) and their line
    assert [(r.requested_at, r.request_line) for r in rows if isinstance(r, ScheduleRow)] == [
        (datetime(2026, 12, 1, 11, 59, 0, 123456, tzinfo=UTC), 1),
        (datetime(2026, 12, 1, 11, 59, 0, 123456, tzinfo=UTC), 3),
    ]
    # AND a redelivery of the same message writes the same insert ids (deduplicated), whenever it is processed
    again = parse_send_requests(message([GOOD, b"", {**GOOD, "title": "Newer"}]), "pubsub://t/42", datetime.now(UTC))
    assert [r.insert_id for r in again] == [r.insert_id for r in rows]


def test_a_missing_publish_time_falls_back_to_now() -> None:
    [row] = parse_send_requests(message([GOOD], publish_time=None), "pubsub://t/42", NOW)
    assert isinstance(row, ScheduleRow) and row.requested_at == NOW


_fields = st.fixed_dictionaries(
    {},
    optional={
        "message_id": st.text(max_size=20),
        "contact_id": st.text(max_size=5),
        "title": st.text(max_size=5),
        "body": st.text(max_size=5),
        "send_at": st.one_of(st.text(max_size=30), st.datetimes(timezones=st.timezones()).map(datetime.isoformat)),
        "local_send_time": st.one_of(
            st.text(max_size=20), st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}\Z"),
            st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M")),
        ),
        "expires_at": st.one_of(st.integers(), st.datetimes(timezones=st.timezones()).map(datetime.isoformat)),
        "data": st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=3), st.integers())),
        "priority": st.text(max_size=6),
    },
)
_line = st.one_of(st.binary(max_size=200), _fields.map(lambda d: json.dumps(d).encode()))


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=8))
def test_any_message_parses_into_one_row_per_line(lines: list[bytes]) -> None:
    # GIVEN any bytes, and JSON objects with arbitrary values for the request's fields
    data = b"\n".join(line.replace(b"\n", b" ") for line in lines)
    msg = PubSubMessage(data=base64.b64encode(data).decode(), messageId="1", publishTime="2026-12-01T00:00:00Z")
    # WHEN parsed
    rows = parse_send_requests(msg, "pubsub://t/1", NOW)
    # THEN nothing raised, and every non-blank line is exactly one row: scheduled or rejected with its line number
    expected = [n for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    assert [r.request_line if isinstance(r, ScheduleRow) else r.lineage.line_number for r in rows] == expected
    for row in rows:
        if isinstance(row, ScheduleRow):
            row.to_bq(NOW)  # a scheduled row is writable: its times are in range
            assert SendRequest.model_validate_json(data.split(b"\n")[row.request_line - 1]).message_id == row.message_id
