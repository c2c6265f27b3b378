"""Bulk backfill (``landline backfill --bulk``): months of archived exports loaded with BigQuery load jobs, not
streamed row by row.

Why: streaming bills every row (legacy streaming at least 1 KB each) and pushes every line through Pub/Sub twice; a
load job is free and takes terabytes. The rows must still be exactly the streaming path's, so a task reads each
object with ingest's own reader and batching (``ObjectMessages``) and parses each batch with the loader's own
``parse_raw``, through the same Pub/Sub message encoding: same validation, same ids, same rejections.

Three stages; they share nothing but the tenant's staging bucket (``<bucket>-staging``, shared.config.tenant_buckets):

1. **plan** (``plan_run``): list the tenant's data objects under a prefix and deal them to N tasks by size. The plan
   is stored as ``bulk/<run>/plan.json``; its time is every row's ``received_at`` and ``loaded_at``, so a task that
   runs again writes the same bytes.
2. **task** i of N (``run_task``; in the cloud a Cloud Run Jobs task, ``python -m shared.bulk task --tenant T --run R``
   with ``CLOUD_RUN_TASK_INDEX``/``CLOUD_RUN_TASK_COUNT``; locally a process): each object of its share becomes rows,
   written as newline-delimited JSON to ``bulk/<run>/rows/<table>/<day>/task-<i>-<part>.json`` (per table, day of
   the table's partition column and task, in parts of up to ``PART_BYTES`` uploaded as they fill), then
   ``bulk/<run>/tasks/task-<i>.json`` says what each object gave. A task
   run twice overwrites its own files.
3. **load** (``load_run``): once every task's manifest is there, per table one DELETE of the rows any earlier run or
   the streaming path stored for these objects, then one load job per day (WRITE_APPEND of that day's files), then
   the file ledger rows. Re-running replaces, never duplicates. Between the DELETE and the last load a crash leaves
   those objects' rows missing until the load runs again (it is idempotent: run ``landline backfill --bulk --run R``
   again). BigQuery refuses a DELETE of rows still in the streaming buffer (streamed in the last ~30-90 minutes):
   objects streamed that recently cannot be replaced yet, and the error says so.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from shared.clients import storage_client
from shared.config import STAGING_BUCKET_SUFFIX, Tenant, settings, tenant_topic, tenants
from shared.envelopes import PubSubMessage, StorageObjectData
from shared.errors import PermanentError, SetupError
from shared.ingest.layout import classify_object
from shared.ingest.pipeline import IngestResult, ObjectMessages
from shared.load.pipeline import parse_raw, tenant_policy
from shared.raw_events import RawEventsMessage
from shared.warehouse.client import bigquery_client, check_region
from shared.warehouse.query import run_dml
from shared.warehouse.rows import FileLedgerRow
from shared.warehouse.schema import table_spec
from shared.warehouse.writer import encode_row, write_rows

PROCESSOR = "landline.bulk"
PREFIX = "bulk"
ROW_TABLES = ("events", "user_properties", "rejected")  # what parsing a line can produce
PART_BYTES = 256 * 1024 * 1024  # a staged file is uploaded once this big (BigQuery takes 10,000 URIs per load job)


def staging_bucket(tenant: Tenant) -> str:
    return tenant.bucket + STAGING_BUCKET_SUFFIX


@dataclass(frozen=True)
class PlannedObject:
    name: str
    generation: str
    size: int

    def storage_object(self, bucket: str) -> StorageObjectData:
        return StorageObjectData.model_validate(
            {"bucket": bucket, "name": self.name, "generation": self.generation, "size": self.size}
        )


@dataclass
class Plan:
    tenant: str
    run: str
    created_at: str  # ISO; every row's received_at and loaded_at
    tasks: int
    prefix: str
    objects: list[PlannedObject]

    def share(self, index: int) -> list[PlannedObject]:
        """Task ``index``'s objects: largest first, each to the task with the fewest bytes so far (deterministic)."""
        loads = [0] * self.tasks
        mine: list[PlannedObject] = []
        for obj in sorted(self.objects, key=lambda o: (-o.size, o.name)):
            task = min(range(self.tasks), key=lambda t: (loads[t], t))
            loads[task] += obj.size
            if task == index:
                mine.append(obj)
        return sorted(mine, key=lambda o: o.name)

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.created_at)


@dataclass
class ObjectOutcome:
    """What one object gave: its ledger row's fields."""

    origin: str
    name: str
    generation: str
    status: str
    lines: int = 0
    batches: int = 0
    bytes_read: int = 0
    encoding: str | None = None
    reason: str | None = None
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class TaskManifest:
    index: int
    objects: list[ObjectOutcome]
    files: list[dict[str, Any]]  # {"table", "day", "uri", "rows"}


@dataclass
class LoadSummary:
    tenant: str
    run: str
    objects: int
    lines: int
    rows: dict[str, int]
    load_jobs: int
    replaced: dict[str, int]  # rows deleted per table before loading (an earlier run or the streaming path)
    statuses: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _blob_json(bucket: str, name: str) -> Any:
    return json.loads(storage_client().bucket(bucket).blob(name).download_as_bytes())


def _put_json(bucket: str, name: str, value: Any) -> None:
    storage_client().bucket(bucket).blob(name).upload_from_string(
        json.dumps(value, default=str, indent=1), content_type="application/json"
    )


def plan_run(tenant_name: str, *, prefix: str = "", tasks: int = 4, run: str | None = None) -> Plan:
    """List the tenant's data objects under ``prefix`` and store the plan of a new run."""
    tenant = tenants().get(tenant_name)
    if tasks < 1:
        raise ValueError("tasks must be at least 1")
    objects = []
    for blob in storage_client().list_blobs(tenant.bucket, prefix=prefix or None):
        if classify_object(blob.name, tenant.prefix).is_data:
            objects.append(PlannedObject(blob.name, str(blob.generation), int(blob.size or 0)))
    plan = Plan(tenant.name, run or datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
                datetime.now(UTC).isoformat(), tasks, prefix, sorted(objects, key=lambda o: o.name))  # fmt: skip
    _put_json(staging_bucket(tenant), f"{PREFIX}/{plan.run}/plan.json", asdict(plan))
    return plan


def read_plan(tenant_name: str, run: str) -> Plan:
    tenant = tenants().get(tenant_name)
    try:
        raw = _blob_json(staging_bucket(tenant), f"{PREFIX}/{run}/plan.json")
    except gexc.NotFound:
        raise SetupError(f"no bulk run {run!r} for tenant {tenant_name}", "start one with `landline backfill --bulk`") from None
    raw["objects"] = [PlannedObject(**o) for o in raw["objects"]]
    return Plan(**raw)


def _day(table: str, row: dict[str, Any]) -> str:
    """The day of the table's partition column (UTC), which names the row's load job."""
    column = table_spec(table).partition_field
    value = row.get(column or "")
    return str(value)[:10] if value else "none"


@dataclass
class _Part:
    path: Path
    handle: Any
    number: int
    rows: int = 0
    bytes: int = 0


class _Staging:
    """A task's row files: one open part per (table, day), uploaded and removed once it reaches ``PART_BYTES``, so a
    task keeps at most one part per table and day locally (on Cloud Run ``/tmp`` is memory), whatever its share.
    Parts are cut at the same rows on every run of the task (the rows come in file order), so a retried task
    overwrites its own parts."""

    def __init__(self, tmp: Path, bucket: Any, run: str, index: int) -> None:
        self.tmp, self.bucket, self.run, self.index = tmp, bucket, run, index
        self.open: dict[tuple[str, str], _Part] = {}
        self.next_part: dict[tuple[str, str], int] = defaultdict(int)
        self.files: list[dict[str, Any]] = []

    def write(self, key: tuple[str, str], line: bytes) -> None:
        part = self.open.get(key)
        if part is None:
            number = self.next_part[key]
            self.next_part[key] += 1
            path = self.tmp / f"{key[0]}-{key[1]}-{number}.json"
            part = self.open[key] = _Part(path, path.open("wb"), number)
        part.handle.write(line + b"\n")
        part.rows += 1
        part.bytes += len(line) + 1
        if part.bytes >= PART_BYTES:
            self._upload(key)

    def _upload(self, key: tuple[str, str]) -> None:
        part = self.open.pop(key)
        part.handle.close()
        table, day = key
        name = f"{PREFIX}/{self.run}/rows/{table}/{day}/task-{self.index:05d}-{part.number:04d}.json"
        self.bucket.blob(name).upload_from_filename(str(part.path), content_type="application/x-ndjson")
        part.path.unlink()
        self.files.append({"table": table, "day": day, "uri": f"gs://{self.bucket.name}/{name}", "rows": part.rows})

    def finish(self) -> list[dict[str, Any]]:
        for key in sorted(self.open):
            self._upload(key)
        return sorted(self.files, key=lambda f: (f["table"], f["day"], f["uri"]))

    def close(self) -> None:
        for part in self.open.values():
            part.handle.close()


def run_task(tenant_name: str, run: str, index: int, count: int | None = None) -> TaskManifest:
    """Task ``index`` of a run: its objects' rows as files in the staging bucket, and its manifest."""
    plan = read_plan(tenant_name, run)
    if count is not None and count != plan.tasks:
        raise SetupError(f"the run was planned for {plan.tasks} tasks, not {count}", f"execute it with --tasks {plan.tasks}")
    tenant = tenants().get(tenant_name)
    policy = tenant_policy(tenant)
    topic = tenant_topic(settings().raw_events_topic, tenant.name)
    at = plan.time
    published = at.isoformat().replace("+00:00", "Z")
    outcomes: list[ObjectOutcome] = []
    with tempfile.TemporaryDirectory(prefix="landline-bulk-") as tmp:
        staging = _Staging(Path(tmp), storage_client().bucket(staging_bucket(tenant)), run, index)
        try:
            for planned in plan.share(index):
                obj = planned.storage_object(tenant.bucket)
                outcome = ObjectOutcome(obj.origin, obj.name, obj.generation, "started")
                layout = classify_object(obj.name, tenant.prefix)
                messages = ObjectMessages(tenant, obj, layout.kind, layout.source_id)
                written: list[tuple[tuple[str, str], bytes]] = []
                try:
                    for message, _lines in messages:
                        # The loader's path exactly: the message as Pub/Sub would carry it, decoded and parsed.
                        data, attributes = message.encode()
                        envelope = PubSubMessage.model_validate(
                            {"data": base64.b64encode(data).decode(), "attributes": attributes,
                             "messageId": f"bulk-{message.batch_id}", "publishTime": published}
                        )  # fmt: skip
                        parsed = parse_raw(RawEventsMessage.from_pubsub(envelope), envelope, topic, policy)
                        for row in [*parsed.rows, *parsed.rejected]:
                            doc = row.to_bq(at)
                            written.append(((row.table, _day(row.table, doc)), encode_row(doc)))
                    result, encoding = messages.result()
                except PermanentError as exc:
                    result, encoding = IngestResult(obj.origin, "rejected", reason=f"{exc.reason}: {exc.message}"), None
                    written = []  # a rejected file gives no rows, as ingest publishes none
                except gexc.NotFound:
                    result, encoding = IngestResult(obj.origin, "gone", reason="object_gone"), None
                    written = []
                for key, line in written:
                    staging.write(key, line)
                    outcome.rows[key[0]] = outcome.rows.get(key[0], 0) + 1
                outcome.status, outcome.lines, outcome.batches = result.status, result.lines, result.batches
                outcome.bytes_read, outcome.encoding, outcome.reason = result.bytes_read, encoding, result.reason
                outcomes.append(outcome)
            files = staging.finish()
        finally:
            staging.close()
    manifest = TaskManifest(index, outcomes, files)
    _put_json(staging_bucket(tenant), f"{PREFIX}/{run}/tasks/task-{index:05d}.json", asdict(manifest))
    return manifest


def missing_tasks(tenant_name: str, plan: Plan) -> list[int]:
    """The tasks of ``plan`` whose manifest is not in the staging bucket yet."""
    bucket = storage_client().bucket(staging_bucket(tenants().get(tenant_name)))
    done = {blob.name for blob in bucket.list_blobs(prefix=f"{PREFIX}/{plan.run}/tasks/")}
    return [i for i in range(plan.tasks) if f"{PREFIX}/{plan.run}/tasks/task-{i:05d}.json" not in done]


def read_manifests(tenant_name: str, plan: Plan) -> list[TaskManifest]:
    tenant = tenants().get(tenant_name)
    out = []
    missing = []
    for index in range(plan.tasks):
        try:
            raw = _blob_json(staging_bucket(tenant), f"{PREFIX}/{plan.run}/tasks/task-{index:05d}.json")
        except gexc.NotFound:
            missing.append(index)
            continue
        out.append(TaskManifest(raw["index"], [ObjectOutcome(**o) for o in raw["objects"]], raw["files"]))
    if missing:
        raise SetupError(
            f"bulk run {plan.run}: task(s) {', '.join(map(str, missing))} of {plan.tasks} have not finished",
            f"run them (`python -m shared.bulk task --tenant {tenant_name} --run {plan.run} --index N`) or execute "
            "the job again, then load",
        )
    return out


def load_run(tenant_name: str, run: str, on_job: Callable[[str, str], None] | None = None) -> LoadSummary:
    """Replace the run's objects' rows: one DELETE per table, one load job per table and day, then the ledger."""
    plan = read_plan(tenant_name, run)
    manifests = read_manifests(tenant_name, plan)
    tenant = tenants().get(tenant_name)
    client = bigquery_client()
    check_region(client, tenant)
    origins = [o.origin for m in manifests for o in m.objects]
    by_table_day: dict[tuple[str, str], list[str]] = defaultdict(list)
    rows: dict[str, int] = defaultdict(int)
    for manifest in manifests:
        for f in manifest.files:
            by_table_day[f["table"], f["day"]].append(f["uri"])
            rows[f["table"]] += int(f["rows"])
    replaced: dict[str, int] = {}
    jobs = 0
    for table in ROW_TABLES:
        if origins:
            try:
                replaced[table] = run_dml(tenant.name, f"DELETE FROM `{table}` WHERE origin IN UNNEST(@origins)",
                                          {"origins": origins})  # fmt: skip
            except gexc.BadRequest as exc:
                if "streaming buffer" in str(exc):
                    raise SetupError(
                        f"some of these objects' rows in {table} were streamed in the last ~90 minutes and BigQuery "
                        "cannot delete them yet",
                        "run the load again later (`landline backfill --bulk --run ...`)",
                    ) from exc
                raise
        schema = table_spec(table).schema
        for (name, day), uris in sorted(by_table_day.items()):
            if name != table:
                continue
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                schema=schema,
                write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
                ignore_unknown_values=False,
                max_bad_records=0,
            )
            if on_job:
                on_job(table, day)
            job = client.load_table_from_uri(sorted(uris), f"{client.project}.{tenant.dataset}.{table}",
                                             job_config=config, location=tenant.region)  # fmt: skip
            job.result()
            jobs += 1
    finished = datetime.now(UTC)
    ledger = [
        FileLedgerRow(origin=o.origin, bucket=tenant.bucket, object_name=o.name, generation=o.generation,
                      status=o.status, attempt_id=f"bulk-{run}"[:64], bytes_read=o.bytes_read, lines=o.lines,
                      batches=o.batches, encoding=o.encoding, error=o.reason, started_at=plan.time,
                      finished_at=finished)
        for m in manifests
        for o in m.objects
    ]
    if ledger:
        write_rows(client, tenant, ledger, processor=PROCESSOR)
    statuses: dict[str, int] = defaultdict(int)
    for m in manifests:
        for o in m.objects:
            statuses[o.status] += 1
    return LoadSummary(tenant.name, run, len(origins), sum(o.lines for m in manifests for o in m.objects),
                       dict(rows), jobs, replaced, dict(statuses))  # fmt: skip


def run_local(tenant_name: str, *, prefix: str = "", tasks: int = 4, run: str | None = None,
              on_task: Callable[[int], None] | None = None,
              on_job: Callable[[str, str], None] | None = None) -> LoadSummary:  # fmt: skip
    """The whole run on this machine: plan (unless ``run`` names an existing one), the tasks that have not finished
    (all of a new run; none of a run the Cloud Run Job executed) as processes, then the load."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    plan = read_plan(tenant_name, run) if run else plan_run(tenant_name, prefix=prefix, tasks=tasks)
    todo = missing_tasks(tenant_name, plan)
    if len(todo) == 1:
        run_task(tenant_name, plan.run, todo[0], plan.tasks)
    elif todo:
        with ProcessPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
            for future in [pool.submit(run_task, tenant_name, plan.run, i, plan.tasks) for i in todo]:
                future.result()
                if on_task:
                    on_task(1)
    if on_task and len(todo) <= 1:
        on_task(len(todo))
    return load_run(tenant_name, plan.run, on_job)


def main(argv: list[str] | None = None) -> None:
    """The Cloud Run Jobs entry point: ``python -m shared.bulk task --tenant T --run R`` (index and count from the
    job's environment, or ``--index``/``--count``)."""
    parser = argparse.ArgumentParser(prog="python -m shared.bulk", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    task = sub.add_parser("task", help="run one task of a planned run")
    task.add_argument("--tenant", required=True)
    task.add_argument("--run", required=True)
    task.add_argument("--index", type=int, default=int(os.environ.get("CLOUD_RUN_TASK_INDEX", "0")))
    task.add_argument("--count", type=int, default=int(os.environ.get("CLOUD_RUN_TASK_COUNT", "0")) or None)
    args = parser.parse_args(argv)
    manifest = run_task(args.tenant, args.run, args.index, args.count)
    print(json.dumps({"task": manifest.index, "objects": len(manifest.objects), "files": len(manifest.files)}))


__all__ = ["Plan", "load_run", "plan_run", "read_plan", "run_local", "run_task", "staging_bucket"]

if __name__ == "__main__":
    main()
