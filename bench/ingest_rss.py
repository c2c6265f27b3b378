"""Peak RSS of the ingest_file *function process* on a big file, through the real local stack:
``python -m bench.ingest_rss [--size-mb 1024]``.

A private stack is started (own ports and state folder), the loader's subscription on raw-events is removed so only
the ingest function works, a gzipped Segment file of SIZE uncompressed MB is uploaded, and once the function has
published every batch its peak RSS (VmHWM of the functions-framework process and its children) is read from /proc.
The last line printed is ``peak RSS ingest_file = N MB for M MB uncompressed``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib
from pathlib import Path

BLOCK_LINES = 2000


def write_segment_file(path: Path, size_mb: int) -> int:
    """A gzipped Segment export of ``size_mb`` uncompressed MB (distinct messageIds); returns its line count."""
    base = {
        "type": "track",
        "event": "Product Viewed",
        "userId": "user-0",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "receivedAt": "2024-05-01T10:00:00.120Z",
        "properties": {"sku": "SKU-000", "price": 12.5, "currency": "EUR", "list": "search results " * 8},
        "context": {"library": {"name": "analytics.js", "version": "5.2.0"}, "locale": "en-US",
                    "page": {"path": "/products/1", "url": "https://example.com/products/1"},
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"},
    }
    target = size_mb * 1024 * 1024
    written = lines = 0
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        while written < target:
            block = []
            for _ in range(BLOCK_LINES):
                base["messageId"] = f"rss-{lines}"
                base["userId"] = f"user-{lines % 5000}"
                block.append(json.dumps(base))
                lines += 1
            data = ("\n".join(block) + "\n").encode()
            written += len(data)
            out.write(compressor.compress(data))
        out.write(compressor.flush())
    return lines


def _group_hwm_kb(pgid: int) -> int:
    """Largest VmHWM among the group's processes: the gunicorn worker that runs the function (the master is idle)."""
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            if int(stat[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, IndexError, ValueError):
            continue
    return peak


def measure(size_mb: int, workdir: Path) -> dict[str, float]:
    from google.cloud import pubsub_v1

    from infra.local.provision import push_subscription_name
    from infra.local.stack import Stack
    from infra.local.stack_ops import drop_files, wait_idle
    from shared.config import tenant_topic
    from tests.stack_support import free_port_base

    # The emulator keeps published messages in its heap (even acked ones, for a while): size it for the file.
    os.environ.setdefault("LANDLINE_PUBSUB_JAVA_OPTS", f"-Xmx{max(1024, size_mb * 4)}m")
    stack = Stack(home=workdir / "home", port_base=free_port_base())
    try:
        stack.up(timeout=120)
        os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{stack.cfg.port('pubsub')}"
        subscriber = pubsub_v1.SubscriberClient()
        raw_events = tenant_topic("raw-events", "default")  # the file is dropped for the default tenant
        subscriber.delete_subscription(
            subscription=subscriber.subscription_path(
                stack.cfg.project, push_subscription_name("load_events", raw_events, stack.cfg.run_id)
            )
        )
        # A consumer that acks everything at once, so the emulator does not hold the whole file in its heap.
        drain = subscriber.subscription_path(stack.cfg.project, f"rss-drain-{stack.cfg.run_id}")
        subscriber.create_subscription(name=drain, topic=subscriber.topic_path(stack.cfg.project, raw_events))
        drained = {"messages": 0}

        def ack(message: pubsub_v1.subscriber.message.Message) -> None:
            drained["messages"] += 1
            message.ack()

        streaming = subscriber.subscribe(drain, ack)
        root = workdir / "export"
        folder = root / "segment-logs" / "bench" / "1714521600000"
        folder.mkdir(parents=True)
        t0 = time.monotonic()
        lines = write_segment_file(folder / "big.json.gz", size_mb)
        gen_s = time.monotonic() - t0
        pid = stack.pid("ingest_file")
        assert pid
        baseline_kb = _group_hwm_kb(pid)
        t0 = time.monotonic()
        drop_files(stack.cfg, [root], "default", "")
        stats = wait_idle(stack.cfg.url("router"), timeout=1800)
        ingest_s = time.monotonic() - t0
        peak_kb = _group_hwm_kb(pid)
        streaming.cancel()
        if stats["failures"].get("ingest_file"):
            raise RuntimeError(f"ingest_file failed: {stats}")
        return {
            "size_mb": size_mb,
            "lines": lines,
            "compressed_mb": (folder / "big.json.gz").stat().st_size / 1e6,
            "generate_s": gen_s,
            "ingest_s": ingest_s,
            "baseline_rss_mb": baseline_kb / 1024,
            "peak_rss_mb": peak_kb / 1024,
            "messages_published": drained["messages"],
        }
    finally:
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.size_mb, Path(tmp))
    for key, value in result.items():
        print(f"{key:>16}: {value:,.1f}" if isinstance(value, float) else f"{key:>16}: {value:,}")
    print(f"peak RSS ingest_file = {result['peak_rss_mb']:.0f} MB for {args.size_mb} MB uncompressed")


if __name__ == "__main__":
    main()
