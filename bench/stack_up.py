"""Cold start of the local stack: ``python -m bench.stack_up [--runs 3]``.

Each run starts a stack from nothing (fresh state folder, fresh ports): every emulator, the router, the fakes and
the three functions, the topology and the default tenant (bucket, claims bucket, dataset with its tables and views).
It then stops it and checks that no process of the stack is left. Last line: ``cold up median = N s``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from infra.local.stack import Stack, _group_alive
from tests.stack_support import free_port_base


def one_run(home: Path) -> tuple[float, float, int]:
    stack = Stack(home=home, port_base=free_port_base())
    t0 = time.monotonic()
    try:
        stack.up(timeout=120)
        up_s = time.monotonic() - t0
        pids = [row["pid"] for row in stack.status()]
    finally:
        t1 = time.monotonic()
        stack.down()
        down_s = time.monotonic() - t1
    leftovers = sum(1 for pid in pids if pid and _group_alive(pid))
    return up_s, down_s, leftovers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ups = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            up_s, down_s, leftovers = one_run(Path(tmp))
        ups.append(up_s)
        print(f"run {i + 1}: up {up_s:.1f} s, down {down_s:.1f} s, processes left {leftovers}")
    print(f"cold up median = {statistics.median(ups):.1f} s")


if __name__ == "__main__":
    main()
