"""Builds one deployable archive per function: its main.py, the shared/ library, and requirements.txt, which is the
hashed lock of what the functions need (``functions/requirements.txt``). Used by cloudbuild.yaml.

    python -m infra.package OUT_DIR [VERSION]   # the archives (refused if the lock is stale)
    python -m infra.package lock                # re-lock after changing a pin in pyproject.toml

pyproject.toml stays the one place where versions are chosen; the lock adds every transitive dependency at an exact
version with the hashes of its files (uv, universal for Python 3.11, the functions' runtime), so a deploy next month
installs byte-for-byte what was tested, and ``pip install --require-hashes`` refuses anything else.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "functions" / "requirements.txt"
PYTHON = "3.11"  # infra/terraform/functions.tf: runtime = "python311"
# What the functions do not need at run time (the CLI, infra/local/cli.py, only).
NOT_DEPLOYED = {"typer"}
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;\\]+)")


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def deployed_pins() -> dict[str, str]:
    """pyproject's runtime dependencies the functions need: name -> the requirement as written."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_name(d): d for d in deps if _name(d) not in NOT_DEPLOYED}


def _entries(text: str) -> list[str]:
    """A requirements file's entries, continuation lines (a pin's ``--hash=`` options) joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def locked_versions(text: str) -> dict[str, str]:
    """name -> version of every package a lock file pins."""
    return {m.group(1).lower().replace("_", "-"): m.group(3) for e in _entries(text) if (m := _PIN.match(e))}


def lock_problems(text: str | None = None) -> list[str]:
    """Why the lock does not match pyproject.toml (empty: it does)."""
    text = LOCK.read_text() if text is None and LOCK.exists() else text
    if text is None:
        return [f"{LOCK.relative_to(REPO)} is missing"]
    locked = locked_versions(text)
    problems = []
    for name, requirement in deployed_pins().items():
        wanted = requirement.split("==", 1)[1].split(";")[0].strip() if "==" in requirement else None
        if name not in locked:
            problems.append(f"{name} is not in the lock")
        elif wanted is not None and locked[name] != wanted:
            problems.append(f"{name}: pyproject pins {wanted}, the lock {locked[name]}")
    unhashed = [entry for entry in _entries(text) if "--hash=sha256:" not in entry]
    if unhashed:
        problems.append(f"{len(unhashed)} pins without hashes")
    return problems


def lock() -> Path:
    """Resolve the deployed pins into ``LOCK`` with hashes (needs PyPI)."""
    uv = Path(sys.executable).with_name("uv")
    with tempfile.NamedTemporaryFile("w", suffix=".in") as source:
        source.write("\n".join(deployed_pins().values()) + "\n")
        source.flush()
        subprocess.run(
            [str(uv), "pip", "compile", source.name, "--generate-hashes", "--universal", "--python-version", PYTHON,
             "--no-annotate", "--quiet", "--custom-compile-command", "python -m infra.package lock", "-o", str(LOCK)],
            check=True,
        )  # fmt: skip
    text = LOCK.read_text().replace(source.name, "pyproject.toml")
    LOCK.write_text(text)
    return LOCK


def requirements() -> str:
    """The archives' requirements.txt: the lock, refused when it no longer matches pyproject.toml."""
    problems = lock_problems()
    if problems:
        stale = "; ".join(problems)
        raise SystemExit(f"infra.package: the lock is stale ({stale}): run `python -m infra.package lock`")
    return LOCK.read_text()


def package(function: str, out_dir: Path, version: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{function}-{version}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(REPO / "functions" / function / "main.py", "main.py")
        archive.writestr("requirements.txt", requirements())
        for path in sorted((REPO / "shared").rglob("*.py")):
            archive.write(path, path.relative_to(REPO).as_posix())
    return target


def functions() -> list[str]:
    return sorted(p.name for p in (REPO / "functions").iterdir() if (p / "main.py").exists())


def main() -> None:
    if sys.argv[1:2] == ["lock"]:
        print(lock())
        return
    out_dir = Path(sys.argv[1])
    version = sys.argv[2] if len(sys.argv) > 2 else "dev"
    for function in functions():
        print(package(function, out_dir, version))


if __name__ == "__main__":
    main()
