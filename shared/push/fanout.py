"""The scheduler tick's campaign step: launch the campaigns whose time has come, and fan their due chunks out as
shards on ``send-shards.<tenant>`` (each one invocation of send_due; shared/push/shards.py sends them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from google.api_core import exceptions as gexc

from shared.campaigns.launch import launch_campaign
from shared.campaigns.store import due_campaigns
from shared.campaigns.waves import due_waves, launch_wave
from shared.clients import publisher, topic_path
from shared.config import Tenant, settings, tenant_topic
from shared.errors import SetupError
from shared.push.pending import PENDING_SQL
from shared.warehouse.query import run_query

SHARD_CHUNKS = 4  # chunks per shard message: at most 2,000 messages at the launch's 500 per chunk
MAX_DUE_CHUNKS = 4000  # per tenant and tick (two million messages at 500 a chunk); more go out with the next tick

_DUE_CHUNKS_SQL = PENDING_SQL.format(scope="chunk IS NOT NULL") + """
SELECT chunk, COUNT(*) AS due FROM pending
WHERE chunk IS NOT NULL AND send_at <= @now
GROUP BY chunk
ORDER BY MIN(send_at), chunk
LIMIT @max_chunks
"""


@dataclass
class FanOut:
    launched: list[str] = field(default_factory=list)
    chunks: int = 0
    shards: list[str] = field(default_factory=list)  # message ids on send-shards.<tenant>


def fan_out(tenant: Tenant, now: datetime, *, max_chunks: int = MAX_DUE_CHUNKS) -> FanOut:
    """Launch the tenant's due scheduled campaigns and due waves, then publish its due chunks as shards."""
    out = FanOut()
    campaigns, in_flight = due_campaigns(tenant.name, now)
    for stored in campaigns:
        launch = launch_campaign(tenant.name, stored.campaign.name, now=now)
        if launch.new:
            out.launched.append(launch.campaign)
    for due in due_waves(in_flight, now):
        launch = launch_wave(tenant.name, due, now)
        if launch.new:
            out.launched.append(f"{launch.campaign} (wave {due.wave + 1} of {due.campaign.waves.count if due.campaign.waves else 1})")
    rows = run_query(tenant.name, _DUE_CHUNKS_SQL, {"now": now, "max_chunks": max_chunks})
    chunks = [str(r["chunk"]) for r in rows]
    out.chunks = len(chunks)
    name = tenant_topic(settings().send_shards_topic, tenant.name)
    shards = [json.dumps({"chunks": chunks[i : i + SHARD_CHUNKS]}).encode() for i in range(0, len(chunks), SHARD_CHUNKS)]
    futures = [publisher().publish(topic_path(name), shard, origin="tick") for shard in shards]
    try:
        out.shards = [str(f.result(timeout=60)) for f in futures]
    except gexc.NotFound as exc:
        raise SetupError(
            f"topic {name} does not exist, so tenant {tenant.name}'s campaign sends cannot fan out (they stay due)",
            f"run `landline tenant add {tenant.name} --region {tenant.region}` (creates it) or apply infra/terraform",
        ) from exc
    return out



