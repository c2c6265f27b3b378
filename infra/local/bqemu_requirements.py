"""Reads the BigQuery emulator's pins from pyproject.toml, so that file stays the one place where versions live.

Used by scripts/bootstrap: ``python -m infra.local.bqemu_requirements packages|duckdb|extensions|extension-packages``.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _section() -> dict[str, object]:
    with PYPROJECT.open("rb") as handle:
        return dict(tomllib.load(handle)["tool"]["landline"])


def main(what: str) -> str:
    section = _section()
    extensions = [str(name) for name in section["bigquery-emulator-extensions"]]  # type: ignore[attr-defined]
    version = str(section["bigquery-emulator-extensions-version"])
    answers = {
        "packages": " ".join(str(p) for p in section["bigquery-emulator"]),  # type: ignore[attr-defined]
        "duckdb": str(section["bigquery-emulator-duckdb"]),
        "extensions": " ".join(extensions),
        "extension-packages": " ".join(
            [f"duckdb-extensions=={version}"] + [f"duckdb-extension-{name}=={version}" for name in extensions]
        ),
    }
    return answers[what]


if __name__ == "__main__":
    print(main(sys.argv[1]))
