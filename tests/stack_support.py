"""Helpers for tests that run against the real local stack (one stack per test session, unique names per test)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from infra.local.stack import Stack

BIN = Path(sys.executable).with_name("landline")


def free_port_base(span: int = 16) -> int:
    """A base port whose next ``span`` ports are all free (random, so parallel runs do not collide), below the
    kernel's ephemeral range: a port there can be taken by any outgoing connection between this check and the
    emulator's bind (an emulator failed to start that way, "Failed to bind to address 127.0.0.1:41698")."""
    import random

    ephemeral_low = _ephemeral_range()[0]
    low, high = (20000, ephemeral_low - span) if ephemeral_low - span > 21000 else (20000, 60000 - span)
    for _ in range(200):
        base = random.randrange(low, high)
        if all(_free(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class StackHandle:
    """A running stack plus conveniences: the CLI as a subprocess, queries and stats through the library."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.env = {**os.environ, **stack.cfg.client_env()}

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"landline {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def add_tenant(self, region: str = "europe-west1", **options: str) -> str:
        name = unique()
        extra = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        self.cli("tenant", "add", name, "--region", region, *extra)
        return name

    def drop(self, tenant: str, *paths: Path, prefix: str = "") -> list[str]:
        args = ["drop", *map(str, paths), "--tenant", tenant]
        if prefix:
            args += ["--prefix", prefix]
        return self.cli(*args).stdout.split()

    def wait(self, timeout: float = 180) -> None:
        self.cli("wait", "--timeout", str(timeout), timeout=timeout + 30)

    def query(self, tenant: str, sql: str) -> list[dict[str, Any]]:
        out = self.cli("query", "--tenant", tenant, sql).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def stats(self, tenant: str) -> dict[str, Any]:
        return dict(json.loads(self.cli("stats", "--tenant", tenant, "--json").stdout))


def segment_file(tmp: Path, records: list[dict[str, Any] | str], *, name: str = "part-0001.gz",
                 source: str = "src1", day_ms: str = "1714521600000", compress: bool = True) -> Path:
    """Write records as a Segment-layout file under ``tmp`` (returns the root to drop)."""
    folder = tmp / "segment-logs" / source / day_ms
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    (folder / name).write_bytes(gzip.compress(text) if compress else text)
    return tmp
