"""CloudEvent envelopes: the wrapper is validated first, then the payload (Powertools' envelope -> model split).

Production (push subscriptions through functions-framework) and the local router deliver the same event types, so
functions never branch on where they run. A finalized object reaches ``ingest_file`` as a Pub/Sub message carrying
a Cloud Storage notification (the bucket's notification config publishes to ``object-notifications.<tenant>``: a
dead-letter path, and the tenant from the topic), or as an Eventarc ``storage.object.v1.finalized`` event (earlier
deployments); ``finalized_object`` reads both.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


class StorageObjectData(BaseModel):
    """The object resource carried by a finalize event (never the bytes)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    bucket: str
    name: str
    generation: str
    size: int = 0
    content_type: str | None = Field(None, alias="contentType")
    content_encoding: str | None = Field(None, alias="contentEncoding")
    time_created: str | None = Field(None, alias="timeCreated")

    @property
    def origin(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"


class PubSubMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    data: str = ""  # base64
    attributes: dict[str, str] = Field(default_factory=dict)
    message_id: str = Field("", alias="messageId")
    publish_time: str | None = Field(None, alias="publishTime")

    def decoded(self) -> bytes:
        return base64.b64decode(self.data) if self.data else b""


class PubSubEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: PubSubMessage
    subscription: str | None = None


def storage_object(cloud_event: Any) -> StorageObjectData:
    return StorageObjectData.model_validate(cloud_event.data)


def pubsub_message(cloud_event: Any) -> PubSubMessage:
    return PubSubEnvelope.model_validate(cloud_event.data).message


def source_topic(cloud_event: Any) -> str | None:
    """The topic a Pub/Sub event was delivered from (``//pubsub.googleapis.com/projects/P/topics/T`` -> ``T``): set by
    infrastructure (the push endpoint's path, or the local router), never by a publisher."""
    source = str(cloud_event["source"] or "")
    return source.rsplit("/topics/", 1)[1] if "/topics/" in source else None


FINALIZE = "OBJECT_FINALIZE"


@dataclass(frozen=True)
class FinalizedObject:
    """An object generation to ingest, and the notification topic it came from (None: an Eventarc storage event,
    whose bucket filter infrastructure set)."""

    obj: StorageObjectData
    topic: str | None = None


def notification_object(message: PubSubMessage) -> StorageObjectData | None:
    """The object of a Cloud Storage notification (attributes ``eventType``, ``bucketId``, ``objectId``,
    ``objectGeneration``; data = the object resource with ``payloadFormat=JSON_API_V1``, empty with ``NONE``).
    None for another event type than OBJECT_FINALIZE (nothing to ingest)."""
    attributes = message.attributes
    if attributes.get("eventType") != FINALIZE:
        return None
    data = message.decoded()
    resource: dict[str, Any] = {}
    if data:
        loaded = json.loads(data)
        resource = loaded if isinstance(loaded, dict) else {}
    # The attributes name the object as Cloud Storage reported it; the resource adds size and content type.
    for field, attribute in (("bucket", "bucketId"), ("name", "objectId"), ("generation", "objectGeneration")):
        if attributes.get(attribute):
            resource[field] = attributes[attribute]
    return StorageObjectData.model_validate(resource)


def finalized_object(cloud_event: Any) -> FinalizedObject | None:
    """The object generation a finalize event names, from either delivery; None for a notification of another event
    type. Raises ``pydantic.ValidationError`` (or ``ValueError`` for a payload that is not JSON) on a malformed one."""
    if cloud_event["type"] == STORAGE_FINALIZED:
        return FinalizedObject(storage_object(cloud_event))
    obj = notification_object(pubsub_message(cloud_event))
    return FinalizedObject(obj, source_topic(cloud_event)) if obj is not None else None
