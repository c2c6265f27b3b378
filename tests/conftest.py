"""Session fixtures. Tests marked ``stack`` share one real local stack, started here in a private state folder on
free ports, and stopped (every process) at the end of the session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.stack_support import StackHandle, free_port_base

if TYPE_CHECKING:
    from collections.abc import Iterator

    from infra.local.stack import Stack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    from infra.local.stack import Stack

    home = tmp_path_factory.mktemp("landline-home")
    stack = Stack(home=home, port_base=free_port_base())
    try:
        stack.up(timeout=90)
        _SESSION_STACKS.append(stack)
        yield StackHandle(stack)
    finally:
        _SESSION_STACKS.clear()
        stack.down()


_SESSION_STACKS: list[Stack] = []


@pytest.fixture(scope="module", autouse=True)
def _purge_the_modules_tenants() -> Iterator[None]:
    """After each test module, delete every tenant it made on the session stack (registry entry, buckets, dataset).

    The BigQuery emulator slows down as its catalog grows: on this machine `tenant add` took 4 s with one tenant and
    16 s with twenty, a query 1.9 s and 3.8 s, and back to 5 s and 2.1 s once the nineteen were purged (in 1.4 s). A
    worker of the full suite makes hundreds of tenants, and the tick reads every registered one; without this the
    suite took 68 minutes. Modules never share tenants (``--dist loadfile`` keeps a module on one worker)."""
    yield
    if not _SESSION_STACKS:
        return
    import json
    import warnings

    from infra.local.stack import activate
    from infra.local.tenant_admin import remove_tenant

    stack = _SESSION_STACKS[0]
    activate(stack.cfg)
    path = stack.cfg.paths.tenants
    for name in json.loads(path.read_text() or "{}") if path.exists() else {}:
        if name == "default":  # `landline up` made it; some modules expect it
            continue
        try:
            remove_tenant(stack.cfg, name, purge=True)
        except Exception as exc:  # a leftover only costs time; the next module tries again
            warnings.warn(f"could not purge tenant {name}: {exc}", stacklevel=1)


@pytest.fixture(autouse=True)
def _point_library_at_session_stack(request: pytest.FixtureRequest) -> None:
    """Tests that start a private stack (lifecycle, memory) re-point this process's clients; point them back."""
    if "local_stack" in request.fixturenames:
        from infra.local.stack import activate

        activate(request.getfixturevalue("local_stack").stack.cfg)


# -- fault scenarios (tests/faults.py): collect what each one measured, write build/reliability.json --------------
from tests.faults import fault, scenario_report, write_results  # noqa: E402, F401  (fault: a fixture for scenarios)

_RELIABILITY_JSON = "build/reliability.json"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = scenario_report(item)
    if report is None:
        return
    rep = outcome.get_result()
    if rep.when == "call":
        if rep.passed and report.outcome is None:
            rep.outcome = "failed"
            rep.longrepr = f"scenario {report.scenario!r} passed without calling fault.report(...)"
        report.passed = rep.passed
    elif rep.when == "setup" and rep.failed:
        report.passed = False


def pytest_sessionfinish(session: pytest.Session) -> None:
    import os

    reports = [r for item in session.items if (r := scenario_report(item)) is not None and r.passed is not None]
    if reports:
        write_results(reports, os.environ.get("LANDLINE_RELIABILITY_JSON", _RELIABILITY_JSON))
