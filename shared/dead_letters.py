"""Dead letters: what a function could not process on any delivery attempt, kept per topic; looked at with
`landline dead-letters` and sent back after a fix with `landline replay --dead-letters`.

Every subscription that triggers a function dead-letters to ``<topic>-dead-letter``, whose pull subscription
``<topic>-dead-letter-keep`` never expires and keeps messages for 7 days in the cloud. A tenant's dead letters are those
of its own topics (``raw-events.<t>``, ``send-requests.<t>``, ``object-notifications.<t>``), so looking at them and
replaying them never touches another tenant's messages.

Listing pulls every message and lets go of it again (ack deadline 0): nothing is consumed. A replay republishes each
message to the tenant topic it was dead-lettered from, with its own attributes, and acks it only once Pub/Sub has
confirmed the republish; a crash in between republishes it again later, which adds nothing, because every stage is
idempotent on a key the message carries: ``ingest_file`` on ``bucket/object#generation`` (a notification), the loader
on origin + line number (a direct publish without ``origin`` gets ``pubsub://<topic>/<dead letter's message id>``, the
same on every replay), send requests on ``message_id``.

What a replay will not do: republish a message that names another tenant (its ``tenant`` attribute, the bucket of a
``gs://`` origin or of a notification), since loading it would copy one tenant's data into another's. Such a message
stays parked; ``--fix-tenant`` drops a wrong ``tenant`` attribute when the operator knows the data is this tenant's.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc

from shared.config import Tenant, settings, tenant_topic, tenants
from shared.errors import TransientError
from shared.raw_events import DEAD_LETTER_ID, ORIGIN, direct_publish_origin, origin_bucket

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

# Pub/Sub adds these when it dead-letters a message; they are not the publisher's, and a replay leaves them out.
DEAD_LETTER_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetter"
DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
SOURCE_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"
HEAD_CHARS = 300
PULL_BATCH = 100
HOLD_SECONDS = 600  # how long a listed or skipped message stays leased to us while the rest are read


def dead_letter_topic(topic: str) -> str:
    return f"{topic}-dead-letter"


def keep_subscription(topic: str) -> str:
    """The pull subscription that keeps ``topic``'s dead letters (local stack and Terraform name it alike)."""
    return f"{dead_letter_topic(topic)}-keep"


def tenant_topic_bases() -> list[str]:
    """The topics every tenant has its own copy of (infra/topology.yaml ``per_tenant``), by their settings."""
    cfg = settings()
    return [cfg.raw_events_topic, cfg.send_requests_topic, cfg.object_notifications_topic]


@dataclass
class DeadLetter:
    """One parked message, as listed: where it came from, what it carries, why it is parked, what a replay does."""

    topic: str  # the tenant's topic it was published to, where a replay sends it
    base: str  # that topic's base name (raw-events, send-requests, object-notifications)
    message_id: str  # of the dead letter (Pub/Sub gives the dead-lettered copy an id of its own)
    publish_time: datetime | None
    attributes: dict[str, str]  # the publisher's, without Pub/Sub's dead-letter attributes
    data: bytes
    delivery_attempts: int | None
    source_publish_time: str | None
    ack_id: str = ""
    why: str = ""
    skip: str | None = None  # why a replay leaves it parked, or None

    def replay_attributes(self, *, fix_tenant: bool = False) -> dict[str, str]:
        """The attributes a replay publishes with (see the module docstring): the publisher's own, verbatim (a
        raw-events message's unknown or malformed ones too, which the loader ignores as it did the first time)."""
        attributes = dict(self.attributes)
        if fix_tenant:
            attributes.pop("tenant", None)
        if self.base == settings().raw_events_topic and not attributes.get(ORIGIN):
            attributes[ORIGIN] = direct_publish_origin(self.topic, self.message_id)
        attributes[DEAD_LETTER_ID] = self.message_id  # the dead letter it came from (lineage in logs)
        return attributes

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "message_id": self.message_id,
            "publish_time": self.publish_time.isoformat() if self.publish_time else None,
            "source_publish_time": self.source_publish_time,
            "delivery_attempts": self.delivery_attempts,
            "attributes": self.attributes,
            "size": len(self.data),
            "head": self.data[:HEAD_CHARS].decode("utf-8", errors="replace"),
            "why": self.why,
            "replay": f"skip: {self.skip}" if self.skip else "republish",
        }


def _dead_letter(topic: str, base: str, received: Any) -> DeadLetter:
    message = received.message
    attributes = dict(message.attributes)
    count = attributes.get(DELIVERY_COUNT)
    publish_time = message.publish_time
    return DeadLetter(
        topic=topic,
        base=base,
        message_id=str(message.message_id),
        publish_time=publish_time if isinstance(publish_time, datetime) else None,
        attributes={k: v for k, v in attributes.items() if not k.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)},
        data=bytes(message.data),
        delivery_attempts=int(count) if count and count.isdigit() else (received.delivery_attempt or None),
        source_publish_time=attributes.get(SOURCE_PUBLISH_TIME),
        ack_id=received.ack_id,
    )


NAMES_OTHER_TENANT = "names_other_tenant"
OTHER_TENANTS_BUCKET = "other_tenants_bucket"


def _other_tenant(
    tenant: Tenant, letter: DeadLetter, *, ignore_tenant_attribute: bool = False
) -> tuple[str, str] | None:
    """(code, why) when replaying ``letter`` into ``tenant`` would write another tenant's data: the functions refuse
    the same (shared/load/pipeline.py, shared/ingest/pipeline.py, shared/push/schedule.py)."""
    named = letter.attributes.get("tenant")
    if named and named != tenant.name and not ignore_tenant_attribute:
        return NAMES_OTHER_TENANT, f"it names tenant {named!r} on {letter.topic}"
    bucket = None
    if letter.base == settings().raw_events_topic:
        bucket = origin_bucket(letter.attributes.get(ORIGIN))
    elif letter.base == settings().object_notifications_topic:
        bucket = letter.attributes.get("bucketId")
    if bucket and bucket != tenant.bucket:
        return OTHER_TENANTS_BUCKET, f"it comes from bucket {bucket!r}, not from the tenant's bucket {tenant.bucket!r}"
    return None


def diagnose(tenant: Tenant, letter: DeadLetter, missing_tables: list[str], *, fix_tenant: bool = False) -> None:
    """Fill in why ``letter`` is parked and whether a replay republishes it (``fix_tenant``: a wrong ``tenant``
    attribute is dropped, not a reason to leave it parked)."""
    crossed = _other_tenant(tenant, letter, ignore_tenant_attribute=fix_tenant)
    if crossed:
        letter.skip, why = crossed
        letter.why = f"{why}: nothing was written"
        return
    if missing_tables:
        letter.why = (
            f"the tenant's dataset lacks {', '.join(missing_tables)}: "
            f"run `landline tenant add {tenant.name} --region {tenant.region}`, then replay"
        )
        return
    attempts = f"{letter.delivery_attempts} delivery attempts" if letter.delivery_attempts else "every delivery attempt"
    since = f" (first published {letter.source_publish_time})" if letter.source_publish_time else ""
    letter.why = (
        f"the function failed on {attempts}{since}: its setup-error or bug log entries of that time name the fix; "
        "replay once it is fixed"
    )


def _needed_tables(base: str) -> tuple[str, ...]:
    """Tables the function of topic ``base`` writes before anything else: missing ones are the usual dead letter."""
    cfg = settings()
    return {
        cfg.raw_events_topic: ("events", "user_properties", "rejected"),
        cfg.send_requests_topic: ("message_schedule", "rejected"),
        cfg.object_notifications_topic: ("files",),
    }.get(base, ())


def _missing_tables(tenant: Tenant, base: str) -> list[str]:
    from shared.warehouse.client import bigquery_client

    client = bigquery_client()
    missing = []
    for table in _needed_tables(base):
        try:
            client.get_table(f"{client.project}.{tenant.dataset}.{table}")
        except gexc.NotFound:
            missing.append(table)
    return missing


class _Puller:
    """Pulls one keep subscription to the end, holding what it read until ``release`` (so it reads each once)."""

    def __init__(self, subscriber: SubscriberClient, subscription: str) -> None:
        self.subscriber, self.subscription = subscriber, subscription
        self.held: list[str] = []
        self.seen: set[str] = set()

    def batches(self) -> Iterator[list[Any]]:
        quick = settings().is_local  # the emulator answers an empty pull at once only when asked to
        while True:
            try:
                with warnings.catch_warnings():  # deprecated for Pub/Sub, yet the emulator waits without it
                    warnings.simplefilter("ignore", DeprecationWarning)
                    response = self.subscriber.pull(
                        request={
                            "subscription": self.subscription,
                            "max_messages": PULL_BATCH,
                            "return_immediately": quick,
                        },
                        timeout=30,
                    )
            except gexc.NotFound:
                return  # the tenant has no such topic (an older stack, or a topic it never had)
            except gexc.DeadlineExceeded:
                return
            fresh = [r for r in response.received_messages if r.message.message_id not in self.seen]
            if not fresh:
                # Redelivered copies of what we hold: let go of them again.
                self.release([r.ack_id for r in response.received_messages])
                return
            self.seen.update(r.message.message_id for r in fresh)
            ack_ids = [r.ack_id for r in fresh]
            self.subscriber.modify_ack_deadline(
                request={"subscription": self.subscription, "ack_ids": ack_ids, "ack_deadline_seconds": HOLD_SECONDS}
            )
            self.held.extend(ack_ids)
            yield fresh

    def ack(self, ack_ids: list[str]) -> None:
        if ack_ids:
            self.subscriber.acknowledge(request={"subscription": self.subscription, "ack_ids": ack_ids})
            done = set(ack_ids)
            self.held = [a for a in self.held if a not in done]

    def release(self, ack_ids: list[str] | None = None) -> None:
        """Let go (ack deadline 0): the messages stay parked, for the next look or replay."""
        ids = self.held if ack_ids is None else ack_ids
        for start in range(0, len(ids), 1000):
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription,
                    "ack_ids": ids[start : start + 1000],
                    "ack_deadline_seconds": 0,
                }
            )
        if ack_ids is None:
            self.held = []


def _subscriber() -> SubscriberClient:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]

    return pubsub_v1.SubscriberClient()


def list_dead_letters(
    tenant_name: str,
    *,
    subscriber: SubscriberClient | None = None,
    on_letter: Callable[[DeadLetter], None] | None = None,
) -> list[DeadLetter]:
    """Every message parked in the tenant's dead-letter keep subscriptions, with why; none is consumed."""
    tenant = tenants().get(tenant_name)
    client = subscriber or _subscriber()
    project = settings().project
    letters: list[DeadLetter] = []
    for base in tenant_topic_bases():
        topic = tenant_topic(base, tenant.name)
        puller = _Puller(client, client.subscription_path(project, keep_subscription(topic)))
        missing: list[str] | None = None
        try:
            for batch in puller.batches():
                for received in batch:
                    letter = _dead_letter(topic, base, received)
                    if missing is None:
                        missing = _missing_tables(tenant, base)
                    diagnose(tenant, letter, missing)
                    letters.append(letter)
                    if on_letter:
                        on_letter(letter)
        finally:
            puller.release()
    return letters


@dataclass
class ReplayedDeadLetters:
    tenant: str
    dry_run: bool
    found: int = 0
    republished: int = 0  # with dry_run: how many would be
    skipped: dict[str, int] = field(default_factory=dict)  # why -> messages
    by_topic: dict[str, int] = field(default_factory=dict)  # topic -> republished
    message_ids: list[str] = field(default_factory=list)  # of the republished messages

    def summary(self) -> str:
        verb = "would republish" if self.dry_run else "republished"
        topics = ", ".join(f"{n} to {t}" for t, n in sorted(self.by_topic.items())) or "none"
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{verb} {self.republished} of {self.found} dead letters of tenant {self.tenant} ({topics}); "
            f"left parked: {skipped}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "dry_run": self.dry_run,
            "found": self.found,
            "republished": self.republished,
            "skipped": dict(self.skipped),
            "by_topic": dict(self.by_topic),
            "message_ids": list(self.message_ids),
        }


def replay_dead_letters(
    tenant_name: str,
    *,
    dry_run: bool = False,
    fix_tenant: bool = False,
    publisher: PublisherClient | None = None,
    subscriber: SubscriberClient | None = None,
    on_letter: Callable[[DeadLetter], None] | None = None,
) -> ReplayedDeadLetters:
    """Republish the tenant's dead letters to the topics they came from, acking each once its republish is confirmed;
    those that name another tenant stay parked (``fix_tenant``: drop a wrong ``tenant`` attribute instead)."""
    from shared.clients import publisher as default_publisher
    from shared.clients import topic_path

    tenant = tenants().get(tenant_name)
    result = ReplayedDeadLetters(tenant=tenant.name, dry_run=dry_run)
    client = subscriber or _subscriber()
    out = None if dry_run else (publisher or default_publisher())
    project = settings().project
    for base in tenant_topic_bases():
        topic = tenant_topic(base, tenant.name)
        puller = _Puller(client, client.subscription_path(project, keep_subscription(topic)))
        try:
            for batch in puller.batches():
                pending: list[tuple[str, Any]] = []
                for received in batch:
                    letter = _dead_letter(topic, base, received)
                    diagnose(tenant, letter, [], fix_tenant=fix_tenant)
                    result.found += 1
                    if letter.skip:
                        result.skipped[letter.skip] = result.skipped.get(letter.skip, 0) + 1
                    else:
                        result.republished += 1
                        result.by_topic[topic] = result.by_topic.get(topic, 0) + 1
                        if out is not None:
                            attributes = letter.replay_attributes(fix_tenant=fix_tenant)
                            pending.append((letter.ack_id, out.publish(topic_path(topic), letter.data, **attributes)))
                    if on_letter:
                        on_letter(letter)
                confirmed = []
                try:
                    for ack_id, future in pending:
                        result.message_ids.append(str(future.result(timeout=60)))
                        confirmed.append(ack_id)
                except Exception as exc:
                    raise TransientError(
                        f"republishing to {topic} failed (nothing unconfirmed was acked): {exc}"
                    ) from exc
                finally:
                    puller.ack(confirmed)  # only what Pub/Sub confirmed leaves the dead-letter subscription
        finally:
            puller.release()
    return result


def dumps(letters: list[DeadLetter]) -> str:
    return json.dumps([letter.as_dict() for letter in letters], indent=2, default=str)
