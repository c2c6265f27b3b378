"""Issue 4: publishers that skip the bucket and publish straight to raw-events, with the ordinary Python Pub/Sub client,
in the native format (shared/sources/native.py). Through the real local stack (README "Publishing events directly").
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.stack_support import unique

if TYPE_CHECKING:
    from collections.abc import Iterator

    from google.cloud import pubsub_v1

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack


@pytest.fixture
def publisher(local_stack: StackHandle, monkeypatch: pytest.MonkeyPatch) -> Iterator[pubsub_v1.PublisherClient]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", local_stack.env["PUBSUB_EMULATOR_HOST"])
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    yield client
    client.stop()


def raw_events(stack: StackHandle) -> str:
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient.topic_path(stack.stack.cfg.project, "raw-events")


def test_one_native_event_lands_in_events(
    local_stack: StackHandle, publisher: pubsub_v1.PublisherClient
) -> None:
    # GIVEN a tenant and one event in the native format (one JSON object; no Segment envelope)
    tenant = local_stack.add_tenant()
    instance_id = unique("evt")
    event = {
        "kind": "event",
        "contact_id": "user_8412",
        "event_name": "subscription_renewed",
        "timestamp": "2024-05-14T15:00:00+05:30",
        "event_instance_id": instance_id,
        "timezone": "Asia/Kolkata",
        "metadata": {"plan": "premium", "amount": 9.99, "contact_email": "jane.doe@example.com"},
    }

    # WHEN it is published straight to raw-events with attributes tenant and format
    message_id = publisher.publish(
        raw_events(local_stack), json.dumps(event).encode(), tenant=tenant, format="native"
    ).result(timeout=30)
    local_stack.wait()

    # THEN it is one row of the tenant's events table, in UTC, with the publisher's id and a pubsub:// origin
    [row] = local_stack.query(
        tenant,
        "SELECT contact_id, event_name, event_instance_id, timezone, source_format, origin, line_number, "
        "CAST(timestamp AS STRING) AS ts, TO_JSON_STRING(metadata) AS md FROM events",
    )
    assert (row["contact_id"], row["event_name"], row["event_instance_id"]) == (
        "user_8412", "subscription_renewed", instance_id
    )
    assert row["timezone"] == "Asia/Kolkata"
    assert row["ts"].startswith("2024-05-14 09:30:00")
    assert (row["source_format"], row["origin"], row["line_number"]) == ("native", f"pubsub://raw-events/{message_id}", 1)
    # (metadata went through the PII policy like every event)
    assert json.loads(row["md"]) == {"plan": "premium", "amount": 9.99}


def test_an_ndjson_batch_mixing_an_event_and_user_properties(
    local_stack: StackHandle, publisher: pubsub_v1.PublisherClient
) -> None:
    # GIVEN an NDJSON payload: an event (kind inferred from event_name), a user_properties record, a trailing newline
    tenant = local_stack.add_tenant()
    records: list[dict[str, Any]] = [
        {"contact_id": "user-7", "event_name": "app_opened", "timestamp": "2024-05-14T09:00:00Z"},
        {
            "kind": "user_properties",
            "contact_id": "user-7",
            "country": "GB",
            "timezone": "Europe/London",
            "push_token": "tok-7",
            "phone_number": "+447700900123",
            "email_address": "user7@example.com",
            "properties": {"plan": "pro"},
            "updated_at": "2024-05-14T09:00:01Z",
        },
    ]
    payload = "".join(json.dumps(r) + "\n" for r in records).encode()

    # WHEN it is published as one message
    publisher.publish(raw_events(local_stack), payload, tenant=tenant, format="native").result(timeout=30)
    local_stack.wait()

    # THEN the event is in events and the profile in user_properties, and nothing was rejected
    [event] = local_stack.query(tenant, "SELECT contact_id, event_name, line_number FROM events")
    assert event == {"contact_id": "user-7", "event_name": "app_opened", "line_number": 1}
    [user] = local_stack.query(
        tenant,
        "SELECT contact_id, country, timezone, push_token, phone_number, email_address, line_number FROM user_properties",
    )
    assert user == {
        "contact_id": "user-7",
        "country": "GB",
        "timezone": "Europe/London",
        "push_token": "tok-7",
        "phone_number": "+447700900123",
        "email_address": "user7@example.com",
        "line_number": 2,
    }
    stats = local_stack.stats(tenant)
    assert (stats["events"], stats["user_property_rows"], stats["rejected_lines"]) == (1, 1, 0)


def test_a_message_without_tenant_is_retried_then_kept_in_the_dead_letter_topic(
    local_stack: StackHandle, publisher: pubsub_v1.PublisherClient
) -> None:
    # GIVEN a native event published without the tenant attribute
    marker = unique("orphan")
    event = {"contact_id": "user-1", "event_name": marker, "timestamp": "2024-05-14T09:00:00Z"}

    # WHEN it is published and every delivery attempt has failed
    message_id = publisher.publish(raw_events(local_stack), json.dumps(event).encode(), format="native").result(timeout=30)
    local_stack.wait(timeout=240)

    # THEN it is in the dead-letter topic (kept by its pull subscription), with its payload and attributes intact
    dead = pull_dead_letter(local_stack, marker)
    assert json.loads(dead.data) == event
    assert dead.attributes["format"] == "native"
    assert "tenant" not in dead.attributes
    assert dead.attributes.get("CloudPubSubDeadLetterSourceTopicPublishTime") or dead.attributes.get(
        "CloudPubSubDeadLetterSourceSubscription"
    )
    # AND load_events said why, and what to do
    log = (local_stack.stack.cfg.paths.logs / "load_events.log").read_text(errors="replace")
    assert f"message {message_id} has no tenant attribute" in log
    assert "publish with attribute tenant=<name>" in log


def pull_dead_letter(stack: StackHandle, marker: str, timeout: float = 30) -> Any:
    """Pull the dead-letter message whose payload holds ``marker`` (other tests' dead letters are left alone)."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(stack.stack.cfg.project, "raw-events-dead-letter--keep")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=subscription, max_messages=100, timeout=10)
            for received in response.received_messages:
                if marker.encode() in received.message.data:
                    subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
                    return received.message
            time.sleep(0.5)
    finally:
        subscriber.close()
    raise AssertionError(f"no dead-lettered message holding {marker}")


def test_a_message_whose_origin_is_another_tenants_bucket_writes_nothing_anywhere(
    local_stack: StackHandle, publisher: pubsub_v1.PublisherClient
) -> None:
    # GIVEN two tenants, and a Segment batch that claims to come from B's bucket but is labelled tenant=A
    tenant_a, tenant_b = local_stack.add_tenant(), local_stack.add_tenant()
    buckets = {t["name"]: t["bucket"] for t in json.loads(local_stack.cli("tenant", "list").stdout)}
    marker = unique("crossed")
    call = {"type": "track", "event": marker, "userId": "u1", "messageId": marker,
            "timestamp": "2024-05-14T09:00:00Z", "receivedAt": "2024-05-14T09:00:01Z"}
    origin = f"gs://{buckets[tenant_b]}/segment-logs/src/1714521600000/part-1.gz#1"

    # WHEN it is published and every delivery attempt has failed
    message_id = publisher.publish(
        raw_events(local_stack), json.dumps(call).encode(), tenant=tenant_a, format="segment", origin=origin
    ).result(timeout=30)
    local_stack.wait(timeout=240)

    # THEN neither tenant got a row of it, not even a rejected row (which would hold B's payload in A's dataset)
    for tenant in (tenant_a, tenant_b):
        counts = local_stack.query(
            tenant,
            "SELECT (SELECT COUNT(*) FROM events) AS e, (SELECT COUNT(*) FROM user_properties) AS u, "
            "(SELECT COUNT(*) FROM rejected) AS r",
        )
        assert counts == [{"e": 0, "u": 0, "r": 0}], tenant
    # AND it is kept in the dead-letter topic, and the log says what is wrong and what to do
    dead = pull_dead_letter(local_stack, marker)
    assert dead.attributes["tenant"] == tenant_a and dead.attributes["origin"] == origin
    log = (local_stack.stack.cfg.paths.logs / "load_events.log").read_text(errors="replace")
    assert f"message {message_id} names tenant {tenant_a!r} but its origin is in bucket" in log
    assert "republish it with the tenant that owns the bucket" in log
