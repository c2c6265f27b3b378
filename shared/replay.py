"""Republish rejected lines to the tenant's ``raw-events.<tenant>`` (`landline replay`): after a fix, the loader gets a
second look. (`landline replay --dead-letters` republishes whole dead-lettered messages: shared/dead_letters.py.)

What is replayed: the tenant's ``rejected_deduped`` rows (one per ``rejected_id``), optionally of one reason code,
whose position (origin + line) has not been loaded since. Each is published as its own message, in publisher batches,
with the attributes the loader needs to give it back its identity:

* ``format`` = the original ``source_format``, ``origin`` = the original origin (the topic names the tenant);
* ``first_line`` = ``last_line`` = the original line number, so a line that now validates gets its normal event id
  and insertId (position-based), and a line that fails again gets the *same* ``rejected_id``: replaying twice adds
  nothing visible (the views dedup events on the event id and rejections on ``rejected_id``);
* ``replayed_from`` = the ``rejected_id``, for lineage in logs and dead letters.

Not replayed, because the stored payload is not the original record: ``warehouse_invalid`` (the payload is the
warehouse row the loader built), ``invalid_utf8`` (the payload was decoded with U+FFFD replacements, the original
bytes are gone), and any payload cut at the rejected table's size limit (``line_too_large`` and other huge lines).
"""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.cloud import bigquery

from shared.config import settings, tenant_topic, tenants
from shared.load.parse import MAX_PAYLOAD_BYTES
from shared.raw_events import MAX_NUMBER, LineSpan, RawEventsMessage, split_framing
from shared.warehouse.client import bigquery_client, check_region

if TYPE_CHECKING:
    from collections.abc import Iterator

    from google.cloud.pubsub_v1 import PublisherClient

NOT_REPLAYABLE: dict[str, str] = {
    "warehouse_invalid": "the payload is the warehouse row, not the source record",
    "invalid_utf8": "the payload was decoded with replacement characters; the original bytes are gone",
    "line_too_large": "the payload was cut at the rejected table's size limit",
    "invalid_send_request": "a push send request, not an event: publish the corrected one to send-requests.<tenant>",
}
PAYLOAD_CUT = "payload_cut"
ALREADY_LOADED = "already_loaded"
DEFAULT_BATCH = 500

_SELECT = """
WITH loaded AS (
  SELECT DISTINCT origin, line_number FROM events WHERE line_number IS NOT NULL
  UNION DISTINCT
  SELECT DISTINCT origin, line_number FROM user_properties WHERE line_number IS NOT NULL
)
SELECT r.rejected_id, r.reason_code, r.payload, r.source_format, r.origin, r.line_number,
       l.origin IS NOT NULL AS loaded
FROM rejected_deduped AS r
LEFT JOIN loaded AS l ON l.origin = r.origin AND l.line_number = r.line_number
{where}
ORDER BY r.origin, r.line_number, r.rejected_id
"""


@dataclass
class ReplayResult:
    tenant: str
    reason: str | None
    dry_run: bool
    selected: int = 0
    republished: int = 0  # with dry_run: how many would be
    skipped: dict[str, int] = field(default_factory=dict)  # why -> lines
    message_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would republish" if self.dry_run else "republished"
        what = f" with reason {self.reason}" if self.reason else ""
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{verb} {self.republished} of {self.selected} rejected lines{what} of tenant {self.tenant} "
            f"to {tenant_topic(settings().raw_events_topic, self.tenant)} (skipped: {skipped})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "reason": self.reason,
            "dry_run": self.dry_run,
            "selected": self.selected,
            "republished": self.republished,
            "skipped": dict(self.skipped),
        }


def skip_reason(row: dict[str, Any]) -> str | None:
    """Why a rejected row must not be replayed, or None."""
    if row.get("loaded"):
        return ALREADY_LOADED
    reason = str(row["reason_code"])
    if reason in NOT_REPLAYABLE:
        return reason
    payload = row.get("payload")
    if payload is None:
        return PAYLOAD_CUT
    if len(str(payload).encode("utf-8", "surrogatepass")) >= MAX_PAYLOAD_BYTES - 3:
        return PAYLOAD_CUT
    return None


def replay_message(row: dict[str, Any]) -> RawEventsMessage:
    """The stored payload as a raw-events message the loader treats as the original line at its original position
    (a CSV line's stored payload is its header row and the line: a one-line CSV message)."""
    fmt = str(row.get("source_format") or "segment")
    header, payload = split_framing(str(row["payload"]).encode("utf-8", "surrogatepass"), fmt)
    line = int(row["line_number"]) if row.get("line_number") is not None else None
    # A stored payload is one line, so a span of its one number fits it; one that could not (a payload of several
    # lines, a number no file has) would be ignored by the loader anyway: the lines are then numbered from 1.
    span = None
    if line is not None and 1 <= line <= MAX_NUMBER and b"\n" not in payload:
        span = LineSpan(line, line)
    return RawEventsMessage(
        payload=payload,
        format=fmt,
        header=header,
        origin=str(row["origin"]) if row.get("origin") else None,
        span=span,
        replayed_from=str(row["rejected_id"]),
    )


def _rows(tenant_name: str, reason: str | None, page_size: int) -> Iterator[list[dict[str, Any]]]:
    tenant = tenants().get(tenant_name)
    client = bigquery_client()
    check_region(client, tenant)
    config = bigquery.QueryJobConfig(default_dataset=f"{client.project}.{tenant.dataset}")
    where = ""
    if reason:
        where = "WHERE r.reason_code = @reason"
        config.query_parameters = [bigquery.ScalarQueryParameter("reason", "STRING", reason)]
    job = client.query(_SELECT.format(where=where), job_config=config, location=tenant.region)
    for page in job.result(page_size=page_size).pages:
        yield [dict(row.items()) for row in page]


def replay_rejected(
    tenant_name: str,
    *,
    reason: str | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
    publisher: PublisherClient | None = None,
) -> ReplayResult:
    """Republish the tenant's replayable rejected lines to its raw-events topic, ``batch_size`` at a time; returns the
    counts."""
    from shared.clients import publisher as default_publisher
    from shared.clients import topic_path

    result = ReplayResult(tenant=tenant_name, reason=reason, dry_run=dry_run)
    client = None if dry_run else (publisher or default_publisher())
    topic = topic_path(tenant_topic(settings().raw_events_topic, tenant_name))
    for page in _rows(tenant_name, reason, batch_size):
        pending = []
        for row in page:
            result.selected += 1
            why = skip_reason(row)
            if why is not None:
                result.skipped[why] = result.skipped.get(why, 0) + 1
                continue
            result.republished += 1
            if client is not None:
                data, attributes = replay_message(row).encode()
                pending.append(client.publish(topic, data, **attributes))
        # Every publish of a batch is confirmed before the next batch is read (a failure raises here).
        futures.wait(pending)
        result.message_ids += [f.result() for f in pending]
    return result
