"""Tenant isolation on Pub/Sub (finding 4): every function takes the tenant from the topic it was delivered from,
never from an attribute; a message naming another tenant, or on the shared topic, writes nothing. And the pieces of
ingest's dead-letter path and of the recovery tools that need no stack: the notification envelope, the checks that keep
a replay inside its tenant, and the notification a backfill publishes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cloudevents.http import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from shared import config
from shared.dead_letters import DeadLetter, diagnose, keep_subscription
from shared.envelopes import PUBSUB_PUBLISHED, STORAGE_FINALIZED, PubSubMessage, finalized_object
from shared.errors import SetupError
from shared.ingest.pipeline import object_tenant
from shared.load.pipeline import message_tenant

TENANTS = {
    "acme": {"name": "acme", "region": "europe-west1", "bucket": "b-acme", "dataset": "landline_acme"},
    "globex": {"name": "globex", "region": "us-central1", "bucket": "b-globex", "dataset": "landline_globex"},
}


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LANDLINE_TENANTS_JSON", json.dumps(TENANTS))
    config.settings.cache_clear()
    config.tenants.cache_clear()
    yield
    config.settings.cache_clear()
    config.tenants.cache_clear()


def message(attributes: dict[str, str] | None = None, data: bytes = b"{}") -> PubSubMessage:
    return PubSubMessage(data=base64.b64encode(data).decode(), attributes=attributes or {}, messageId="42")


# -- load_events ------------------------------------------------------------------------------------------------------


def test_the_topic_names_the_tenant_and_an_attribute_may_only_agree() -> None:
    # GIVEN messages on acme's topic: without a tenant attribute, with acme, with globex
    # THEN the first two are acme's; the third writes nothing and says where globex's events go
    assert message_tenant(message(), "raw-events.acme").name == "acme"
    assert message_tenant(message({"tenant": "acme"}), "raw-events.acme").name == "acme"
    with pytest.raises(SetupError) as crossed:
        message_tenant(message({"tenant": "globex"}), "raw-events.acme")
    assert "names tenant 'globex'; nothing was written" in str(crossed.value)
    assert "raw-events.globex" in crossed.value.fix


@pytest.mark.parametrize("topic", ["raw-events", "raw-events-europe-west1", None, "send-requests.acme"])
def test_a_message_on_no_tenants_topic_is_refused_whatever_it_names(topic: str | None) -> None:
    # GIVEN a message naming acme, on the shared topic (locally, and as the cloud's legacy copy is delivered) or on
    # another function's topic, or from an unknown source
    # THEN it is refused with the fix: publish to raw-events.<tenant>
    with pytest.raises(SetupError) as refused:
        message_tenant(message({"tenant": "acme"}), topic)
    assert "publish to raw-events.<tenant>" in refused.value.fix


@given(topic=st.text(max_size=60), attribute=st.one_of(st.none(), st.text(max_size=20)))
def test_no_topic_and_attribute_reach_a_tenant_other_than_the_topics(topic: str, attribute: str | None) -> None:
    # GIVEN any topic name and any tenant attribute (hypothesis)
    attributes = {} if attribute is None else {"tenant": attribute}
    # WHEN the loader resolves the tenant
    try:
        tenant = message_tenant(message(attributes), topic).name
    except SetupError:
        return  # refused: nothing is written
    # THEN a message is only ever written for the tenant whose raw-events topic delivered it
    assert topic == f"raw-events.{tenant}"
    assert attribute in (None, tenant)


# -- ingest_file ------------------------------------------------------------------------------------------------------


def notification_event(bucket: str, topic: str, event_type: str = "OBJECT_FINALIZE") -> CloudEvent:
    resource = {"bucket": bucket, "name": "segment-logs/s/1714521600000/a.gz", "generation": "17", "size": "12"}
    attributes = {"eventType": event_type, "bucketId": bucket, "objectId": resource["name"], "objectGeneration": "17",
                  "payloadFormat": "JSON_API_V1"}
    data = {"message": {"data": base64.b64encode(json.dumps(resource).encode()).decode(), "attributes": attributes,
                        "messageId": "5"}, "subscription": "s"}
    return CloudEvent({"type": PUBSUB_PUBLISHED, "source": f"//pubsub.googleapis.com/projects/p/topics/{topic}"}, data)


def test_a_bucket_notification_names_the_object_and_the_topic_names_the_tenant() -> None:
    # GIVEN a Cloud Storage notification (JSON_API_V1) delivered from acme's notification topic
    event = finalized_object(notification_event("b-acme", "object-notifications.acme"))
    # THEN it is that object generation, ingested for acme
    assert event is not None
    assert event.obj.origin == "gs://b-acme/segment-logs/s/1714521600000/a.gz#17" and event.obj.size == 12
    assert event.topic == "object-notifications.acme"
    assert object_tenant(event.obj, event.topic).name == "acme"
    # ... another event type is nothing to ingest
    assert finalized_object(notification_event("b-acme", "object-notifications.acme", "OBJECT_DELETE")) is None


def test_a_notification_of_another_tenants_bucket_or_on_another_topic_ingests_nothing() -> None:
    # GIVEN notifications of globex's bucket on acme's topic, and of acme's bucket on the shared topic
    crossed = finalized_object(notification_event("b-globex", "object-notifications.acme"))
    shared = finalized_object(notification_event("b-acme", "object-notifications"))
    assert crossed is not None and shared is not None
    # THEN both are refused before anything is read or written
    with pytest.raises(SetupError, match="not in the tenant's bucket 'b-acme'; nothing was ingested"):
        object_tenant(crossed.obj, crossed.topic)
    with pytest.raises(SetupError, match="which is no tenant's object-notifications topic"):
        object_tenant(shared.obj, shared.topic)


def test_an_eventarc_storage_event_is_still_read_and_its_bucket_names_the_tenant() -> None:
    # GIVEN the finalized event an Eventarc trigger of an earlier deployment delivers
    data = {"bucket": "b-globex", "name": "segment-logs/x.gz", "generation": "3"}
    event = finalized_object(CloudEvent({"type": STORAGE_FINALIZED, "source": "//storage.googleapis.com/b"}, data))
    # THEN the bucket, which the trigger filters on, names the tenant
    assert event is not None and event.topic is None
    assert object_tenant(event.obj, None).name == "globex"


# -- the recovery tools ----------------------------------------------------------------------------------------------


def letter(base: str, attributes: dict[str, str], message_id: str = "88") -> DeadLetter:
    return DeadLetter(
        topic=f"{base}.acme", base=base, message_id=message_id, publish_time=datetime.now(UTC),
        attributes=attributes, data=b"{}", delivery_attempts=5, source_publish_time=None,
    )


def test_a_replay_never_sends_a_message_into_a_tenant_it_does_not_belong_to() -> None:
    tenant = config.tenants().get("acme")
    cases: dict[str, tuple[DeadLetter, str | None]] = {
        "names globex": (letter("raw-events", {"tenant": "globex"}), "names_other_tenant"),
        "globex's file": (letter("raw-events", {"origin": "gs://b-globex/a.gz#1"}), "other_tenants_bucket"),
        "globex's object": (letter("object-notifications", {"bucketId": "b-globex"}), "other_tenants_bucket"),
        "globex's request": (letter("send-requests", {"tenant": "globex"}), "names_other_tenant"),
        "acme's own": (letter("raw-events", {"origin": "gs://b-acme/a.gz#1", "tenant": "acme"}), None),
    }
    for name, (dead, skip) in cases.items():
        # WHEN each dead letter of acme's topics is diagnosed
        diagnose(tenant, dead, [])
        # THEN those carrying another tenant's name or data stay parked, with why
        assert dead.skip == skip, name
        assert ("nothing was written" in dead.why) == (skip is not None), name
    # ... unless the operator says the data is acme's and only the tenant attribute is wrong (--fix-tenant)
    fixable = letter("raw-events", {"tenant": "globex"})
    diagnose(tenant, fixable, [], fix_tenant=True)
    assert fixable.skip is None and "tenant" not in fixable.replay_attributes(fix_tenant=True)
    foreign = letter("raw-events", {"tenant": "globex", "origin": "gs://b-globex/a.gz#1"})
    diagnose(tenant, foreign, [], fix_tenant=True)
    assert foreign.skip == "other_tenants_bucket"


def test_a_replayed_direct_publish_keeps_one_identity_however_often_it_is_replayed() -> None:
    # GIVEN a parked direct publish (no origin attribute: the loader would name it after the new message's id)
    dead = letter("raw-events", {"format": "native"}, message_id="314")
    # WHEN a replay builds its attributes, twice
    first, second = dead.replay_attributes(), dead.replay_attributes()
    # THEN it carries an origin of its own (the dead letter's id), so its rows get the same ids on every replay
    assert first == second
    assert first["origin"] == "pubsub://raw-events.acme/314" and first["dead_letter_id"] == "314"
    # ... a missing table is named as the cause, with the fix
    diagnose(config.tenants().get("acme"), dead, ["events"])
    assert "lacks events" in dead.why and "landline tenant add acme --region europe-west1" in dead.why
    assert keep_subscription("raw-events.acme") == "raw-events.acme-dead-letter-keep"


def test_a_backfill_notification_is_what_cloud_storage_sends() -> None:
    from google.cloud import storage

    from shared.backfill import notification

    # GIVEN an object as the bucket listing returns it
    bucket = storage.Bucket(client=None, name="b-acme")  # type: ignore[arg-type]
    blob = storage.Blob("segment-logs/s/1714521600000/a.gz", bucket)
    blob._properties.update({"bucket": "b-acme", "name": blob.name, "generation": "17", "size": "12"})
    # WHEN backfill builds its notification
    data, attributes = notification(blob)
    # THEN it is the notification a bucket's notification config sends, so ingest reads it as one
    cloud_event = CloudEvent(
        {"type": PUBSUB_PUBLISHED, "source": "//pubsub.googleapis.com/projects/p/topics/object-notifications.acme"},
        {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "1"}},
    )
    event = finalized_object(cloud_event)
    assert event is not None and event.obj.origin == "gs://b-acme/segment-logs/s/1714521600000/a.gz#17"
    assert attributes["payloadFormat"] == "JSON_API_V1"
