"""Builds one deployable archive per function: its main.py, the shared/ library, and a requirements.txt generated
from pyproject.toml (the one place where versions are pinned). Used by cloudbuild.yaml.

    python -m infra.package OUT_DIR [VERSION]
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What the functions do not need at run time (the CLI, infra/local/cli.py, only).
NOT_DEPLOYED = {"typer"}


def requirements() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    keep = [d for d in deps if d.split("[")[0].split("=")[0].strip() not in NOT_DEPLOYED]
    return "\n".join(keep) + "\n"


def package(function: str, out_dir: Path, version: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{function}-{version}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(REPO / "functions" / function / "main.py", "main.py")
        archive.writestr("requirements.txt", requirements())
        for path in sorted((REPO / "shared").rglob("*.py")):
            archive.write(path, path.relative_to(REPO).as_posix())
    return target


def main() -> None:
    out_dir = Path(sys.argv[1])
    version = sys.argv[2] if len(sys.argv) > 2 else "dev"
    for function in sorted(p.name for p in (REPO / "functions").iterdir() if (p / "main.py").exists()):
        print(package(function, out_dir, version))


if __name__ == "__main__":
    main()
