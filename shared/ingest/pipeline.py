"""Ingest one object generation: stream it, split it into lines, publish batches of lines, record the file.

Idempotent on ``gs://bucket/object#generation``: batch ids are derived from the origin and the batch index, so a
second delivery of the same generation publishes identical batches, and the loader's stable event ids keep the
deduplicated views exact.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc

from shared.clients import publisher, storage_client, topic_path
from shared.config import Tenant, settings, tenants
from shared.errors import SetupError, TransientError
from shared.warehouse.client import bigquery_client
from shared.warehouse.rows import FileLedgerRow
from shared.warehouse.writer import write_rows

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import Future

    from shared.envelopes import StorageObjectData

PROCESSOR = "landline.ingest"


@dataclass
class IngestResult:
    origin: str
    status: str
    lines: int = 0
    batches: int = 0
    bytes_read: int = 0


def batch_id(origin: str, index: int) -> str:
    return hashlib.sha256(f"{origin}|{index}".encode()).hexdigest()[:32]


def _lines(obj: StorageObjectData) -> Iterator[bytes]:
    blob = storage_client().bucket(obj.bucket).blob(obj.name, generation=int(obj.generation))
    with blob.open("rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
        for line in stream:
            line = line.rstrip(b"\n").removesuffix(b"\r")
            if line.strip():
                yield line


def ingest_object(obj: StorageObjectData) -> IngestResult:
    tenant = tenants().by_bucket(obj.bucket)
    if tenant is None:
        raise SetupError(
            f"bucket {obj.bucket} belongs to no tenant", "register it with `landline tenant add NAME --region R`"
        )
    cfg = settings()
    attempt = uuid.uuid4().hex[:12]
    started = datetime.now(UTC)
    origin = obj.origin
    topic = topic_path(cfg.raw_events_topic)
    futures: list[Future[str]] = []
    lines = 0
    batch: list[bytes] = []
    first_line = 1

    def flush() -> None:
        nonlocal batch, first_line
        if not batch:
            return
        index = len(futures)
        attributes = {
            "tenant": tenant.name,
            "format": "segment",
            "origin": origin,
            "batch_index": str(index),
            "batch_id": batch_id(origin, index),
            "first_line": str(first_line),
            "last_line": str(first_line + len(batch) - 1),
        }
        futures.append(publisher().publish(topic, b"\n".join(batch), **attributes))
        first_line += len(batch)
        batch = []

    try:
        for line in _lines(obj):
            batch.append(line)
            lines += 1
            if len(batch) >= cfg.batch_max_lines:
                flush()
        flush()
        for future in futures:
            future.result(timeout=120)
    except gexc.NotFound as exc:
        raise SetupError(f"topic {topic} or object {origin} not found: {exc}", "apply the topology (`landline up`)") from exc
    except gexc.GoogleAPICallError as exc:
        raise TransientError(f"publishing {origin} failed: {exc}") from exc
    _record(tenant, obj, attempt, "loaded", started, lines=lines, batches=len(futures))
    return IngestResult(origin=origin, status="loaded", lines=lines, batches=len(futures))


def _record(tenant: Tenant, obj: StorageObjectData, attempt: str, status: str, started: datetime, **counts: int) -> None:
    row = FileLedgerRow(
        origin=obj.origin,
        bucket=obj.bucket,
        object_name=obj.name,
        generation=obj.generation,
        status=status,
        attempt_id=attempt,
        bytes_read=counts.get("bytes_read", 0),
        lines=counts.get("lines", 0),
        batches=counts.get("batches", 0),
        started_at=started,
        finished_at=datetime.now(UTC),
    )
    write_rows(bigquery_client(), tenant, [row], processor=PROCESSOR)
