"""Fault scenarios of the loader and the decoder on untrusted input (review findings 1, 5, 18, 25), through the real
stack: files dropped into a tenant's bucket (ingest_file -> raw-events.<tenant> -> load_events) and messages published
straight to ``raw-events.<tenant>``.

Each scenario puts a known number of lines in and measures, from the tenant's dataset, where every one of them went
(``tests.faults.pipeline_accounting``: positions origin + line number holding an event, a user-properties row or a
rejection; duplicates through the deduplicated views), that no delivery failed (the router's failure counters of the
functions, unchanged) and that nothing was dead-lettered (``landline dead-letters``). Memory scenarios also read the
function process group's resident memory (RSS sampled every 20 ms, and the kernel's high-water mark VmHWM).
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import pytest

from shared.config import tenant_topic
from shared.load.pipeline import MAX_LINES_PER_MESSAGE
from tests.faults import pipeline_accounting
from tests.stack_support import unique

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

DAY = "1714521600000"
GOOD_TS = "2024-05-01T10:00:00Z"
EARLY = "0001-01-01T00:00:00+01:00"  # year 0 once in UTC
LATE = "9999-12-31T23:00:00-05:00"  # year 10000 once in UTC


# -- inputs ---------------------------------------------------------------------------------------------------------


def track(run: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Item Viewed", "userId": f"user-{n % 7}", "messageId": f"{run}-{n}",
            "timestamp": GOOD_TS, "properties": {"n": n}, **fields}


def ndjson(records: list[dict[str, Any] | bytes]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def write(root: Path, relative: str, data: bytes, *, compress: bool = True) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zlib.compress(data, 6, wbits=31) if compress else data)
    return path


def native(run: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"contact_id": f"user-{n % 7}", "event_name": "opened", "timestamp": GOOD_TS,
            "event_instance_id": f"{run}-{n}", **fields}


# -- the stack ------------------------------------------------------------------------------------------------------


def router_stats(stack: StackHandle) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.stack.cfg.url('router')}/stats", timeout=10).json())


def failures(stack: StackHandle) -> dict[str, int]:
    """Failed deliveries so far, per function (a 500 from ingest_file or load_events: retried, then parked)."""
    counts = router_stats(stack)["failures"]
    return {name: int(counts.get(name, 0)) for name in ("ingest_file", "load_events")}


def new_failures(stack: StackHandle, before: dict[str, int]) -> int:
    return sum(n - before[name] for name, n in failures(stack).items())


def dead_letters(stack: StackHandle, tenant: str) -> list[dict[str, Any]]:
    return list(json.loads(stack.cli("dead-letters", "--tenant", tenant, "--json").stdout))


def publish(stack: StackHandle, tenant: str, payload: bytes, **attributes: str) -> str:
    """One message on the tenant's own ``raw-events.<tenant>`` topic (format native unless given); ``landline wait``
    is told to wait for it. Returns its message id."""
    os.environ["PUBSUB_EMULATOR_HOST"] = stack.env["PUBSUB_EMULATOR_HOST"]
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    try:
        topic = client.topic_path(stack.stack.cfg.project, tenant_topic("raw-events", tenant))
        message_id = str(client.publish(topic, payload, **{"format": "native", **attributes}).result(timeout=120))
    finally:
        client.stop()
    httpx.post(f"{stack.stack.cfg.url('router')}/expect", json=[f"msg:{message_id}"], timeout=10).raise_for_status()
    return message_id


def positions(stack: StackHandle, tenant: str, table: str, origin: str) -> list[int]:
    rows = stack.query(
        tenant, f"SELECT line_number FROM {table} WHERE origin = '{origin}' ORDER BY line_number"
    )
    return [int(r["line_number"]) for r in rows]


def rejections(stack: StackHandle, tenant: str) -> dict[tuple[str, int | None], str]:
    """(origin, line number) -> reason of every open rejection."""
    rows = stack.query(tenant, "SELECT origin, line_number, reason_code FROM rejected_deduped")
    return {(r["origin"], r["line_number"]): r["reason_code"] for r in rows}


def files_latest(stack: StackHandle, tenant: str) -> dict[str, dict[str, Any]]:
    rows = stack.query(tenant, "SELECT origin, status, lines, batches, error FROM files_latest")
    return {r["origin"]: r for r in rows}


def origin_of(origins: list[str], part: str) -> str:
    [found] = [o for o in origins if part in o]
    return found


# -- memory of a function -------------------------------------------------------------------------------------------


def _group(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _hwm_mb(proc: psutil.Process) -> float:
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Memory:
    before_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0  # the largest sampled RSS of one process of the group
    hwm_before_mb: float = 0.0
    hwm_after_mb: float = 0.0  # the kernel's peak RSS of one process of the group, since it started

    @property
    def growth_mb(self) -> float:
        """How far above its resting size the function went (a process's peak, sampled or from the kernel)."""
        return max(self.peak_rss_mb, self.hwm_after_mb) - self.before_rss_mb

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in {**self.__dict__, "growth_mb": self.growth_mb}.items()}


@contextmanager
def watched(stack: StackHandle, service: str) -> Iterator[Memory]:
    """The service's process group's memory while the block runs (a thread samples every process's RSS)."""
    pid = stack.stack.pid(service)
    assert pid, f"{service} is not running"
    memory = Memory()

    def rss() -> list[float]:
        out = []
        for proc in _group(pid):
            try:
                out.append(proc.memory_info().rss / 2**20)
            except psutil.Error:
                continue
        return out

    memory.before_rss_mb = max(rss())
    memory.hwm_before_mb = max(map(_hwm_mb, _group(pid)))
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            memory.peak_rss_mb = max(memory.peak_rss_mb, *rss())
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield memory
    finally:
        stop.set()
        sampler.join()
        memory.hwm_after_mb = max(map(_hwm_mb, _group(pid)))


# -- scenarios ------------------------------------------------------------------------------------------------------


@pytest.mark.scenario(
    "One poison line inside a 1,000-line batch",
    injected="line 500 of a 1,000-line gzipped Segment file is a track call whose properties nest 5,000 deep",
    findings=[1],
)
def test_one_poison_line_is_rejected_and_its_999_neighbours_load(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a 1,000-line Segment file (one ingest batch) whose line 500 is JSON nested 5,000 deep (~10 KB)
    tenant, run, before = local_stack.add_tenant(), unique("r"), failures(local_stack)
    deep = json.dumps(track(run, 499, properties={"deep": "X"})).encode().replace(b'"X"', b"[" * 5000 + b"]" * 5000)
    records: list[dict[str, Any] | bytes] = [track(run, n) for n in range(1000)]
    records[499] = deep
    root = tmp_path / "poison"
    write(root, f"segment-logs/src/{DAY}/part-1.gz", ndjson(records))
    # WHEN it is dropped and the pipeline settles
    [origin] = local_stack.drop(tenant, root)
    local_stack.wait()
    # THEN the file went as one batch and its ledger says loaded, 1,000 lines
    ledger = files_latest(local_stack, tenant)[origin]
    assert (ledger["status"], ledger["lines"], ledger["batches"]) == ("loaded", 1000, 1)
    # AND line 500 alone is rejected (invalid_json) and the 999 others are events
    loaded = positions(local_stack, tenant, "events", origin)
    assert loaded == [n for n in range(1, 1001) if n != 500]
    assert rejections(local_stack, tenant) == {(origin, 500): "invalid_json"}
    # AND no delivery failed, nothing is parked
    failed, parked = new_failures(local_stack, before), dead_letters(local_stack, tenant)
    assert (failed, parked) == (0, [])
    fault.report(
        "line 500 is one rejected row (invalid_json, 'nested too deeply'); the other 999 lines of the batch load, "
        "the ledger says loaded, no delivery fails and nothing is dead-lettered",
        **pipeline_accounting(local_stack, tenant, 1000),
        events=len(loaded),
        failed_deliveries=failed,
        dead_letters=len(parked),
    )


@pytest.mark.scenario(
    "Aware timestamps at the edge of the datetime range",
    injected=f"{EARLY} and {LATE} in a Segment file, a CSV file, an Amplitude file and a native direct publish, "
    "each between good lines",
    findings=[1],
)
def test_aware_timestamps_outside_the_utc_range_are_rejected_per_line(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN for each format 5 records: good, EARLY, good, LATE, good (Mixpanel has epoch times, not zoned ones)
    tenant, run, before = local_stack.add_tenant(), unique("r"), failures(local_stack)
    times = [GOOD_TS, EARLY, GOOD_TS, LATE, GOOD_TS]
    root = tmp_path / "edges"
    write(root, f"segment-logs/src/{DAY}/part-1.gz",
          ndjson([track(run, n, timestamp=ts) for n, ts in enumerate(times)]))
    csv_lines = [b"contact_id,event_name,timestamp,event_instance_id"]
    csv_lines += [f"user-{n},opened,{ts},{run}-csv-{n}".encode() for n, ts in enumerate(times)]
    write(root, "csv/crm/edges.csv", b"\n".join(csv_lines) + b"\n", compress=False)
    amplitude = [{"user_id": f"user-{n}", "event_type": "opened", "$insert_id": f"{run}-amp-{n}",
                  "event_time": ts if ts != GOOD_TS else "2024-05-01 10:00:00.000000"} for n, ts in enumerate(times)]
    write(root, "amplitude/187520/187520_2024-05-01_10#1.json.gz", ndjson(list(amplitude)))
    # WHEN the files are dropped and the same five records are published directly in the native format
    origins = local_stack.drop(tenant, root)
    message_id = publish(local_stack, tenant, ndjson([native(run, n, timestamp=ts) for n, ts in enumerate(times)]))
    local_stack.wait()
    # THEN in every origin the two edge times are rejected invalid_timestamp and the three good lines load
    segment, csv, amp = (origin_of(origins, p) for p in ("segment-logs/", "csv/", "amplitude/"))
    direct = f"pubsub://{tenant_topic('raw-events', tenant)}/{message_id}"
    bad = {(segment, 2), (segment, 4), (amp, 2), (amp, 4), (direct, 2), (direct, 4), (csv, 3), (csv, 5)}
    assert rejections(local_stack, tenant) == dict.fromkeys(bad, "invalid_timestamp")
    assert [positions(local_stack, tenant, "events", o) for o in (segment, amp, direct, csv)] == [
        [1, 3, 5], [1, 3, 5], [1, 3, 5], [2, 4, 6]  # a CSV file's line 1 is its header
    ]
    assert {o: r["status"] for o, r in files_latest(local_stack, tenant).items()} == dict.fromkeys(
        (segment, csv, amp), "loaded"
    )
    failed, parked = new_failures(local_stack, before), dead_letters(local_stack, tenant)
    assert (failed, parked) == (0, [])
    fault.report(
        "each edge time is one invalid_timestamp rejection ('outside year 1..9999 once in UTC') in Segment, CSV, "
        "Amplitude and native; the neighbours load; no delivery fails, nothing is dead-lettered",
        **pipeline_accounting(local_stack, tenant, 4 * len(times)),
        rejected=len(bad),
        failed_deliveries=failed,
        dead_letters=len(parked),
    )


BIG_INTS = {"int64_max": 9223372036854775807, "above_int64": 9223372036854775808,
            "below_int64": -9223372036854775809, "thirty_digits": 123456789012345678901234567890}


@pytest.mark.scenario(
    "Huge numbers",
    injected="a Mixpanel time of 10**400; 1e400 in Segment properties; integers beyond int64 in Segment properties",
    findings=[1, 25],
)
def test_huge_numbers_are_rejected_with_a_reason_or_kept_exactly(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a Mixpanel file: good, time 10**400, good; and a Segment file: good, 1e400, integers past int64, good
    tenant, run, before = local_stack.add_tenant(), unique("r"), failures(local_stack)

    def mixpanel(n: int, time_text: str) -> bytes:
        return (f'{{"event": "opened", "properties": {{"time": {time_text}, "distinct_id": "user-{n}", '
                f'"$insert_id": "{run}-mp-{n}"}}}}').encode()

    root = tmp_path / "numbers"
    write(root, "mixpanel/3141592/2024/05/01/full_day/export-0.json.gz",
          ndjson([mixpanel(0, "1714557600"), mixpanel(1, "1" + "0" * 400), mixpanel(2, "1714557600")]))
    inf_line = json.dumps(track(run, 1, properties={"price": "X"})).encode().replace(b'"X"', b"1e400")
    write(root, f"segment-logs/src/{DAY}/part-1.gz",
          ndjson([track(run, 0), inf_line, track(run, 2, properties=BIG_INTS), track(run, 3)]))
    # WHEN they are dropped
    origins = local_stack.drop(tenant, root)
    local_stack.wait()
    mp, seg = origin_of(origins, "mixpanel/"), origin_of(origins, "segment-logs/")
    # THEN 10**400 is invalid_timestamp and 1e400 invalid_field, each alone; their neighbours load
    assert rejections(local_stack, tenant) == {(mp, 2): "invalid_timestamp", (seg, 2): "invalid_field"}
    assert positions(local_stack, tenant, "events", mp) == [1, 3]
    assert positions(local_stack, tenant, "events", seg) == [1, 3, 4]
    # AND the integers beyond int64 are stored exactly, as decimal strings (int64's own maximum stays a number)
    [row] = local_stack.query(
        tenant, f"SELECT TO_JSON_STRING(metadata) AS md FROM events WHERE origin = '{seg}' AND line_number = 3"
    )
    stored = json.loads(row["md"])
    assert {k: v for k, v in stored.items() if k != "context"} == {
        "int64_max": 9223372036854775807,
        "above_int64": "9223372036854775808",
        "below_int64": "-9223372036854775809",
        "thirty_digits": "123456789012345678901234567890",
    }
    failed, parked = new_failures(local_stack, before), dead_letters(local_stack, tenant)
    assert (failed, parked) == (0, [])
    fault.report(
        "Mixpanel time 10**400 -> invalid_timestamp, 1e400 -> invalid_field (one row each); integers beyond int64 "
        "are stored exactly as decimal strings; neighbours load; no delivery fails, nothing is dead-lettered",
        **pipeline_accounting(local_stack, tenant, 7),
        failed_deliveries=failed,
        dead_letters=len(parked),
    )


MALFORMED_ATTRIBUTES: list[dict[str, str]] = [
    {"first_line": "x", "last_line": "1000000000", "partial_line": "zz", "skipped_lines": "garbage"},
    {"first_line": "1", "last_line": "1000000000", "line_count": "4"},
    {"first_line": "1", "last_line": "9" * 400, "skipped_lines": "2-99999999999999999999", "partial_line": "-1",
     "original_bytes": "lots"},
    {"first_line": "1e9", "last_line": "-3", "skipped_lines": ",,-,7-", "line_count": "many"},
]


@pytest.mark.scenario(
    "Malformed or huge attributes",
    injected="direct publishes whose attributes say first_line=x, last_line=1000000000 (and 400 digits), "
    "partial_line=zz, skipped_lines=garbage",
    findings=[18, 5],
)
def test_malformed_or_huge_attributes_are_ignored_and_lines_numbered_from_1(
    local_stack: StackHandle, fault: Fault
) -> None:
    # GIVEN 4 direct publishes of 4 good native events each, with malformed, inconsistent or huge attributes
    tenant, run, before = local_stack.add_tenant(), unique("r"), failures(local_stack)
    ids = []
    with watched(local_stack, "load_events") as memory:
        for i, attributes in enumerate(MALFORMED_ATTRIBUTES):
            payload = ndjson([native(run, 10 * i + n) for n in range(4)])
            ids.append(publish(local_stack, tenant, payload, **attributes))
        local_stack.wait()
    # THEN every line of every message loads, numbered 1..4 in its message; nothing is rejected
    for message_id in ids:
        origin = f"pubsub://{tenant_topic('raw-events', tenant)}/{message_id}"
        assert positions(local_stack, tenant, "events", origin) == [1, 2, 3, 4], message_id
    assert rejections(local_stack, tenant) == {}
    # AND no message was a poison message: no failed delivery, nothing parked; no list of 10**9 numbers was built
    failed, parked = new_failures(local_stack, before), dead_letters(local_stack, tenant)
    assert (failed, parked) == (0, [])
    assert memory.growth_mb < 200, memory.as_dict()
    fault.report(
        "the attributes are ignored: each message's 4 lines load numbered 1..4; no failed delivery, no dead letter, "
        f"load_events grew {memory.growth_mb:.0f} MB",
        **pipeline_accounting(local_stack, tenant, 4 * len(MALFORMED_ATTRIBUTES)),
        failed_deliveries=failed,
        dead_letters=len(parked),
        load_events_memory=memory.as_dict(),
    )


TINY_LINES = 3_300_000  # "{}\n" each: 9.9 MB, just under Pub/Sub's 10 MB message limit


@pytest.mark.scenario(
    "A 10 MB direct publish of tiny lines",
    injected=f"one direct publish of {TINY_LINES:,} '{{}}' lines (9.9 MB); and two of exactly "
    f"{MAX_LINES_PER_MESSAGE:,} events (without and with a trailing newline)",
    findings=[5],
)
def test_a_10_mb_publish_of_tiny_lines_is_one_rejection_and_10000_lines_load(
    local_stack: StackHandle, fault: Fault
) -> None:
    tenant, run, before = local_stack.add_tenant(), unique("r"), failures(local_stack)
    topic = tenant_topic("raw-events", tenant)
    # GIVEN a 9.9 MB message of "{}" lines (parsed line by line: ~1 KB of Python objects each, ~3 GiB)
    # WHEN it is published to the tenant's topic, with load_events' memory watched
    with watched(local_stack, "load_events") as memory:
        tiny = publish(local_stack, tenant, b"{}\n" * TINY_LINES)
        local_stack.wait()
    # THEN it is exactly one rejected row, too_many_lines, for the whole message (no line number), head kept
    rows = local_stack.query(
        tenant,
        "SELECT origin, line_number, reason_code, LENGTH(payload) AS kept FROM rejected_deduped",
    )
    assert [(r["origin"], r["line_number"], r["reason_code"]) for r in rows] == [
        (f"pubsub://{topic}/{tiny}", None, "too_many_lines")
    ]
    assert rows[0]["kept"] <= 100_000
    # AND load_events stayed bounded (far from the ~3 GiB of parsing it) and the message was acked, not parked
    assert memory.growth_mb < 300, memory.as_dict()
    failed_tiny = new_failures(local_stack, before)
    assert failed_tiny == 0

    # GIVEN two messages of exactly MAX_LINES_PER_MESSAGE events, one ending with a newline (as NDJSON writers do)
    full = ndjson([native(run, n) for n in range(MAX_LINES_PER_MESSAGE)])
    exact = [publish(local_stack, tenant, full[:-1]), publish(local_stack, tenant, full)]
    local_stack.wait()
    # THEN both load line by line, numbered 1..10,000
    for message_id in exact:
        [row] = local_stack.query(
            tenant,
            "SELECT COUNT(DISTINCT line_number) AS n, MIN(line_number) AS lo, MAX(line_number) AS hi FROM events "
            f"WHERE origin = 'pubsub://{topic}/{message_id}'",
        )
        assert (int(row["n"]), int(row["lo"]), int(row["hi"])) == (MAX_LINES_PER_MESSAGE, 1, MAX_LINES_PER_MESSAGE)
    failed, parked = new_failures(local_stack, before), dead_letters(local_stack, tenant)
    assert (failed, parked) == (0, [])
    # lines: the two exact messages by position; the tiny-lines message is one unit, accounted by its one rejection
    counted = pipeline_accounting(local_stack, tenant, 2 * MAX_LINES_PER_MESSAGE)
    whole = sum(1 for r in rows if r["reason_code"] == "too_many_lines")
    fault.report(
        f"the 9.9 MB message is one too_many_lines rejected row (head kept, acked); load_events grew "
        f"{memory.growth_mb:.0f} MB; two messages of exactly {MAX_LINES_PER_MESSAGE:,} lines load line by line",
        lost=counted["lost"] + max(1 - whole, 0),
        duplicated=counted["duplicated"] + max(whole - 1, 0),
        accounted_positions=counted["accounted"],
        too_many_lines_rows=whole,
        failed_deliveries=failed,
        dead_letters=len(parked),
        load_events_memory=memory.as_dict(),
    )


BIG_LINE_MB = 1024


def big_line_file(path: Path, run: str, size_mb: int) -> int:
    """A gzipped Segment file: a good line, one line of ``size_mb`` MB (a track call padded with b"a", written in
    1 MB pieces through the compressor, never held), a good line. Returns the big line's length in bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = json.dumps(track(run, 1)).encode()[:-1] + b', "pad": "'
    tail = b'"}'
    piece = b"a" * (1 << 20)
    with path.open("wb") as out:
        out.write(compressor.compress(json.dumps(track(run, 0)).encode() + b"\n" + head))
        for _ in range(size_mb):
            out.write(compressor.compress(piece))
        out.write(compressor.compress(tail + b"\n" + json.dumps(track(run, 2)).encode() + b"\n"))
        out.write(compressor.flush())
    return len(head) + size_mb * len(piece) + len(tail)


@pytest.mark.scenario(
    "One line larger than memory",
    injected=f"a gzipped Segment file whose line 2 is {BIG_LINE_MB / 1024:g} GB (it gzips to ~1 MB), between two "
    "good lines",
    findings=[5],
)
def test_a_line_larger_than_memory_is_one_rejection_and_ingest_stays_bounded(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a file of 3 lines whose second is 1 GB: ingest_file has 1 GiB in the cloud
    tenant, run, before = local_stack.add_tenant(), unique("r"), failures(local_stack)
    folder = tmp_path / "big" / "segment-logs" / "src" / DAY
    folder.mkdir(parents=True)
    size = big_line_file(folder / "part-1.gz", run, BIG_LINE_MB)
    compressed = (folder / "part-1.gz").stat().st_size
    # WHEN it is dropped, with ingest_file's memory watched
    with watched(local_stack, "ingest_file") as memory:
        [origin] = local_stack.drop(tenant, tmp_path / "big")
        local_stack.wait(timeout=300)
    # THEN the big line is one rejected row, line_too_large, at line 2, naming its full size; both neighbours load
    ledger = files_latest(local_stack, tenant)[origin]
    assert (ledger["status"], ledger["lines"]) == ("loaded", 3)
    assert rejections(local_stack, tenant) == {(origin, 2): "line_too_large"}
    [message] = local_stack.query(tenant, "SELECT message, LENGTH(payload) AS kept FROM rejected_deduped")
    assert str(size) in message["message"] and message["kept"] <= 100_000
    assert positions(local_stack, tenant, "events", origin) == [1, 3]
    # AND ingest_file's memory stayed far below the line (the decoder keeps 16 MiB of a line at most)
    assert memory.growth_mb < 200, memory.as_dict()
    failed, parked = new_failures(local_stack, before), dead_letters(local_stack, tenant)
    assert (failed, parked) == (0, [])
    fault.report(
        f"the {size:,}-byte line is one line_too_large rejection at line 2 (its head kept), lines 1 and 3 load, the "
        f"ledger says loaded; ingest_file grew {memory.growth_mb:.0f} MB",
        **pipeline_accounting(local_stack, tenant, 3),
        gzip_bytes=compressed,
        line_bytes=size,
        ingest_file_memory=memory.as_dict(),
        failed_deliveries=failed,
        dead_letters=len(parked),
    )


@pytest.mark.scenario(
    "A BOM starting a mid-file line",
    injected="two gzipped Segment exports concatenated (cat a.gz b.gz), the second starting with a UTF-8 BOM",
    findings=[25],
)
def test_a_bom_starting_a_mid_file_line_is_ignored(local_stack: StackHandle, tmp_path: Path, fault: Fault) -> None:
    # GIVEN two exports of 3 lines each, the second with a BOM, concatenated into one gzip file (two members)
    tenant, run, before = local_stack.add_tenant(), unique("r"), failures(local_stack)
    first = zlib.compress(ndjson([track(run, n) for n in range(3)]), 6, wbits=31)
    second = zlib.compress(b"\xef\xbb\xbf" + ndjson([track(run, n) for n in range(3, 6)]), 6, wbits=31)
    root = tmp_path / "bom"
    write(root, f"segment-logs/src/{DAY}/part-1.gz", first + second, compress=False)
    # WHEN it is dropped
    [origin] = local_stack.drop(tenant, root)
    local_stack.wait()
    # THEN all 6 lines load, line 4 (the one starting with the BOM) included, and nothing is rejected
    assert positions(local_stack, tenant, "events", origin) == [1, 2, 3, 4, 5, 6]
    assert rejections(local_stack, tenant) == {}
    [row] = local_stack.query(tenant, f"SELECT event_instance_id FROM events WHERE origin = '{origin}' AND line_number = 4")
    assert row["event_instance_id"] == f"{run}-3"
    failed = new_failures(local_stack, before)
    assert failed == 0
    fault.report(
        "the BOM is ignored: all 6 lines load (line 4 with its own messageId), nothing is rejected",
        **pipeline_accounting(local_stack, tenant, 6),
        failed_deliveries=failed,
    )
