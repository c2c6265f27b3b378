"""Load one raw-events message: validate every line, map it to rows, write rows and rejections to the tenant's dataset.

A message is either a batch from ``ingest_file`` (attributes name the origin and the line numbers) or a direct
publisher's message (one native event, or NDJSON; ``format`` defaults to ``native``). A message of a format with a
header row (CSV; ``shared.sources.csv_export`` states the rule) starts with it, and a rejected line of it keeps the
header in its payload, so a replay republishes a one-line file. Every line comes out as exactly one row or one
rejected row; after they are written the message is acked. The tenant is the one whose
``raw-events.<tenant>`` topic delivered the message (``message_tenant``); a message on another topic, naming another
tenant, or for an unknown tenant is a setup error: it is retried and, after the subscription's attempts, kept in the
dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from shared.config import settings, tenant_of_topic, tenants
from shared.errors import SetupError
from shared.load.parse import MAX_PAYLOAD_BYTES, ParsedBatch, parse_lines, rejected_row
from shared.privacy import DEFAULT_POLICY, PrivacyPolicy, policy_for
from shared.raw_events import RawEventsMessage, direct_publish_origin
from shared.sources.common import RejectReason
from shared.warehouse.client import bigquery_client
from shared.warehouse.rows import Lineage, RejectedRow
from shared.warehouse.writer import write_rows

if TYPE_CHECKING:
    from pathlib import Path

    from shared.config import Tenant
    from shared.envelopes import PubSubMessage
    from shared.secrets import SecretSource

PROCESSOR = "landline.load"
# Lines one message may carry (physical lines, blank ones included). Ingest batches carry at most 1,000; a direct
# publisher's message over the cap is rejected whole (reason too_many_lines) rather than parsed line by line.
MAX_LINES_PER_MESSAGE = 10_000


@dataclass
class LoadResult:
    lines: int
    written: dict[str, int]
    rejected: dict[str, int]


def _publish_time(message: PubSubMessage) -> datetime:
    if message.publish_time:
        try:
            return datetime.fromisoformat(message.publish_time.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


@lru_cache(maxsize=4)
def _secrets(secrets_file: Path | None, project: str) -> SecretSource:
    """One secret source per configuration, kept: Secret Manager values are cached inside it between messages.
    Imported here: only hash-mode tenants need it."""
    from shared.secrets import secret_source

    return secret_source(secrets_file, project)


def tenant_policy(tenant: Tenant) -> PrivacyPolicy:
    """The tenant's compiled PII policy; in ``hash`` mode with its own salt (a SetupError naming the fix if none)."""
    config = tenant.privacy
    if config.mode != "hash":
        return policy_for(config)
    cfg = settings()
    return policy_for(config, _secrets(cfg.secrets_file, cfg.project).privacy_salt(tenant.name).reveal())


def parse_message(
    message: PubSubMessage, topic: str | None = None, policy: PrivacyPolicy = DEFAULT_POLICY
) -> ParsedBatch:
    """Message -> rows and rejections (no I/O)."""
    return parse_raw(RawEventsMessage.from_pubsub(message), message, topic, policy)


def parse_raw(
    raw: RawEventsMessage, message: PubSubMessage, topic: str | None = None, policy: PrivacyPolicy = DEFAULT_POLICY
) -> ParsedBatch:
    """A decoded message (``message``: its envelope, for the id and publish time) -> rows and rejections. Its
    attributes were any publisher's: ``RawEventsMessage`` kept only what is well formed, and the lines are numbered
    from 1 unless the declared numbers fit them exactly."""
    fmt = raw.format
    origin = raw.origin or direct_publish_origin(topic or settings().raw_events_topic, message.message_id)
    payload, csv_header = raw.payload, raw.header
    lineage = Lineage(fmt, origin, None, _publish_time(message))
    # counted in C before any per-line object exists; a final "\n" ends the last line, it does not start another
    physical_lines = payload.count(b"\n") + (not payload.endswith(b"\n"))
    if physical_lines > MAX_LINES_PER_MESSAGE:
        return _too_many_lines(payload, lineage, physical_lines, message.message_id)
    # A direct publisher may end its NDJSON with a newline or leave blank lines: they are not records.
    lines = [line.removesuffix(b"\r") for line in payload.split(b"\n")]
    numbered = [(n, line) for n, line in zip(raw.line_numbers(len(lines)), lines, strict=True) if line.strip()]
    partial = raw.partial_line
    truncated: list[RejectedRow] = []
    if partial is not None:
        for n, line in numbered:
            if n == partial:
                truncated.append(
                    rejected_row(
                        line,
                        Lineage(fmt, origin, n, lineage.received_at),
                        RejectReason.TRUNCATED_LINE,
                        "the file ends inside this line (truncated gzip)",
                    )
                )
        numbered = [(n, line) for n, line in numbered if n != partial]
    if raw.oversized:
        size = raw.original_bytes or sum(len(line) for _, line in numbered)
        parsed_oversized = ParsedBatch()
        parsed_oversized.rejected.extend(
            rejected_row(line, Lineage(fmt, origin, n, lineage.received_at), RejectReason.LINE_TOO_LARGE,
                         f"the line is {size} bytes, more than one batch may carry")
            for n, line in numbered
        )
        parsed_oversized.rejected.extend(truncated)
        return parsed_oversized
    parsed = parse_lines(
        numbered,
        fmt=fmt,
        lineage=lineage,
        policy=policy,
        max_future_skew_hours=settings().max_future_skew_hours,
        csv_header=csv_header,
    )
    parsed.rejected.extend(truncated)
    if csv_header is not None:
        parsed.rejected = [_with_header(r, csv_header) for r in parsed.rejected]
    return parsed


def _too_many_lines(payload: bytes, lineage: Lineage, count: int, message_id: str) -> ParsedBatch:
    """A message of more lines than ``MAX_LINES_PER_MESSAGE``: one rejection for the whole message (its head kept),
    instead of ~1 KB of Python objects per line (a 10 MB publish of ``{}`` lines would need ~3 GiB)."""
    parsed = ParsedBatch()
    parsed.rejected.append(
        rejected_row(
            payload,
            lineage,
            RejectReason.TOO_MANY_LINES,
            f"{count} lines in one message, more than {MAX_LINES_PER_MESSAGE}: publish at most "
            f"{MAX_LINES_PER_MESSAGE} lines per message (the first {MAX_PAYLOAD_BYTES} bytes are kept here)",
            message_id,
        )
    )
    return parsed


def _with_header(row: RejectedRow, header: bytes) -> RejectedRow:
    """A rejected line's payload is its file's header row and the line: readable on its own, and replayable as is."""
    text = header.decode("utf-8", errors="replace") + "\n" + row.payload
    cut = text.encode("utf-8", "surrogatepass")[:MAX_PAYLOAD_BYTES].decode("utf-8", errors="ignore")
    return replace(row, payload=cut)


def _check_origin_belongs_to(tenant: Tenant, message: RawEventsMessage, message_id: str) -> None:
    """A message whose origin is another bucket than the tenant's would copy one tenant's file into another tenant's
    dataset (a publisher allowed on this tenant's topic replaying another tenant's file, a replay sent to the wrong
    tenant): nothing is written, not even rejected rows (they would hold the other tenant's payload), and the message
    goes to the dead-letter topic."""
    bucket = message.origin_bucket
    if bucket is not None and bucket != tenant.bucket:
        raise SetupError(
            f"message {message_id} of tenant {tenant.name!r} has its origin in bucket {bucket!r}, "
            f"not in the tenant's bucket {tenant.bucket!r}; nothing was written",
            "publish it to the topic of the tenant that owns the bucket (it is kept in the dead-letter topic)",
        )


def message_tenant(message: PubSubMessage, topic: str | None) -> Tenant:
    """The tenant of a delivered message (see :func:`topic_tenant`)."""
    return topic_tenant(RawEventsMessage.from_pubsub(message), topic, message.message_id)


def topic_tenant(message: RawEventsMessage, topic: str | None, message_id: str) -> Tenant:
    """The tenant of the ``raw-events.<tenant>`` topic the message was delivered from (infrastructure says which; IAM
    on that topic says who may publish as the tenant). A ``tenant`` attribute is optional, and one that names another
    tenant means a mislabelled or forged publish: nothing is written and the message is dead-lettered. A message on
    the shared ``raw-events`` topic of earlier versions (or any other) names no tenant anyone vouched for: refused."""
    base = settings().raw_events_topic
    name = tenant_of_topic(base, topic)
    if name is None:
        raise SetupError(
            f"message {message_id} was published to {topic or 'an unknown topic'!r}, not to a tenant's own "
            f"{base} topic; nothing was written",
            f"publish to {base}.<tenant> (the tenant's topic, which IAM lets you publish to), not to the shared "
            f"{base}; the message is kept in the dead-letter topic",
        )
    claimed = message.tenant
    if claimed is not None and claimed != name:
        raise SetupError(
            f"message {message_id} on {topic} (tenant {name!r}) names tenant {claimed!r}; nothing was "
            "written",
            f"publish tenant {claimed!r}'s events to {base}.{claimed}, or leave the tenant attribute out (the topic "
            "names the tenant); the message is kept in the dead-letter topic",
        )
    return tenants().get(name)


def load_message(message: PubSubMessage, topic: str | None = None) -> LoadResult:
    raw = RawEventsMessage.from_pubsub(message)  # decoded once; every check below reads the typed message
    tenant = topic_tenant(raw, topic, message.message_id)
    _check_origin_belongs_to(tenant, raw, message.message_id)
    parsed = parse_raw(raw, message, topic, tenant_policy(tenant))
    result = write_rows(bigquery_client(), tenant, [*parsed.rows, *parsed.rejected], processor=PROCESSOR)
    rejected = parsed.reasons()
    if result.invalid:
        rejected["warehouse_invalid"] = len(result.invalid)
    return LoadResult(lines=len(parsed.rows) + len(parsed.rejected), written=dict(result.written), rejected=rejected)
