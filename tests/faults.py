"""Fault scenarios: tests that inject one failure and measure what was lost and what was duplicated.

A scenario test is marked and reports what it measured; the session writes every scenario's result to
``build/reliability.json``, and ``python -m tests.reliability_table`` turns that file into RELIABILITY.md. So the
table is generated from a test run, never typed by hand:

    @pytest.mark.scenario("One poison line inside a 1,000-line batch", injected="a line nested 5,000 deep", findings=[1])
    def test_...(local_stack, fault):
        ...
        fault.report("only that line is rejected (invalid_json); 999 rows load", **pipeline_accounting(...))

``lost`` and ``duplicated`` must be measured by the test (from the warehouse, the fake providers' counters, the ledger),
not typed: the helpers below count them. A scenario that does not call ``fault.report`` fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.stack_support import StackHandle


@dataclass
class FaultReport:
    scenario: str
    injected: str
    findings: list[int]
    test: str
    outcome: str | None = None
    lost: int | None = None
    duplicated: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Fault:
    """Handed to a scenario test; ``report`` records the measured outcome."""

    def __init__(self, report: FaultReport) -> None:
        self._report = report

    def report(self, outcome: str, *, lost: int, duplicated: int, **details: Any) -> None:
        """``outcome``: what happened, in a sentence; ``lost``/``duplicated``: records, as measured by the test."""
        self._report.outcome = outcome
        self._report.lost = int(lost)
        self._report.duplicated = int(duplicated)
        self._report.details = details
        # the details (deferred, sent, delivered...) say where the missing records went
        assert lost == 0, f"{lost} records lost: {outcome}; measured {details}"
        assert duplicated == 0, f"{duplicated} records duplicated: {outcome}; measured {details}"


REPORTS_KEY = pytest.StashKey[FaultReport]()


def scenario_report(item: pytest.Item) -> FaultReport | None:
    marker = item.get_closest_marker("scenario")
    if marker is None:
        return None
    if REPORTS_KEY not in item.stash:
        name = marker.args[0] if marker.args else marker.kwargs["name"]
        item.stash[REPORTS_KEY] = FaultReport(
            scenario=name,
            injected=marker.kwargs.get("injected", ""),
            findings=list(marker.kwargs.get("findings", [])),
            test=item.nodeid,
        )
    return item.stash[REPORTS_KEY]


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Fault:
    report = scenario_report(request.node)
    if report is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses the fault fixture without @pytest.mark.scenario")
    return Fault(report)


# -- measuring ------------------------------------------------------------------------------------------------------

_POSITIONS_SQL = """
SELECT
  (SELECT COUNT(DISTINCT CONCAT(IFNULL(origin, ''), '#', CAST(line_number AS STRING))) FROM events
     WHERE line_number IS NOT NULL) AS event_positions,
  (SELECT COUNT(DISTINCT CONCAT(IFNULL(origin, ''), '#', CAST(line_number AS STRING))) FROM user_properties
     WHERE line_number IS NOT NULL) AS user_positions,
  (SELECT COUNT(DISTINCT CONCAT(IFNULL(r.origin, ''), '#', CAST(r.line_number AS STRING))) FROM rejected_deduped r
     LEFT JOIN (SELECT DISTINCT origin, line_number FROM events
                UNION DISTINCT SELECT DISTINCT origin, line_number FROM user_properties) l
       ON l.origin = r.origin AND l.line_number = r.line_number
     WHERE l.origin IS NULL AND r.line_number IS NOT NULL) AS rejected_positions,
  (SELECT COUNT(*) - COUNT(DISTINCT event_instance_id) FROM events_deduped) AS duplicate_event_rows
"""


def pipeline_accounting(stack: StackHandle, tenant: str, expected_lines: int) -> dict[str, int]:
    """Lines a test put in (``expected_lines``, known from its input) against what the tenant's dataset accounts for.

    A line is accounted for once if its position (origin, line number) holds an event, a user-properties row or an
    open rejection (a counted duplicate holds an event row at its own position). ``lost`` = expected - accounted
    (never negative: more positions than lines is a duplicate); ``duplicated`` = extra rows for one event id in the
    deduplicated view users read, plus positions beyond the input."""
    [row] = stack.query(tenant, _POSITIONS_SQL)
    accounted = int(row["event_positions"]) + int(row["user_positions"]) + int(row["rejected_positions"])
    return {
        "lost": max(expected_lines - accounted, 0),
        "duplicated": int(row["duplicate_event_rows"]) + max(accounted - expected_lines, 0),
        "accounted": accounted,
        "expected": expected_lines,
    }


def fake_deliveries(stack: StackHandle) -> dict[str, Any]:
    """The provider fakes' counters (every accepted send, per provider)."""
    return dict(httpx.get(f"{stack.stack.cfg.url('fakes')}/_fake/stats", timeout=10).json())


def duplicate_deliveries(by_key: dict[str, int]) -> int:
    """Sends beyond the first for each message (or token): what a user would see twice."""
    return sum(max(n - 1, 0) for n in by_key.values())


def write_results(reports: list[FaultReport], path: str) -> None:
    """Merge ``reports`` into the file; several pytest-xdist workers may finish at once, so under an exclusive lock."""
    import fcntl
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old: dict[str, Any] = {}
        if target.exists():
            try:
                old = {r["test"]: r for r in json.loads(target.read_text())}
            except (ValueError, KeyError, TypeError):
                old = {}
        for r in reports:  # a partial run updates its own scenarios and keeps the others'
            old[r.test] = r.as_dict()
        target.write_text(json.dumps(sorted(old.values(), key=lambda r: r["test"]), indent=2, default=str))
