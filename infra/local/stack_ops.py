"""What the CLI, the demo and the benchmarks do to a running local stack: drop files, tick, and wait for quiet.

The router keeps the bookkeeping (``infra/local/router.py``): whatever is published or uploaded here is announced to
it (``/expect``), so `landline wait` does not return before it was handled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.local.stack_config import StackConfig
    from shared.ingest.layout import ObjectLayout


def expect(router_url: str, keys: list[str], tenant: str | None = None) -> None:
    """Tell the router what was just published or uploaded (for ``tenant``, if known), so `landline wait` waits for
    it to be handled."""
    import httpx  # here, not at the top: `landline --help` needs none of it

    if keys:
        httpx.post(f"{router_url}/expect", json={"tenant": tenant, "keys": keys}, timeout=5)


@dataclass(frozen=True)
class Upload:
    """A local file and the object it becomes, with what ingest will make of that object's name."""

    file: Path
    name: str
    layout: ObjectLayout

    @property
    def size(self) -> int:
        return self.file.stat().st_size


def plan_drop(paths: list[Path], prefix: str, tenant_prefix: str = "") -> list[Upload]:
    """The uploads of `landline drop`: a file to PREFIX/<name>, a directory's files to PREFIX/<relative path>; each
    classified as ingest will classify it (``shared.ingest.layout``), so what will be ignored is known before."""
    from shared.ingest.layout import classify_object  # here: it loads every format, which --help does not need

    files: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            files += [(f, f.relative_to(path).as_posix()) for f in sorted(path.rglob("*")) if f.is_file()]
        else:
            files.append((path, path.name))
    uploads = []
    for file, relative in files:
        name = f"{prefix.strip('/')}/{relative}" if prefix.strip("/") else relative
        uploads.append(Upload(file, name, classify_object(name, tenant_prefix)))
    return uploads


def drop_files(
    cfg: StackConfig, paths: list[Path], tenant: str, prefix: str, on_file: Callable[[Upload], None] | None = None
) -> list[str]:
    """Upload into the tenant's bucket; tells the router which finalize events to expect (for `landline wait`)."""
    from shared.config import tenants

    return upload(cfg, plan_drop(paths, prefix, tenants().get(tenant).prefix), tenant, on_file)


def upload(
    cfg: StackConfig, uploads: list[Upload], tenant: str, on_file: Callable[[Upload], None] | None = None
) -> list[str]:
    """Upload planned files into the tenant's bucket; returns ``gs://bucket/name#generation`` per file."""
    from shared.clients import storage_client
    from shared.config import tenants

    bucket = storage_client().bucket(tenants().get(tenant).bucket)
    expected, uploaded = [], []
    for item in uploads:
        blob = bucket.blob(item.name)
        blob.upload_from_filename(str(item.file))
        expected.append(f"{bucket.name}/{item.name}#{blob.generation}")
        uploaded.append(f"gs://{bucket.name}/{item.name}#{blob.generation}")
        if on_file:
            on_file(item)
    expect(cfg.url("router"), expected, tenant)
    return uploaded


def router_stats(router_url: str, tenant: str | None = None) -> dict[str, Any]:
    """The router's bookkeeping: the whole stack's, or what it knows to be ``tenant``'s."""
    import httpx

    params = {"tenant": tenant} if tenant else None
    return dict(httpx.get(f"{router_url}/stats", params=params, timeout=5).json())


def busy(stats: dict[str, Any]) -> bool:
    return bool(stats["inflight"] or stats["awaiting_retry"] or stats["expected_objects"])


def wait_idle(
    router_url: str,
    timeout: float,
    quiet: float = 1.5,
    *,
    tenant: str | None = None,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
    interval: float = 0.5,
) -> dict[str, Any]:
    """Block until no delivery is in flight, none awaits a retry, no dropped file is pending, and all is quiet (for
    the whole stack, or only ``tenant``'s deliveries); raises ``TimeoutError`` with the last stats as JSON."""
    deadline = time.monotonic() + timeout
    while True:
        stats = router_stats(router_url, tenant)
        if on_poll:
            on_poll(stats)
        if not busy(stats) and stats["idle_seconds"] >= quiet:
            return stats
        if time.monotonic() > deadline:
            raise TimeoutError(json.dumps(stats))
        time.sleep(interval)


def publish_tick(router_url: str, tenant: str | None = None) -> str:
    """Publish one scheduler tick to send-ticks (what Cloud Scheduler does); returns its message id."""
    from shared.clients import publisher, topic_path

    attributes = {"origin": "cli", **({"tenant": tenant} if tenant else {})}
    future = publisher().publish(topic_path("send-ticks"), json.dumps({"at": time.time()}).encode(), **attributes)
    message_id = str(future.result(timeout=30))
    expect(router_url, [f"msg:{message_id}"], tenant if tenant and "," not in tenant else None)
    return message_id
