"""The deployed artifacts run. Each function archive (``python -m infra.package``, what cloudbuild.yaml deploys) is
unpacked, installed into a clean virtual environment from its own requirements.txt only (the hashed lock, with
``--require-hashes``), and served by functions-framework as a private stack's functions; then a Segment file, a
scheduled push and a tick go through them as real CloudEvents. A module or dependency missing from an archive fails
here, not in a deploy."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING

import pytest

from infra.local.stack_config import REPO
from infra.package import functions
from tests.integration.push_support import identify, schedule
from tests.stack_support import StackHandle, free_port_base, segment_file, unique

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archives unpacked (``<dir>/<function>/``) and one clean venv (``<dir>/venv``) installed from their lock."""
    root = tmp_path_factory.mktemp("deployed")
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "infra.package", str(dist), "test"], check=True, cwd=REPO)
    requirements = set()
    for function in functions():
        with zipfile.ZipFile(dist / f"{function}-test.zip") as archive:
            archive.extractall(root / function)
        requirements.add((root / function / "requirements.txt").read_text())
    assert len(requirements) == 1  # one lock for every function: one venv serves them all
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    subprocess.run(
        [str(root / "venv" / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "--require-hashes",
         "--no-input", "-r", str(root / functions()[0] / "requirements.txt")],
        check=True, timeout=900,
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def archive_stack(deployed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    from infra.local.stack import Stack, activate

    stack = Stack(home=tmp_path_factory.mktemp("archive-home"), port_base=free_port_base(), functions_from=deployed)
    try:
        stack.up(timeout=120)
        activate(stack.cfg)
        yield StackHandle(stack)
    finally:
        stack.down()


def test_the_clean_environment_has_only_what_the_lock_names(deployed: Path) -> None:
    python = str(deployed / "venv" / "bin" / "python")
    # GIVEN the venv the archives were installed into / WHEN it is asked what it can import
    probe = "import importlib.util as u, json; print(json.dumps({m: bool(u.find_spec(m)) for m in %r}))"
    modules = ["functions_framework", "google.cloud.bigquery", "pydantic", "liquid", "infra", "shared", "typer"]
    found = json.loads(subprocess.run([python, "-c", probe % modules], capture_output=True, text=True, check=True,
                                      cwd=deployed).stdout)  # fmt: skip
    # THEN the runtime libraries are there, and neither the repository's code nor the CLI's libraries are
    assert found == {"functions_framework": True, "google.cloud.bigquery": True, "pydantic": True, "liquid": True,
                     "infra": False, "shared": False, "typer": False}  # fmt: skip
    # AND each archive holds its entry point and the shared library, nothing of infra/ or tests/
    for function in functions():
        names = {p.relative_to(deployed / function).as_posix() for p in (deployed / function).rglob("*.py")}
        assert "main.py" in names and "shared/config.py" in names
        assert not any(n.startswith(("infra/", "tests/", "bench/")) for n in names)


def test_a_file_and_a_push_go_through_the_archived_functions(archive_stack: StackHandle, tmp_path: Path) -> None:
    from pathlib import Path

    # GIVEN a stack whose three functions are the archives, served from the clean venv
    deployed = str(archive_stack.stack.functions_from)
    for function in functions():
        pid = archive_stack.stack.pid(function)
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert any(arg.startswith(f"{deployed}/venv/") for arg in argv[:2]), argv
        assert f"{deployed}/{function}/main.py" in argv, argv
    # WHEN a Segment file with a contact and an event is dropped into a tenant's bucket (ingest_file, load_events)
    tenant = archive_stack.add_tenant(push_provider="fcm", quiet_hours="off")
    contact = unique("c")
    track = {"type": "track", "userId": contact, "messageId": unique("m"), "event": "Signed Up",
             "timestamp": "2024-05-01T10:00:00Z", "properties": {"plan": "pro"}}  # fmt: skip
    archive_stack.drop(tenant, segment_file(tmp_path, [identify(contact, f"tok-{contact}"), track]))
    archive_stack.wait()
    # THEN the event and the contact are rows
    [event] = archive_stack.query(tenant, "SELECT contact_id, event_name FROM events")
    assert (event["contact_id"], event["event_name"]) == (contact, "Signed Up")
    [user] = archive_stack.query(tenant, "SELECT contact_id, push_token FROM users_latest")
    assert (user["contact_id"], user["push_token"]) == (contact, f"tok-{contact}")
    # WHEN a push is scheduled for the contact and the scheduler ticks (send_due)
    schedule(tenant, [{"message_id": unique("msg"), "contact_id": contact, "title": "Hi", "body": "Welcome"}])
    archive_stack.cli("tick", "--tenant", tenant)
    archive_stack.wait()
    # THEN the fake FCM got it and the outcome is recorded
    [send] = archive_stack.query(tenant, "SELECT contact_id, status FROM message_sends")
    assert (send["contact_id"], send["status"]) == (contact, "sent")
