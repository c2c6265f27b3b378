"""Ingest-stage benchmark: ``python -m bench.ingest [--quick]``.

Why: the ingest stage must keep up with gzip itself (target: >= 60% of inflate-only throughput on a ~240 MB
uncompressed Segment file), so we measure, on the same cached file and in the same run:

* ``inflate``  zlib inflate only, output discarded (the ceiling);
* ``json``     a plain ``json.loads`` loop over the lines (what naive per-line parsing would cost);
* ``ingest``   open_lines + batch_lines + batch_message(...).encode() (publishing NOT included).

Each measurement runs in a fresh subprocess so its peak RSS (``ru_maxrss`` from ``os.wait4``) is its own. Rates are
lines/s per core (CPU time, single process) and wall lines/s. The last line printed is the ingest/inflate ratio.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.ingest.batching import batch_lines, batch_message
from shared.ingest.decode import open_lines

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "bench" / ".data"
FULL_MB = 240
QUICK_MB = 40
READ_SIZE = 1 << 20

EVENTS = ["Order Completed", "Product Viewed", "Product Added", "Checkout Started", "Signed In", "Push Opened"]
PAGES = ["/", "/pricing", "/products/{n}", "/blog/{n}-how-to-ship", "/account/settings", "/cart"]
ZONES = ["America/New_York", "Europe/Paris", "Asia/Tokyo", "America/Sao_Paulo", "Australia/Sydney", "UTC"]
AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
]


# -- data ------------------------------------------------------------------------------------------------------


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _line(rng: random.Random, base: datetime) -> bytes:
    """One Segment call as analytics.js / mobile libraries send it (~600-800 bytes)."""
    kind = rng.choices(["track", "page", "identify"], weights=[60, 25, 15])[0]
    t = base + timedelta(milliseconds=rng.randrange(3_600_000))
    user = f"user_{rng.randrange(200_000)}" if rng.random() < 0.7 else None
    path = rng.choice(PAGES).format(n=rng.randrange(10_000))
    msg: dict[str, Any] = {
        "anonymousId": f"{rng.getrandbits(128):032x}",
        "channel": "client",
        "context": {
            "ip": f"203.0.{rng.randrange(256)}.{rng.randrange(256)}",
            "library": {"name": "analytics.js", "version": "npm:next-1.70.0"},
            "locale": rng.choice(["en-US", "fr-FR", "ja-JP", "pt-BR"]),
            "page": {"path": path, "title": "Example Shop"},
            "timezone": rng.choice(ZONES),
            "userAgent": rng.choice(AGENTS),
        },
        "integrations": {},
        "messageId": f"ajs-next-{rng.getrandbits(128):032x}",
        "originalTimestamp": _iso(t),
        "receivedAt": _iso(t + timedelta(milliseconds=900)),
        "sentAt": _iso(t + timedelta(milliseconds=400)),
        "timestamp": _iso(t + timedelta(milliseconds=500)),
        "type": kind,
        "userId": user,
        "version": 2,
    }
    if kind == "track":
        msg["event"] = rng.choice(EVENTS)
        msg["properties"] = {
            "order_id": f"o-{rng.getrandbits(40):x}",
            "revenue": round(rng.random() * 300, 2),
            "currency": "USD",
        }
    elif kind == "page":
        msg["name"] = path.strip("/").split("/")[0] or "home"
        msg["properties"] = {"path": path, "category": rng.choice(["docs", "shop", "blog"])}
    else:
        msg["traits"] = {"plan": rng.choice(["free", "pro"]), "email": f"{user or 'anon'}@example.com"}
        msg["context"]["device"] = {"token": f"{rng.getrandbits(256):064x}", "type": "ios"}
    return json.dumps(msg, separators=(",", ":")).encode()


def ensure_file(size_mb: int) -> Path:
    """Generate (once; cached under bench/.data/) a gzipped Segment NDJSON file of ~``size_mb`` uncompressed."""
    path = DATA_DIR / f"segment-{size_mb}mb.ndjson.gz"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rng = random.Random(size_mb)
    base = datetime(2024, 5, 1, tzinfo=UTC)
    target, written = size_mb * 1_000_000, 0
    tmp = path.with_suffix(".tmp")
    print(f"generating {path.relative_to(ROOT)} (~{size_mb} MB uncompressed)...", file=sys.stderr)
    with gzip.open(tmp, "wb", compresslevel=6) as out:
        while written < target:
            block = b"".join(_line(rng, base) + b"\n" for _ in range(2000))
            out.write(block)
            written += len(block)
    tmp.rename(path)
    return path


# -- measurements (each in its own process) ----------------------------------------------------------------------


def measure_inflate(path: Path) -> tuple[int, int]:
    out_bytes = 0
    d = zlib.decompressobj(wbits=31)
    with path.open("rb") as f:
        while data := f.read(READ_SIZE):
            while data:
                out = d.decompress(data)
                out_bytes += len(out)
                if d.eof:
                    data = d.unused_data
                    d = zlib.decompressobj(wbits=31)
                else:
                    data = b""
    return 0, out_bytes  # lines are not counted here (that is work); the report uses the ingest stage's count


def measure_json(path: Path) -> tuple[int, int]:
    lines = out_bytes = 0
    loads = json.loads
    with path.open("rb") as f:
        reader = open_lines(f)
        for chunk in reader.iter_chunks_of_lines():
            for line in chunk.lines:
                loads(line)
            lines += len(chunk.lines)
        out_bytes = reader.bytes_out
    return lines, out_bytes


def measure_ingest(path: Path) -> tuple[int, int]:
    origin = f"gs://bench-bucket/segment-logs/src/1714521600000/{path.name}#1714560000000000"
    lines = 0
    with path.open("rb") as f:
        reader = open_lines(f)
        for batch in batch_lines(reader):
            payload, attrs = batch_message(batch, tenant="bench", origin=origin).encode()
            assert len(payload) == batch.payload_bytes and attrs  # keep both alive: the publish would use them
            lines += len(batch.lines)
        assert not reader.truncated
    return lines, reader.bytes_out


STAGES = {"inflate": measure_inflate, "json": measure_json, "ingest": measure_ingest}


def child(stage: str, path: Path) -> None:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    lines, out_bytes = STAGES[stage](path)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"stage": stage, "lines": lines, "bytes_out": out_bytes, "wall": wall, "cpu": cpu}))


def run_child(stage: str, path: Path) -> dict[str, Any]:
    """Run one stage in a fresh interpreter; returns its numbers plus its own peak RSS."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest", "--child", stage, str(path)], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(out)
    result["maxrss_mb"] = usage.ru_maxrss / 1024  # Linux: KiB
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"~{QUICK_MB} MB file instead of ~{FULL_MB} MB")
    parser.add_argument("--size-mb", type=int, help="uncompressed size of the generated file")
    parser.add_argument("--repeats", type=int, default=3, help="runs per stage; the best (least CPU) is kept")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return

    size_mb = args.size_mb or (QUICK_MB if args.quick else FULL_MB)
    path = ensure_file(size_mb)
    with path.open("rb") as f:  # warm the page cache so no stage pays for the disk
        while f.read(8 << 20):
            pass
    print(f"file: {path.relative_to(ROOT)}  compressed {path.stat().st_size / 1e6:.1f} MB")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("ingest = open_lines + batch_lines + batch_message(...).encode() (publishing not included)")
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeats):
        for stage in STAGES:
            if stage == "json" and stage in best:
                continue  # slow and only informative: once is enough
            r = run_child(stage, path)
            if stage not in best or r["cpu"] < best[stage]["cpu"]:
                best[stage] = r
    lines, mb = best["ingest"]["lines"], best["ingest"]["bytes_out"] / 1e6
    print(f"lines: {lines:,}  uncompressed {mb:.1f} MB  avg {best['ingest']['bytes_out'] / lines:.0f} B/line")
    print(f"{'stage':<8} {'lines/s/core':>13} {'MB/s/core':>10} {'wall lines/s':>13} {'cpu s':>7} {'peak RSS':>9}")
    for stage, r in best.items():
        assert r["bytes_out"] == best["ingest"]["bytes_out"], "every stage must see the same bytes"
        print(
            f"{stage:<8} {lines / r['cpu']:>13,.0f} {r['bytes_out'] / 1e6 / r['cpu']:>10.1f} "
            f"{lines / r['wall']:>13,.0f} {r['cpu']:>7.2f} {r['maxrss_mb']:>7.1f}MB"
        )
    ratio = best["inflate"]["cpu"] / best["ingest"]["cpu"]
    wall_ratio = best["inflate"]["wall"] / best["ingest"]["wall"]
    print(f"wall ratio ingest/inflate = {wall_ratio:.2f}")
    print(f"ratio ingest/inflate = {ratio:.2f}")


if __name__ == "__main__":
    main()
