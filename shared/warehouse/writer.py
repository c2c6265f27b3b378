"""Rows into BigQuery through the Storage Write API's default stream, in appends within its limits, with per-row errors.

Why the Write API and not insertAll (infra/SCALING.md, "Cost per million events"): it bills the bytes sent, with no
1 KB minimum per row and at half insertAll's rate; measured at 100,000 events it cuts the total cost by 31%.

* **At-least-once.** The ``_default`` stream has no insertIds: a redelivered message, or an append retried after its
  response was lost, stores its rows again. Exactness lives where it already lived for redeliveries outside
  insertAll's one-minute dedup window: in the views (``events_deduped``, ``users_latest``, the ledgers' readers) and in
  ``landline stats``, which counts distinct positions.
* **Rows as protobuf**, one proto2 message type per table built from its schema (shared/warehouse/schema.py):
  TIMESTAMP as int64 µs, JSON as its text. A value that cannot be a value of its column (malformed JSON text, a
  non-integer in an INTEGER column, a column the table does not have) becomes a rejected row without being sent.
* **One bad row fails its whole append** (``row_errors``; the API stores none of the append's rows): the rows named
  become rejected rows (reason ``warehouse_invalid``) and the rest are appended again.
* **An append refused as a whole** without row errors (INVALID_ARGUMENT: too large, a writer schema the table lacks)
  is deterministic, so retrying it only ends in the dead-letter topic: the chunk is bisected, and a row refused even
  alone becomes a ``warehouse_invalid`` rejection saying so.
* **One AppendRows call per table and round**, its appends pipelined, closed when they are answered (``_Appends``).
* **Bounded in time**, so one message never runs past the function's 540 s timeout: each call has a deadline of at
  most ``APPEND_TIMEOUT_S``, all calls of one ``write_rows`` share ``WRITE_BUDGET_S``, and past it, or on an
  unavailable service, the write raises ``TransientError`` and the redelivery continues.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud.bigquery_storage_v1 import types
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from pydantic_core import PydanticSerializationError, to_json

from shared import __version__
from shared.errors import SetupError, TransientError
from shared.warehouse.client import check_region, write_client
from shared.warehouse.rows import Lineage, RejectedRow
from shared.warehouse.schema import TABLES

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from google.cloud import bigquery
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient
    from google.protobuf.message import Message

    from shared.config import Tenant

MAX_ROWS_PER_APPEND = 5_000
MAX_BYTES_PER_APPEND = 8_000_000  # the hard limit is 10 MB per AppendRows request, framing included
APPEND_TIMEOUT_S = 60.0  # one append's response
WRITE_BUDGET_S = 240.0  # every append of one write_rows call: a message also parses, and ingest writes 2 ledger rows
REJECTED_PAYLOAD_MAX_BYTES = 100_000  # what a request-level rejection keeps of the row (the row may be the problem)
MAX_ROW_ERROR_ROUNDS = 3  # re-appends after row errors; each round removes at least one named row
_SETUP = (gexc.NotFound, gexc.Forbidden, gexc.Unauthenticated)  # PermissionDenied is a Forbidden
# Retried within a call's time (the service or the connection, not the rows): an outage shorter than
# RETRY_DEADLINE_S costs no redelivery, as insertAll's client retry did. An append whose connection broke after it
# was sent may have been stored, so its retry may store it twice (at-least-once; the views show it once).
_RETRYABLE = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.Aborted,
              gexc.DeadlineExceeded, ConnectionError)  # fmt: skip
RETRY_DEADLINE_S = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def encode_row(row: dict[str, Any]) -> bytes:
    """A row's BigQuery JSON (what a rejected row keeps as its payload, and bulk loads' NDJSON).

    ``pydantic_core.to_json`` (Rust) is ~3x the stdlib's speed. Non-finite floats cannot come from strict JSON input;
    should one appear it becomes null rather than failing. Anything it cannot serialise falls back to ``str``.
    """
    try:
        return to_json(row, inf_nan_mode="null", fallback=str)
    except (PydanticSerializationError, UnicodeEncodeError, ValueError):
        return json.dumps(row, default=str).encode("utf-8", "replace")


# -- rows as protobuf ----------------------------------------------------------------------------------------------


class Unencodable(ValueError):
    """A value that cannot be a value of its column: the row is rejected without being sent."""


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return to_json(value).decode()
    raise Unencodable(f"a {type(value).__name__} is not a STRING")


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Unencodable(f"{value!r} is not an INTEGER")
    try:
        number = int(value)
    except ValueError as exc:
        raise Unencodable(f"{value!r} is not an INTEGER") from exc
    if not -(2**63) <= number < 2**63:
        raise Unencodable(f"{value} is outside INTEGER's range")
    return number


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Unencodable(f"{value!r} is not a FLOAT")
    try:
        return float(value)
    except ValueError as exc:
        raise Unencodable(f"{value!r} is not a FLOAT") from exc


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise Unencodable(f"{value!r} is not a BOOLEAN")


def _timestamp(value: Any) -> int:
    """Microseconds since the epoch, as the Write API takes TIMESTAMP (insertAll's inputs: ISO text, or seconds)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise Unencodable(f"{value!r} is not a TIMESTAMP") from exc
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1_000_000)
    else:
        raise Unencodable(f"a {type(value).__name__} is not a TIMESTAMP")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _json(value: Any) -> str:
    """A JSON column's text: a string is taken as JSON text (as insertAll does) and must parse."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as exc:
            raise Unencodable(f"malformed JSON text: {exc}") from exc
        return value
    return encode_row(value).decode()


_PROTO_TYPES: dict[str, tuple[int, Callable[[Any], Any]]] = {
    "STRING": (descriptor_pb2.FieldDescriptorProto.TYPE_STRING, _string),
    "JSON": (descriptor_pb2.FieldDescriptorProto.TYPE_STRING, _json),
    "TIMESTAMP": (descriptor_pb2.FieldDescriptorProto.TYPE_INT64, _timestamp),
    "INTEGER": (descriptor_pb2.FieldDescriptorProto.TYPE_INT64, _integer),
    "FLOAT": (descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE, _float),
    "BOOLEAN": (descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, _boolean),
}
_PROTO_TYPES |= {"INT64": _PROTO_TYPES["INTEGER"], "FLOAT64": _PROTO_TYPES["FLOAT"], "BOOL": _PROTO_TYPES["BOOLEAN"]}


@dataclass(frozen=True)
class Codec:
    """A table's rows as proto2 messages, the type built at run time from its schema (no .proto file, no protoc).

    Every field is optional on the wire so that REQUIRED is enforced by BigQuery, which names the row and field."""

    table: str
    descriptor: descriptor_pb2.DescriptorProto
    message: type[Message]
    converters: dict[str, Callable[[Any], Any]]

    def encode(self, row: dict[str, Any]) -> bytes:
        """The row's protobuf bytes; ``Unencodable`` names the column of a value that cannot be sent."""
        fields: dict[str, Any] = {}
        for name, value in row.items():
            if value is None:
                continue
            convert = self.converters.get(name)
            if convert is None:
                raise Unencodable(f"{name}: no such column in {self.table}")
            try:
                fields[name] = convert(value)
            except Unencodable as exc:
                raise Unencodable(f"{name}: {exc}") from None
        try:
            return self.message(**fields).SerializeToString()
        except (TypeError, ValueError) as exc:  # e.g. a string that is not valid UTF-8
            raise Unencodable(str(exc)) from None


@cache
def codec(table: str) -> Codec:
    """The codec of one of the product's tables (schema.py's ``TABLES``)."""
    spec = next((t for t in TABLES if t.name == table), None)
    if spec is None:
        raise SetupError(f"no table {table!r} in this version's schema", "write rows of the product's row types only")
    proto = descriptor_pb2.DescriptorProto(name="Row")
    converters: dict[str, Callable[[Any], Any]] = {}
    for number, column in enumerate(spec.schema, 1):
        kind, converters[column.name] = _PROTO_TYPES[column.field_type]
        proto.field.add(
            name=column.name, number=number, type=kind, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        )
    file = descriptor_pb2.FileDescriptorProto(name=f"landline_{table}.proto", package=f"landline.{table}", syntax="proto2")
    file.message_type.add().CopyFrom(proto)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    message = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"landline.{table}.Row"))
    return Codec(table, proto, message, converters)


# -- appending ----------------------------------------------------------------------------------------------------


@dataclass
class _Item:
    row: Row
    proto: bytes
    bq: dict[str, Any]


def _chunks(items: list[_Item]) -> list[list[_Item]]:
    chunks: list[list[_Item]] = []
    current: list[_Item] = []
    size = 0
    for item in items:
        item_size = len(item.proto) + 8  # the row's bytes and their framing in ProtoRows
        if current and (len(current) >= MAX_ROWS_PER_APPEND or size + item_size > MAX_BYTES_PER_APPEND):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class _Budget:
    """The time left for the appends of one ``write_rows`` call."""

    ends_at: float

    def append_timeout(self, table: str) -> float:
        left = self.ends_at - time.monotonic()
        if left <= 1.0:
            raise TransientError(f"writing to {table} used its {WRITE_BUDGET_S:.0f} s budget; the redelivery continues")
        return min(APPEND_TIMEOUT_S, left)


class _Appends:
    """Appends to a table's ``_default`` stream: one AppendRows call per batch of appends, every request sent at
    once (pipelined; the first names the stream and carries the writer schema) and the responses read in order. The
    call ends when its requests do, so nothing stays open between writes: a connection held per process and table
    would pin one of the server's workers each (the emulator has 16) and count against the connection quota.
    Plain gRPC rather than the client's ``AppendRowsStream``, whose opening polls every 80 ms and whose futures
    poll with a 1 s backoff (BENCHMARKS.md, "BigQuery write path")."""

    def __init__(self, client: BigQueryWriteClient, table: str, table_codec: Codec) -> None:
        self.table = table
        project, dataset, table_id = table.split(".")
        self._client = client
        self._stream = f"projects/{project}/datasets/{dataset}/tables/{table_id}/streams/_default"
        self._schema = types.ProtoSchema(proto_descriptor=table_codec.descriptor)

    def append(self, chunks: list[list[bytes]], timeout: float) -> list[types.AppendRowsResponse]:
        """One response per chunk, in order; a transport error or the deadline raises (``GoogleAPICallError``)."""
        requests = [
            types.AppendRowsRequest(proto_rows=types.AppendRowsRequest.ProtoData(
                rows=types.ProtoRows(serialized_rows=chunk)))
            for chunk in chunks
        ]  # fmt: skip
        requests[0].write_stream = self._stream
        requests[0].proto_rows.writer_schema = self._schema
        responses = self._client.append_rows(
            requests=iter(requests), retry=None, timeout=timeout,
            metadata=[("x-goog-request-params", f"write_stream={self._stream}")],
        )  # fmt: skip
        out = list(responses)
        if len(out) != len(requests):
            raise TransientError(f"AppendRows into {self.table} answered {len(out)} of {len(requests)} appends")
        return out


def write_rows(
    client: bigquery.Client,
    tenant: Tenant,
    rows: Sequence[Row],
    *,
    processor: str,
    appends: BigQueryWriteClient | None = None,
) -> WriteResult:
    """Write ``rows`` (any mix of tables) to the tenant's dataset after checking its region.

    ``appends`` is the Storage Write API client (default: the process's, ``shared.warehouse.client.write_client``)."""
    result = WriteResult()
    if not rows:
        return result
    budget = _Budget(time.monotonic() + WRITE_BUDGET_S)
    check_region(client, tenant)
    appends = appends or write_client()
    loaded_at = datetime.now(UTC)
    by_table: dict[str, list[_Item]] = defaultdict(list)
    for row in rows:
        bq = row.to_bq(loaded_at)
        try:
            item = _Item(row, codec(row.table).encode(bq), bq)
        except Unencodable as exc:
            result.invalid.append(_rejection(row, bq, f"BigQuery cannot take the row for {row.table}: {exc}", processor))
            continue
        by_table[row.table].append(item)
    for table_name, items in by_table.items():
        _write_table(client, appends, tenant, table_name, items, result, processor, budget)
    if result.invalid:
        # Rejections of rejections are not expected (all-STRING payload); if they happen, raise rather than loop.
        nested = WriteResult()
        items = [_Item(r, codec("rejected").encode(bq), bq) for r in result.invalid for bq in [r.to_bq(loaded_at)]]
        _write_table(client, appends, tenant, "rejected", items, nested, processor, budget)
        if nested.invalid:
            raise SetupError("the rejected table refused a bad row", "check the rejected table's schema")
        result.written["rejected"] += nested.written["rejected"]
    return result


def _write_table(
    client: bigquery.Client,
    appends: BigQueryWriteClient,
    tenant: Tenant,
    table_name: str,
    items: list[_Item],
    result: WriteResult,
    processor: str,
    budget: _Budget,
) -> None:
    table = f"{client.project}.{tenant.dataset}.{table_name}"
    stream = _Appends(appends, table, codec(table_name))
    pending = items
    for _ in range(MAX_ROW_ERROR_ROUNDS + 1):
        pending = _append_round(client, stream, table, table_name, pending, result, processor, budget)
        if not pending:
            return
    raise TransientError(f"{len(pending)} rows into {table} kept failing alongside rows BigQuery named as bad")


def _append_round(
    client: bigquery.Client,
    stream: _Appends,
    table: str,
    table_name: str,
    items: list[_Item],
    result: WriteResult,
    processor: str,
    budget: _Budget,
) -> list[_Item]:
    """Append ``items`` in pipelined chunks; returns the good rows of appends that failed on row errors (to append
    again). Rows BigQuery names become rejections; a chunk refused as a whole is bisected."""
    chunks = _chunks(items)
    if not chunks:
        return []
    payload = [[item.proto for item in chunk] for chunk in chunks]
    retry = Retry(predicate=if_exception_type(*_RETRYABLE), initial=0.25, maximum=8.0, multiplier=2.0,
                  timeout=min(RETRY_DEADLINE_S, budget.append_timeout(table)))  # fmt: skip
    try:
        responses = retry(lambda: stream.append(payload, budget.append_timeout(table)))()
    except gexc.RetryError as exc:
        raise TransientError(f"append into {table} failed after retries: {exc.cause}") from exc
    except gexc.GoogleAPICallError as exc:
        raise _classified(client, table, exc) from exc
    except (TimeoutError, ConnectionError) as exc:
        raise TransientError(f"append into {table} failed: {exc}") from exc
    again: list[_Item] = []
    for chunk, response in zip(chunks, responses, strict=True):
        code = response.error.code
        if code == 0:
            result.written[table_name] += len(chunk)
            continue
        named = {e.index: e.message for e in response.row_errors}
        if named:
            for index, item in enumerate(chunk):
                if index in named:
                    message = f"BigQuery rejected the row for {table_name}: {named[index]}"
                    result.invalid.append(_rejection(item.row, item.bq, message, processor))
                else:
                    again.append(item)
            continue
        error = gexc.from_grpc_status(code, response.error.message)
        if not isinstance(error, gexc.InvalidArgument):
            raise _classified(client, table, error)
        if len(chunk) == 1:
            result.invalid.append(_refused_row(chunk[0], table_name, error, processor))
        else:
            # Nothing of a refused append was stored, so its halves can be appended as they are.
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                again.extend(_append_round(client, stream, table, table_name, part, result, processor, budget))
    return again


def _classified(client: bigquery.Client, table: str, exc: gexc.GoogleAPICallError) -> Exception:
    """A setup error when the table is missing or access is refused, else transient (the redelivery retries).

    Opening a stream to a missing table can surface as the client's generic ``Unknown`` ("a problem opening the
    stream"), so that case asks the table API which it is."""
    if isinstance(exc, _SETUP):
        return _setup_error(exc, table)
    if isinstance(exc, gexc.Unknown):
        try:
            client.get_table(table)
        except _SETUP as missing:
            return _setup_error(missing, table)
        except gexc.GoogleAPICallError:
            pass
    return TransientError(f"append into {table} failed: {exc}")


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


def _refused_row(item: _Item, table_name: str, exc: gexc.GoogleAPICallError, processor: str) -> RejectedRow:
    message = (
        f"BigQuery refused an append into {table_name} holding only this row "
        f"({len(item.proto)} bytes as protobuf): {exc.message}"
    )
    return _rejection(item.row, item.bq, message, processor)


def _rejection(row: Row, bq: dict[str, Any], message: str, processor: str) -> RejectedRow:
    payload = encode_row(bq)
    if len(payload) > REJECTED_PAYLOAD_MAX_BYTES:
        message += f"; payload cut to its first {REJECTED_PAYLOAD_MAX_BYTES} bytes"
        payload = payload[:REJECTED_PAYLOAD_MAX_BYTES]
    return RejectedRow(
        rejected_id=f"warehouse:{row.insert_id}",
        reason_code="warehouse_invalid",
        message=message[:2000],
        payload=payload.decode("utf-8", "replace"),
        lineage=getattr(row, "lineage", None) or Lineage(source_format="unknown"),
        processor_name=processor,
        processor_version=__version__,
    )
