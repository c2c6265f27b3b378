"""Publishers that skip the bucket and publish straight to a tenant's own topic ``raw-events.<tenant>``, with the
ordinary Python Pub/Sub client, in the native format (shared/sources/native.py); and what happens to a publisher that
names another tenant, or uses the shared topic of earlier versions. Through the real local stack (README "Publishing
events directly").

Isolation scenarios dead-letter a message, which takes the subscription's five delivery attempts (about 15 s on the
local stack), so the messages of several scenarios are published together by one fixture and waited for once. Each
goes to a different subscription: the Pub/Sub emulator stops redelivering when several messages of one push
subscription keep failing at the same time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from shared.config import tenant_topic
from shared.dead_letters import keep_subscription
from tests.faults import Fault
from tests.stack_support import unique

if TYPE_CHECKING:
    from collections.abc import Iterator

    from google.cloud import pubsub_v1

    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def publisher(local_stack: StackHandle) -> Iterator[pubsub_v1.PublisherClient]:
    import os

    os.environ["PUBSUB_EMULATOR_HOST"] = local_stack.env["PUBSUB_EMULATOR_HOST"]
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    yield client
    client.stop()


def topic_path(stack: StackHandle, topic: str) -> str:
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient.topic_path(stack.stack.cfg.project, topic)


def raw_events(stack: StackHandle, tenant: str) -> str:
    """The tenant's own raw-events topic."""
    return topic_path(stack, tenant_topic("raw-events", tenant))


def counts(stack: StackHandle, tenant: str) -> dict[str, int]:
    [row] = stack.query(
        tenant,
        "SELECT (SELECT COUNT(*) FROM events) AS e, (SELECT COUNT(*) FROM user_properties) AS u, "
        "(SELECT COUNT(*) FROM rejected) AS r",
    )
    return {k: int(v) for k, v in row.items()}


def rows(stack: StackHandle, *tenants: str) -> int:
    return sum(sum(counts(stack, t).values()) for t in tenants)


def pull_dead_letters(stack: StackHandle, topic: str, marker: str, timeout: float = 20) -> list[Any]:
    """Pull (and ack) every dead letter of ``topic`` whose payload holds ``marker``; other messages are let go."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(stack.stack.cfg.project, keep_subscription(topic))
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 100, "return_immediately": True}, timeout=10
            )
            mine = [r for r in response.received_messages if marker.encode() in r.message.data]
            others = [r.ack_id for r in response.received_messages if r not in mine]
            if others:
                subscriber.modify_ack_deadline(subscription=subscription, ack_ids=others, ack_deadline_seconds=0)
            if mine:
                subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in mine])
                found += [r.message for r in mine]
            elif found:
                return found
            time.sleep(0.5)
    finally:
        subscriber.close()
    return found


def parked(dead: list[Any]) -> dict[str, int]:
    """lost / duplicated for one message that must be parked exactly once."""
    return {"lost": 0 if dead else 1, "duplicated": max(len(dead) - 1, 0)}


def load_events_log(stack: StackHandle) -> str:
    return (stack.stack.cfg.paths.logs / "load_events.log").read_text(errors="replace")


def test_one_native_event_lands_in_events(local_stack: StackHandle, publisher: pubsub_v1.PublisherClient) -> None:
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

    # WHEN it is published to the tenant's own topic, with no tenant attribute (the topic names the tenant)
    message_id = publisher.publish(raw_events(local_stack, tenant), json.dumps(event).encode(), format="native").result(
        timeout=30
    )
    local_stack.wait()

    # THEN it is one row of the tenant's events table, in UTC, with the publisher's id and a pubsub:// origin
    [row] = local_stack.query(
        tenant,
        "SELECT contact_id, event_name, event_instance_id, timezone, source_format, origin, line_number, "
        "CAST(timestamp AS STRING) AS ts, TO_JSON_STRING(metadata) AS md FROM events",
    )
    assert (row["contact_id"], row["event_name"], row["event_instance_id"]) == (
        "user_8412",
        "subscription_renewed",
        instance_id,
    )
    assert row["timezone"] == "Asia/Kolkata"
    assert row["ts"].startswith("2024-05-14 09:30:00")
    assert (row["source_format"], row["origin"], row["line_number"]) == (
        "native",
        f"pubsub://raw-events.{tenant}/{message_id}",
        1,
    )
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

    # WHEN it is published as one message to the tenant's topic (a tenant attribute naming that tenant is accepted)
    publisher.publish(raw_events(local_stack, tenant), payload, tenant=tenant, format="native").result(timeout=30)
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


@dataclass
class Crossed:
    """One message published where it must write nothing, and where it must end up instead."""

    marker: str
    message_id: str
    topic: str  # where it was published (and whose dead-letter topic keeps it)
    tenants: tuple[str, ...]  # every tenant it could have reached: none may have a row of it


@pytest.fixture(scope="module")
def crossed(local_stack: StackHandle, publisher: pubsub_v1.PublisherClient) -> dict[str, Crossed]:
    """Publishes, at once, the messages of the isolation scenarios (each on its own subscription), then waits until
    every delivery attempt has failed."""
    victim = local_stack.add_tenant()  # "B": the tenant the publishers try to reach
    buckets = {t["name"]: t["bucket"] for t in json.loads(local_stack.cli("tenant", "list", "--json").stdout)}
    out: dict[str, Crossed] = {}

    def publish(case: str, owner: str | None, topic: str, **attributes: str) -> None:
        marker = unique(case)
        event = {"contact_id": "user-1", "event_name": marker, "timestamp": "2024-05-14T09:00:00Z"}
        call = {
            "type": "track",
            "event": marker,
            "userId": "u1",
            "messageId": marker,
            "timestamp": "2024-05-14T09:00:00Z",
            "receivedAt": "2024-05-14T09:00:01Z",
        }
        payload = json.dumps(call if attributes.get("format") == "segment" else event).encode()
        message_id = publisher.publish(topic_path(local_stack, topic), payload, **attributes).result(timeout=30)
        out[case] = Crossed(marker, str(message_id), topic, tuple(t for t in (owner, victim) if t))

    own = local_stack.add_tenant()  # "A", publishing on its own topic but naming B
    publish("names_b", own, tenant_topic("raw-events", own), tenant=victim, format="native")
    publish("legacy_names_b", None, "raw-events", tenant=victim, format="native")  # the shared topic, naming B
    origin_tenant = local_stack.add_tenant()  # "A", replaying a file of B's bucket on its own topic
    origin = f"gs://{buckets[victim]}/segment-logs/src/1714521600000/part-1.gz#1"
    publish("b_origin", origin_tenant, tenant_topic("raw-events", origin_tenant), format="segment", origin=origin)
    notified = local_stack.add_tenant()  # "A", whose bucket notifications topic gets one of an object in B's bucket
    marker = unique("b_object")
    resource = {"bucket": buckets[victim], "name": f"segment-logs/src/1714521600000/{marker}.gz", "generation": "7"}
    topic = tenant_topic("object-notifications", notified)
    message_id = publisher.publish(
        topic_path(local_stack, topic),
        json.dumps(resource).encode(),
        eventType="OBJECT_FINALIZE",
        payloadFormat="JSON_API_V1",
        bucketId=resource["bucket"],
        objectId=resource["name"],
        objectGeneration="7",
    ).result(timeout=30)
    out["b_object"] = Crossed(marker, str(message_id), topic, (notified, victim))
    local_stack.wait(timeout=240)
    return out


@pytest.mark.scenario(
    "A publisher names another tenant on its own tenant's topic",
    injected="a message on raw-events.A with attribute tenant=B",
    findings=[4],
)
def test_a_message_naming_another_tenant_on_a_tenants_topic_writes_nothing_and_is_dead_lettered(
    local_stack: StackHandle, crossed: dict[str, Crossed], fault: Fault
) -> None:
    case = crossed["names_b"]
    # GIVEN tenant A's topic, on which a publisher (allowed to publish as A) put a message naming tenant B
    # WHEN every delivery attempt has been made (the fixture waited)
    # THEN neither A nor B has a row of it, not even a rejected row
    written = rows(local_stack, *case.tenants)
    assert written == 0
    # AND it is kept in A's dead-letter topic with its attributes, and load_events said why and what to do
    dead = pull_dead_letters(local_stack, case.topic, case.marker)
    assert [d.attributes["tenant"] for d in dead] == [case.tenants[1]]
    log = load_events_log(local_stack)
    assert f"message {case.message_id} on {case.topic} (tenant {case.tenants[0]!r}) names tenant" in log
    assert f"publish tenant {case.tenants[1]!r}'s events to raw-events.{case.tenants[1]}" in log
    counted = parked(dead)
    fault.report(
        "nothing written to either tenant; the message is parked in A's dead-letter topic with a fix",
        lost=counted["lost"],
        duplicated=counted["duplicated"] + written,
        rows_in_a_and_b=written,
    )


@pytest.mark.scenario(
    "A publisher names a tenant on the shared topic of earlier versions",
    injected="a message on the shared raw-events topic with attribute tenant=B",
    findings=[4],
)
def test_a_message_on_the_shared_topic_is_refused_whatever_tenant_it_names(
    local_stack: StackHandle, crossed: dict[str, Crossed], fault: Fault
) -> None:
    case = crossed["legacy_names_b"]
    # GIVEN a message on the shared raw-events topic naming tenant B (anyone who could publish there could name any
    # tenant: the topic vouches for none)
    # THEN tenant B has no row of it
    written = rows(local_stack, *case.tenants)
    assert written == 0
    # AND it is kept in the shared topic's dead-letter topic, and the log names the tenant's topic to use
    dead = pull_dead_letters(local_stack, "raw-events", case.marker)
    assert len(dead) == 1
    log = load_events_log(local_stack)
    assert f"message {case.message_id} was published to 'raw-events', not to a tenant's own raw-events topic" in log
    assert "publish to raw-events.<tenant>" in log
    counted = parked(dead)
    fault.report(
        "B gets nothing; the message is parked in the shared topic's dead-letter topic, the log names raw-events.<tenant>",
        lost=counted["lost"],
        duplicated=counted["duplicated"] + written,
        rows_in_b=written,
    )


@pytest.mark.scenario(
    "Origin in another tenant's bucket writes nothing",
    injected="a Segment batch on raw-events.A whose gs:// origin is in B's bucket",
    findings=[4],
)
def test_a_message_whose_origin_is_another_tenants_bucket_writes_nothing_anywhere(
    local_stack: StackHandle, crossed: dict[str, Crossed], fault: Fault
) -> None:
    case = crossed["b_origin"]
    # GIVEN a Segment batch on tenant A's topic that claims to come from B's bucket
    # THEN neither tenant got a row of it, not even a rejected row (which would hold B's payload in A's dataset)
    for tenant in case.tenants:
        assert counts(local_stack, tenant) == {"e": 0, "u": 0, "r": 0}, tenant
    written = rows(local_stack, *case.tenants)
    # AND it is kept in A's dead-letter topic, and the log says what is wrong and what to do
    dead = pull_dead_letters(local_stack, case.topic, case.marker)
    assert [d.attributes["origin"][:5] for d in dead] == ["gs://"]
    log = load_events_log(local_stack)
    assert f"message {case.message_id} of tenant {case.tenants[0]!r} has its origin in bucket" in log
    assert "publish it to the topic of the tenant that owns the bucket" in log
    counted = parked(dead)
    fault.report(
        "nothing written to either tenant; parked in A's dead-letter topic",
        lost=counted["lost"],
        duplicated=counted["duplicated"] + written,
    )


@pytest.mark.scenario(
    "A message without a tenant", injected="a native event without tenant attribute, on the shared topic", findings=[4]
)
def test_a_message_without_tenant_on_the_shared_topic_is_kept_in_the_dead_letter_topic(
    local_stack: StackHandle, publisher: pubsub_v1.PublisherClient, crossed: dict[str, Crossed], fault: Fault
) -> None:
    # GIVEN a native event without the tenant attribute, on the shared topic (after the fixture's message there is
    # settled: the emulator stalls on two failing messages in one subscription)
    marker = unique("orphan")
    event = {"contact_id": "user-1", "event_name": marker, "timestamp": "2024-05-14T09:00:00Z"}

    # WHEN it is published and every delivery attempt has failed
    message_id = publisher.publish(topic_path(local_stack, "raw-events"), json.dumps(event).encode(), format="native")
    message_id = message_id.result(timeout=30)
    local_stack.wait(timeout=240)

    # THEN it is in the dead-letter topic (kept by its pull subscription), with its payload and attributes intact
    dead = pull_dead_letters(local_stack, "raw-events", marker)
    assert [json.loads(d.data) for d in dead] == [event]
    assert dead[0].attributes["format"] == "native" and "tenant" not in dead[0].attributes
    assert dead[0].attributes.get("CloudPubSubDeadLetterSourceDeliveryCount") == "5"
    # AND load_events said why, and what to do
    log = load_events_log(local_stack)
    assert f"message {message_id} was published to 'raw-events'" in log
    fault.report("parked in the shared topic's dead-letter topic; the log names raw-events.<tenant>", **parked(dead))


@pytest.mark.scenario(
    "A notification of another tenant's bucket reaches a tenant's ingest",
    injected="a finalize notification of an object in B's bucket, on object-notifications.A",
    findings=[4, 31],
)
def test_a_notification_of_another_tenants_bucket_ingests_nothing(
    local_stack: StackHandle, crossed: dict[str, Crossed], fault: Fault
) -> None:
    case = crossed["b_object"]
    # GIVEN tenant A's notification topic, on which a notification of an object in B's bucket arrived (another
    # bucket's notification config pointed at it, or a backfill sent to the wrong tenant)
    # THEN nothing was read or written for either tenant: no row, not even a file ledger row
    written = rows(local_stack, *case.tenants)
    for tenant in case.tenants:
        assert local_stack.query(tenant, "SELECT COUNT(*) AS n FROM files") == [{"n": 0}], tenant
    assert written == 0
    # AND the notification is parked in A's dead-letter topic, and ingest_file said why
    dead = pull_dead_letters(local_stack, case.topic, case.marker)
    assert len(dead) == 1 and dead[0].attributes["bucketId"] == json.loads(dead[0].data)["bucket"]
    log = (local_stack.stack.cfg.paths.logs / "ingest_file.log").read_text(errors="replace")
    assert f"arrived on {case.topic} (tenant {case.tenants[0]!r}), but the object is not in the tenant's bucket" in log
    counted = parked(dead)
    fault.report(
        "nothing ingested for either tenant; the notification is parked in A's dead-letter topic",
        lost=counted["lost"],
        duplicated=counted["duplicated"] + written,
    )
