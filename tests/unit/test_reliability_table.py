"""RELIABILITY.md is generated from measured scenario results, and stays in step with the scenario tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.reliability_table import FINDINGS, ROOT, TableError, render


def _result(name: str, *, lost: int = 0, duplicated: int = 0, passed: bool = True,
            findings: list[int] | None = None) -> dict[str, object]:
    return {"scenario": name, "injected": "x", "findings": findings or [], "test": f"tests/x.py::{name}",
            "outcome": "ok", "lost": lost, "duplicated": duplicated, "details": {}, "passed": passed}


def _covering_all() -> list[dict[str, object]]:
    return [_result("covers everything", findings=list(FINDINGS))]


def test_a_run_that_lost_or_duplicated_anything_produces_no_table() -> None:
    for bad in (_result("lossy", lost=1), _result("dupe", duplicated=2), _result("broken", passed=False)):
        with pytest.raises(TableError, match=str(bad["scenario"])):
            render([*_covering_all(), bad])


def test_a_high_or_medium_finding_without_scenario_or_argument_is_refused() -> None:
    uncovered = [n for n, (sev, _, why) in FINDINGS.items() if sev in "HM" and not why]
    if not uncovered:
        pytest.skip("every high/medium finding is argued")
    with pytest.raises(TableError, match="neither a scenario nor an argument"):
        render([_result("covers nothing")])


def test_rows_carry_the_measured_numbers_and_cite_findings() -> None:
    text = render([*_covering_all(), _result("poison line", findings=[1])], commit="abc1234")
    assert "| poison line | x | ok | 0 | 0 | 1 |" in text
    assert "2 scenarios, 0 records lost, 0 duplicated." in text
    assert re.search(r"\| 1 \| H \| .* \| scenarios #\d+, #\d+[; ]", text)


def _scenario_names_in_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "scenario"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(str(node.args[0].value))
    return names


def test_reliability_md_lists_exactly_the_scenarios_the_tests_define() -> None:
    path: Path = ROOT / "RELIABILITY.md"
    rows = [line.split(" | ")[1].replace("\\|", "|") for line in path.read_text().splitlines()
            if re.match(r"^\| \d+ \| ", line) and line.count(" | ") >= 7]
    in_table = set(rows)
    in_tests = _scenario_names_in_tests()
    assert in_tests - in_table == set(), "scenarios missing from RELIABILITY.md: run `make reliability`"
    assert in_table - in_tests == set(), "RELIABILITY.md lists scenarios no test defines: run `make reliability`"
    assert len(rows) >= 25
