"""What to send and when: send requests (from the `send-requests` topic or `landline schedule`) -> ``message_schedule``.

A request names the contact, the content and either an absolute ``send_at`` (UTC) or a ``local_send_time`` in the
contact's own timezone (resolved at tick time from users_latest). Re-sending a request with the same message_id
updates it until it is sent; it is never sent twice.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared import __version__
from shared.config import Tenant, tenants
from shared.errors import SetupError
from shared.warehouse.client import bigquery_client
from shared.warehouse.rows import Lineage, RejectedRow, ScheduleRow
from shared.warehouse.writer import WriteResult, write_rows

if TYPE_CHECKING:
    from shared.envelopes import PubSubMessage

PROCESSOR = "landline.schedule"
PROVIDERS = ("fcm", "apns", "onesignal", "braze", "expo")


class SendRequest(BaseModel):
    """One push to schedule (the `send-requests` wire format)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    message_id: str = Field(min_length=1, max_length=128)
    contact_id: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=256)
    body: str = Field(min_length=1, max_length=2048)
    channel: Literal["push"] = "push"
    provider: Literal["fcm", "apns", "onesignal", "braze", "expo"] | None = None
    data: dict[str, str] = Field(default_factory=dict)
    deep_link: str | None = None
    send_at: AwareDatetime | None = None
    local_send_time: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")
    expires_at: AwareDatetime | None = None
    collapse_key: str | None = None
    priority: Literal["high", "normal"] = "high"

    @field_validator("send_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.astimezone(UTC) if value else None

    def to_row(self, created_at: datetime) -> ScheduleRow:
        return ScheduleRow(
            message_id=self.message_id,
            contact_id=self.contact_id,
            title=self.title,
            body=self.body,
            created_at=created_at,
            channel=self.channel,
            provider=self.provider,
            data=self.data,
            deep_link=self.deep_link,
            send_at=self.send_at if self.send_at or self.local_send_time else created_at,
            local_send_time=self.local_send_time,
            expires_at=self.expires_at,
            collapse_key=self.collapse_key,
            priority=self.priority,
        )


def schedule(tenant: Tenant, requests: list[SendRequest]) -> WriteResult:
    now = datetime.now(UTC)
    return write_rows(bigquery_client(), tenant, [r.to_row(now) for r in requests], processor=PROCESSOR)


def handle_send_requests(message: PubSubMessage) -> WriteResult:
    """A `send-requests` message: one JSON request or NDJSON; invalid lines become rejected rows with the reason."""
    tenant_name = message.attributes.get("tenant")
    if not tenant_name:
        raise SetupError(f"send request {message.message_id} has no tenant attribute", "publish with tenant=<name>")
    tenant = tenants().get(tenant_name)
    now = datetime.now(UTC)
    origin = f"pubsub://send-requests/{message.message_id}"
    rows: list[ScheduleRow | RejectedRow] = []
    for number, line in enumerate(message.decoded().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(SendRequest.model_validate_json(line).to_row(now))
        except ValidationError as exc:
            first = exc.errors()[0]
            rows.append(
                RejectedRow(
                    rejected_id=f"{origin}:{number}",
                    reason_code="invalid_send_request",
                    message=f"{'.'.join(map(str, first['loc'])) or '-'}: {first['msg']}",
                    payload=line.decode("utf-8", errors="replace")[:100_000],
                    lineage=Lineage("send_request", origin, number, now),
                    processor_name=PROCESSOR,
                    processor_version=__version__,
                )
            )
    return write_rows(bigquery_client(), tenant, rows, processor=PROCESSOR)


def request_from_json(raw: str) -> SendRequest:
    return SendRequest.model_validate(json.loads(raw))
