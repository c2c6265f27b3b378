"""``python -m bench.cost [--input DIR] [--files N --lines M] [--json]``: what ingesting an input costs on Google Cloud,
per million events, from quantities measured on the local stack and list prices (``PRICES``, with their date).

On a private local stack (fresh state folder, free ports; fake-gcs-server's access log on), one tenant, the input
dropped into its bucket as a Segment destination would, then ``landline wait``. Measured for that tenant only:

- **Pub/Sub**: every push delivery and its message size (data plus attributes: what Pub/Sub bills), by topic, from
  the local router's counters; each message billed at least 1,000 bytes, once published and once delivered.
- **BigQuery**: every row in every table of the tenant's dataset, sized by BigQuery's data-size rules (``data_size``:
  a STRING is 2 bytes plus its UTF-8 length, INT64/FLOAT64/TIMESTAMP 8, BOOL 1, JSON its text, NULL 0). Legacy
  streaming (insertAll, the writer until 2026-12-03) bills each row as at least 1 KB; the Storage Write API (the writer
  now) bills the bytes.
- **Functions**: request-seconds per function (the router times every delivery; request-based billing charges the
  instance's vCPU and memory while it handles a request, so with concurrency > 1 this is an upper bound) and the
  CPU-seconds the function processes used (psutil), which is what the work needs on this machine.
- **Cloud Storage**: every request in fake-gcs-server's access log while the input was processed, by operation
  class (``storage_operation``). Uploads of the input itself are the customer's (their Segment destination writes
  them) and are listed apart.

Default input: 100,000 generated Segment calls in 20 gzipped files (bench/pipeline_load's generator); ``--input DIR``
takes any folder of exports instead (``--input samples/segment``: the demo's sample). Free tiers are not
subtracted: the figures are what the volume costs at list price once past them.

The last line is ``cost per million events = $X (insertAll) | $Y (Storage Write API)``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

if TYPE_CHECKING:
    from google.cloud.bigquery import SchemaField

BIN = Path(sys.executable).with_name("landline")
FUNCTIONS = ("ingest_file", "load_events", "send_due")


@dataclass(frozen=True)
class Prices:
    """US dollars at list price, read on ``read`` (sources: infra/SCALING.md, "Cost per million events")."""

    read: str = "2026-12-03"
    pubsub_per_tib: float = 40.0  # throughput, published or delivered; >= 1,000 bytes per request
    pubsub_min_bytes: int = 1000
    streaming_per_200mb: float = 0.01  # BigQuery legacy streaming (insertAll); rows billed >= 1 KB
    streaming_min_row_bytes: int = 1024
    write_api_per_gib: float = 0.025  # Storage Write API (third-party figure, unconfirmed on Google's page)
    vcpu_second: float = 0.000024  # Cloud Run request-based billing, Tier 1
    gib_second: float = 0.0000025
    per_million_requests: float = 0.40
    class_a_per_1000: float = 0.005  # Cloud Storage Standard, regional
    class_b_per_1000: float = 0.0004


PRICES = Prices()
# Memory -> vCPU by default (Cloud Run functions: 512 MiB 0.333, 1 GiB 0.583, 2 GiB 1).
VCPU = {"512Mi": 0.333, "1Gi": 0.583, "2Gi": 1.0}
GIB = {"512Mi": 0.5, "1Gi": 1.0, "2Gi": 2.0}

_FIXED_SIZE = {"INTEGER": 8, "INT64": 8, "FLOAT": 8, "FLOAT64": 8, "TIMESTAMP": 8, "DATE": 8, "DATETIME": 8,
               "TIME": 8, "BOOLEAN": 1, "BOOL": 1, "NUMERIC": 16, "BIGNUMERIC": 32}  # fmt: skip


def data_size(value: Any, field: SchemaField, *, element: bool = False) -> int:
    """Bytes of ``value`` in a column of type ``field`` by BigQuery's data-size rules (what storage and streaming
    bill). ``element``: size one element of a REPEATED field."""
    if value is None:
        return 0
    if field.mode == "REPEATED" and not element:
        return sum(data_size(v, field, element=True) for v in value)
    kind = field.field_type.upper()
    if kind in _FIXED_SIZE:
        return _FIXED_SIZE[kind]
    if kind in ("RECORD", "STRUCT"):
        return sum(data_size(value.get(sub.name), sub) for sub in field.fields)
    if kind == "JSON":
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return len(text.encode())
    if kind == "BYTES":
        return 2 + len(value)
    return 2 + len(str(value).encode())  # STRING (and anything else stored as text)


_REQUEST = re.compile(r'\\?"(GET|POST|PUT|PATCH|DELETE|HEAD) (\S+) HTTP/[\d.]+\\?" (\d{3})')


def storage_operation(method: str, path: str) -> tuple[str, str, str]:
    """(bucket, operation, class) of one Cloud Storage JSON or XML API request. Class ``A`` (writes, lists), ``B``
    (reads) or ``free`` (deletes), as Cloud Storage bills operations."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if method == "DELETE":
        return (parts[3] if len(parts) > 3 and parts[:2] == ["storage", "v1"] else ""), "delete", "free"
    if parts[:1] in (["upload"], ["download"]):
        parts = parts[1:]
    if parts[:2] == ["storage", "v1"] and len(parts) >= 3 and parts[2] == "b":
        bucket = parts[3] if len(parts) > 3 else ""
        rest = parts[4:]
        if not bucket:
            return "", "buckets.list" if method == "GET" else "buckets.insert", "A"
        if not rest:
            return bucket, "buckets.get" if method == "GET" else "buckets.update", "B" if method == "GET" else "A"
        if rest == ["o"]:
            return bucket, "objects.list" if method == "GET" else "objects.insert", "A"
        if rest[0] == "o" and method in ("GET", "HEAD") and len(rest) == 2:
            return bucket, "objects.get", "B"
        return bucket, f"objects.{method.lower()}", "A"  # patch, compose, copy, rewrite, resumable chunks
    bucket = parts[0] if parts else ""  # XML API: /<bucket>/<object>
    return bucket, f"xml.{method.lower()}", "B" if method in ("GET", "HEAD") else "A"


def storage_requests(log_text: str) -> list[tuple[str, str, str, int]]:
    """(method, path, class, status) of every request in fake-gcs-server's access log text."""
    out = []
    for match in _REQUEST.finditer(log_text):
        method, path, status = match.group(1), match.group(2), int(match.group(3))
        out.append((method, path, storage_operation(method, path)[2], status))
    return out


def function_cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each function's process and its children."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            total = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
            out[name] = total
        except psutil.Error:
            out[name] = 0.0
    return out


def costs(m: dict[str, Any], memory: dict[str, str], prices: Prices = PRICES) -> dict[str, Any]:
    """Dollars for the measured quantities ``m`` (see ``measure``); every line also per million events."""
    tib = 2**40
    pubsub_billed = sum(max(prices.pubsub_min_bytes, size) for size in m["pubsub_message_sizes"]) * 2  # publish+push
    streaming_billed = sum(max(prices.streaming_min_row_bytes, size) for size in m["bq_row_sizes"])
    write_api_bytes = sum(m["bq_row_sizes"])
    function_dollars = 0.0
    for name, seconds in m["request_seconds"].items():
        mem = memory.get(name, "1Gi")
        function_dollars += seconds * (VCPU[mem] * prices.vcpu_second + GIB[mem] * prices.gib_second)
    function_dollars += m["requests"] * prices.per_million_requests / 1e6
    lines = {
        "pubsub": pubsub_billed / tib * prices.pubsub_per_tib,
        "bigquery_streaming": streaming_billed / (200 * 2**20) * prices.streaming_per_200mb,
        "bigquery_write_api": write_api_bytes / 2**30 * prices.write_api_per_gib,
        "functions": function_dollars,
        "storage_operations": m["storage_ops"].get("A", 0) / 1000 * prices.class_a_per_1000
        + m["storage_ops"].get("B", 0) / 1000 * prices.class_b_per_1000,
    }
    common = lines["pubsub"] + lines["functions"] + lines["storage_operations"]
    per_million = 1e6 / max(m["events"], 1)
    return {
        "dollars": lines,
        "per_million_events": {k: v * per_million for k, v in lines.items()},
        "billed_bytes": {"pubsub": pubsub_billed, "bigquery_streaming": streaming_billed,
                         "bigquery_write_api": write_api_bytes},
        "total_per_million_insert_all": (common + lines["bigquery_streaming"]) * per_million,
        "total_per_million_write_api": (common + lines["bigquery_write_api"]) * per_million,
    }


def _cli(env: dict[str, str], *args: str, timeout: float = 3600) -> str:
    import subprocess

    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"landline {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _warehouse_rows(tenant: str) -> dict[str, list[int]]:
    """Each table of the tenant's dataset -> the data size of each of its rows."""
    from shared.config import tenants
    from shared.warehouse.client import bigquery_client

    client = bigquery_client()
    dataset = tenants().get(tenant).dataset
    out: dict[str, list[int]] = {}
    for item in client.list_tables(dataset):
        if item.table_type != "TABLE":
            continue
        table = client.get_table(item.reference)
        sizes = [sum(data_size(row.get(f.name), f) for f in table.schema) for row in client.list_rows(table)]
        if sizes:
            out[table.table_id] = sizes
    return out


def measure(input_dir: Path, *, keep_home: Path | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Ingest ``input_dir`` into a new tenant of a private stack and measure what a deployment would be billed for."""
    from infra.local.stack import Stack, activate
    from infra.local.topology import load_topology
    from tests.stack_support import free_port_base, unique

    os.environ["LANDLINE_STORAGE_LOG_LEVEL"] = "info"
    home = keep_home or Path(tempfile.mkdtemp(prefix="landline-cost-"))
    stack = Stack(home=home, port_base=free_port_base())
    try:
        stack.up(timeout=120)
        activate(stack.cfg)
        env = {**os.environ, **stack.cfg.client_env()}
        tenant = unique("cost")
        _cli(env, "tenant", "add", tenant, "--region", "europe-west1")
        from shared.config import tenants

        tenants.cache_clear()
        bucket = tenants().get(tenant).bucket
        pids = {name: stack.pid(name) or 0 for name in FUNCTIONS}
        storage_log = stack.cfg.paths.logs / "storage.log"
        log_start = storage_log.stat().st_size if storage_log.exists() else 0
        cpu_before = function_cpu_seconds(pids)
        t0 = time.monotonic()
        _cli(env, "drop", str(input_dir), "--tenant", tenant)
        _cli(env, "wait", "--tenant", tenant, "--timeout", str(timeout), timeout=timeout + 60)
        elapsed = time.monotonic() - t0
        cpu_after = function_cpu_seconds(pids)
        with storage_log.open("rb") as f:
            f.seek(log_start)
            log_text = f.read().decode(errors="replace")
        router = httpx.get(f"{stack.cfg.url('router')}/stats", params={"tenant": tenant}, timeout=30).json()
        stats = json.loads(_cli(env, "stats", "--tenant", tenant, "--json"))
        rows = _warehouse_rows(tenant)
    finally:
        stack.down()

    ops: dict[str, int] = {}
    customer_uploads = 0
    by_operation: dict[str, int] = {}
    for method, path, cls, _status in storage_requests(log_text):
        op_bucket, operation, _ = storage_operation(method, path)
        if op_bucket == bucket and cls == "A" and operation in ("objects.insert", "objects.post", "objects.put"):
            customer_uploads += 1  # the input's own upload: the customer's Segment destination pays for it
            continue
        ops[cls] = ops.get(cls, 0) + 1
        by_operation[operation] = by_operation.get(operation, 0) + 1
    topics = {t: {"messages": n, "bytes": router["push_bytes"].get(t, 0)} for t, n in router["pushes"].items()}
    # Sizes per message are not kept by the router: spread each topic's bytes evenly over its messages (exact for the
    # 1,000-byte minimum whenever every message of a topic is on the same side of it, as here: notifications ~1 KB
    # and under, raw-events batches far above).
    sizes: list[int] = []
    for info in topics.values():
        if info["messages"]:
            sizes += [info["bytes"] // info["messages"]] * info["messages"]
    memory = {name: fn.memory for name, fn in load_topology().functions.items()}
    events = int(stats["lines"])
    measured: dict[str, Any] = {
        "input": str(input_dir),
        "events": events,
        "seconds": round(elapsed, 1),
        "rows": {table: len(s) for table, s in rows.items()},
        "bq_bytes": {table: sum(s) for table, s in rows.items()},
        "bq_row_sizes": [size for s in rows.values() for size in s],
        "pubsub_topics": topics,
        "pubsub_message_sizes": sizes,
        "pubsub_failures": router.get("failures", {}),
        "request_seconds": {k: v / 1000 for k, v in router["busy_ms"].items()},
        "requests": sum(router["pushes"].values()),
        "cpu_seconds": {k: round(cpu_after[k] - cpu_before[k], 2) for k in FUNCTIONS},
        "storage_ops": ops,
        "storage_by_operation": by_operation,
        "customer_uploads": customer_uploads,
        "stats": {k: stats[k] for k in ("files", "lines", "events", "user_property_rows", "rejected_lines",
                                         "duplicates") if k in stats},
    }
    measured["cost"] = costs(measured, memory)
    measured["memory"] = memory
    measured["prices"] = asdict(PRICES)
    return measured


def report(m: dict[str, Any]) -> str:
    c = m["cost"]
    pm = c["per_million_events"]
    per_event = 1e6 / max(m["events"], 1)
    lines = [
        f"input {m['input']}: {m['events']:,} events (lines read) in {m['seconds']} s; prices read {m['prices']['read']}",
        "",
        f"{'item':<26} {'measured':<80} {'$ per 1M events':>16}",
        f"{'Pub/Sub':<26} {_topics(m):<80} {pm['pubsub']:>16.4f}",
        f"{'BigQuery legacy streaming':<26} {_rows(m, 'bigquery_streaming'):<80} {pm['bigquery_streaming']:>16.4f}",
        f"{'BigQuery Storage Write API':<26} {_rows(m, 'bigquery_write_api'):<80} {pm['bigquery_write_api']:>16.4f}",
        f"{'Functions':<26} {_functions(m):<80} {pm['functions']:>16.4f}",
        f"{'Cloud Storage operations':<26} {_ops(m):<80} {pm['storage_operations']:>16.4f}",
        "",
        f"per 1M events: rows {sum(m['rows'].values()) * per_event:,.0f}; row bytes (data size) "
        f"{sum(m['bq_bytes'].values()) * per_event / 2**20:,.0f} MiB; CPU-seconds "
        f"{sum(m['cpu_seconds'].values()) * per_event:,.0f}; request-seconds {sum(m['request_seconds'].values()) * per_event:,.0f}",
        f"customer's own uploads (not ours): {m['customer_uploads']}; Pub/Sub failed deliveries: {m['pubsub_failures']}",
        f"cost per million events = ${c['total_per_million_insert_all']:.4f} (insertAll) | "
        f"${c['total_per_million_write_api']:.4f} (Storage Write API)",
    ]
    return "\n".join(lines)


def _topics(m: dict[str, Any]) -> str:
    parts = [f"{t} {v['messages']} msgs {v['bytes'] / 2**20:.1f} MiB" for t, v in sorted(m["pubsub_topics"].items())]
    return "; ".join(parts) + " (x2: publish + push)"


def _rows(m: dict[str, Any], key: str) -> str:
    billed = m["cost"]["billed_bytes"][key]
    return f"{sum(m['rows'].values()):,} rows, {billed / 2**20:.1f} MiB billed"


def _functions(m: dict[str, Any]) -> str:
    req = sum(m["request_seconds"].values())
    cpu = sum(m["cpu_seconds"].values())
    return f"{m['requests']} requests, {req:.1f} request-s, {cpu:.1f} CPU-s"


def _ops(m: dict[str, Any]) -> str:
    return f"class A {m['storage_ops'].get('A', 0)}, class B {m['storage_ops'].get('B', 0)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, help="a folder of exports (default: generated files)")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--lines", type=int, default=5000, help="lines per generated file")
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args()
    if args.input is None:
        from bench.pipeline_load.__main__ import write_files

        args.input = Path(tempfile.mkdtemp(prefix="landline-cost-input-"))
        write_files(args.input, args.files, args.lines)
    m = measure(args.input)
    if args.as_json:
        print(json.dumps({k: v for k, v in m.items() if k not in ("bq_row_sizes", "pubsub_message_sizes")}, indent=2))
    print(report(m))


if __name__ == "__main__":
    main()
