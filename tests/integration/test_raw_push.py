"""The cloud's delivery path for Pub/Sub-triggered functions: a push subscription (infra/terraform/functions.tf,
google_pubsub_subscription.trigger) POSTs the raw Pub/Sub push body, not a CloudEvent, to the function's service at
``.../projects/<P>/topics/<T>``. functions-framework turns it into a ``messagePublished`` CloudEvent (source from the
path, id and time from the message); these tests POST that body straight to the functions of the real local stack
(no router in between) and check the functions handle it as they handle Eventarc's events.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.stack_support import unique

if TYPE_CHECKING:
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack


def raw_push(
    stack: StackHandle, function: str, topic: str, data: bytes, attributes: dict[str, str], message_id: str,
    publish_time: str = "2024-05-14T09:31:02.123Z",
) -> httpx.Response:
    """POST what a Pub/Sub push subscription with a dead-letter policy sends (wrapped JSON, both spellings of the ids,
    deliveryAttempt) to ``<function>/projects/<P>/topics/<topic>``, as the Terraform endpoint names it."""
    project = stack.stack.cfg.project
    body: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": publish_time,
            "publish_time": publish_time,
        },
        "subscription": f"projects/{project}/subscriptions/{function.replace('_', '-')}-{topic}",
        "deliveryAttempt": 1,
    }
    url = f"{stack.stack.cfg.url(function)}/projects/{project}/topics/{topic}"
    return httpx.post(url, json=body, timeout=120)


# The local topic, and the name of a region's copy of it in the cloud: the origin follows the topic of the path.
@pytest.mark.parametrize("topic", ["raw-events", "raw-events-europe-west1"])
def test_a_raw_push_of_a_native_event_lands_with_its_pubsub_origin(local_stack: StackHandle, topic: str) -> None:
    # GIVEN a tenant and one native event, as a push subscription on raw-events would deliver it
    tenant = local_stack.add_tenant()
    instance_id, message_id = unique("evt"), unique("17")
    event = {
        "kind": "event",
        "contact_id": "user_8412",
        "event_name": "subscription_renewed",
        "timestamp": "2024-05-14T15:00:00+05:30",
        "event_instance_id": instance_id,
        "metadata": {"plan": "premium"},
    }

    # WHEN the raw push body is POSTed to load_events
    response = raw_push(
        local_stack, "load_events", topic, json.dumps(event).encode(), {"tenant": tenant, "format": "native"}, message_id
    )

    # THEN it is acked (2xx) and the row is there, with the origin named after the topic and the message id, and the
    # message's publish time as the time it was received
    assert 200 <= response.status_code < 300, response.text
    [row] = local_stack.query(
        tenant,
        "SELECT contact_id, event_name, event_instance_id, source_format, origin, line_number, "
        "CAST(timestamp AS STRING) AS ts, CAST(received_at AS STRING) AS received FROM events",
    )
    assert (row["contact_id"], row["event_name"], row["event_instance_id"]) == (
        "user_8412", "subscription_renewed", instance_id
    )
    assert row["ts"].startswith("2024-05-14 09:30:00")
    assert (row["source_format"], row["origin"], row["line_number"]) == ("native", f"pubsub://{topic}/{message_id}", 1)
    assert row["received"].startswith("2024-05-14 09:31:02.123"), row["received"]


def test_a_raw_push_for_an_unknown_tenant_is_answered_with_an_error(local_stack: StackHandle) -> None:
    # GIVEN a native event for a tenant that does not exist (a setup error)
    tenant, message_id = unique("nobody"), unique("18")
    event = {"contact_id": "user-1", "event_name": "app_opened", "timestamp": "2024-05-14T09:00:00Z"}

    # WHEN its raw push body is POSTed to load_events
    response = raw_push(
        local_stack, "load_events", "raw-events", json.dumps(event).encode(), {"tenant": tenant, "format": "native"},
        message_id,
    )

    # THEN the answer is not a success, so the push subscription redelivers it and finally dead-letters it
    assert not 200 <= response.status_code < 300, response.status_code
    assert response.status_code == 500
    # AND load_events said why, and what to do
    log = (local_stack.stack.cfg.paths.logs / "load_events.log").read_text(errors="replace")
    assert f"unknown tenant {tenant!r}" in log
    assert f"landline tenant add {tenant}" in log


def test_a_raw_push_on_send_requests_is_scheduled_not_taken_for_a_tick(local_stack: StackHandle) -> None:
    # GIVEN a send request, as a push subscription on send-requests would deliver it to send_due
    tenant = local_stack.add_tenant()
    run = unique("s")
    request = {"message_id": f"{run}-ok", "contact_id": f"{run}-x", "title": "Hello", "body": "From a publisher"}

    # WHEN the raw push body is POSTed to send_due at the send-requests topic's path
    response = raw_push(
        local_stack, "send_due", "send-requests", json.dumps(request).encode(), {"tenant": tenant}, unique("19")
    )

    # THEN send_due recognised the topic from the path: the request is in the schedule (a tick would write nothing)
    assert 200 <= response.status_code < 300, response.text
    rows = local_stack.query(tenant, "SELECT message_id, contact_id, title FROM message_schedule")
    assert rows == [{"message_id": f"{run}-ok", "contact_id": f"{run}-x", "title": "Hello"}]
