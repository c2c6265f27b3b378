"""checkov over infra/terraform (issue 13): no failed check, and every skip in the .tf files says why.

A check that does not fit this product is skipped inside the resource, with the reason on the same line:
`# checkov:skip=CKV_GCP_62: <why, for this product>`.

checkov cannot be installed into .venv: every release depends on bc-python-hcl2, which installs a top-level `hcl2`
package over python-hcl2's (the parser test_terraform.py and infra/terraform_schema.py import), and the newest one
(3.3.30) also requires packaging<24, which google-cloud-bigquery 3.47.0 (packaging>=24.2) and pytest 9.2.0
(packaging>=24) refuse. So the pinned checkov gets a venv of its own, build/checkov-venv, made here on first use (from
PyPI, about a minute) and kept until the pin changes. It runs offline: no Prisma Cloud download, no update check.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "infra" / "terraform"
CHECKOV = "checkov==3.3.30"
VENV = REPO / "build" / "checkov-venv"

# Any skip comment checkov would honour (its own pattern is `(checkov|bridgecrew):skip= *ID(:reason)?`) ...
ANY_SKIP = re.compile(r"(?:checkov|bridgecrew):skip", re.IGNORECASE)
# ... and the only form accepted here: one check id, a colon, and a reason of a few words.
SKIP = re.compile(r"#\s*checkov:skip=(?P<id>CKV2?_[A-Z0-9]+_\d+):\s*(?P<reason>\S.{19,})$")


def checkov_executable() -> Path:
    """The pinned checkov in its own venv, (re)installed when missing or when CHECKOV changes."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    stamp, exe = VENV / ".pin", VENV / "bin" / "checkov"
    with open(VENV.parent / "checkov-venv.lock", "w") as lock:  # two pytest runs at once build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists() and stamp.exists() and stamp.read_text() == CHECKOV:
            return exe
        steps = (
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", CHECKOV],
        )
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=540, check=False)
            assert done.returncode == 0, f"installing {CHECKOV} into {VENV} failed:\n{done.stdout}\n{done.stderr}"
        stamp.write_text(CHECKOV)
    return exe


@dataclass(frozen=True)
class Scan:
    summary: dict[str, Any]
    failed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    parsing_errors: list[str]


@pytest.fixture(scope="module")
def scan() -> Scan:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE"}
    args = ["-d", str(TF_DIR), "--framework", "terraform", "--output", "json", "--skip-download"]
    done = subprocess.run(
        [str(checkov_executable()), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    # 0: nothing failed, 1: something failed; anything else is checkov itself failing.
    assert done.returncode in (0, 1), f"checkov exited {done.returncode}:\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout)
    if isinstance(report, list):  # one entry per framework when there are several
        [report] = [r for r in report if r.get("check_type") == "terraform"]
    results = report["results"]
    return Scan(report["summary"], results["failed_checks"], results["skipped_checks"], results["parsing_errors"])


def test_checkov_parses_every_file_and_finds_no_failed_check(scan: Scan) -> None:
    # GIVEN checkov's scan of infra/terraform
    # THEN it is the pinned version, it read every file and every resource ...
    assert f"checkov=={scan.summary['checkov_version']}" == CHECKOV
    assert scan.parsing_errors == [], "checkov could not parse these files, so it checked nothing in them"
    assert scan.summary["resource_count"] > 0
    # ... and no check failed: fix the resource, or skip the check inside it with this product's reason
    failures = [
        f"{c['check_id']} {c['resource']} {c['file_path'].lstrip('/')}:{c['file_line_range'][0]} ({c['check_name']})"
        for c in scan.failed
    ]
    assert not failures, "failed checkov checks (fix, or `# checkov:skip=ID: reason` in the resource):\n" + "\n".join(
        failures
    )


def skip_comments() -> list[tuple[Path, int, str]]:
    """(file, line, text) of every skip comment in the .tf files."""
    return [
        (path, number, line.strip())
        for path in sorted(TF_DIR.glob("*.tf"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if ANY_SKIP.search(line)
    ]


def test_every_skip_names_one_check_and_says_why(scan: Scan) -> None:
    comments = skip_comments()
    assert comments, "no skip comments found: the skips of the checks that do not fit this product are gone"
    # GIVEN every skip comment in the .tf files
    for path, number, text in comments:
        where = f"{path.relative_to(REPO)}:{number}"
        # THEN each is `# checkov:skip=CKV_..._N: reason`, alone on its line, with a real reason
        match = SKIP.fullmatch(text)
        assert match, f"{where}: want `# checkov:skip=CKV_GCP_N: <why, for this product>`, got: {text}"
        # AND checkov honoured it: a check of that id was skipped on the resource that holds the comment
        assert any(
            s["check_id"] == match["id"]
            and Path(s["file_abs_path"]).resolve() == path.resolve()
            and s["file_line_range"][0] <= number <= s["file_line_range"][1]
            for s in scan.skipped
        ), f"{where}: checkov skipped no {match['id']} there (a stale skip, or outside its resource)"
    # AND checkov saw a reason on every skip (it reports "No comment provided" for a bare `checkov:skip=ID`)
    unexplained = [
        f"{s['check_id']} {s['resource']}"
        for s in scan.skipped
        if s["check_result"].get("suppress_comment", "").strip() in ("", "No comment provided")
    ]
    assert not unexplained, f"skipped without a reason: {unexplained}"
