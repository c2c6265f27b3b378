"""What to send and when: send requests (from a tenant's `send-requests.<tenant>` topic or `landline schedule`) ->
``message_schedule``.

A request names the contact, the content and either an absolute ``send_at`` (UTC) or a ``local_send_time`` in the
contact's own timezone (resolved at tick time from users_latest). Re-sending a request with the same message_id
updates it until it is sent; it is never sent twice. The newest request wins by Pub/Sub publish time and line, so a
redelivered older request never overwrites a newer one.

Tenant isolation: the tenant is the one whose topic the request came from (IAM on that topic decides who may
publish); a ``tenant`` attribute is not trusted, and one that names another tenant is a setup error.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared import __version__
from shared.config import Tenant, settings, tenant_of_topic, tenant_topic, tenants
from shared.errors import SetupError
from shared.push.names import ProviderName
from shared.warehouse.client import bigquery_client
from shared.warehouse.rows import Lineage, RejectedRow, ScheduleRow
from shared.warehouse.writer import WriteResult, write_rows

if TYPE_CHECKING:
    from shared.envelopes import PubSubMessage

PROCESSOR = "landline.schedule"
# A message id names the claim object (claims/<message_id>/<attempt>) and shows in logs: no "/", no control characters
# (Cloud Storage refuses CR/LF in object names, which used to strand a whole chunk of claims).
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)
LOCAL_SEND_TIME_FORMAT = "%Y-%m-%dT%H:%M"
CAMPAIGN_MESSAGE_PREFIX = "c."  # campaign message ids (shared/campaigns/launch.py derives them)
# Every push carries its message id in its data payload under this key, so the app can send it back with the Segment
# mobile spec's "Push Notification Received" / "Push Notification Tapped" events (README, "Reports"): that is how
# opens are matched to the message, its campaign and its arm.
MESSAGE_ID_DATA_KEY = "landline_message_id"
RECEIVED_EVENT = "Push Notification Received"
OPENED_EVENT = "Push Notification Tapped"
# Years a local time may name: converting it with any UTC offset (-12..+14 h) must stay inside 1..9999.
_LOCAL_YEARS = range(2, 9999)


def valid_message_id(message_id: str) -> bool:
    return bool(_MESSAGE_ID.match(message_id)) and len(message_id) <= 128


def parse_local_send_time(value: str) -> datetime:
    """``YYYY-MM-DDTHH:MM`` (a wall-clock time, no zone) -> naive datetime; ValueError when it is not a real time."""
    parsed = datetime.strptime(value, LOCAL_SEND_TIME_FORMAT)
    if parsed.year not in _LOCAL_YEARS:
        raise ValueError(f"year {parsed.year} is out of range")
    return parsed


class SendRequest(BaseModel):
    """One push to schedule (the `send-requests` wire format)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    message_id: str = Field(min_length=1, max_length=128, pattern=MESSAGE_ID_PATTERN)
    contact_id: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=256)
    body: str = Field(min_length=1, max_length=2048)
    channel: Literal["push"] = "push"
    provider: ProviderName | None = None
    data: dict[str, str] = Field(default_factory=dict)
    deep_link: str | None = None
    send_at: AwareDatetime | None = None
    local_send_time: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")
    expires_at: AwareDatetime | None = None
    collapse_key: str | None = None
    priority: Literal["high", "normal"] = "high"

    @field_validator("message_id")
    @classmethod
    def _not_a_campaign_id(cls, value: str) -> str:
        # Campaign messages (shared/campaigns/launch.py) are claimed per chunk, single messages one by one: an id in
        # both would have two claims, so the campaigns' prefix is theirs alone.
        if value.startswith(CAMPAIGN_MESSAGE_PREFIX):
            raise ValueError(f"message ids starting with {CAMPAIGN_MESSAGE_PREFIX!r} are reserved for campaign messages")
        return value

    @field_validator("send_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC: a bad request, not a crash
            raise ValueError("datetime is out of range once converted to UTC") from None

    @field_validator("local_send_time")
    @classmethod
    def _real_local_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_local_send_time(value)  # 2024-13-45T99:99 matches the pattern but is no time at all
        return value

    @model_validator(mode="after")
    def _one_send_time(self) -> SendRequest:
        if self.send_at is not None and self.local_send_time is not None:
            raise ValueError("give send_at or local_send_time, not both")
        return self

    def to_row(self, created_at: datetime, *, requested_at: datetime | None = None, line: int = 0) -> ScheduleRow:
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
            requested_at=requested_at or created_at,
            request_line=line,
        )


def schedule(tenant: Tenant, requests: list[SendRequest]) -> WriteResult:
    now = datetime.now(UTC)
    return write_rows(bigquery_client(), tenant, [r.to_row(now) for r in requests], processor=PROCESSOR)


def is_send_requests_topic(topic: str) -> bool:
    """The shared legacy topic or a tenant's copy of it (``send-requests``, ``send-requests.acme``)."""
    base = settings().send_requests_topic
    return topic == base or tenant_of_topic(base, topic) is not None


def tenant_of_send_request(message: PubSubMessage, topic: str) -> Tenant:
    """The tenant whose topic delivered ``message``; refuse the shared topic and a ``tenant`` attribute naming another
    tenant (a publisher allowed on one tenant's topic must not write another tenant's schedule)."""
    base = settings().send_requests_topic
    name = tenant_of_topic(base, topic)
    claimed = message.attributes.get("tenant")
    if name is None:
        raise SetupError(
            f"send request {message.message_id} arrived on the shared topic {topic!r}, which names no tenant; "
            "nothing was written",
            f"publish send requests to the tenant's own topic {tenant_topic(base, claimed or '<tenant>')!r}",
        )
    if claimed and claimed != name:
        raise SetupError(
            f"send request {message.message_id} on {topic!r} says tenant={claimed!r}, but that topic belongs to "
            f"tenant {name!r}; nothing was written",
            f"publish requests for tenant {claimed!r} to {tenant_topic(base, claimed)!r}, or drop the tenant attribute",
        )
    return tenants().get(name)


def publish_time(message: PubSubMessage) -> datetime | None:
    """When Pub/Sub accepted the message (kept across redeliveries); None when absent or unreadable."""
    if not message.publish_time:
        return None
    try:
        value = datetime.fromisoformat(message.publish_time)
    except ValueError:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def parse_send_requests(
    message: PubSubMessage, origin: str, now: datetime
) -> list[ScheduleRow | RejectedRow]:
    """Every non-blank line becomes a schedule row or a rejected row that says why (never an exception)."""
    requested_at = publish_time(message) or now
    rows: list[ScheduleRow | RejectedRow] = []
    for number, line in enumerate(message.decoded().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(SendRequest.model_validate_json(line).to_row(now, requested_at=requested_at, line=number))
            continue
        except ValidationError as exc:
            first = exc.errors()[0]
            reason = f"{'.'.join(map(str, first['loc'])) or '-'}: {first['msg']}"
        except (ValueError, OverflowError, RecursionError) as exc:  # defensive: nothing about one line may fail others
            reason = f"-: {type(exc).__name__}"
        rows.append(
            RejectedRow(
                rejected_id=f"{origin}:{number}",
                reason_code="invalid_send_request",
                message=reason[:1000],
                payload=line.decode("utf-8", errors="replace")[:100_000],
                lineage=Lineage("send_request", origin, number, now),
                processor_name=PROCESSOR,
                processor_version=__version__,
            )
        )
    return rows


def handle_send_requests(message: PubSubMessage, topic: str) -> WriteResult:
    """A message on a tenant's send-requests topic: one JSON request or NDJSON; invalid lines become rejected rows."""
    tenant = tenant_of_send_request(message, topic)
    now = datetime.now(UTC)
    rows = parse_send_requests(message, f"pubsub://{topic}/{message.message_id}", now)
    return write_rows(bigquery_client(), tenant, rows, processor=PROCESSOR)


def request_from_json(raw: str) -> SendRequest:
    return SendRequest.model_validate(json.loads(raw))
