"""The tables and views of shared/warehouse/schema.py as the files Terraform creates them from (issue 13):
``python -m shared.warehouse.terraform_schemas`` writes infra/terraform/schemas/.

- ``<table>.json``: the table's columns in BigQuery's JSON schema format (what ``google_bigquery_table.schema``
  takes: each field's ``to_api_repr()``, as a list);
- ``tables.json``: per table, its partition field, clustering, description and whether it is the raw-payload table
  (whose partitions expire after the tenant's ``privacy.rejected_retention_days``: client.py RAW_PAYLOAD_TABLE);
- ``views/<view>.sql``: the view's SQL as a Terraform ``templatefile()`` template of the per-tenant values: the
  fully qualified dataset (``${dataset}``) and the activity thresholds (``${low}``, ``${medium}``, ``${high}``);
  rendered, it is byte-equal to ``view_sql(view, dataset, activity)``;
- ``views.json``: per view, the other views it reads (infra/terraform/tables.tf creates the views that read views
  after the others).

schema.py stays the one definition: tests/unit/test_terraform_tables.py fails when the committed files differ from
what this writes. Regenerate after changing a row type, a table option or a view.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from shared.config import ActivityLevels
from shared.warehouse.client import RAW_PAYLOAD_TABLE
from shared.warehouse.schema import TABLES, VIEWS, view_sql

REPO = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = REPO / "infra" / "terraform" / "schemas"
COMMAND = "python -m shared.warehouse.terraform_schemas"

# The template variables tables.tf passes to templatefile() for each tenant, and the views' names for them.
DATASET_VAR = "dataset"  # "<project>.<dataset>", as view_sql takes it
THRESHOLD_VARS = ("low", "medium", "high")  # the tenant's ActivityLevels

_VIEW_REFERENCE = re.compile(r"`\{ds\}\.(\w+)`")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _escape_template(text: str) -> str:
    """Literal text for a Terraform template: `${` and `%{` would start an interpolation or a directive."""
    return text.replace("${", "$${").replace("%{", "%%{")


def view_template(name: str) -> str:
    """View ``name``'s SQL as a templatefile() template: view_sql with the per-tenant values left as variables."""
    # Render with markers that no SQL text contains, escape the literal text, then put the interpolations in.
    markers = {var: f"\x00{var}\x00" for var in (DATASET_VAR, *THRESHOLD_VARS)}
    levels = ActivityLevels.model_construct(**{v: markers[v] for v in THRESHOLD_VARS})  # type: ignore[arg-type]
    text = _escape_template(view_sql(name, markers[DATASET_VAR], levels))
    for var, marker in markers.items():
        text = text.replace(marker, "${" + var + "}")
    assert "\x00" not in text
    return text


def render_template(template: str, variables: dict[str, Any]) -> str:
    """What templatefile() makes of a template of this module (plain interpolations of variables, and the escapes);
    anything else in it fails, so a template this cannot render is not taken as rendered."""
    out, i = [], 0
    for m in re.finditer(r"\$\$\{|%%\{|\$\{([^}]*)\}|%\{", template):
        out.append(template[i : m.start()])
        token = m.group(0)
        if token in ("$${", "%%{"):
            out.append(token[1:])
        elif m.group(1) is not None and m.group(1) in variables:
            out.append(str(variables[m.group(1)]))
        else:
            raise ValueError(f"not a plain interpolation of a known variable: {token!r}")
        i = m.end()
    out.append(template[i:])
    return "".join(out)


def views_read(name: str) -> list[str]:
    """The other views view ``name`` reads (in VIEWS order)."""
    read = set(_VIEW_REFERENCE.findall(VIEWS[name]))
    return [v for v in VIEWS if v in read and v != name]


def generated() -> dict[str, str]:
    """Every file of infra/terraform/schemas/ (path relative to it -> content)."""
    files = {f"{spec.name}.json": _json([f.to_api_repr() for f in spec.schema]) for spec in TABLES}
    files["tables.json"] = _json(
        {
            spec.name: {
                "partition_field": spec.partition_field,
                "clustering": spec.clustering,
                "description": spec.description,
                "raw_payload": spec.name == RAW_PAYLOAD_TABLE,
            }
            for spec in TABLES
        }
    )
    for spec in TABLES:
        if spec.name == RAW_PAYLOAD_TABLE and not spec.partition_field:
            raise ValueError(f"{RAW_PAYLOAD_TABLE} must be partitioned: its partitions expire")
    views: dict[str, Any] = {}
    for name in VIEWS:
        reads = views_read(name)
        # tables.tf has two rounds of views: those that read only tables, then those that read those.
        deeper = [v for v in reads if views_read(v)]
        if deeper:
            raise ValueError(f"view {name} reads views that read views ({deeper}): give tables.tf a third round")
        views[name] = {"reads_views": reads}
        files[f"views/{name}.sql"] = view_template(name)
    files["views.json"] = _json(views)
    return files


def write(directory: Path = SCHEMAS_DIR) -> list[Path]:
    """Write the files, and remove generated files of tables or views that no longer exist; returns what changed."""
    files = generated()
    changed = []
    for rel, text in files.items():
        path = directory / rel
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    for path in [*directory.glob("*.json"), *directory.glob("views/*.sql")]:
        if path.relative_to(directory).as_posix() not in files:
            path.unlink()
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        print(f"usage: {COMMAND}  (writes {SCHEMAS_DIR.relative_to(REPO)}/)", file=sys.stderr)
        return 2
    changed = write()
    for path in changed:
        print(f"wrote {path.relative_to(REPO)}")
    if not changed:
        print(f"{SCHEMAS_DIR.relative_to(REPO)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
