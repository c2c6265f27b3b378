"""Google clients, built once per process (warm function instances reuse them and their connections).

With ``STORAGE_EMULATOR_HOST`` / ``PUBSUB_EMULATOR_HOST`` set, the clients talk to the emulators without credentials;
otherwise they use the runtime's service account.
"""

from __future__ import annotations

import os
from functools import lru_cache

from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage  # type: ignore[attr-defined, unused-ignore]
from google.cloud.pubsub_v1.types import BatchSettings, LimitExceededBehavior, PublisherOptions, PublishFlowControl

from shared.config import settings


@lru_cache(maxsize=1)
def storage_client() -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project=settings().project, credentials=AnonymousCredentials())
    return storage.Client(project=settings().project)


@lru_cache(maxsize=1)
def publisher() -> pubsub_v1.PublisherClient:
    """A publisher for bulk fan-out: large batches, and flow control that blocks instead of growing memory."""
    return pubsub_v1.PublisherClient(
        batch_settings=BatchSettings(max_bytes=9_000_000, max_latency=0.05, max_messages=100),
        publisher_options=PublisherOptions(
            flow_control=PublishFlowControl(
                message_limit=int(os.environ.get("LANDLINE_PUBLISH_MAX_MESSAGES", "50")),
                byte_limit=int(os.environ.get("LANDLINE_PUBLISH_MAX_BYTES", str(16 * 1024 * 1024))),
                limit_exceeded_behavior=LimitExceededBehavior.BLOCK,
            )
        ),
    )


def topic_path(topic: str) -> str:
    return pubsub_v1.PublisherClient.topic_path(settings().project, topic)
