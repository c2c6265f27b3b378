"""CloudEvent envelopes: the wrapper is validated first, then the payload (Powertools' envelope -> model split).

Production (Eventarc) and the local router deliver the same two event types, so functions never branch on where
they run.
"""

from __future__ import annotations

import base64
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
