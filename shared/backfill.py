"""Re-ingest objects already in a tenant's bucket (`landline backfill`): files that arrived before the tenant existed,
before its notification config did, or while a bug or a missing table made ingest fail.

Each object gets what its bucket's notification config would have sent: an OBJECT_FINALIZE notification (attributes
``eventType``, ``bucketId``, ``objectId``, ``objectGeneration``; data = the object resource, ``JSON_API_V1``),
published to the tenant's ``object-notifications.<tenant>``. So a backfilled file takes the path of every other file,
with its retries and dead-letter topic, and nothing here reads a file.

Idempotent: ingest is keyed on ``bucket/object#generation`` (the same batches, the same event ids), so a second
backfill, or one overlapping a live notification, adds no visible row. Files whose latest ledger row says ``loaded``
are skipped all the same (re-reading them would change nothing and cost a full read); ``include_loaded`` re-ingests
them too. Every other status is re-ingested: no ledger row (never seen), ``started``/``failed`` (an attempt that did
not finish), ``rejected``/``ignored``/``truncated``/``gone`` (what a since-fixed bug may have decided). Lines the loader
rejected in a loaded file are for `landline replay`, not for this.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.config import Tenant, settings, tenant_topic, tenants
from shared.errors import TransientError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from google.cloud.pubsub_v1 import PublisherClient
    from google.cloud.storage import Blob

NOTIFICATION_CONFIG = "landline-backfill"  # in the notificationConfig attribute, where Cloud Storage names its config
MAX_PENDING = 100
LOADED_SQL = "SELECT origin FROM files_latest WHERE status = 'loaded'"


@dataclass
class BackfillResult:
    tenant: str
    bucket: str
    topic: str
    prefix: str
    since: datetime | None
    dry_run: bool
    listed: int = 0
    published: int = 0  # with dry_run: how many would be
    skipped: dict[str, int] = field(default_factory=dict)  # why -> objects
    message_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would publish" if self.dry_run else "published"
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{verb} {self.published} of {self.listed} objects of gs://{self.bucket}/{self.prefix} "
            f"to {self.topic} (skipped: {skipped})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "bucket": self.bucket,
            "topic": self.topic,
            "prefix": self.prefix,
            "since": self.since.isoformat() if self.since else None,
            "dry_run": self.dry_run,
            "listed": self.listed,
            "published": self.published,
            "skipped": dict(self.skipped),
        }


def notification(blob: Blob) -> tuple[bytes, dict[str, str]]:
    """What Cloud Storage publishes for a finalized object (payload format JSON_API_V1)."""
    resource: dict[str, Any] = dict(blob._properties)  # the JSON API object resource, as listed
    created = resource.get("timeCreated") or datetime.now(UTC).isoformat()
    attributes = {
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
        "bucketId": str(resource.get("bucket") or blob.bucket.name),
        "objectId": str(resource.get("name") or blob.name),
        "objectGeneration": str(resource.get("generation") or blob.generation),
        "eventTime": str(created),
        "notificationConfig": NOTIFICATION_CONFIG,
    }
    return json.dumps(resource).encode(), attributes


def loaded_origins(tenant: Tenant) -> set[str]:
    from shared.warehouse.query import run_query

    return {str(row["origin"]) for row in run_query(tenant.name, LOADED_SQL)}


def _created(blob: Blob) -> datetime | None:
    created = blob.time_created
    if created is None:
        return None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def backfill(
    tenant_name: str,
    *,
    prefix: str = "",
    since: datetime | None = None,
    include_loaded: bool = False,
    dry_run: bool = False,
    publisher: PublisherClient | None = None,
    on_object: Callable[[str, bool], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> BackfillResult:
    """Publish a finalize notification for every object of the tenant's bucket under ``prefix`` created at or after
    ``since`` (skipping loaded files unless ``include_loaded``); ``on_object(origin, published)`` after each."""
    from shared.clients import publisher as default_publisher
    from shared.clients import storage_client, topic_path

    tenant = tenants().get(tenant_name)
    topic = tenant_topic(settings().object_notifications_topic, tenant.name)
    result = BackfillResult(tenant.name, tenant.bucket, topic, prefix, since, dry_run)
    loaded = set() if include_loaded else loaded_origins(tenant)
    blobs = list(storage_client().list_blobs(tenant.bucket, prefix=prefix or None))
    if on_total:
        on_total(len(blobs))
    out = None if dry_run else (publisher or default_publisher())
    pending: deque[Future[str]] = deque()
    for blob in blobs:
        result.listed += 1
        origin = f"gs://{tenant.bucket}/{blob.name}#{blob.generation}"
        created = _created(blob)
        why = None
        if since is not None and created is not None and created < since:
            why = "created_before_since"
        elif origin in loaded:
            why = "already_loaded"
        if why:
            result.skipped[why] = result.skipped.get(why, 0) + 1
        else:
            result.published += 1
            if out is not None:
                data, attributes = notification(blob)
                pending.append(out.publish(topic_path(topic), data, **attributes))
                while len(pending) > MAX_PENDING:
                    result.message_ids.append(_confirmed(pending.popleft(), topic))
        if on_object:
            on_object(origin, why is None)
    while pending:
        result.message_ids.append(_confirmed(pending.popleft(), topic))
    return result


def _confirmed(future: Future[str], topic: str) -> str:
    try:
        return str(future.result(timeout=60))
    except Exception as exc:
        raise TransientError(
            f"publishing to {topic} failed: {exc}; run the backfill again (it adds no duplicates)"
        ) from exc
