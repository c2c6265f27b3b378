"""BigQuery write path on the local emulator: ``python -m bench.bq_write [--quick]``.

Issue 4 allows the Storage Write API instead of insertAll "if it measures faster and keeps these guarantees". One run
starts its own local-bigquery (HTTP + gRPC) and writes the same generated Segment event rows, in the loader's unit of
work (the event rows of one 1000-line Pub/Sub message), into a fresh dataset per method:

  (a) insert_all           the product's writer, ``shared.warehouse.writer.write_rows`` (insertAll, stable
                           insertIds, 500-row chunks, skip_invalid_rows);
  (b) write_api_default    the Storage Write API ``_default`` stream (at-least-once), one long-lived connection, the
                           same 500-row chunks as protobuf rows;
  (c) write_api_committed  one application-created COMMITTED stream with offsets (the Write API's exactly-once mode).

The methods take turns in rounds (so a burst of load on a shared machine hits all alike); ``COUNT(*)`` and a content
fingerprint per table prove every row arrived intact. Then one batch is delivered twice per method (a Pub/Sub
redelivery), and one bad row (a REQUIRED column missing, or a malformed JSON string) is sent in a batch per method, and
what was stored is printed. The last line is ``ratio write_api/insert_all = X.XX`` (rows/s of (b) over (a)).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.api_core import exceptions as gexc
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient, types, writer
from google.cloud.bigquery_storage_v1.services.big_query_write.transports import BigQueryWriteGrpcTransport
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from bench.load.__main__ import generate
from shared.config import Tenant
from shared.load import parse_lines
from shared.warehouse.rows import EventRow, Lineage
from shared.warehouse.schema import TABLES, VIEWS
from shared.warehouse.writer import write_rows

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from infra.local.stack import Stack

FULL_EVENTS = 100_000
QUICK_EVENTS = 10_000
BATCH_LINES = 1000  # Settings.batch_max_lines: the lines of one Pub/Sub message, the loader's unit of work
REGION = "europe-west1"
PROCESSOR = "bench.bq_write"
MAX_ROWS_PER_REQUEST = 500  # the insertAll writer's chunks, which this evaluation compared
MAX_BYTES_PER_REQUEST = 8_000_000
BAD_INDEX = 37  # the bad row's position in the 100-row bad-row batches
_FD = descriptor_pb2.FieldDescriptorProto
# Storage Write API wire types (https://cloud.google.com/bigquery/docs/write-api#data_type_conversions):
# TIMESTAMP is int64 microseconds since the epoch, JSON is a string.
_PROTO_TYPES = {
    "STRING": _FD.TYPE_STRING,
    "JSON": _FD.TYPE_STRING,
    "TIMESTAMP": _FD.TYPE_INT64,
    "INT64": _FD.TYPE_INT64,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


# ---------------------------------------------------------------------------------------------------------------
# The emulator


@contextmanager
def local_bigquery(home: Path) -> Iterator[Stack]:
    """Only the local stack's BigQuery service (same argv, ports and HOME as ``landline up``): Pub/Sub, GCS and the
    functions would only add noise on a 2-core machine. Its process group is stopped on the way out, also on errors."""
    from infra.local.stack import Stack, activate
    from tests.stack_support import free_port_base

    stack = Stack(home=home, port_base=free_port_base())
    service = next(s for s in stack.available_services() if s.name == "bigquery")
    try:
        stack.cfg.paths.bigquery_data.mkdir(parents=True, exist_ok=True)
        stack._start(service)
        stack._wait_healthy([service], time.monotonic() + 90)
        activate(stack.cfg)
        yield stack
    finally:
        stack.down()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of a process group (the emulator): server cost per row, less noisy than wall time."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def make_dataset(client: bigquery.Client, name: str) -> Tenant:
    """A tenant-like dataset with the product's ``events`` and ``rejected`` tables and the ``events_deduped`` view."""
    ds_id = f"{client.project}.{name}"
    dataset = bigquery.Dataset(ds_id)
    dataset.location = REGION
    client.create_dataset(dataset)
    for spec in TABLES:
        if spec.name not in ("events", "rejected"):
            continue
        table = bigquery.Table(f"{ds_id}.{spec.name}", schema=spec.schema)
        if spec.partition_field:
            table.time_partitioning = bigquery.TimePartitioning(field=spec.partition_field)
        table.clustering_fields = spec.clustering or None
        client.create_table(table)
    view = bigquery.Table(f"{ds_id}.events_deduped")
    view.view_query = VIEWS["events_deduped"].format(ds=ds_id)
    client.create_table(view)
    return Tenant(name=name, region=REGION, bucket=f"{name.replace('_', '-')}-unused", dataset=name)


def scalar(client: bigquery.Client, sql: str) -> Any:
    return next(iter(client.query(sql).result()))[0]


def fingerprint(client: bigquery.Client, table: str) -> dict[str, Any]:
    """Counts and sums over the columns each method encodes differently (TIMESTAMP as micros, JSON as a string)."""
    row = next(
        iter(
            client.query(
                f"""SELECT COUNT(*) AS n, COUNT(DISTINCT event_instance_id) AS ids,
                  COUNT(DISTINCT CONCAT(origin, '#', CAST(line_number AS STRING))) AS positions,
                  MIN(timestamp) AS first_ts, MAX(timestamp) AS last_ts, SUM(line_number) AS line_sum,
                  COUNTIF(JSON_VALUE(metadata, '$.currency') = 'USD') AS usd,
                  COUNTIF(timezone IS NULL) AS no_tz, COUNTIF(received_at IS NULL) AS no_received
                FROM `{table}`"""
            ).result()
        )
    )
    return dict(row.items())


def line_counts(client: bigquery.Client, tenant: Tenant) -> dict[str, int]:
    """What ``landline stats`` counts for events: raw rows, distinct events, distinct positions, and the view."""
    ds = f"{client.project}.{tenant.dataset}"
    row = next(
        iter(
            client.query(
                f"""SELECT (SELECT COUNT(*) FROM `{ds}.events`) AS event_rows,
                  (SELECT COUNT(DISTINCT event_instance_id) FROM `{ds}.events`) AS events,
                  (SELECT COUNT(DISTINCT CONCAT(IFNULL(origin, ''), '#',
                     IFNULL(CAST(line_number AS STRING), event_instance_id))) FROM `{ds}.events`) AS event_lines,
                  (SELECT COUNT(*) FROM `{ds}.events_deduped`) AS deduped,
                  (SELECT COUNT(*) FROM `{ds}.rejected`) AS rejected"""
            ).result()
        )
    )
    return {k: int(v) for k, v in row.items()}


# ---------------------------------------------------------------------------------------------------------------
# Rows


def event_batches(n_events: int, *, seed: int, origin: str) -> list[list[EventRow]]:
    """The event rows of consecutive 1000-line batches of generated Segment lines, as the loader parses them."""
    lines = generate(int(n_events / 0.88) + BATCH_LINES, seed=seed)
    lineage = Lineage("segment", origin, None, datetime.now(UTC))
    batches: list[list[EventRow]] = []
    total = 0
    for start in range(0, len(lines), BATCH_LINES):
        chunk = list(enumerate(lines[start : start + BATCH_LINES], start + 1))
        parsed = parse_lines(chunk, fmt="segment", lineage=lineage)
        if parsed.rejected:
            raise SystemExit(f"generated lines were rejected: {parsed.reasons()}")
        events = [r for r in parsed.rows if isinstance(r, EventRow)][: n_events - total]
        batches.append(events)
        total += len(events)
        if total == n_events:
            return batches
    raise SystemExit(f"generated too few events ({total} < {n_events})")


@dataclass
class RawRow:
    """A row the writer accepts (its ``Row`` protocol) with a hand-made payload: how the bad-row cases reach insertAll."""

    insert_id: str
    payload: dict[str, Any]
    table: str = "events"

    def to_bq(self, loaded_at: datetime) -> dict[str, Any]:
        return self.payload


def _micros(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - _EPOCH) // _MICRO


def proto_fields(row: EventRow, loaded_us: int) -> dict[str, Any]:
    """``EventRow.to_bq`` for the Write API: the same values, TIMESTAMP as int64 micros, JSON as a compact string."""
    lineage = row.lineage
    return {
        "contact_id": row.contact_id,
        "timestamp": _micros(row.timestamp),
        "event_name": row.event_name,
        "event_instance_id": row.event_instance_id,
        "timezone": row.timezone,
        "metadata": json.dumps(row.metadata, separators=(",", ":")),
        "source_format": lineage.source_format,
        "origin": lineage.origin,
        "line_number": lineage.line_number,
        "received_at": _micros(lineage.received_at),
        "loaded_at": loaded_us,
    }


@dataclass(frozen=True)
class Codec:
    """A proto2 message type built at run time from the product's ``events`` schema (no .proto file, no protoc).

    Every field is optional on the wire so that REQUIRED is enforced by the server, as for insertAll."""

    descriptor: descriptor_pb2.DescriptorProto
    message: type[Message]

    @classmethod
    def for_table(cls, name: str) -> Codec:
        spec = next(t for t in TABLES if t.name == name)
        proto = descriptor_pb2.DescriptorProto(name=f"{name.capitalize()}Row")
        for number, column in enumerate(spec.schema, 1):
            proto.field.add(
                name=column.name, number=number, type=_PROTO_TYPES[column.field_type], label=_FD.LABEL_OPTIONAL
            )
        file = descriptor_pb2.FileDescriptorProto(name=f"bench_{name}.proto", package="bench", syntax="proto2")
        file.message_type.add().CopyFrom(proto)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file)
        return cls(proto, message_factory.GetMessageClass(pool.FindMessageTypeByName(f"bench.{proto.name}")))

    def encode(self, fields: dict[str, Any]) -> bytes:
        return self.message(**{k: v for k, v in fields.items() if v is not None}).SerializeToString()


def chunks(rows: list[bytes]) -> list[list[bytes]]:
    """The insertAll writer's request limits (500 rows, 8 MB), so both methods send the same requests."""
    out: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for row in rows:
        if current and (len(current) >= MAX_ROWS_PER_REQUEST or size + len(row) > MAX_BYTES_PER_REQUEST):
            out.append(current)
            current, size = [], 0
        current.append(row)
        size += len(row)
    if current:
        out.append(current)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Storage Write API


def write_client(port: int) -> BigQueryWriteClient:
    """Plaintext gRPC and no credentials: the emulator speaks neither TLS nor OAuth."""
    return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=grpc.insecure_channel(f"127.0.0.1:{port}")))


def table_path(project: str, dataset: str, table: str = "events") -> str:
    return f"projects/{project}/datasets/{dataset}/tables/{table}"


def create_stream(client: BigQueryWriteClient, table: str, kind: int) -> str:
    """An application-created stream (``kind``: a ``types.WriteStream.Type``); returns its name."""
    return client.create_write_stream(parent=table, write_stream=types.WriteStream(type_=kind)).name


def commit_streams(
    client: BigQueryWriteClient, table: str, streams: list[str]
) -> types.BatchCommitWriteStreamsResponse:
    request = types.BatchCommitWriteStreamsRequest(parent=table, write_streams=streams)
    return client.batch_commit_write_streams(request=request)


@dataclass
class Outcome:
    """One AppendRows response: rows accepted, or the error and the rows it names."""

    rows: int
    error: str | None = None
    code: str | None = None
    row_errors: list[tuple[int, str]] = field(default_factory=list)


class StreamWriter:
    """One AppendRows connection to one stream. ``append`` sends a batch in writer-sized chunks, pipelined, and waits
    for every response: a loader must know the outcome before it acks the Pub/Sub message."""

    def __init__(
        self, client: BigQueryWriteClient, stream: str, codec: Codec, *, offsets: bool = False, poll: bool = False
    ) -> None:
        template = types.AppendRowsRequest(
            write_stream=stream,
            proto_rows=types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=codec.descriptor)
            ),
        )
        self.stream = stream
        self.manager = writer.AppendRowsStream(client, template)
        self.next_offset: int | None = 0 if offsets else None
        self.poll = poll

    def append(self, rows: list[bytes], *, offset: int | None = None) -> list[Outcome]:
        """Append ``rows``; ``offset`` replays them at a given stream offset (a retry), else the stream's next one."""
        pending: list[tuple[int, writer.AppendRowsFuture]] = []
        position = offset if offset is not None else self.next_offset
        for chunk in chunks(rows):
            request = types.AppendRowsRequest(
                proto_rows=types.AppendRowsRequest.ProtoData(rows=types.ProtoRows(serialized_rows=chunk))
            )
            if position is not None:
                request.offset = position
                position += len(chunk)
            pending.append((len(chunk), self.manager.send(request)))
        if offset is None and self.next_offset is not None:
            self.next_offset = position
        outcomes = []
        for count, future in pending:
            if not self.poll:
                _wait(future, 300)
            try:
                future.result(timeout=300)
                outcomes.append(Outcome(count))
            except gexc.GoogleAPICallError as exc:
                response = getattr(exc, "response", None)
                errors = [(e.index, e.message) for e in response.row_errors] if response is not None else []
                outcomes.append(Outcome(0, exc.message, type(exc).__name__, errors))
        return outcomes

    def close(self) -> None:
        self.manager.close()


def _wait(future: writer.AppendRowsFuture, timeout: float) -> None:
    """Block until the response is in. ``AppendRowsFuture.result()`` alone polls ``done()`` with api_core's LRO
    backoff (1 s initial, jittered), which adds up to a second to every append; a done-callback wakes at once."""
    event = threading.Event()
    future.add_done_callback(lambda _: event.set())
    if not event.wait(timeout):
        raise TimeoutError(f"no AppendRows response in {timeout:.0f}s")


def failed(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.error is not None]


# ---------------------------------------------------------------------------------------------------------------
# Throughput


@dataclass
class Method:
    name: str
    table: str
    write: Callable[[list[EventRow]], None]
    close: Callable[[], None] = lambda: None
    rows: int = 0
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0


def insert_all_method(client: bigquery.Client, tenant: Tenant) -> Method:
    """insertAll as the product's writer did it until 2026-12-03: stable insertIds, 500-row requests,
    ``skip_invalid_rows`` (the client's ``insert_rows_json``; the writer posted the same body pre-encoded)."""
    table = f"{client.project}.{tenant.dataset}.events"

    def write(batch: list[EventRow]) -> None:
        loaded_at = datetime.now(UTC)
        for start in range(0, len(batch), MAX_ROWS_PER_REQUEST):
            part = batch[start : start + MAX_ROWS_PER_REQUEST]
            errors = client.insert_rows_json(table, [r.to_bq(loaded_at) for r in part],
                                             row_ids=[r.insert_id for r in part], skip_invalid_rows=True)  # fmt: skip
            if errors:
                raise SystemExit(f"insert_all: {errors[:1]}")

    return Method("insert_all", table, write)


def writer_method(client: bigquery.Client, tenant: Tenant) -> Method:
    """The product's path as ``load_events`` runs it: one ``write_rows`` call per Pub/Sub message (the Storage Write
    API's default stream since 2026-12-03, one connection per call)."""

    def write(batch: list[EventRow]) -> None:
        result = write_rows(client, tenant, batch, processor=PROCESSOR)
        if result.invalid or result.total_written != len(batch):
            raise SystemExit(f"writer wrote {result.total_written}/{len(batch)}: {result.invalid[:1]}")

    return Method("writer", f"{client.project}.{tenant.dataset}.events", write)


def write_api_method(
    name: str,
    client: bigquery.Client,
    wclient: BigQueryWriteClient,
    tenant: Tenant,
    codec: Codec,
    *,
    committed: bool,
    poll: bool,
) -> Method:
    """One connection kept open across messages (a warm function instance could do that); per message: encode the
    rows as protobuf, append them in the writer's chunks and wait for the responses."""
    parent = table_path(client.project, tenant.dataset)
    stream = (
        create_stream(wclient, parent, types.WriteStream.Type.COMMITTED) if committed else f"{parent}/streams/_default"
    )
    appender = StreamWriter(wclient, stream, codec, offsets=committed, poll=poll)

    def write(batch: list[EventRow]) -> None:
        loaded_us = _micros(datetime.now(UTC)) or 0
        bad = failed(appender.append([codec.encode(proto_fields(r, loaded_us)) for r in batch]))
        if bad:
            raise SystemExit(f"{name}: append failed: {bad[0]}")

    return Method(name, f"{client.project}.{tenant.dataset}.events", write, appender.close)


def measure(methods: list[Method], batches: list[list[EventRow]], rounds: int, server_pgid: int) -> None:
    """Round-robin in ``rounds`` slices, the order reversed every round, so drift and bursts of load hit all alike."""
    per_round = max(1, -(-len(batches) // rounds))
    for index, start in enumerate(range(0, len(batches), per_round)):
        part = batches[start : start + per_round]
        for method in methods if index % 2 == 0 else list(reversed(methods)):
            server0, cpu0, wall0 = group_cpu_seconds(server_pgid), time.process_time(), time.perf_counter()
            for batch in part:
                method.write(batch)
            method.wall += time.perf_counter() - wall0
            method.client_cpu += time.process_time() - cpu0
            method.server_cpu += group_cpu_seconds(server_pgid) - server0
            method.rows += sum(len(b) for b in part)


# ---------------------------------------------------------------------------------------------------------------
# Redelivery and bad rows


def redelivery(bq: bigquery.Client, wclient: BigQueryWriteClient, codec: Codec, batch: list[EventRow]) -> None:
    """The same batch delivered twice (a Pub/Sub redelivery), per method; what the table and the views then hold."""
    print(f"\nredelivery: one batch of {len(batch)} event rows delivered twice")
    loaded_us = _micros(datetime.now(UTC)) or 0
    serialized = [codec.encode(proto_fields(r, loaded_us)) for r in batch]

    def report(label: str, tenant: Tenant, note: str = "") -> None:
        c = line_counts(bq, tenant)
        counts = f"rows {c['event_rows']:>5}  events {c['events']:>5}  positions {c['event_lines']:>5}"
        print(f"  {label:<34} {counts}  events_deduped {c['deduped']:>5}{'  ' + note if note else ''}")

    tenant = make_dataset(bq, f"bqw_redeliver_ia_{uuid.uuid4().hex[:8]}")
    for _ in range(2):
        insert_all_method(bq, tenant).write(batch)
    report("insert_all (same insertIds)", tenant)

    tenant = make_dataset(bq, f"bqw_redeliver_wr_{uuid.uuid4().hex[:8]}")
    for _ in range(2):
        write_rows(bq, tenant, batch, processor=PROCESSOR)
    report("writer (Write API _default)", tenant)

    tenant = make_dataset(bq, f"bqw_redeliver_def_{uuid.uuid4().hex[:8]}")
    for _ in range(2):  # a redelivery reaches a new invocation: a new connection to the same _default stream
        appender = StreamWriter(wclient, f"{table_path(bq.project, tenant.dataset)}/streams/_default", codec)
        bad = failed(appender.append(serialized))
        appender.close()
        if bad:
            raise SystemExit(f"_default append failed: {bad[0]}")
    report("write_api _default", tenant)

    tenant = make_dataset(bq, f"bqw_redeliver_off_{uuid.uuid4().hex[:8]}")
    stream = create_stream(wclient, table_path(bq.project, tenant.dataset), types.WriteStream.Type.COMMITTED)
    appender = StreamWriter(wclient, stream, codec, offsets=True)
    first = appender.append(serialized)
    second = appender.append(serialized, offset=0)  # the retry knows the stream and the offset it used
    appender.close()
    codes = sorted({o.code or "ok" for o in second})
    report(
        "write_api COMMITTED, same stream", tenant, f"first: {len(failed(first))} errors; replay: {', '.join(codes)}"
    )

    tenant = make_dataset(bq, f"bqw_redeliver_new_{uuid.uuid4().hex[:8]}")
    for _ in range(2):  # what a new invocation does unless stream name + offset are stored per Pub/Sub message
        stream = create_stream(wclient, table_path(bq.project, tenant.dataset), types.WriteStream.Type.COMMITTED)
        appender = StreamWriter(wclient, stream, codec, offsets=True)
        outcomes = appender.append(serialized)
        appender.close()
        if failed(outcomes):
            raise SystemExit(f"COMMITTED append failed: {failed(outcomes)[0]}")
    report("write_api COMMITTED, new stream", tenant, "offset 0 again on each new stream")

    tenant = make_dataset(bq, f"bqw_redeliver_pen_{uuid.uuid4().hex[:8]}")
    parent = table_path(bq.project, tenant.dataset)
    for _ in range(2):
        stream = create_stream(wclient, parent, types.WriteStream.Type.PENDING)
        appender = StreamWriter(wclient, stream, codec, offsets=True)
        outcomes = appender.append(serialized)
        appender.close()
        wclient.finalize_write_stream(name=stream)
        commit = commit_streams(wclient, parent, [stream])
        if failed(outcomes) or commit.stream_errors:
            raise SystemExit(f"PENDING stream failed: {failed(outcomes)[:1]} {list(commit.stream_errors)[:1]}")
    report("write_api PENDING, new stream", tenant, "append, finalize, commit per delivery")


def bad_rows(bq: bigquery.Client, wclient: BigQueryWriteClient, codec: Codec, batch: list[EventRow]) -> None:
    """One bad row among 100: does the batch keep its good rows, and what does the caller learn?"""
    batch = batch[:100]
    loaded_at = datetime.now(UTC)
    loaded_us = _micros(loaded_at) or 0
    breakers: dict[str, Callable[[dict[str, Any]], None]] = {
        "missing REQUIRED contact_id": lambda row: row.update(contact_id=None),
        "malformed JSON in metadata": lambda row: row.update(metadata="{not json"),
    }
    print(f"\nbad rows: {len(batch)} event rows, row {BAD_INDEX} broken")
    for label, breaker in breakers.items():
        # the product's writer (Write API since 2026-12-03): the bad row becomes a rejected row, the others are written.
        tenant = make_dataset(bq, f"bqw_bad_ia_{uuid.uuid4().hex[:8]}")
        rows: list[RawRow] = []
        for i, r in enumerate(batch):
            payload = r.to_bq(loaded_at)
            if i == BAD_INDEX:
                breaker(payload)
            rows.append(RawRow(r.insert_id, payload))
        result = write_rows(bq, tenant, rows, processor=PROCESSOR)
        c = line_counts(bq, tenant)
        reasons = sorted({x.reason_code for x in result.invalid})
        written = f"written {result.written['events']}, invalid {len(result.invalid)} {reasons}"
        print(f"  {label}: writer: {written}; table rows {c['event_rows']}, rejected rows {c['rejected']}")

        # Write API: the row_errors name the bad row; the docs say no row of the failed append is stored, and the
        # caller must drop the bad rows and append the rest again. Count before and after that retry.
        for kind in ("_default", "PENDING"):
            tenant = make_dataset(bq, f"bqw_bad_wa_{uuid.uuid4().hex[:8]}")
            parent = table_path(bq.project, tenant.dataset)
            fields = [proto_fields(r, loaded_us) for r in batch]
            breaker(fields[BAD_INDEX])
            serialized = [codec.encode(f) for f in fields]
            stream = (
                f"{parent}/streams/_default"
                if kind == "_default"
                else create_stream(wclient, parent, types.WriteStream.Type.PENDING)
            )
            appender = StreamWriter(wclient, stream, codec, offsets=kind != "_default")
            outcomes = appender.append(serialized)
            note = ""
            if kind == "PENDING":
                wclient.finalize_write_stream(name=stream)
                commit = commit_streams(wclient, parent, [stream])
                note = f"; commit: {'errors ' + str(list(commit.stream_errors)) if commit.stream_errors else 'ok'}"
            errors = failed(outcomes)
            stored = scalar(bq, f"SELECT COUNT(*) FROM `{bq.project}.{tenant.dataset}.events`")
            detail = (
                f"error {errors[0].code}: {errors[0].error!r}, row_errors {errors[0].row_errors}"
                if errors
                else "no error"
            )
            line = f"  {label}: write_api {kind}: {detail}{note}; rows stored {stored}"
            if errors and kind == "_default":
                bad_index = {i for o in errors for i, _ in o.row_errors}
                retry = failed(appender.append([s for i, s in enumerate(serialized) if i not in bad_index]))
                after = scalar(bq, f"SELECT COUNT(*) FROM `{bq.project}.{tenant.dataset}.events`")
                line += f"; after re-appending the {len(batch) - len(bad_index)} others: {after} rows"
                line += f" ({len(retry)} errors)" if retry else ""
            appender.close()
            print(line)


# ---------------------------------------------------------------------------------------------------------------


def throughput(
    bq: bigquery.Client,
    wclient: BigQueryWriteClient,
    codec: Codec,
    server_pgid: int,
    batches: list[list[EventRow]],
    *,
    rounds: int,
    poll: bool,
) -> list[Method]:
    """Every method writes ``batches`` into its own fresh dataset; counts and fingerprints must then agree."""
    run = uuid.uuid4().hex[:8]
    warmup = event_batches(500, seed=11, origin="gs://bench/segment-logs/src/1715644800000/warmup.gz#1")[0]
    methods = [insert_all_method(bq, make_dataset(bq, f"bqw_insert_all_{run}")),
               writer_method(bq, make_dataset(bq, f"bqw_writer_{run}"))]
    for name, committed in (("write_api_default", False), ("write_api_committed", True)):
        tenant = make_dataset(bq, f"bqw_{name.removeprefix('write_api_')}_{run}")
        methods.append(write_api_method(name, bq, wclient, tenant, codec, committed=committed, poll=poll))
    try:
        for method in methods:  # connections, table loads, caches: not what is measured
            method.write(warmup)
        measure(methods, batches, rounds, server_pgid)
    finally:
        for method in methods:
            method.close()

    n = sum(len(b) for b in batches)
    expected = n + len(warmup)
    prints = {m.name: fingerprint(bq, m.table) for m in methods}
    for method in methods:
        if prints[method.name]["n"] != expected:
            raise SystemExit(f"{method.name}: {prints[method.name]['n']} rows in {method.table}, expected {expected}")
    if any(p != prints["insert_all"] for p in prints.values()):
        raise SystemExit(f"tables differ: {json.dumps(prints, default=str, indent=1)}")
    print(
        f"every table holds {expected} rows ({n} + {len(warmup)} warm-up), identical fingerprints "
        "(distinct ids, positions, min/max timestamp, line sum, JSON_VALUE of metadata)"
    )
    header = f"{'method':<22}{'rows':>8}{'wall s':>9}{'rows/s':>9}{'client CPU s':>14}{'server CPU s':>14}"
    print(f"{header}{'server CPU ms/1k rows':>23}")
    for m in methods:
        row = f"{m.name:<22}{m.rows:>8}{m.wall:>9.2f}{m.rows / m.wall:>9,.0f}{m.client_cpu:>14.2f}{m.server_cpu:>14.2f}"
        print(f"{row}{m.server_cpu * 1e6 / m.rows:>23.0f}")
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bq_write", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS} event rows instead of {FULL_EVENTS}")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--result-polling",
        action="store_true",
        help="wait for appends with AppendRowsFuture.result() alone (the client's polling backoff) in the timed runs",
    )
    args = parser.parse_args()
    n = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)

    t0 = time.perf_counter()
    batches = event_batches(n, seed=7, origin="gs://bench/segment-logs/src/1715644800000/part-0001.gz#1")
    probe = event_batches(BATCH_LINES, seed=13, origin="gs://bench/segment-logs/src/1715644800000/probe.gz#1")[0]
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, {n} event rows in {len(batches)} batches "
        f"(the event rows of one {BATCH_LINES}-line Pub/Sub message each), generated in {time.perf_counter() - t0:.1f}s"
    )
    with tempfile.TemporaryDirectory(prefix="bq-write-") as home, local_bigquery(Path(home)) as stack:
        from shared.warehouse.client import bigquery_client

        bq = bigquery_client()
        wclient = write_client(stack.cfg.port("bigquery_grpc"))
        try:
            codec = Codec.for_table("events")
            rounds = 2 if args.quick else 4
            pgid = stack.pid("bigquery") or 0
            methods = throughput(bq, wclient, codec, pgid, batches, rounds=rounds, poll=args.result_polling)
            redelivery(bq, wclient, codec, probe)
            bad_rows(bq, wclient, codec, probe)
        finally:
            wclient.transport.close()

    rate = {m.name: m.rows / m.wall for m in methods}
    print(f"ratio write_api_committed/insert_all = {rate['write_api_committed'] / rate['insert_all']:.2f}")
    print(f"ratio write_api (one connection kept)/insert_all = {rate['write_api_default'] / rate['insert_all']:.2f}")
    print(f"ratio writer/insert_all = {rate['writer'] / rate['insert_all']:.2f}")


if __name__ == "__main__":
    main()
