"""The functions' lock (functions/requirements.txt): it matches pyproject.toml's pins, every entry carries hashes,
and the archives ship exactly it; a stale lock stops packaging with the command that fixes it."""

from __future__ import annotations

import zipfile
from typing import TYPE_CHECKING

import pytest

from infra.package import LOCK, NOT_DEPLOYED, deployed_pins, lock_problems, locked_versions, package

if TYPE_CHECKING:
    from pathlib import Path


def test_the_lock_pins_every_deployed_dependency_at_pyprojects_version_with_hashes() -> None:
    text = LOCK.read_text()
    assert lock_problems(text) == []
    locked = locked_versions(text)
    for name, requirement in deployed_pins().items():
        assert locked[name] == requirement.split("==")[1], name
    assert not NOT_DEPLOYED & set(locked)  # the CLI's typer is not deployed
    assert len(locked) > len(deployed_pins())  # transitive dependencies are pinned too


def test_a_changed_pin_or_a_missing_hash_is_a_stale_lock(tmp_path: Path) -> None:
    text = LOCK.read_text()
    name, requirement = next(iter(deployed_pins().items()))
    version = requirement.split("==")[1]
    assert lock_problems(text.replace(f"=={version} ", "==0.0.1 ", 1)) == [
        f"{name}: pyproject pins {version}, the lock 0.0.1"
    ]
    assert lock_problems(text + "leftpad==1.0.0\n") == ["1 pins without hashes"]
    assert lock_problems(text.replace(requirement.split("[")[0].split("==")[0] + "==", "other==", 1))[0] == (
        f"{name} is not in the lock"
    )


def test_archives_ship_the_lock_and_refuse_a_stale_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = package("ingest_file", tmp_path, "t1")
    with zipfile.ZipFile(archive) as z:
        assert z.read("requirements.txt").decode() == LOCK.read_text()
    stale = tmp_path / "requirements.txt"
    stale.write_text(LOCK.read_text().replace("--hash=sha256:", "--sha=", -1))
    monkeypatch.setattr("infra.package.LOCK", stale)
    with pytest.raises(SystemExit, match=r"the lock is stale .*python -m infra.package lock"):
        package("ingest_file", tmp_path, "t2")
