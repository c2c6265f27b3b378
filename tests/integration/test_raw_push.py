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

from shared.config import tenant_topic
from tests.faults import Fault
from tests.stack_support import unique

if TYPE_CHECKING:
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack


def raw_push(
    stack: StackHandle,
    function: str,
    topic: str,
    data: bytes,
    attributes: dict[str, str],
    message_id: str,
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


def test_a_raw_push_of_a_native_event_lands_with_its_pubsub_origin(local_stack: StackHandle) -> None:
    # GIVEN a tenant and one native event, as the push subscription on the tenant's raw-events topic delivers it (the
    # cloud names the topic as the local stack does: raw-events.<tenant>)
    tenant = local_stack.add_tenant()
    topic = tenant_topic("raw-events", tenant)
    instance_id, message_id = unique("evt"), unique("17")
    event = {
        "kind": "event",
        "contact_id": "user_8412",
        "event_name": "subscription_renewed",
        "timestamp": "2024-05-14T15:00:00+05:30",
        "event_instance_id": instance_id,
        "metadata": {"plan": "premium"},
    }

    # WHEN the raw push body is POSTed to load_events, with no tenant attribute
    response = raw_push(local_stack, "load_events", topic, json.dumps(event).encode(), {"format": "native"}, message_id)

    # THEN it is acked (2xx) and the row is in the topic's tenant, with the origin named after the topic and the
    # message id, and the message's publish time as the time it was received
    assert 200 <= response.status_code < 300, response.text
    [row] = local_stack.query(
        tenant,
        "SELECT contact_id, event_name, event_instance_id, source_format, origin, line_number, "
        "CAST(timestamp AS STRING) AS ts, CAST(received_at AS STRING) AS received FROM events",
    )
    assert (row["contact_id"], row["event_name"], row["event_instance_id"]) == (
        "user_8412",
        "subscription_renewed",
        instance_id,
    )
    assert row["ts"].startswith("2024-05-14 09:30:00")
    assert (row["source_format"], row["origin"], row["line_number"]) == ("native", f"pubsub://{topic}/{message_id}", 1)
    assert row["received"].startswith("2024-05-14 09:31:02.123"), row["received"]


def rows(stack: StackHandle, tenant: str) -> int:
    [row] = stack.query(
        tenant,
        "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM user_properties) "
        "+ (SELECT COUNT(*) FROM rejected) AS n",
    )
    return int(row["n"])


@pytest.mark.scenario(
    "A message for an unknown tenant",
    injected="a raw push on raw-events.<a tenant that does not exist>",
    findings=[4],
)
def test_a_raw_push_for_an_unknown_tenant_is_answered_with_an_error(local_stack: StackHandle, fault: Fault) -> None:
    # GIVEN a native event on the topic of a tenant that does not exist (a setup error: a topic made by hand, or a
    # tenant removed from the function's configuration)
    tenant, message_id, marker = unique("nobody"), unique("18"), unique("unknown")
    event = {"contact_id": "user-1", "event_name": marker, "timestamp": "2024-05-14T09:00:00Z"}

    # WHEN its raw push body is POSTed to load_events
    response = raw_push(
        local_stack,
        "load_events",
        tenant_topic("raw-events", tenant),
        json.dumps(event).encode(),
        {"format": "native"},
        message_id,
    )

    # THEN the answer is not a success, so the push subscription redelivers it and finally dead-letters it
    assert response.status_code == 500
    # AND load_events said why, and what to do
    log = (local_stack.stack.cfg.paths.logs / "load_events.log").read_text(errors="replace")
    assert f"unknown tenant {tenant!r}" in log
    assert f"landline tenant add {tenant}" in log
    # (and no tenant got it: the stack's default tenant, where a fallback would put it, has no row of it)
    [stray] = local_stack.query("default", f"SELECT COUNT(*) AS n FROM events WHERE event_name = '{marker}'")
    fault.report(
        "refused with 500 (redelivered, then dead-lettered), the log names the fix",
        lost=int(200 <= response.status_code < 300),
        duplicated=int(stray["n"]),
    )


@pytest.mark.scenario(
    "A raw push on the shared topic names a tenant",
    injected="a raw push on the shared raw-events path with attribute tenant=<an existing tenant>",
    findings=[4],
)
def test_a_raw_push_on_the_shared_topic_writes_nothing_for_the_tenant_it_names(
    local_stack: StackHandle, fault: Fault
) -> None:
    # GIVEN an existing tenant, and a native event for it on the shared topic path (how the cloud delivers the shared
    # regional copy of raw-events that earlier versions used)
    tenant = local_stack.add_tenant()
    event = {"contact_id": "user-1", "event_name": "app_opened", "timestamp": "2024-05-14T09:00:00Z"}

    # WHEN its raw push body is POSTed to load_events
    response = raw_push(
        local_stack,
        "load_events",
        "raw-events",
        json.dumps(event).encode(),
        {"tenant": tenant, "format": "native"},
        unique("20"),
    )

    # THEN it is refused (so it ends in the dead-letter topic) and the tenant it names got nothing
    assert response.status_code == 500
    written = rows(local_stack, tenant)
    assert written == 0
    fault.report(
        "refused with 500 (then parked in the dead-letter topic); the named tenant has no row",
        lost=int(200 <= response.status_code < 300),
        duplicated=written,
    )


def test_a_raw_push_on_send_requests_is_scheduled_not_taken_for_a_tick(local_stack: StackHandle) -> None:
    # GIVEN a send request, as the push subscription on the tenant's send-requests topic delivers it to send_due
    tenant = local_stack.add_tenant()
    run = unique("s")
    request = {"message_id": f"{run}-ok", "contact_id": f"{run}-x", "title": "Hello", "body": "From a publisher"}

    # WHEN the raw push body is POSTed to send_due at the topic's path, with no tenant attribute
    response = raw_push(
        local_stack, "send_due", tenant_topic("send-requests", tenant), json.dumps(request).encode(), {}, unique("19")
    )

    # THEN send_due recognised the topic from the path: the request is in the tenant's schedule (a tick would write
    # nothing)
    assert 200 <= response.status_code < 300, response.text
    rows = local_stack.query(tenant, "SELECT message_id, contact_id, title FROM message_schedule")
    assert rows == [{"message_id": f"{run}-ok", "contact_id": f"{run}-x", "title": "Hello"}]
