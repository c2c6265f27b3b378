"""Ingest one object generation: classify it, stream it, publish batches of lines, record it in the file ledger.

Idempotent on ``gs://bucket/object#generation``: batches are cut from the line sequence alone and their ids hash
origin + index, so a second delivery (or a redelivery after a crash mid-file) publishes identical batches, and the
loader's stable event ids keep the deduplicated views exact. An overwrite is a new generation, hence a new file.

How a file is read is its format's (``shared.sources.registry``): its line reader, and for a format with a header
row (CSV) the header, checked before anything is published (a bad one rejects the whole file with a reason naming
the columns) and sent in front of every batch; ``shared.sources.csv_export`` states the rule (the ledger's ``lines``
count data lines only).

Failure classes: a bad file (unreadable encoding) is recorded as ``rejected`` and acked; a non-data object is
recorded as ``ignored`` and acked; Pub/Sub or Storage hiccups raise ``TransientError`` (the event is redelivered);
a missing topic or a permission problem raises ``SetupError`` naming the fix.

The ledger ends every attempt with a row that says how it ended, never only ``started``: ``loaded``/``truncated``,
``rejected``, ``ignored``, ``gone`` (the generation was deleted or overwritten while it was read: acked, the lines
published before count) or ``failed`` (transient, setup or bug: the reason, and a redelivery follows until the
platform gives up). ``lines`` of a ``gone``/``failed`` row counts the lines whose batches Pub/Sub confirmed, so the
lines that reach the loader are always read lines (``landline stats``: unaccounted).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from google.api_core import exceptions as gexc
from google.resumable_media import common as media_errors

from shared.clients import publisher, storage_client, topic_path
from shared.config import Tenant, settings, tenant_of_topic, tenant_topic, tenants
from shared.errors import PermanentError, SetupError, TransientError
from shared.ingest.batching import batch_chunks, batch_lines, batch_message, split_header_row
from shared.ingest.decode import FileRejected, LineReader, open_reader
from shared.ingest.layout import classify_object
from shared.runtime import get_logger
from shared.sources import registry
from shared.sources.format import HeaderError
from shared.warehouse.client import bigquery_client
from shared.warehouse.rows import FileLedgerRow
from shared.warehouse.writer import write_rows

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from concurrent.futures import Future

    from google.cloud import storage

    from shared.envelopes import StorageObjectData
    from shared.ingest.decode import LineChunk
    from shared.raw_events import RawEventsMessage
    from shared.sources.format import Format

PROCESSOR = "landline.ingest"
READ_CHUNK_BYTES = 4 * 1024 * 1024  # bytes per ranged GET from Cloud Storage; bounds memory with the decoder's chunk
PUBLISH_TIMEOUT_S = 300
MAX_PENDING_PUBLISHES = 8
MAX_ATTRIBUTE_BYTES = 1024
MAX_MESSAGE_BYTES = 9_000_000  # Pub/Sub's limit is 10 MB per message, attributes included
OVERSIZED_KEEP_BYTES = 100_000
_log = get_logger("landline.ingest_file")
FAILURE_CONFIRM_TIMEOUT_S = 10  # for the unconfirmed batches after a failure: plenty for a healthy Pub/Sub


@dataclass
class _Progress:
    """What this attempt has published so far (confirmed by Pub/Sub), for the ledger row of an attempt that fails."""

    lines: int = 0
    batches: int = 0
    bytes_read: int = 0
    pending: deque[tuple[Future[str], int]] = field(default_factory=deque)  # (publish future, its batch's lines)

    def confirm_oldest(self, timeout: float) -> None:
        future, lines = self.pending.popleft()
        future.result(timeout=timeout)
        self.lines += lines
        self.batches += 1

    def settle_after_failure(self) -> None:
        """Count the batches Pub/Sub still confirms after a failure (their lines will load), waiting a little, so the
        ledger's ``lines`` matches what the loader sees; a batch not confirmed by then is not counted."""
        deadline = time.monotonic() + FAILURE_CONFIRM_TIMEOUT_S
        while self.pending:
            try:
                self.confirm_oldest(max(deadline - time.monotonic(), 0.01))
            except Exception:  # publishing is what may have failed: that batch is not counted
                continue


@dataclass
class IngestResult:
    origin: str
    status: str  # loaded | truncated | rejected | ignored | gone | failed (started: only while it runs)
    lines: int = 0
    batches: int = 0
    bytes_read: int = 0
    reason: str | None = None


class _Ledger:
    """Writes this attempt's rows to the tenant's ``files`` table."""

    def __init__(self, tenant: Tenant, obj: StorageObjectData) -> None:
        self.tenant = tenant
        self.obj = obj
        self.attempt = uuid.uuid4().hex[:12]
        self.started = datetime.now(UTC)

    def record(self, result: IngestResult, *, encoding: str | None = None, finished: bool = True) -> None:
        row = FileLedgerRow(
            origin=self.obj.origin,
            bucket=self.obj.bucket,
            object_name=self.obj.name,
            generation=self.obj.generation,
            status=result.status,
            attempt_id=self.attempt,
            bytes_read=result.bytes_read,
            lines=result.lines,
            batches=result.batches,
            encoding=encoding,
            error=result.reason,
            started_at=self.started,
            finished_at=datetime.now(UTC) if finished else None,
        )
        write_rows(bigquery_client(), self.tenant, [row], processor=PROCESSOR)

    def record_failure(self, exc: BaseException, progress: _Progress) -> None:
        """Best effort: the row that says how this attempt ended. Writing it may fail too (BigQuery is what failed):
        then the ``started`` row stays, and the original error is what gets raised and logged."""
        if isinstance(exc, PermanentError):
            status, reason = ("gone" if exc.reason == "object_gone" else "rejected"), f"{exc.reason}: {exc.message}"
        else:
            kind = "transient" if isinstance(exc, TransientError) else "setup" if isinstance(exc, SetupError) else "bug"
            status, reason = "failed", f"{kind}: {type(exc).__name__}: {exc}"[:2000]
        result = IngestResult(
            self.obj.origin, status, lines=progress.lines, batches=progress.batches, bytes_read=progress.bytes_read,
            reason=reason,
        )
        try:
            self.record(result)
        except Exception as ledger_exc:  # it must not hide the error that ended the attempt
            _log.warning(
                "could not record the failed attempt in the file ledger",
                extra={"fields": {"origin": self.obj.origin, "status": status, "error": str(ledger_exc)}},
            )


def object_tenant(obj: StorageObjectData, notification_topic: str | None = None) -> Tenant:
    """The tenant whose object this is. From a bucket notification: the tenant of the ``object-notifications.<tenant>``
    topic it arrived on (infrastructure says which), and the object must be in that tenant's bucket: another bucket's
    notification config pointed at this topic, or a backfill sent to the wrong tenant, would copy one tenant's file
    into another's dataset. Then nothing is written and the notification is dead-lettered. From an Eventarc event
    (``notification_topic`` None): the tenant of the bucket its trigger filters on."""
    if notification_topic is None:
        by_bucket = tenants().by_bucket(obj.bucket)
        if by_bucket is None:
            raise SetupError(
                f"bucket {obj.bucket} belongs to no tenant",
                "register it with `landline tenant add NAME --region R` (or add it to the function's LANDLINE_TENANTS_JSON)",
            )
        return by_bucket
    base = settings().object_notifications_topic
    name = tenant_of_topic(base, notification_topic)
    if name is None:
        raise SetupError(
            f"the notification of {obj.origin} arrived on topic {notification_topic!r}, which is no tenant's "
            f"{base} topic; nothing was ingested",
            f"point the bucket's notification config at {base}.<tenant> (Terraform does); the notification is kept in "
            "the dead-letter topic",
        )
    tenant = tenants().get(name)
    if obj.bucket != tenant.bucket:
        raise SetupError(
            f"the notification of {obj.origin} arrived on {notification_topic} (tenant {name!r}), but the object "
            f"is not in the tenant's bucket {tenant.bucket!r}; nothing was ingested",
            f"notify {base}.<tenant> of the tenant that owns bucket {obj.bucket} instead (the notification is kept in "
            "the dead-letter topic)",
        )
    return tenant


def ingest_object(obj: StorageObjectData, notification_topic: str | None = None) -> IngestResult:
    tenant = object_tenant(obj, notification_topic)
    ledger = _Ledger(tenant, obj)
    layout = classify_object(obj.name, tenant.prefix)
    if not layout.is_data:
        result = IngestResult(obj.origin, "ignored", reason=layout.reason)
        ledger.record(result)
        return result
    if len(obj.origin.encode()) > MAX_ATTRIBUTE_BYTES:
        # Pub/Sub attribute values are capped at 1024 bytes and every batch carries its origin.
        result = IngestResult(obj.origin, "rejected", reason="object_name_too_long: the origin exceeds 1024 bytes")
        ledger.record(result)
        return result
    ledger.record(IngestResult(obj.origin, "started"), finished=False)
    progress = _Progress()
    try:
        result, encoding = _publish_object(tenant, obj, layout.kind, layout.source_id, progress)
    except Exception as exc:
        progress.settle_after_failure()
        ledger.record_failure(exc, progress)
        raise
    ledger.record(result, encoding=encoding)
    return result


class ObjectMessages:
    """The raw-events messages of one object generation, in file order: what ingest publishes, and what the bulk
    backfill (shared/bulk.py) parses in place of the loader. Iterate once; afterwards ``result()`` says how the read
    ended. Storage errors propagate as the client raises them (callers map them)."""

    def __init__(self, tenant: Tenant, obj: StorageObjectData, fmt: str, source_id: str | None) -> None:
        self.tenant, self.obj, self.fmt, self.source_id = tenant, obj, fmt, source_id
        self.blob = storage_client().bucket(obj.bucket).blob(obj.name, generation=int(obj.generation))
        self.reader: LineReader | None = None
        self.header: bytes | None = None
        self.batches = 0

    def __iter__(self) -> Iterator[tuple[RawEventsMessage, int]]:
        """(message, its batch's line count) for each batch."""
        cfg = settings()
        # raw_download: the stored bytes, even for objects with Content-Encoding: gzip; the decoder sniffs them.
        with self.blob.open("rb", chunk_size=READ_CHUNK_BYTES, raw_download=True) as raw:
            source = registry.formats()[self.fmt]  # the layout's kind is a registered format's name
            self.reader = open_reader(source.reader, raw)
            if source.header:
                self.header, rest = _header_row(source, self.reader.iter_chunks_of_lines())
                extra = len(self.header) + 1 if self.header is not None else 0
                batches_of = batch_chunks(rest, cfg.batch_max_lines, max(1, cfg.batch_max_bytes - extra))
            else:
                batches_of = batch_lines(self.reader, cfg.batch_max_lines, cfg.batch_max_bytes)
            for batch in batches_of:
                message = batch_message(
                    batch, tenant=self.tenant.name, origin=self.obj.origin, fmt=self.fmt, header=self.header,
                    source_id=self.source_id[:256] if self.source_id else None,
                )
                if message.oversized and message.size > MAX_MESSAGE_BYTES:
                    # One line bigger than a Pub/Sub message: send its head so the loader rejects it with a reason.
                    message = replace(
                        message, payload=message.payload[:OVERSIZED_KEEP_BYTES], original_bytes=len(message.payload)
                    )
                self.batches += 1
                yield message, batch.line_count

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_in if self.reader is not None else 0

    def result(self) -> tuple[IngestResult, str]:
        """How the read ended (loaded or truncated, lines, batches, bytes) and the encoding found."""
        reader = self.reader
        if reader is None:
            raise RuntimeError("ObjectMessages.result() before the object was read")
        status = "truncated" if reader.truncated else "loaded"
        lines = reader.lines - 1 if self.header is not None else reader.lines  # a header row is not a record
        result = IngestResult(self.obj.origin, status, lines=lines, batches=self.batches, bytes_read=reader.bytes_in,
                              reason=reader.error)  # fmt: skip
        return result, reader.encoding


def _publish_object(
    tenant: Tenant, obj: StorageObjectData, fmt: str, source_id: str | None, progress: _Progress | None = None
) -> tuple[IngestResult, str]:
    cfg = settings()
    topic = topic_path(tenant_topic(cfg.raw_events_topic, tenant.name))  # the tenant's own topic
    origin = obj.origin
    messages = ObjectMessages(tenant, obj, fmt, source_id)
    # Settled futures are dropped as we go: a resolved publish future still references its batch (message bytes),
    # so keeping them all would hold the whole file in memory. ``progress`` counts the lines of the confirmed ones.
    progress = progress if progress is not None else _Progress()
    pending = progress.pending
    try:
        for message, line_count in messages:
            payload, attributes = message.encode()
            pending.append((publisher().publish(topic, payload, **attributes), line_count))
            while pending and (pending[0][0].done() or len(pending) > MAX_PENDING_PUBLISHES):
                progress.confirm_oldest(PUBLISH_TIMEOUT_S)
            progress.bytes_read = messages.bytes_read
        while pending:
            progress.confirm_oldest(PUBLISH_TIMEOUT_S)
    except gexc.NotFound as exc:
        if _object_gone(messages.blob, exc):
            raise PermanentError("object_gone", f"{origin} no longer exists (deleted or overwritten)") from exc
        raise SetupError(f"topic {topic} not found: {exc}", "create the topology (`landline up` or terraform apply)") from exc
    except (gexc.Forbidden, gexc.PermissionDenied) as exc:
        raise SetupError(
            f"permission denied while ingesting {origin}: {exc}",
            "grant the ingest_file service account roles/storage.objectViewer on the bucket and "
            f"roles/pubsub.publisher on the tenant's {cfg.raw_events_topic}.{tenant.name} topic",
        ) from exc
    except (gexc.GoogleAPICallError, media_errors.InvalidResponse, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"ingesting {origin} failed: {exc}") from exc
    return messages.result()


def _object_gone(blob: storage.Blob, exc: gexc.NotFound) -> bool:
    """Whether a NotFound while ingesting means the generation being read is gone (deleted or overwritten: a permanent
    outcome) rather than the topic (a setup error). Asked of Storage, since the error's wording differs between GCS
    and emulators (and URL-encodes the name); the wording decides only when Storage cannot be asked."""
    try:
        blob.reload()
    except gexc.NotFound:
        return True
    except Exception:  # Storage cannot tell us now: fall back to GCS's wording
        return "No such object" in str(exc) or quote(blob.name or "", safe="") in str(exc)
    return False


def _header_row(source: Format, chunks: Iterable[LineChunk]) -> tuple[bytes | None, Iterator[LineChunk]]:
    """Take a header-framed file's header row off its lines and check it (``Format.read_header``); ``FileRejected``
    (naming the columns) if it is bad. ``None`` for a file without lines."""
    header, rest = split_header_row(chunks)
    if header is None:
        return None, rest
    if header.partial:
        raise FileRejected(f"invalid_{source.name}_header", "the file ends inside its header row (truncated gzip)")
    data = header.data.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")  # a message's header row holds no line ending
    try:
        source.read_header(data)
    except HeaderError as exc:
        raise FileRejected(exc.reason, f"line {header.number}: {exc.message}") from None
    return data, rest
