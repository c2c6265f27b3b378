"""Audiences and campaigns for other services: the same operations as `landline audience create`, `landline campaign
create` and `landline campaign launch`, as messages on the tenant's ``send-requests.<tenant>`` topic with an
``operation`` attribute (README, "Campaigns from other services").

The tenant is the topic's (as for send requests); a definition that does not validate, or names an unknown audience
or campaign, is recorded in ``rejected`` (reason ``invalid_campaign_request``, the field in the message) and acked:
it launches nothing, and resending it unchanged would fail the same way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from shared import __version__
from shared.campaigns.audience import Audience, AudienceError, compile_audience
from shared.campaigns.campaign import CampaignError, parse_campaign
from shared.campaigns.launch import launch_campaign
from shared.campaigns.store import save_audience, save_campaign
from shared.config import tenants, validation_message
from shared.errors import SetupError
from shared.warehouse.client import bigquery_client
from shared.warehouse.rows import Lineage, RejectedRow
from shared.warehouse.writer import write_rows

OPERATIONS = ("audience.create", "campaign.create", "campaign.launch")
REJECT_REASON = "invalid_campaign_request"


def handle_campaign_request(tenant_name: str, operation: str, data: bytes, origin: str) -> dict[str, Any]:
    """Run one operation; a bad request becomes a rejected row that says why."""
    try:
        return _run(tenant_name, operation, data)
    except (ValueError, ValidationError, AudienceError, CampaignError, SetupError) as exc:
        problem = validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        if isinstance(exc, SetupError) and exc.fix:
            problem = f"{problem}; {exc.fix}"
        row = RejectedRow(
            rejected_id=origin, reason_code=REJECT_REASON, message=f"{operation}: {problem}"[:1000],
            payload=data.decode("utf-8", errors="replace")[:100_000],
            lineage=Lineage("campaign_request", origin, 1, datetime.now(UTC)),
            processor_name="campaigns", processor_version=__version__,
        )  # fmt: skip
        write_rows(bigquery_client(), tenants().get(tenant_name), [row], processor="campaigns")
        return {"rejected": 1, "reason": row.message}


def _run(tenant_name: str, operation: str, data: bytes) -> dict[str, Any]:
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r} (use {', '.join(OPERATIONS)})")
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError("the message is one JSON object")
    if operation == "audience.create":
        audience = Audience.model_validate(body)
        compile_audience(audience)
        save_audience(tenant_name, audience)
        return {"audience": audience.name}
    if operation == "campaign.create":
        campaign = parse_campaign(body, where="campaign")
        save_campaign(tenant_name, campaign)
        return {"campaign": campaign.name}
    name = body.get("campaign")
    if not isinstance(name, str):
        raise ValueError('campaign.launch takes {"campaign": NAME}')
    launch = launch_campaign(tenant_name, name)
    return {"campaign": name, "launch_id": launch.launch_id, "new": launch.new, "scheduled": launch.scheduled}
