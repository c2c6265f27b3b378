"""cloudbuild.yaml against the Cloud Build config schema (SchemaStore's, vendored by check-jsonschema, so no network),
plus what a schema cannot say: step ids are unique, waitFor names an earlier step, and every user substitution the
steps use is declared (Cloud Build fails a build on an undeclared ``${_X}`` only when it runs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.local.stack_config import REPO

CLOUDBUILD = REPO / "cloudbuild.yaml"
CHECK = Path(sys.executable).with_name("check-jsonschema")


def schema_errors(path: Path) -> str:
    """check-jsonschema's report for ``path`` against the Cloud Build schema ('' when it validates)."""
    result = subprocess.run([str(CHECK), "--builtin-schema", "vendor.cloudbuild", str(path)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    return "" if result.returncode == 0 else result.stdout + result.stderr


def structure_errors(build: dict[str, Any]) -> list[str]:
    errors, seen = [], set()
    declared = set(build.get("substitutions") or {})
    for step in build["steps"]:
        step_id = step.get("id")
        if step_id in seen:
            errors.append(f"step id {step_id!r} repeated")
        errors += [f"step {step_id!r} waits for {w!r}, not an earlier step" for w in step.get("waitFor", [])
                   if w != "-" and w not in seen]  # fmt: skip
        seen.add(step_id)
        used = set(re.findall(r"\$\{(_[A-Z0-9_]+)\}", yaml.safe_dump(step)))
        errors += [f"step {step_id!r} uses ${{{name}}}, not declared in substitutions" for name in sorted(used - declared)]
    errors += [f"substitution {name!r} must start with _" for name in declared if not name.startswith("_")]
    return errors


def test_cloudbuild_matches_the_cloud_build_schema_and_its_own_references() -> None:
    assert schema_errors(CLOUDBUILD) == ""
    assert structure_errors(yaml.safe_load(CLOUDBUILD.read_text())) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace("    entrypoint: bash", "    entrypiont: bash", 1), "'entrypiont' was unexpected"),
        (lambda t: t.replace("steps:", "stepz:", 1), "'steps' is a required property"),
        (lambda t: t.replace("    args: [\"cp\"", "    args: \"cp\" #", 1), "is not of type 'array'"),
    ],
)
def test_a_misspelt_or_mistyped_build_fails_the_schema(tmp_path: Path, change: Any, expected: str) -> None:
    broken = tmp_path / "cloudbuild.yaml"
    broken.write_text(change(CLOUDBUILD.read_text()))
    assert expected in schema_errors(broken)


def test_a_dangling_wait_or_an_undeclared_substitution_is_found() -> None:
    build = yaml.safe_load(CLOUDBUILD.read_text())
    build["steps"][1]["waitFor"] = ["no-such-step"]
    build["steps"][2]["args"] = ["cp", "${_UNDECLARED}"]
    assert structure_errors(build) == [
        f"step {build['steps'][1]['id']!r} waits for 'no-such-step', not an earlier step",
        f"step {build['steps'][2]['id']!r} uses ${{_UNDECLARED}}, not declared in substitutions",
    ]
