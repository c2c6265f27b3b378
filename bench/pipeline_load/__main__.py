"""End-to-end load: many Segment files dropped at once land with no loss and no duplicates.

``python -m bench.pipeline_load`` (1,000,000 lines in 200 files, the reliability issue's size) or ``--files 20 --lines 1000`` for a
quick run (``tests/integration/test_bulk_load.py`` runs a reduced size in CI through :func:`run`).

What it does, on a private local stack (fresh state folder, free ports), in one run:

1. baseline: the same kind of rows written straight into a scratch tenant's dataset with the product's writer
   (``write_rows``, one 1,000-row batch at a time, like one loader message), so the end-to-end rate is reported as a
   ratio against the warehouse's own insert rate measured in the same run on the same machine;
2. the load: ``landline drop`` of every file into a fresh tenant (uploads back to back), then ``landline wait``;
3. while it runs, every ``--sample`` seconds: the backlog (raw-events batches published, from the file ledger's
   ``batches`` of every file ingest has finished, minus those the loader has acknowledged, from the router's
   counters: a lower bound, since a file's batches count once its ledger row is written) and the
   resident memory of every process of every service;
4. afterwards: ``landline stats --json`` and direct counts: lines read, rows in events_deduped and
   user_properties, rejected lines, unaccounted lines, and distinct event ids (a duplicate is an event id with more
   than one row in the deduplicated view users read, or more rows than input lines).

Prints a table and a JSON summary; the last line is ``ratio pipeline/direct-write = R``. Exit status 1 if anything
was lost or duplicated.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.ingest.__main__ import _line

BIN = Path(sys.executable).with_name("landline")


@dataclass
class Sampler:
    """Samples backlog and per-service memory on a thread until stopped."""

    router_url: str
    service_pids: dict[str, int]
    interval: float
    published: list[int] = field(default_factory=lambda: [0])
    peak_backlog: int = 0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _rss_by_service(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pid in self.service_pids.items():
            total = 0
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        continue
            except psutil.Error:
                continue
            out[name] = total / 1e6
        return out

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            try:
                stats = httpx.get(f"{self.router_url}/stats", timeout=5).json()
            except httpx.HTTPError:
                stats = {}
            delivered = int((stats.get("delivered") or {}).get("load_events", 0))
            backlog = max(self.published[0] - delivered, 0)
            self.peak_backlog = max(self.peak_backlog, backlog)
            rss = self._rss_by_service()
            for name, mb in rss.items():
                self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0.0), mb)
            self.timeline.append(
                {"t": round(time.monotonic() - t0, 1), "published": self.published[0], "loaded": delivered,
                 "backlog": backlog, "rss_mb": {k: round(v) for k, v in rss.items()}}
            )
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


def write_files(root: Path, files: int, lines: int, seed: int = 9) -> int:
    """``files`` gzipped Segment exports of ``lines`` calls each, in Segment's bucket layout; returns bytes written."""
    rng = random.Random(seed)
    base = datetime(2024, 5, 1, tzinfo=UTC)
    folder = root / "segment-logs" / "bulk" / "1714521600000"
    folder.mkdir(parents=True, exist_ok=True)
    size = 0
    for i in range(files):
        body = b"".join(_line(rng, base) + b"\n" for _ in range(lines))
        path = folder / f"part-{i:05d}.gz"
        path.write_bytes(gzip.compress(body, compresslevel=1))
        size += path.stat().st_size
    return size


def _cli(env: dict[str, str], *args: str, timeout: float = 3600) -> str:
    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"landline {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _count_published(env: dict[str, str], tenant: str, counter: list[int], stop: threading.Event,
                     interval: float = 3.0) -> None:
    """Batches ingest has published, from the file ledger (counted after Pub/Sub confirmed each publish). An extra
    pull subscription on the topic was tried first: the emulator fed it so slowly (218 of ~1,000 messages by the
    end of the full run) that the backlog it implied was meaningless, and its copies cost the emulator heap."""
    while not stop.is_set():
        try:
            counter[0] = _ledger_batches(env, tenant)
        except RuntimeError:
            pass
        stop.wait(interval)


def _ledger_batches(env: dict[str, str], tenant: str) -> int:
    out = _cli(env, "query", "--tenant", tenant, "SELECT IFNULL(SUM(batches), 0) AS batches FROM files_latest")
    return int(json.loads(out.splitlines()[0])["batches"])


def _direct_write_rate(tenant: str, rows: int) -> float:
    """Rows/s of the product's writer straight into the dataset: ``rows`` generated lines, 1,000 a batch."""
    from shared.config import tenants
    from shared.load.parse import parse_lines
    from shared.warehouse.client import bigquery_client
    from shared.warehouse.rows import Lineage
    from shared.warehouse.writer import write_rows

    rng = random.Random(1)
    base = datetime(2024, 5, 1, tzinfo=UTC)
    t = tenants().get(tenant)
    client = bigquery_client()
    written = 0
    start = time.monotonic()
    for b in range(0, rows, 1000):
        n = min(1000, rows - b)
        lines = [(i + 1, _line(rng, base)) for i in range(n)]
        parsed = parse_lines(lines, fmt="segment", lineage=Lineage("segment", f"bench://direct/{b}", None, None))
        write_rows(client, t, [*parsed.rows, *parsed.rejected], processor="bench")
        written += n
    return written / (time.monotonic() - start)


_COUNTS = """
SELECT
  (SELECT COUNT(*) FROM events_deduped) AS events,
  (SELECT COUNT(DISTINCT event_instance_id) FROM events_deduped) AS distinct_events,
  (SELECT COUNT(*) FROM events) AS event_rows_stored,
  (SELECT COUNT(DISTINCT event_instance_id) FROM user_properties) AS user_property_records,
  (SELECT COUNT(*) FROM user_properties) AS user_property_rows_stored
"""


def _loader_deliveries(router_url: str) -> int:
    return int((httpx.get(f"{router_url}/stats", timeout=10).json().get("delivered") or {}).get("load_events", 0))


def _wait_for_loader(env: dict[str, str], tenant: str, router_url: str, before: int, deadline: float) -> None:
    """Until the loader has taken every batch the ledger says ingest published. ``landline wait`` sees only what the
    router has been handed: under a burst of ~1,000 batches the Pub/Sub emulator pushes them over minutes, with
    pauses longer than wait's quiet period, so wait alone can return while batches are still in the emulator (the
    first full run here did: 180 of 1,000 taken). The ledger (``files_latest.batches``, counted by ingest after
    Pub/Sub confirmed each publish) says how many there are; the router's counter how many the loader took."""
    while True:
        published, taken = _ledger_batches(env, tenant), _loader_deliveries(router_url) - before
        if taken >= published:
            _cli(env, "wait", "--timeout", "600", timeout=660)
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the loader took {taken} of {published} batches before the deadline")
        time.sleep(2.0)


def run(files: int, lines: int, *, baseline_rows: int = 20_000, sample: float = 1.0, timeout: float = 7200,
        keep_home: Path | None = None) -> dict[str, Any]:
    """One full measurement on a private stack; returns the summary (also used by the CI test)."""
    from infra.local.stack import Stack, activate
    from tests.stack_support import free_port_base, unique

    home = keep_home or Path(tempfile.mkdtemp(prefix="landline-bulk-"))
    stack = Stack(home=home, port_base=free_port_base())
    summary: dict[str, Any] = {"files": files, "lines_per_file": lines, "lines": files * lines}
    try:
        stack.up(timeout=120)
        activate(stack.cfg)
        env = {**os.environ, **stack.cfg.client_env()}
        data = home / "input"
        summary["gzip_bytes"] = write_files(data, files, lines)

        scratch = unique("direct")
        _cli(env, "tenant", "add", scratch, "--region", "europe-west1")
        summary["direct_write_rows_per_s"] = round(_direct_write_rate(scratch, baseline_rows))

        tenant = unique("bulk")
        _cli(env, "tenant", "add", tenant, "--region", "europe-west1")
        pids = {row["service"]: row["pid"] for row in stack.status() if row["pid"]}
        sampler = Sampler(stack.cfg.url("router"), pids, sample)
        stop_counting = threading.Event()
        counter = threading.Thread(
            target=_count_published,
            args=(env, tenant, sampler.published, stop_counting),
            daemon=True,
        )
        counter.start()
        watcher = threading.Thread(target=sampler.run, daemon=True)
        watcher.start()
        loaded_before = _loader_deliveries(stack.cfg.url("router"))
        t0 = time.monotonic()
        _cli(env, "drop", str(data), "--tenant", tenant)
        summary["drop_seconds"] = round(time.monotonic() - t0, 1)
        _cli(env, "wait", "--timeout", str(timeout), timeout=timeout + 60)
        summary["wait_returned_seconds"] = round(time.monotonic() - t0, 1)
        _wait_for_loader(env, tenant, stack.cfg.url("router"), loaded_before, t0 + timeout)
        elapsed = time.monotonic() - t0
        sampler.stop()
        stop_counting.set()
        watcher.join(10)

        stats = json.loads(_cli(env, "stats", "--tenant", tenant, "--json"))
        counts = json.loads(_cli(env, "query", "--tenant", tenant, _COUNTS).splitlines()[0])
        accounted = (stats["events"] + stats["user_property_rows"] + stats["rejected_lines"]
                     + stats["duplicates"])
        summary.update(
            seconds=round(elapsed, 1),
            lines_per_s=round(summary["lines"] / elapsed),
            messages_published=_ledger_batches(env, tenant),
            peak_backlog_messages=sampler.peak_backlog,
            peak_rss_mb={k: round(v) for k, v in sorted(sampler.peak_rss_mb.items())},
            files_ledger=stats["files"],
            lines_read=stats["lines"],
            events=counts["events"],
            user_property_records=counts["user_property_records"],
            rejected=stats["rejected_lines"],
            counted_duplicates=stats["duplicates"],
            stored_event_rows=counts["event_rows_stored"],
            lost=summary["lines"] - accounted,
            duplicated=(counts["events"] - counts["distinct_events"]) + max(accounted - summary["lines"], 0),
        )
        summary["ratio_pipeline_to_direct_write"] = round(summary["lines_per_s"] / summary["direct_write_rows_per_s"], 3)
        summary["timeline"] = sampler.timeline
    finally:
        stack.down()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--lines", type=int, default=5000, help="lines per file")
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--sample", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--json", dest="as_json", action="store_true", help="print the whole summary as JSON")
    args = parser.parse_args()
    s = run(args.files, args.lines, baseline_rows=args.baseline_rows, sample=args.sample)
    timeline = s.pop("timeline")
    if args.as_json:
        print(json.dumps({**s, "timeline": timeline}, indent=2))
    else:
        for key, value in s.items():
            print(f"{key:<32} {value}")
    print(f"lost = {s['lost']}, duplicated = {s['duplicated']}")
    print(f"ratio pipeline/direct-write = {s['ratio_pipeline_to_direct_write']}")
    sys.exit(1 if s["lost"] or s["duplicated"] else 0)


if __name__ == "__main__":
    main()
