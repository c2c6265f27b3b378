"""Issue 3: every kind of object that can land in a tenant's bucket, through the real local stack."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import time
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.faults import pipeline_accounting
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

DAY = "1714521600000"


def track(n: int, run: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Item Viewed",
        "userId": f"user-{n % 7}",
        "messageId": f"{run}-{n}",
        "timestamp": "2024-05-01T10:00:00Z",
        "properties": {"n": n},
        **extra,
    }


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def put(tmp: Path, content: bytes, name: str = "part-1.gz", source: str = "src") -> Path:
    """A Segment-layout tree under a fresh folder of tmp holding one object."""
    root = tmp / unique("tree")
    folder = root / "segment-logs" / source / DAY
    folder.mkdir(parents=True)
    (folder / name).write_bytes(content)
    return root


def files_latest(stack: StackHandle, tenant: str) -> list[dict[str, Any]]:
    return stack.query(tenant, "SELECT status, lines, batches, encoding, error, origin FROM files_latest")


def readable_lines(gz: bytes) -> int:
    """Non-blank lines an independent inflate gets out of a broken gzip (complete ones and the cut last one)."""
    inflate, out = zlib.decompressobj(wbits=31), b""
    try:
        out = inflate.decompress(gz)
    except zlib.error:
        pass
    return sum(1 for line in out.split(b"\n") if line.strip())


def settled_accounting(stack: StackHandle, tenant: str, expected: int) -> dict[str, int]:
    """``pipeline_accounting``, after checking that ``landline stats`` agrees: nothing unaccounted."""
    assert stack.stats(tenant)["unaccounted"] == 0
    return pipeline_accounting(stack, tenant, expected)


def test_dummy_object_is_ignored_not_failed(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN the access-check object Segment writes
    tenant = local_stack.add_tenant()
    root = tmp_path / "dummy"
    (root / "segment-logs").mkdir(parents=True)
    (root / "segment-logs" / "dummy-object.txt").write_text("")
    # WHEN it lands in the bucket
    local_stack.drop(tenant, root)
    local_stack.wait()
    # THEN it is recorded as ignored, with a reason, and nothing else happens
    [row] = files_latest(local_stack, tenant)
    assert row["status"] == "ignored"
    assert row["error"] == "dummy_object"
    assert local_stack.stats(tenant)["events"] == 0


@pytest.mark.scenario("Multi-member gzip", injected="a file of three concatenated gzip members", findings=[])
def test_multi_member_gzip_reads_every_member(local_stack: StackHandle, tmp_path: Path, fault: Fault) -> None:
    # GIVEN a file made of three concatenated gzip members
    tenant, run = local_stack.add_tenant(), unique("r")
    records = [track(n, run) for n in range(30)]
    content = b"".join(gzip.compress(ndjson(records[i : i + 10])) for i in range(0, 30, 10))
    # WHEN it is ingested
    local_stack.drop(tenant, put(tmp_path, content))
    local_stack.wait()
    # THEN all 30 lines of all members are loaded
    stats = local_stack.stats(tenant)
    assert (stats["lines"], stats["events"], stats["files"]) == (30, 30, {"loaded": 1})
    fault.report("every member is read: 30 lines, 30 events", **settled_accounting(local_stack, tenant, len(records)))


def test_plain_ndjson_with_gz_name_is_sniffed(local_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a .gz object that is plain NDJSON (what decompressive transcoding hands over), with CRLF, blank lines
    # and a U+2028 inside a JSON string
    tenant, run = local_stack.add_tenant(), unique("r")
    lines = [json.dumps(track(1, run)).encode(), b"", json.dumps(track(2, run, event="Line\u2028Sep"), ensure_ascii=False).encode()]
    content = b"\r\n".join(lines) + b"\r\n\r\n"
    # WHEN it is ingested
    local_stack.drop(tenant, put(tmp_path, content))
    local_stack.wait()
    # THEN both records load, the blank lines are skipped, the separator stays inside its line
    rows = local_stack.query(tenant, "SELECT event_name, line_number FROM events ORDER BY line_number")
    assert [r["event_name"] for r in rows] == ["Item Viewed", "Line\u2028Sep"]
    assert [r["line_number"] for r in rows] == [1, 3]
    assert files_latest(local_stack, tenant)[0]["encoding"] == "plain"


def zip_of(content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("events.json", content)
    return buffer.getvalue()


@pytest.mark.scenario(
    "zip / binary / not NDJSON",
    injected="a zip archive, random binary bytes and a gzip of binary bytes, each named like a Segment file",
    findings=[24],
)
def test_zip_and_binary_are_file_level_rejections_with_reason(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a zip archive, binary bytes, and a gzip holding binary bytes, named like Segment files
    tenant = local_stack.add_tenant()
    noise = bytes(range(256)) * 64
    files = {"zip": zip_of(ndjson([track(1, "z")])), "binary": b"\x00\x01" + noise, "gzip-binary": gzip.compress(noise)}
    root = tmp_path / unique("tree")
    for name, content in files.items():
        folder = root / "segment-logs" / "src" / DAY
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.gz").write_bytes(content)
    # WHEN they land
    dropped = local_stack.drop(tenant, root)
    local_stack.wait()
    # THEN each file is rejected (and acked: nothing is retried) with a reason naming what it is
    rows = {row["origin"]: row for row in files_latest(local_stack, tenant)}
    assert set(rows) == set(dropped)
    by_name = {origin.rsplit("/", 1)[-1].split(".gz")[0]: row for origin, row in rows.items()}
    assert {name: row["status"] for name, row in by_name.items()} == dict.fromkeys(files, "rejected")
    assert "unsupported_encoding" in by_name["zip"]["error"] and "zip" in by_name["zip"]["error"]
    assert "unsupported_encoding" in by_name["binary"]["error"]
    assert "unsupported_content" in by_name["gzip-binary"]["error"]
    # (no line of them reached the loader, so there is nothing to lose or duplicate line by line)
    accounting = settled_accounting(local_stack, tenant, expected=0)
    unrecorded = len(dropped) - sum(1 for row in rows.values() if row["status"] == "rejected" and row["error"])
    fault.report(
        "each file is one rejected ledger row with its reason (unsupported_encoding zip/binary, unsupported_content);"
        " nothing is retried",
        lost=unrecorded + accounting["lost"],
        duplicated=accounting["duplicated"],
    )


@pytest.mark.scenario(
    "Truncated gzip", injected="a gzip file cut 30 bytes before its end, inside its last line", findings=[]
)
def test_truncated_gzip_keeps_complete_lines_and_rejects_the_partial_one(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a gzip cut off inside its last line
    tenant, run = local_stack.add_tenant(), unique("r")
    text = ndjson([track(n, run) for n in range(20)])
    whole = gzip.compress(text)
    cut = whole[: len(whole) - 30]
    # WHEN it is ingested
    local_stack.drop(tenant, put(tmp_path, cut))
    local_stack.wait()
    # THEN every complete line before the break is loaded, the partial line is rejected, the file is "truncated"
    stats = local_stack.stats(tenant)
    [row] = files_latest(local_stack, tenant)
    assert row["status"] == "truncated"
    assert stats["rejected"].get("truncated_line") == 1
    assert stats["events"] + stats["rejected_lines"] == stats["lines"]
    assert stats["events"] >= 15
    fault.report(
        "the file is recorded as truncated; every complete line loads and the cut one is a truncated_line rejection",
        **settled_accounting(local_stack, tenant, readable_lines(cut)),
    )


@pytest.mark.scenario(
    "Corrupt gzip", injected="8 bytes flipped in the middle of a gzip member's deflate data", findings=[]
)
def test_corrupt_gzip_keeps_what_is_readable_and_says_so(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a gzip of 200 lines whose compressed data is damaged in the middle (the same bytes every run: what a
    # damaged deflate stream inflates to before zlib notices depends on the bytes, and may hold extra newlines)
    tenant, run = local_stack.add_tenant(), "corrupt-gzip"
    whole = bytearray(gzip.compress(ndjson([track(n, run, properties={"pad": "p" * n}) for n in range(200)]), mtime=0))
    middle = len(whole) // 2
    whole[middle : middle + 8] = bytes(b ^ 0xFF for b in whole[middle : middle + 8])
    # WHEN it is ingested
    local_stack.drop(tenant, put(tmp_path, bytes(whole)))
    local_stack.wait()
    # THEN the file is recorded as truncated with the reason; what was read before the damage is accounted for
    [row] = files_latest(local_stack, tenant)
    assert row["status"] == "truncated"
    assert "corrupt" in row["error"]
    assert row["lines"] > 0  # lines inflated before the damage was detected (garbage lines among them are rejected)
    fault.report(
        f"the file is recorded as truncated ({row['error'][:60]}...); the {row['lines']} lines read before the damage"
        " are rows or rejections; what follows the damage cannot be inflated",
        **settled_accounting(local_stack, tenant, row["lines"]),
        lines_in_file=200,
    )


@pytest.mark.parametrize("content", [b"", gzip.compress(b"", mtime=0)], ids=["zero-bytes", "empty-gzip"])
def test_empty_objects_are_zero_lines_without_error(local_stack: StackHandle, tmp_path: Path, content: bytes) -> None:
    # GIVEN an empty object WHEN it is ingested
    tenant = local_stack.add_tenant()
    local_stack.drop(tenant, put(tmp_path, content))
    local_stack.wait()
    # THEN it is a loaded file of zero lines
    [row] = files_latest(local_stack, tenant)
    assert (row["status"], row["lines"], row["batches"]) == ("loaded", 0, 0)


@pytest.mark.scenario(
    "Redelivered finalize notification (Eventarc at-least-once)",
    injected="the first generation's finalize notification published again after an overwrite",
    findings=[],
)
def test_overwrite_is_a_new_file_and_redelivery_is_the_same_file(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a file that is ingested, then overwritten with new content under the same name
    tenant, run = local_stack.add_tenant(), unique("r")
    root = put(tmp_path, gzip.compress(ndjson([track(n, run) for n in range(5)])))
    [first] = local_stack.drop(tenant, root)
    local_stack.wait()
    (next(root.rglob("*.gz"))).write_bytes(gzip.compress(ndjson([track(n, run) for n in range(5, 8)])))
    [second] = local_stack.drop(tenant, root)
    local_stack.wait()
    # WHEN the first generation's notification is delivered again (Eventarc is at-least-once)
    redeliver_finalize(local_stack, first)
    local_stack.wait()
    # THEN there are two files (two generations) and the redelivery added no rows to the deduplicated view
    files = files_latest(local_stack, tenant)
    assert sorted(f["origin"] for f in files) == sorted([first, second])
    stats = local_stack.stats(tenant)
    assert stats["events"] == 8
    assert stats["duplicates"] == 0
    dedup = local_stack.query(tenant, "SELECT COUNT(*) AS n, COUNT(DISTINCT event_instance_id) AS d FROM events_deduped")
    assert dedup[0]["n"] == dedup[0]["d"] == 8
    fault.report(
        "the redelivered generation publishes the same batches again; the views show each of the 8 events once",
        **settled_accounting(local_stack, tenant, 5 + 3),
    )


def redeliver_finalize(stack: StackHandle, origin: str) -> None:
    """Publish the object's finalize notification again, exactly as fake-gcs-server does."""
    from google.cloud import pubsub_v1

    bucket, _, rest = origin.removeprefix("gs://").partition("/")
    name, _, generation = rest.rpartition("#")
    os.environ["PUBSUB_EMULATOR_HOST"] = stack.env["PUBSUB_EMULATOR_HOST"]
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack.stack.cfg.project, stack.stack.topology.local.storage_notifications_topic)
    resource = {"bucket": bucket, "name": name, "generation": generation, "kind": "storage#object"}
    publisher.publish(
        topic,
        json.dumps(resource).encode(),
        eventType="OBJECT_FINALIZE",
        payloadFormat="JSON_API_V1",
        bucketId=bucket,
        objectId=name,
        objectGeneration=generation,
    ).result(timeout=30)
    httpx.post(f"{stack.stack.cfg.url('router')}/expect", json=[f"{bucket}/{name}#{generation}"], timeout=5)


@pytest.mark.scenario(
    "ingest_file killed mid-file, then redelivered",
    injected="SIGKILL of the ingest function's process group while it publishes a 60,000-line file",
    findings=[24],
)
def test_function_killed_mid_file_then_redelivered_leaves_no_duplicates(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a file large enough to take a while (many batches of 1000 lines)
    tenant, run = local_stack.add_tenant(), unique("r")
    lines = 60_000
    local_stack.drop(tenant, put(tmp_path, gzip.compress(ndjson([track(n, run) for n in range(lines)]))))
    # WHEN the ingest function process is killed while it publishes, and comes back (as a new instance would)
    stack = local_stack.stack
    pid = stack.pid("ingest_file")
    assert pid
    router = stack.cfg.url("router")
    failures_before = httpx.get(f"{router}/stats").json()["failures"].get("ingest_file", 0)
    # (wait until ingest_file itself is delivering: the router republishing the notification, or a load_events
    # delivery, is in flight before it, and a kill then would interrupt nothing)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not httpx.get(f"{router}/stats").json()["inflight_functions"].get("ingest_file"):
        time.sleep(0.02)
    time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    stack.up(timeout=90)  # restarts what is not healthy; the emulator redelivers the failed notification
    local_stack.wait(timeout=400)
    # (the kill did interrupt a delivery)
    assert httpx.get(f"{router}/stats").json()["failures"].get("ingest_file", 0) > failures_before
    # THEN every line is loaded exactly once in the deduplicated view, and the file is recorded as loaded
    stats = local_stack.stats(tenant)
    assert stats["events"] == lines
    assert stats["duplicates"] == 0
    dedup = local_stack.query(tenant, "SELECT COUNT(*) AS n FROM events_deduped")
    assert dedup[0]["n"] == lines
    assert stats["files"] == {"loaded": 1}
    fault.report(
        "the redelivery republishes the same batches; every line loads once and the ledger ends loaded",
        **settled_accounting(local_stack, tenant, lines),
    )


@pytest.mark.scenario(
    "Line larger than a Pub/Sub message",
    injected="a 12 MB line between two normal lines (Pub/Sub's limit is 10 MB per message)",
    findings=[],
)
def test_a_line_bigger_than_a_pubsub_message_is_rejected_not_lost(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a file with a 12 MB line (over Pub/Sub's 10 MB message limit) between two normal lines
    tenant, run = local_stack.add_tenant(), unique("r")
    huge = json.dumps(track(1, run, properties={"blob": "x" * 12_000_000})).encode()
    content = gzip.compress(json.dumps(track(0, run)).encode() + b"\n" + huge + b"\n" + json.dumps(track(2, run)).encode())
    # WHEN it is ingested
    local_stack.drop(tenant, put(tmp_path, content))
    local_stack.wait()
    # THEN the normal lines load, the huge one is a rejected line with its reason and line number
    stats = local_stack.stats(tenant)
    assert (stats["lines"], stats["events"], stats["rejected"]) == (3, 2, {"line_too_large": 1})
    [row] = local_stack.query(tenant, "SELECT line_number, message FROM rejected")
    assert row["line_number"] == 2
    assert "bytes" in row["message"]
    fault.report(
        "the huge line is a line_too_large rejection with its line number; its neighbours load",
        **settled_accounting(local_stack, tenant, 3),
    )
