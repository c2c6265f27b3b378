"""Fault scenarios of the pipeline that need the real stack: BigQuery down, tables missing, the object changing while
it is read, the ledger's final write failing. Each injects one fault into the session stack, restores it, and
measures what was lost and duplicated with ``tests.faults.pipeline_accounting`` against the lines it put in.

Pausing a function (SIGSTOP on its process group, then SIGCONT) makes "while it is read" deterministic: the fault
happens between two reads of the same attempt, whatever the machine's speed.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from shared.config import Tenant
from shared.warehouse.client import provision_dataset
from tests.faults import pipeline_accounting
from tests.stack_support import unique

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

DAY = "1714521600000"
PAD = 3_000  # bytes of padding per line: 6,500 lines make a 20 MB file, five of ingest's 4 MB reads


def track(n: int, run: str, pad: int = 0) -> dict[str, Any]:
    record = {
        "type": "track",
        "event": "Item Viewed",
        "userId": f"user-{n % 13}",
        "messageId": f"{run}-{n}",
        "timestamp": "2024-05-01T10:00:00Z",
        "properties": {"n": n, "sku": f"sku-{n * 7919 % 100003:06d}", "list": "search results page two"},
    }
    if pad:
        record["properties"]["note"] = "n" * pad
    return record


def segment_tree(tmp: Path, run: str, lines: int, *, compress: bool = True, pad: int = 0) -> Path:
    root = tmp / unique("tree")
    folder = root / "segment-logs" / "src" / DAY
    folder.mkdir(parents=True)
    text = b"".join(json.dumps(track(n, run, pad)).encode() + b"\n" for n in range(lines))
    (folder / "part-1.gz").write_bytes(gzip.compress(text, compresslevel=1) if compress else text)
    return root


def registered(stack: StackHandle, name: str) -> Tenant:
    return Tenant.model_validate(json.loads(stack.stack.cfg.paths.tenants.read_text())[name])


def bq(stack: StackHandle) -> bigquery.Client:
    return bigquery.Client(
        project=stack.stack.cfg.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=stack.env["LANDLINE_BIGQUERY_ENDPOINT"]),
    )


def router(stack: StackHandle) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.stack.cfg.url('router')}/stats", timeout=5).json())


def failures(stack: StackHandle, function: str) -> int:
    return int(router(stack)["failures"].get(function, 0))


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Paused:
    """A stack service whose whole process group is stopped (SIGSTOP); requests sent to it wait in its socket."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def step_until(self, reached: Callable[[], bool], what: str) -> None:
        """Let it run 5 ms in every 50 until ``reached`` (asked while it is stopped) holds: what it already sent keeps
        being served meanwhile, so the moment is exact whatever the machine's speed."""
        deadline = time.monotonic() + 120
        while not reached():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            os.killpg(self.pid, signal.SIGCONT)
            time.sleep(0.005)
            os.killpg(self.pid, signal.SIGSTOP)
            time.sleep(0.045)


@contextmanager
def paused(stack: StackHandle, service: str) -> Iterator[Paused]:
    """The service stopped inside the block (and stepped forward with ``step_until``), continued after it."""
    pid = stack.stack.pid(service)
    assert pid, f"{service} is not running"
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield Paused(pid)
    finally:
        os.killpg(pid, signal.SIGCONT)


@contextmanager
def first_batch_seen(stack: StackHandle, tenant: str) -> Iterator[Callable[[], bool]]:
    """A check that is true once a batch for ``tenant`` has been published (Pub/Sub acknowledged it), read from a
    subscription of this test's own, so it answers at once, before any delivery to the loader."""
    from google.cloud import pubsub_v1

    from tests.integration.publish_support import raw_events_topic

    topic = raw_events_topic(stack, tenant)
    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(stack.stack.cfg.project, unique("probe"))
    subscriber.create_subscription(name=subscription, topic=topic)

    def seen() -> bool:
        with warnings.catch_warnings(action="ignore", category=DeprecationWarning):  # return_immediately: a probe
            # one message (a batch is at most ~1 MB): ten could exceed the client's 4 MB gRPC receive limit
            response = subscriber.pull(subscription=subscription, max_messages=1, return_immediately=True, timeout=5)
        return any(m.message.attributes.get("tenant") == tenant for m in response.received_messages)

    try:
        yield seen
    finally:
        subscriber.delete_subscription(subscription=subscription)
        subscriber.close()


def files_latest(stack: StackHandle, tenant: str) -> list[dict[str, Any]]:
    return stack.query(tenant, "SELECT origin, status, lines, batches, error FROM files_latest ORDER BY origin")


def loaded_positions(stack: StackHandle, tenant: str, origin: str) -> dict[str, int]:
    [row] = stack.query(
        tenant,
        "SELECT COUNT(DISTINCT line_number) AS n, IFNULL(MIN(line_number), 0) AS first, "
        f"IFNULL(MAX(line_number), 0) AS last FROM events WHERE origin = '{origin}'",
    )
    return {k: int(v) for k, v in row.items()}


def log_lines(stack: StackHandle, function: str, needle: str) -> list[dict[str, Any]]:
    path = stack.stack.cfg.paths.logs / f"{function}.log"
    entries = []
    for text in path.read_text(errors="replace").splitlines():
        if needle in text and text.startswith("{"):
            try:
                entries.append(json.loads(text))
            except ValueError:
                continue
    return entries


def settled_accounting(stack: StackHandle, tenant: str, expected: int) -> dict[str, int]:
    assert stack.stats(tenant)["unaccounted"] == 0
    return pipeline_accounting(stack, tenant, expected)


@pytest.mark.scenario(
    "Object deleted while it is read",
    injected="the object deleted while ingest_file is paused between two reads of a 20 MB file",
    findings=[24],
)
def test_object_deleted_mid_read_ends_as_gone_with_the_lines_read(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a plain NDJSON file of 6,500 lines of 3 KB (five 4 MB reads: under load the first batch may be seen only
    # after a second read, and the deletion must still fall between two reads) that ingest_file has started on
    lines = 6_500
    from google.cloud import storage

    os.environ["STORAGE_EMULATOR_HOST"] = local_stack.env["STORAGE_EMULATOR_HOST"]
    for _ in range(3):  # a fault that lands after the last read was not injected: try again on a fresh tenant
        tenant, run = local_stack.add_tenant(), unique("r")
        with first_batch_seen(local_stack, tenant) as published, paused(local_stack, "ingest_file") as ingest:
            [origin] = local_stack.drop(tenant, segment_tree(tmp_path, run, lines, compress=False, pad=PAD))
            ingest.step_until(published, "a first batch to be published")
            # WHEN the object is deleted between two of its reads
            bucket, _, rest = origin.removeprefix("gs://").partition("/")
            storage.Client(project=local_stack.stack.cfg.project).bucket(bucket).blob(rest.rpartition("#")[0]).delete()
        local_stack.wait(timeout=300)
        [row] = files_latest(local_stack, tenant)
        if (row["status"], row["lines"]) != ("loaded", lines):
            break
    # THEN the attempt ends with a `gone` ledger row (acked, not retried) counting the lines published before it
    assert row["status"] == "gone" and str(row["error"]).startswith("object_gone"), row
    read = int(row["lines"])
    assert read < lines
    # AND exactly those lines, 1..read, are loaded: nothing read is lost, nothing is counted twice
    assert loaded_positions(local_stack, tenant, origin) == {"n": read, "first": min(read, 1), "last": read}
    fault.report(
        f"the ledger says gone (object_gone) with the {read} lines read before the delete, and exactly those load;"
        " the rest of the deleted object was never read",
        **settled_accounting(local_stack, tenant, read),
        lines_in_file=lines,
    )


@pytest.mark.scenario(
    "Object overwritten while it is read",
    injected="a new generation uploaded under the same name while ingest_file is paused between two reads of the old",
    findings=[24],
)
def test_object_overwritten_mid_read_loads_the_new_generation_and_accounts_for_the_old(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a 20 MB plain file (6,500 lines of 3 KB, five 4 MB reads: see the deleted-object scenario) that
    # ingest_file has started on
    lines, new_lines = 6_500, 500
    for _ in range(3):  # a fault that lands after the last read was not injected: try again on a fresh tenant
        tenant = local_stack.add_tenant()
        old_root = segment_tree(tmp_path, unique("old"), lines, compress=False, pad=PAD)
        with first_batch_seen(local_stack, tenant) as published, paused(local_stack, "ingest_file") as ingest:
            [old] = local_stack.drop(tenant, old_root)
            ingest.step_until(published, "a first batch to be published")
            # WHEN the object is overwritten (a new generation) between two reads of the old one
            [new] = local_stack.drop(tenant, segment_tree(tmp_path, unique("new"), new_lines, compress=False))
        local_stack.wait(timeout=300)
        rows = {row["origin"]: row for row in files_latest(local_stack, tenant)}
        if (rows[old]["status"], rows[old]["lines"]) != ("loaded", lines):
            break
    assert old.rpartition("#")[0] == new.rpartition("#")[0] and old != new
    # THEN the new generation is loaded whole, and the old one is a file of its own with the lines it had read
    assert (rows[new]["status"], rows[new]["lines"]) == ("loaded", new_lines)
    # (without object versioning, as in GCS, the old generation is gone: what was read of it before counts)
    assert rows[old]["status"] == "gone" and str(rows[old]["error"]).startswith("object_gone"), rows[old]
    read = int(rows[old]["lines"])
    assert read < lines
    assert loaded_positions(local_stack, tenant, old) == {"n": read, "first": min(read, 1), "last": read}
    fault.report(
        f"the new generation loads whole ({new_lines} lines); the old one ends {rows[old]['status']} with the {read}"
        " lines read before the overwrite, each loaded once",
        **settled_accounting(local_stack, tenant, read + new_lines),
        old_generation_lines=lines,
    )


@pytest.mark.scenario(
    "Final ledger write fails, then the redelivery completes it",
    injected="the files table deleted while ingest_file is paused mid-file, so its final ledger row cannot be written",
    findings=[24],
)
def test_a_failed_final_ledger_write_is_completed_by_the_redelivery(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a file of 5,000 lines (5 batches)
    name, run, lines = local_stack.add_tenant(), unique("r"), 5_000
    tenant, client = registered(local_stack, name), bq(local_stack)
    files_table = f"{client.project}.{tenant.dataset}.files"
    before = failures(local_stack, "ingest_file")

    def ledger() -> list[str]:
        return [r["status"] for r in client.query(f"SELECT status FROM `{files_table}`").result()]

    with paused(local_stack, "ingest_file") as ingest:
        local_stack.drop(name, segment_tree(tmp_path, run, lines))
        ingest.step_until(lambda: "started" in ledger(), "the started ledger row")
        # WHEN the ledger table disappears while the file is being published, so its final row cannot be written
        assert ledger() == ["started"]
        client.delete_table(files_table)
    wait_until(lambda: failures(local_stack, "ingest_file") > before, "the final ledger write to fail")
    # AND the table is back before the redelivery (what `landline tenant add` does after a deploy gap)
    provision_dataset(client, tenant, tables=["files"])
    local_stack.wait(timeout=400)
    # THEN the failure was a setup error naming the missing table, and the redelivery completed the file
    assert any("files does not exist" in e["message"] for e in log_lines(local_stack, "ingest_file", tenant.dataset))
    [row] = files_latest(local_stack, name)
    assert (row["status"], row["lines"]) == ("loaded", lines)
    fault.report(
        "the attempt fails as a setup error (files does not exist) and is retried; the redelivery republishes the"
        " same batches and writes the final `loaded` row; every line once",
        **settled_accounting(local_stack, name, lines),
    )


@pytest.mark.scenario(
    "Tables missing (deploy gap)",
    injected="the tenant's events table deleted before a file lands, re-created after the loader's first failure",
    findings=[],
)
def test_a_missing_table_is_a_setup_error_and_nothing_is_lost_once_it_exists(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a tenant whose events table is missing (deployed code ahead of provisioning)
    name, run, lines = local_stack.add_tenant(), unique("r"), 2_500
    tenant, client = registered(local_stack, name), bq(local_stack)
    client.delete_table(f"{client.project}.{tenant.dataset}.events")
    before = failures(local_stack, "load_events")
    # WHEN a file lands
    local_stack.drop(name, segment_tree(tmp_path, run, lines))
    # THEN loading fails as a setup error (retried, not acked) ...
    wait_until(lambda: failures(local_stack, "load_events") > before, "the loader to fail")
    entries = [e for e in log_lines(local_stack, "load_events", tenant.dataset) if e.get("error_class") == "setup"]
    assert any("events does not exist" in e["message"] and "landline tenant add" in e["fix"] for e in entries)
    # AND once the table exists, the retried messages load everything
    provision_dataset(client, tenant)
    local_stack.wait(timeout=300)
    stats = local_stack.stats(name)
    assert (stats["events"], stats["files"]) == (lines, {"loaded": 1})
    fault.report(
        "each batch fails as a setup error naming the fix and is redelivered; once the table exists every line loads",
        **settled_accounting(local_stack, name, lines),
    )


@pytest.mark.scenario(
    "BigQuery unavailable for a while",
    injected="the BigQuery emulator stopped for 20 s while a 10,000-line file loads, then restarted on the same data",
    findings=[15],
)
def test_bigquery_down_for_a_while_loses_nothing(local_stack: StackHandle, tmp_path: Path, fault: Fault) -> None:
    # GIVEN a file of 10,000 lines that is being loaded
    name, run, lines = local_stack.add_tenant(), unique("r"), 10_000
    stack = local_stack.stack
    delivered = int(router(local_stack)["delivered"].get("load_events", 0))
    local_stack.drop(name, segment_tree(tmp_path, run, lines))
    wait_until(lambda: int(router(local_stack)["delivered"].get("load_events", 0)) > delivered, "loading to start")
    # WHEN BigQuery goes away for 20 s (every process of the emulator stopped) and comes back on the same data
    pid = stack.pid("bigquery")
    assert pid
    try:
        os.killpg(pid, signal.SIGTERM)
        wait_until(lambda: stack.pid("bigquery") is None, "the emulator to stop", timeout=30)
        time.sleep(20)  # the outage (inserts in flight now retry, then fail over to Pub/Sub redelivery)
    finally:
        stack.up(timeout=120)  # restarts what is down, on the same data directory
    local_stack.wait(timeout=400)
    # THEN every line is loaded once and the file ledger ends loaded
    stats = local_stack.stats(name)
    assert (stats["events"], stats["duplicates"], stats["files"]) == (lines, 0, {"loaded": 1})
    fault.report(
        "inserts retry within their bounded deadline, then the messages are redelivered; every line loads once",
        **settled_accounting(local_stack, name, lines),
        load_failures=failures(local_stack, "load_events"),
    )
