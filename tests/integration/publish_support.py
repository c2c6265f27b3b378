"""Direct publishes from tests, and what the router needs to know to wait for them.

A tenant's raw events go to its own topic ``raw-events.<tenant>`` when the stack has created it (per-tenant topics),
else to the shared ``raw-events`` topic with the ``tenant`` attribute, so these tests do not depend on which of the
two the running stack provides.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import httpx

from shared.config import tenant_topic

if TYPE_CHECKING:
    from tests.stack_support import StackHandle


def raw_events_topic(stack: StackHandle, tenant: str) -> str:
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    os.environ["PUBSUB_EMULATOR_HOST"] = stack.env["PUBSUB_EMULATOR_HOST"]
    project = stack.stack.cfg.project
    client = pubsub_v1.PublisherClient()
    own = client.topic_path(project, tenant_topic("raw-events", tenant))
    try:
        client.get_topic(topic=own)
        return own
    except gexc.NotFound:
        return client.topic_path(project, "raw-events")


def publish_raw(stack: StackHandle, tenant: str, payload: bytes, **attributes: str) -> str:
    """Publish one raw-events message for ``tenant`` and tell the router to wait for it; returns its message id."""
    from google.cloud import pubsub_v1

    topic = raw_events_topic(stack, tenant)
    client = pubsub_v1.PublisherClient()
    try:
        message_id = client.publish(topic, payload, **{"tenant": tenant, "format": "native", **attributes}).result(
            timeout=30
        )
    finally:
        client.stop()
    expect(stack, f"msg:{message_id}")
    return str(message_id)


def expect(stack: StackHandle, *keys: str) -> None:
    """``landline wait`` waits for these (``msg:<id>``, ``bucket/object#generation``) to be handled."""
    httpx.post(f"{stack.stack.cfg.url('router')}/expect", json=list(keys), timeout=5).raise_for_status()
