"""Load one raw-events message: validate every line, map it to rows, write them to the tenant's dataset."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.config import tenants
from shared.errors import PermanentError
from shared.warehouse.client import bigquery_client
from shared.warehouse.rows import EventRow, Lineage
from shared.warehouse.writer import WriteResult, write_rows

if TYPE_CHECKING:
    from shared.envelopes import PubSubMessage

PROCESSOR = "landline.load"


@dataclass
class LoadResult:
    lines: int
    written: dict[str, int]


def load_message(message: PubSubMessage, topic: str | None = None) -> LoadResult:
    attributes = message.attributes
    tenant_name = attributes.get("tenant")
    if not tenant_name:
        raise PermanentError("missing_tenant", "message has no tenant attribute")
    tenant = tenants().get(tenant_name)
    origin = attributes.get("origin") or f"pubsub://{topic or 'raw-events'}/{message.message_id}"
    first_line = int(attributes.get("first_line", "1"))
    received_at = datetime.now(UTC)
    rows = []
    lines = message.decoded().split(b"\n")
    for offset, raw in enumerate(lines):
        record = json.loads(raw)
        if record.get("type") != "track":
            continue
        rows.append(
            EventRow(
                contact_id=record.get("userId") or record["anonymousId"],
                timestamp=datetime.fromisoformat(record["timestamp"]),
                event_name=record["event"],
                event_instance_id=record["messageId"],
                lineage=Lineage("segment", origin, first_line + offset, received_at),
                metadata=record.get("properties") or {},
            )
        )
    result: WriteResult = write_rows(bigquery_client(), tenant, rows, processor=PROCESSOR)
    return LoadResult(lines=len(lines), written=dict(result.written))
