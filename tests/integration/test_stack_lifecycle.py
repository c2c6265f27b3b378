"""`landline up` is idempotent and `landline down` leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.stack_support import BIN, free_port_base

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.stack


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(") ", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def test_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    from infra.local.stack import Stack

    # GIVEN a cold stack in its own state folder
    stack = Stack(home=tmp_path / "home", port_base=free_port_base())
    try:
        # WHEN it is brought up twice, the second time by `landline up`
        stack.up(timeout=90)
        first = {row["service"]: row["pid"] for row in stack.status()}
        again = subprocess.run(
            [str(BIN), "up", "--home", str(stack.home), "--json"], capture_output=True, text=True, timeout=300,
            check=True, env={**os.environ, "LANDLINE_HOME": str(stack.home)},
        )  # fmt: skip
        second = {row["service"]: row["pid"] for row in stack.status()}
        # THEN the second `up` reuses every healthy process, and says it started nothing
        assert first == second
        assert all(first.values())
        assert json.loads(again.stdout)["started"] == []
    finally:
        stack.down()
    # AND after `down` no process of any of its groups is alive
    leftovers = {name: _group_members(pid) for name, pid in first.items() if pid and _group_members(pid)}
    assert leftovers == {}
    assert all(row["pid"] is None for row in stack.status())
