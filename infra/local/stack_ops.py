"""What the CLI, the demo and the benchmarks do to a running local stack: drop files, tick, and wait for quiet.

The router keeps the bookkeeping (``infra/local/router.py``): whatever is published or uploaded here is announced to
it (``/expect``), so `landline wait` does not return before it was handled.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from pathlib import Path

    from infra.local.stack_config import StackConfig


def expect(router_url: str, keys: list[str]) -> None:
    """Tell the router what was just published or uploaded, so `landline wait` waits for it to be handled."""
    if keys:
        httpx.post(f"{router_url}/expect", json=keys, timeout=5)


def drop_files(cfg: StackConfig, paths: list[Path], tenant: str, prefix: str) -> list[str]:
    """Upload into the tenant's bucket; tells the router which finalize events to expect (for `landline wait`)."""
    from shared.clients import storage_client
    from shared.config import tenants

    bucket = storage_client().bucket(tenants().get(tenant).bucket)
    uploads: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            uploads += [(f, f.relative_to(path).as_posix()) for f in sorted(path.rglob("*")) if f.is_file()]
        else:
            uploads.append((path, path.name))
    expected, uploaded = [], []
    for file, relative in uploads:
        name = f"{prefix.strip('/')}/{relative}" if prefix.strip("/") else relative
        blob = bucket.blob(name)
        blob.upload_from_filename(str(file))
        expected.append(f"{bucket.name}/{name}#{blob.generation}")
        uploaded.append(f"gs://{bucket.name}/{name}#{blob.generation}")
    expect(cfg.url("router"), expected)
    return uploaded


def wait_idle(router_url: str, timeout: float, quiet: float = 1.5) -> dict[str, Any]:
    """Block until no delivery is in flight, none awaits a retry, no dropped file is pending, and all is quiet."""
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(f"{router_url}/stats", timeout=5).json()
        busy = stats["inflight"] or stats["awaiting_retry"] or stats["expected_objects"]
        if not busy and stats["idle_seconds"] >= quiet:
            return dict(stats)
        if time.monotonic() > deadline:
            raise TimeoutError(json.dumps(stats))
        time.sleep(0.2)


def publish_tick(router_url: str, tenant: str | None = None) -> str:
    """Publish one scheduler tick to send-ticks (what Cloud Scheduler does); returns its message id."""
    from shared.clients import publisher, topic_path

    attributes = {"origin": "cli", **({"tenant": tenant} if tenant else {})}
    future = publisher().publish(topic_path("send-ticks"), json.dumps({"at": time.time()}).encode(), **attributes)
    message_id = str(future.result(timeout=30))
    expect(router_url, [f"msg:{message_id}"])
    return message_id
