"""send_due's dispatcher: what arrived on which topic decides what runs.

- ``send-requests.<t>``: a send request lands in the schedule (shared/push/schedule.py), or, with an ``operation``
  attribute, an audience or campaign operation runs (shared/campaigns/requests.py);
- ``send-shards.<t>``: one shard of a campaign's due chunks is sent (shared/push/shards.py);
- ``send-ticks``: a scheduler tick for every tenant with a provider (or those its ``tenant`` attribute lists, comma
  separated): launches and fans out campaigns, then sends due single messages (shared/push/tick.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.config import settings, tenant_of_topic, tenants
from shared.push.schedule import handle_send_requests, is_send_requests_topic, tenant_of_send_request
from shared.push.shards import parse_shard, run_shard
from shared.push.tick import run_ticks

if TYPE_CHECKING:
    from shared.envelopes import PubSubMessage


def handle_push_event(message: PubSubMessage, topic: str) -> dict[str, Any]:
    if is_send_requests_topic(topic):
        operation = message.attributes.get("operation")
        if operation:
            from shared.campaigns.requests import handle_campaign_request

            tenant = tenant_of_send_request(message, topic)
            return handle_campaign_request(tenant.name, operation, message.decoded(),
                                           f"pubsub://{topic}/{message.message_id}")  # fmt: skip
        return dict(handle_send_requests(message, topic).written)
    shard_tenant = tenant_of_topic(settings().send_shards_topic, topic)
    if shard_tenant is not None:
        return dict(run_shard(tenants().get(shard_tenant), parse_shard(message.decoded())).counts)
    wanted = {name.strip() for name in message.attributes.get("tenant", "").split(",") if name.strip()}
    selected = [t for t in tenants().all() if t.push_provider and (not wanted or t.name in wanted)]
    return run_ticks(selected)
