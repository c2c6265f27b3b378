"""Streaming inserts with stable insertIds, chunked within BigQuery's limits, with per-row error classification.

* ``row_ids`` are always the rows' stable ids: the client's default is a fresh random UUID per call, which defeats
  dedup on redelivery.
* ``skip_invalid_rows=True`` so one bad row does not stop its neighbours; if ``stopped`` rows come back anyway they are
  retried under a derived insertId, because BigQuery (and the emulator) remember an insertId even for a row they did
  not store, and a retry under the same id within the dedup window would be dropped silently. Exact dedup happens in
  the views, so the derived id cannot create a visible duplicate.
* Rows BigQuery calls ``invalid`` become rejected rows (reason ``warehouse_invalid``); everything else raises.
* A whole-request 400 (or 413: an oversized body, a request BigQuery cannot parse) is deterministic, so retrying it
  only ends in the dead-letter topic: the chunk is bisected, the good halves are written, and a row that is refused
  even alone becomes a ``warehouse_invalid`` rejection saying so. A refused request stores nothing, so its halves can
  reuse its insertIds.
* Retries are bounded in time, so one message can never run past the function's 540 s timeout: each insert retries
  5xx/429/connection errors for at most ``INSERT_DEADLINE_S`` with a ``REQUEST_TIMEOUT_S`` per request (the client's
  ``DEFAULT_RETRY`` alone would retry for 600 s, with no request timeout), and all inserts of one ``write_rows`` call
  share ``WRITE_BUDGET_S``; past it the write raises ``TransientError`` and the redelivery continues idempotently.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from google.api_core import exceptions as gexc
from google.cloud.bigquery.retry import DEFAULT_RETRY
from pydantic_core import PydanticSerializationError, to_json

from shared import __version__
from shared.errors import SetupError, TransientError
from shared.warehouse.client import check_region
from shared.warehouse.rows import Lineage, RejectedRow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from google.cloud import bigquery

    from shared.config import Tenant

MAX_ROWS_PER_REQUEST = 500  # BigQuery's recommendation (the hard limit is 50,000)
MAX_BYTES_PER_REQUEST = 8_000_000  # the hard limit is 10 MB per request, JSON overhead included
MAX_STOPPED_RETRIES = 3
INSERT_DEADLINE_S = 60.0  # retries of one insertAll request
REQUEST_TIMEOUT_S = 30.0  # one HTTP request (the emulator and BigQuery answer a 10 MB insert in a few seconds)
WRITE_BUDGET_S = 240.0  # every insert of one write_rows call: a message also parses, and ingest writes 2 ledger rows
REJECTED_PAYLOAD_MAX_BYTES = 100_000  # what a request-level rejection keeps of the row (the row may be the problem)
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.BadGateway,
    gexc.GatewayTimeout,
    gexc.DeadlineExceeded,
    gexc.RetryError,  # what DEFAULT_RETRY raises when its deadline passes (5xx, 429, connection errors, timeouts)
    ConnectionError,
    TimeoutError,
)
_REQUEST_REFUSED = (400, 413)  # the request itself, deterministically: bisect instead of retrying


class Row(Protocol):
    table: str

    @property
    def insert_id(self) -> str: ...

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]: ...


@dataclass
class WriteResult:
    """What happened to each row handed to ``write_rows``."""

    written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    invalid: list[RejectedRow] = field(default_factory=list)

    @property
    def total_written(self) -> int:
        return sum(self.written.values())


Item = tuple[str, bytes, Row]  # (insertId, the row's JSON, the row)


def encode_row(row: dict[str, Any]) -> bytes:
    """A row's JSON, once: the same bytes size the request and go into it.

    ``pydantic_core.to_json`` (Rust) is ~3x the stdlib's speed here. Non-finite floats cannot come from strict JSON
    input; should one appear it becomes null rather than failing the whole request. Anything it cannot serialise
    falls back to ``str`` like the stdlib path did.
    """
    try:
        return to_json(row, inf_nan_mode="null", fallback=str)
    except (PydanticSerializationError, UnicodeEncodeError, ValueError):
        return json.dumps(row, default=str).encode("utf-8", "replace")


def _chunks(items: list[Item]) -> list[list[Item]]:
    chunks: list[list[Item]] = []
    current: list[Item] = []
    size = 0
    for item in items:
        item_size = len(item[1]) + len(item[0]) + 32  # the exact body bytes: {"insertId":"...","json":...},
        if current and (len(current) >= MAX_ROWS_PER_REQUEST or size + item_size > MAX_BYTES_PER_REQUEST):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        chunks.append(current)
    return chunks


def _insert(
    client: bigquery.Client,
    table: str,
    rows: list[bytes],
    ids: list[str],
    *,
    skip_invalid_rows: bool = True,
    deadline: float = INSERT_DEADLINE_S,
) -> list[dict[str, Any]]:
    """tabledata.insertAll with the rows' JSON as encoded once; returns the per-row ``insertErrors``.

    Written by hand instead of ``client.insert_rows_json`` because that takes dicts and re-encodes every row with the
    stdlib (~8 µs a row, more than the rest of the writer): the body here is the pre-encoded rows joined. It goes
    through the client's own ``_call_api`` (auth, endpoint), so only the body building is ours; the request is the
    documented insertAll one. Retried for at most ``deadline`` seconds, each request for ``REQUEST_TIMEOUT_S``.
    """
    project, dataset, table_id = table.split(".")
    skip = b"true" if skip_invalid_rows else b"false"
    body = b'{"skipInvalidRows":%s,"rows":[%s]}' % (
        skip,
        b",".join(b'{"insertId":%s,"json":%s}' % (to_json(i), row) for i, row in zip(ids, rows, strict=True)),
    )
    response = client._call_api(
        DEFAULT_RETRY.with_timeout(deadline),  # the client's predicate, our deadline
        span_name="BigQuery.insertRowsJson",
        method="POST",
        path=f"/projects/{project}/datasets/{dataset}/tables/{table_id}/insertAll",
        data=body,
        content_type="application/json",
        timeout=REQUEST_TIMEOUT_S,
    )
    return list(response.get("insertErrors", []))


def _setup_error(exc: Exception, table: str) -> SetupError:
    if isinstance(exc, gexc.NotFound):
        return SetupError(
            f"table {table} does not exist",
            "run `landline tenant add` for the tenant (idempotent: it creates missing tables and upgrades old ones)",
        )
    return SetupError(
        f"BigQuery refused access to {table}: {exc}",
        "apply infra/terraform: it grants each function's regional account the tables it uses and metadata on the dataset",
    )


def write_rows(client: bigquery.Client, tenant: Tenant, rows: Sequence[Row], *, processor: str) -> WriteResult:
    """Write ``rows`` (any mix of tables) to the tenant's dataset after checking its region."""
    result = WriteResult()
    if not rows:
        return result
    budget = _Budget(time.monotonic() + WRITE_BUDGET_S)
    check_region(client, tenant)
    loaded_at = datetime.now(UTC)
    by_table: dict[str, list[Item]] = defaultdict(list)
    for row in rows:
        by_table[row.table].append((row.insert_id, encode_row(row.to_bq(loaded_at)), row))
    for table_name, items in by_table.items():
        table = f"{client.project}.{tenant.dataset}.{table_name}"
        for chunk in _chunks(items):
            _write_chunk(client, table, table_name, chunk, result, processor, budget)
    if result.invalid:
        # Rejections of rejections are not expected (all-STRING payload); if they happen, raise rather than loop.
        nested = WriteResult()
        for chunk in _chunks([(r.insert_id, encode_row(r.to_bq(loaded_at)), r) for r in result.invalid]):
            _write_chunk(
                client, f"{client.project}.{tenant.dataset}.rejected", "rejected", chunk, nested, processor, budget
            )
        if nested.invalid:
            raise SetupError("the rejected table refused a bad row", "check the rejected table's schema")
        result.written["rejected"] += nested.written["rejected"]
    return result


@dataclass(frozen=True)
class _Budget:
    """The time left for the inserts of one ``write_rows`` call."""

    ends_at: float

    def insert_deadline(self, table: str) -> float:
        left = self.ends_at - time.monotonic()
        if left <= 1.0:
            raise TransientError(f"writing to {table} used its {WRITE_BUDGET_S:.0f} s budget; the redelivery continues")
        return min(INSERT_DEADLINE_S, left)


def _write_chunk(
    client: bigquery.Client,
    table: str,
    table_name: str,
    chunk: list[Item],
    result: WriteResult,
    processor: str,
    budget: _Budget,
    first_attempt: int = 0,
) -> None:
    pending = chunk
    for attempt in range(first_attempt, MAX_STOPPED_RETRIES + 1):
        ids = [i if attempt == 0 else f"{i}~retry{attempt}" for i, _, _ in pending]
        try:
            errors = _insert(client, table, [r for _, r, _ in pending], ids, deadline=budget.insert_deadline(table))
        except (gexc.NotFound, gexc.Forbidden) as exc:
            raise _setup_error(exc, table) from exc
        except _TRANSIENT as exc:
            raise TransientError(f"insert into {table} failed after retries: {exc}") from exc
        except gexc.GoogleAPICallError as exc:
            if exc.code not in _REQUEST_REFUSED:
                raise TransientError(f"insert into {table} failed: {exc}") from exc
            if len(pending) == 1:
                result.invalid.append(_refused_row(pending[0], table_name, exc, processor))
                return
            # Nothing of a refused request was stored, so each half may reuse this attempt's ids.
            half = len(pending) // 2
            for part in (pending[:half], pending[half:]):
                _write_chunk(client, table, table_name, part, result, processor, budget, attempt)
            return
        failed: dict[int, list[dict[str, Any]]] = {e["index"]: e.get("errors", []) for e in errors}
        stopped: list[Item] = []
        for index, (insert_id, payload, row) in enumerate(pending):
            row_errors = failed.get(index)
            if row_errors is None:
                result.written[table_name] += 1
            elif all(e.get("reason") == "stopped" for e in row_errors):
                stopped.append((insert_id, payload, row))
            else:
                message = "; ".join(f"{e.get('location') or '-'}: {e.get('message') or e.get('reason')}" for e in row_errors)
                result.invalid.append(
                    _rejection(insert_id, payload, row, f"BigQuery rejected the row for {table_name}: {message}", processor)
                )
        if not stopped:
            return
        pending = stopped
    raise TransientError(f"{len(pending)} rows into {table} kept being stopped by other rows' errors")


def _refused_row(item: Item, table_name: str, exc: gexc.GoogleAPICallError, processor: str) -> RejectedRow:
    insert_id, payload, row = item
    message = (
        f"BigQuery refused an insertAll request into {table_name} holding only this row "
        f"(HTTP {exc.code}, {len(payload)} bytes): {exc.message}"
    )
    if len(payload) > REJECTED_PAYLOAD_MAX_BYTES:
        message += f"; payload cut to its first {REJECTED_PAYLOAD_MAX_BYTES} bytes"
    return _rejection(insert_id, payload[:REJECTED_PAYLOAD_MAX_BYTES], row, message, processor)


def _rejection(insert_id: str, payload: bytes, row: Row, message: str, processor: str) -> RejectedRow:
    return RejectedRow(
        rejected_id=f"warehouse:{insert_id}",
        reason_code="warehouse_invalid",
        message=message[:2000],
        payload=payload.decode("utf-8", "replace"),
        lineage=getattr(row, "lineage", None) or Lineage(source_format="unknown"),
        processor_name=processor,
        processor_version=__version__,
    )
