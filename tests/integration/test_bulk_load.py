"""Issue 9's load test, reduced for CI: many Segment files dropped at once land with no loss and no duplicates.

The full size (1,000,000 lines in 200 files, with throughput, peak backlog and peak memory per process) is a command:
``python -m bench.pipeline_load`` (BENCHMARKS.md). This runs the same generator and the same checks on the session
stack at 20 files of 500 lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bench.pipeline_load.__main__ import write_files
from tests.faults import pipeline_accounting
from tests.stack_support import unique

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults import Fault
    from tests.stack_support import StackHandle

pytestmark = pytest.mark.stack

FILES, LINES = 20, 500


@pytest.mark.scenario(
    "Many files dropped at once (reduced load test)",
    injected=f"{FILES} Segment files of {LINES} lines uploaded back to back into one tenant's bucket",
)
def test_many_files_dropped_at_once_land_with_no_loss_and_no_duplicates(
    local_stack: StackHandle, tmp_path: Path, fault: Fault
) -> None:
    # GIVEN a fresh tenant and 20 generated Segment exports (unique messageIds, ~15% identify calls)
    tenant = local_stack.add_tenant()
    root = tmp_path / unique("bulk")
    write_files(root, FILES, LINES)

    # WHEN they are all dropped at once and the pipeline settles
    local_stack.drop(tenant, root)
    local_stack.wait(timeout=600)

    # THEN every file is loaded, every line is one row, and the deduplicated view has one row per event
    stats = local_stack.stats(tenant)
    assert stats["files"] == {"loaded": FILES}
    assert stats["lines"] == FILES * LINES
    assert stats["rejected_lines"] == 0 and stats["duplicates"] == 0
    assert stats["events"] + stats["user_property_rows"] == FILES * LINES
    measured = pipeline_accounting(local_stack, tenant, FILES * LINES)
    fault.report(
        f"all {FILES} files loaded; {stats['events']} events and {stats['user_property_rows']} user-property rows",
        lost=measured["lost"], duplicated=measured["duplicated"],
    )
