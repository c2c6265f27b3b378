"""Least privilege in infra/terraform (issue 13, review findings 13, 14 and 32): which tables each function's account
may write or read, per region; no dataset-wide BigQuery roles; dataset ACLs with explicit owners; and deploys that
apply only a reviewed, saved plan with images pinned by digest.

"Tables a function uses" come from the code, not from the Terraform: USES below is checked against what the modules
each function imports (functions/<fn>/main.py and everything under shared/ it reaches) build as rows for the writer
(shared/warehouse/rows.py row types) and name in their SQL, and Terraform's local.function_tables must equal it.
The locals are evaluated by the terraform binary in a provider-free module (test_terraform.py's _module_of_locals).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import shared.warehouse.rows as rows_module
from shared.config import tenant_buckets
from tests.unit.test_terraform import (
    EXPECTED_BULK_ROLES,
    SAMPLE_TENANTS,
    TF_DIR,
    TOPOLOGY_FILE,
    Terraform,
    _module_of_locals,
    environment,
    filter_for,
    function_deployments,
    parse_tf,
    render,
    tenants_value,
    unwrap,
)

REPO = Path(__file__).resolve().parents[2]
TABLES = set(json.loads((TF_DIR / "schemas" / "tables.json").read_text()))
VIEWS = set(json.loads((TF_DIR / "schemas" / "views.json").read_text()))

# What each function does with which tenant table or view. A table here that the code does not use, or one the code
# uses that is missing, fails test_uses_are_what_the_code_writes_and_queries.
USES: dict[str, dict[str, set[str]]] = {
    # ingest/pipeline.py: write_rows([FileLedgerRow]); a refused row becomes a `rejected` row (writer.py)
    "ingest_file": {"writes": {"files", "rejected"}, "reads": set()},
    # load/pipeline.py: write_rows of the parsers' EventRow / UserPropertiesRow and its RejectedRow
    "load_events": {"writes": {"events", "user_properties", "rejected"}, "reads": set()},
    "send_due": {
        "writes": {
            "message_schedule", "message_sends", "invalid_tokens", "rejected",  # push/schedule.py, tick.py, shards.py
            "audiences", "campaigns", "campaign_launches",  # campaigns/store.py, launch.py (campaign requests)
            "campaign_assignments_all",  # campaigns/launch.py INSERT ... SELECT (and message_schedule)
        },
        "reads": {
            "message_schedule", "message_sends", "invalid_tokens", "user_properties",  # push/pending.py, tick.py
            "users_latest", "campaign_launched", "contact_activity", "events_deduped",  # views it queries
            "campaign_assignments",  # campaigns/waves.py: the next wave's shares (results.py's member counts)
            "audiences", "campaigns", "campaign_assignments_all",  # campaigns/store.py, launch.py
            "campaign_launches", "events",  # under campaign_launched / events_deduped (no authorised views)
        },
    },
}
# ingest_file imports the parsers (shared.sources: how a file's lines are read) but writes only its ledger rows.
IMPORTED_NOT_WRITTEN = {"ingest_file": {"events", "user_properties"}}
ROW_TABLES = {
    name: cls.table
    for name, cls in vars(rows_module).items()
    if isinstance(cls, type) and issubclass(cls, rows_module.Row) and cls is not rows_module.Row
}
SQL_NAME = re.compile(r"\b(?:FROM|JOIN|INTO)\s+`?(?:\{\w+\}\.)?(\w+)", re.I)
TABLE_ARG = re.compile(r"""\btable=["'](\w+)["']""")


def _module_file(name: str) -> Path | None:
    for path in (REPO / (name.replace(".", "/") + ".py"), REPO / name.replace(".", "/") / "__init__.py"):
        if path.exists():
            return path
    return None


def reachable_modules(function: str) -> set[Path]:
    """functions/<function>/main.py and every shared module it imports, directly or not (lazy imports included)."""
    seen: set[Path] = set()
    todo = [REPO / "functions" / function / "main.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shared"):
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("shared")]
            todo += [p for p in map(_module_file, names) if p is not None]
    return seen


def view_reads(view: str) -> set[str]:
    """The tables and views a view's SQL reads, and what those read."""
    sql = (TF_DIR / "schemas" / "views" / f"{view}.sql").read_text()
    direct = set(re.findall(r"\$\{dataset\}\.(\w+)", sql))
    return direct | {name for v in direct & VIEWS for name in view_reads(v)}


def code_uses(function: str) -> dict[str, set[str]]:
    """What the function's modules write (row types built, INSERT INTO) and query (FROM / JOIN, table="...")."""
    writes, reads = set(), set()
    for path in reachable_modules(function):
        if path == REPO / "shared" / "warehouse" / "schema.py":
            continue  # every view's definition, not a query the function runs (view_reads follows the views)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ROW_TABLES:
                writes.add(ROW_TABLES[node.func.id])
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in SQL_NAME.finditer(node.value):
                    name = match.group(1)
                    if name in TABLES | VIEWS:
                        into = node.value[match.start() : match.start() + 4].upper() == "INTO"
                        (writes if into else reads).add(name)
                reads |= {name for name in TABLE_ARG.findall(node.value) if name in TABLES | VIEWS}
            if (isinstance(node, ast.keyword) and node.arg == "table" and isinstance(node.value, ast.Constant)
                    and node.value.value in TABLES | VIEWS):  # fmt: skip
                reads.add(node.value.value)
    if writes:
        writes.add("rejected")  # writer.py: a row BigQuery refuses is written to `rejected` instead
    reads |= {name for view in reads & VIEWS for name in view_reads(view)}
    return {"writes": writes - IMPORTED_NOT_WRITTEN.get(function, set()), "reads": reads}


@pytest.fixture(scope="module")
def tf() -> Terraform:
    return Terraform.from_files({p.name: parse_tf(p.read_text()) for p in sorted(TF_DIR.glob("*.tf"))})


def terraform_eval(
    tmp_path: Path, expression: str, tenants: dict[str, Any] = SAMPLE_TENANTS, variables: dict[str, Any] | None = None
) -> Any:
    """`expression` over the deployment's variables and locals (`variables` besides the tenants), evaluated by
    terraform console."""
    module = _module_of_locals(tmp_path)
    (module / "sample.tfvars.json").write_text(json.dumps({"tenants": tenants, **(variables or {})}))
    result = subprocess.run(
        ["terraform", "console", "-var", "project=proj", "-var", "source_version=v", "-var-file=sample.tfvars.json"],
        input=f"jsonencode({expression})", cwd=module, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "TF_CLI_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(json.loads(result.stdout.strip().splitlines()[-1]))


needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary")


# --- which tables ---------------------------------------------------------------------------------------------------


def test_uses_are_what_the_code_writes_and_queries() -> None:
    # GIVEN each function's modules WHEN their rows and SQL are read THEN they use exactly USES' tables and views
    for function, uses in USES.items():
        assert code_uses(function) == uses, function
        assert uses["writes"] <= TABLES and uses["reads"] <= TABLES | VIEWS, function
    # ... and ingest_file's one write is its ledger row (what IMPORTED_NOT_WRITTEN leaves out is the parsers')
    assert "write_rows(bigquery_client(), self.tenant, [row]" in (REPO / "shared/ingest/pipeline.py").read_text()


def test_a_table_the_code_does_not_use_or_a_missing_one_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN USES with a table a function never touches, or without one it does THEN the comparison fails
    assert code_uses("ingest_file") != {"writes": {"files", "rejected", "message_sends"}, "reads": set()}
    assert code_uses("send_due")["reads"] - {"events"} != USES["send_due"]["reads"]


def test_terraform_grants_each_function_the_tables_it_uses(tf: Terraform) -> None:
    terraform = {fn: {use: set(tables) for use, tables in uses.items()} for fn, uses in tf.locals["function_tables"].items()}
    assert terraform == USES


@needs_terraform
def test_each_deployment_is_granted_only_its_regions_tenants_tables(tmp_path: Path) -> None:
    # GIVEN the sample tenants (two in europe-west1, one in us-central1) WHEN terraform computes the table grants
    grants = terraform_eval(tmp_path, "local.table_grants")
    tenants = SAMPLE_TENANTS
    # THEN each is one deployment's use of one table of a tenant in the deployment's region, and all of USES is there
    expected = {
        f"{fn}@{t['region']}/{tenant}/{table}/{use[:-1]}": {
            "deployment": f"{fn}@{t['region']}", "tenant": tenant, "table": table, "use": use[:-1],
        }
        for fn, uses in USES.items()
        for use, tables in uses.items()
        for table in tables
        for tenant, t in tenants.items()
    }  # fmt: skip
    assert grants == expected


def test_no_function_gets_a_dataset_wide_or_project_wide_data_role(tf: Terraform) -> None:
    text = "\n".join(p.read_text() for p in sorted(TF_DIR.glob("*.tf")))
    # GIVEN every .tf file THEN no dataset IAM resource (it would fight the datasets' authoritative `access`) ...
    assert not [k for k in tf.resources if k.startswith("google_bigquery_dataset_iam_")]
    assert not [k for k in tf.resources if k.startswith("google_bigquery_dataset_access")]
    # ... no data role that reads, edits or deletes every table of a dataset or project
    for role in ("dataEditor", "dataOwner", "admin", "user", "dataViewer", "filteredDataViewer"):
        for m in re.finditer(rf'"roles/bigquery\.{role}"', text):
            line = text[: m.start()].count("\n")
            context = text.splitlines()[line]
            assert role == "dataViewer" and "each.value.use ==" in context, f"roles/bigquery.{role}: {context}"
    # ... the only project-wide grants are jobUser (bigquery.jobs.create), for send_due's deployments and for the
    # operators' bulk load jobs (bulk.tf), whose data access is the datasets' ACL
    project = {k: b for k, b in tf.resources.items() if k.startswith("google_project_iam_member.")}
    assert set(project) == {
        "google_project_iam_member.job_users",
        "google_project_iam_member.operators_run_bigquery_jobs",
    }
    assert {unwrap(b["role"]) for b in project.values()} == {"roles/bigquery.jobUser"}
    jobs = tf.resources["google_project_iam_member.job_users"]
    assert unwrap(jobs["for_each"]) == (
        '{for key, d in local.function_deployments : key => d if d.name == "send_due"}'
    )
    # ... and table writers may append rows, nothing else (no read, delete or schema change)
    writer = tf.resources["google_project_iam_custom_role.table_writer"]
    assert set(writer["permissions"]) == {"bigquery.tables.get", "bigquery.tables.updateData"}


def test_datasets_have_explicit_owners_and_function_accounts_see_metadata_only(tf: Terraform) -> None:
    dataset = tf.resources["google_bigquery_dataset.tenant"]
    static = dataset["access"] if isinstance(dataset["access"], list) else [dataset["access"]]
    # GIVEN the dataset's ACL THEN owners are named: the project's owners (no projectReaders / projectWriters) ...
    assert [{k: unwrap(v) for k, v in a.items()} for a in static] == [
        {"role": "OWNER", "special_group": "projectOwners"}
    ]
    assert all(list(d) == ["access"] for d in dataset["dynamic"])
    blocks = [d["access"] for d in dataset["dynamic"]]
    assert len(blocks) == 2
    owners_block, functions_block = blocks
    assert unwrap(owners_block["for_each"]) == "var.dataset_owners"
    assert unwrap(owners_block["content"][0]["role"]) == "OWNER"
    # ... and each function account of the tenant's region, metadata only (check_region's datasets.get)
    assert unwrap(functions_block["for_each"]) == (
        "sort([for key, d in local.function_deployments : key if d.region == each.value.region])"
    )
    content = {k: unwrap(v) for k, v in functions_block["content"][0].items()}
    assert content == {"role": "roles/bigquery.metadataViewer", "user_by_email": "google_service_account.fn[access.value].email"}
    # AND check_region is what needs it: it reads the dataset (bigquery.datasets.get)
    assert "client.get_dataset(ds)" in (REPO / "shared/warehouse/client.py").read_text()


# --- one account per function and region ----------------------------------------------------------------------------


@needs_terraform
def test_accounts_are_per_function_and_region_and_never_shared(tmp_path: Path) -> None:
    # GIVEN the sample tenants WHEN terraform computes each deployment's account id and its dataset ACL members
    computed = terraform_eval(
        tmp_path,
        '{ids = {for key, d in local.function_deployments : key => "${split("_", d.name)[0]}-${d.region}"}, '
        'eu = sort([for key, d in local.function_deployments : key if d.region == "europe-west1"])}',
    )
    ids = computed["ids"]
    # THEN one account per function and region, no two alike
    assert set(ids) == {f"{fn}@{r}" for fn in USES for r in ("europe-west1", "us-central1")}
    assert len(set(ids.values())) == len(ids)
    # ... and a europe-west1 dataset lets only europe-west1's accounts in
    assert computed["eu"] == sorted(f"{fn}@europe-west1" for fn in USES)


def test_every_grant_to_a_function_names_the_account_of_the_resources_region(tf: Terraform) -> None:
    # GIVEN every reference to a function's account in the .tf files
    text = "\n".join(p.read_text() for p in sorted(TF_DIR.glob("*.tf")))
    indexes = set(re.findall(r"google_service_account\.fn\[(.*?)\]\.(?:email|name)\b", text))
    assert len(indexes) >= 5
    # THEN it is the deployment's own (each.key over the deployments) or the deployment in the region of what is
    # granted (a tenant's region): never an account by function name alone, which another region would share
    allowed = {"each.key", "each.value.deployment", "access.value"}
    for index in indexes:
        if index in allowed:
            continue
        m = re.fullmatch(r'"(\w+)@\$\{(each\.value\.region|var\.tenants\[each\.key\]\.region)\}"', index)
        assert m and m.group(1) in USES, f"google_service_account.fn[{index}]"


# --- reviewed, pinned deploys (finding 32) ------------------------------------------------------------------------


DIGEST = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


def test_cloud_build_plans_and_stores_the_plan_and_never_applies() -> None:
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    steps = {s["id"]: s for s in build["steps"]}
    script = yaml.safe_dump(build["steps"])
    # GIVEN cloudbuild.yaml THEN no step applies, the plan is saved and stored where the plans bucket is
    assert "terraform apply" not in script and "auto-approve" not in script
    assert "-out=tfplan" in steps["plan"]["args"][-1]
    assert steps["store-plan"]["args"][-1] == "gs://${PROJECT_ID}-landline-plans/${SHORT_SHA}/"
    tf_bucket = parse_tf((TF_DIR / "deploy.tf").read_text())["resource"][0]["google_storage_bucket"]["plans"]
    assert unwrap(tf_bucket["name"]) == "${var.project}-landline-plans"
    # ... and every image is pinned by digest, or a required _IMAGE_* substitution (empty by default) the trigger
    # sets to a digest: a tag would run whatever it points at on the day
    for step in build["steps"]:
        name = step["name"]
        if DIGEST.fullmatch(name):
            continue
        m = re.fullmatch(r"\$\{(_IMAGE_[A-Z0-9_]+)\}", name)
        assert m, f"step {step['id']}: image {name} is neither name@sha256:<digest> nor ${{_IMAGE_*}}"
        assert build["substitutions"][m.group(1)] == "", f"{m.group(1)} must default to empty (required)"


def test_the_apply_trigger_needs_approval_and_applies_only_the_saved_plan(tf: Terraform) -> None:
    trigger = tf.resources["google_cloudbuild_trigger.apply"]
    assert trigger["approval_config"][0]["approval_required"] is True
    steps = trigger["build"][0]["step"]
    fetch, apply = steps
    assert fetch["args"][1] == "gs://$${_PLANS_BUCKET}/$${SHORT_SHA}/tfplan" or "${SHORT_SHA}/tfplan" in fetch["args"][1]
    assert "terraform apply -input=false tfplan" in apply["args"][-1]
    assert "auto-approve" not in json.dumps(trigger)
    # ... with images the variable's validation holds to digests
    assert unwrap(fetch["name"]) == "var.deploy.gsutil_image" and unwrap(apply["name"]) == "var.deploy.terraform_image"


@needs_terraform
@pytest.mark.parametrize(("image", "valid"), [("hashicorp/terraform:1.9", False), ("hashicorp/terraform:1.9@sha256:" + "a" * 64, True)])
def test_the_apply_trigger_refuses_an_image_by_tag(tmp_path: Path, image: str, valid: bool) -> None:
    module = _module_of_locals(tmp_path)
    deploy = {"repo_uri": "https://github.com/acme/landline", "state_bucket": "s", "service_account": "sa",
              "terraform_image": image, "gsutil_image": "gcr.io/cloud-builders/gsutil@sha256:" + "b" * 64}  # fmt: skip
    (module / "sample.tfvars.json").write_text(json.dumps({"tenants": SAMPLE_TENANTS, "deploy": deploy}))
    result = subprocess.run(
        ["terraform", "console", "-var", "project=proj", "-var", "source_version=v", "-var-file=sample.tfvars.json"],
        input="var.deploy.terraform_image", cwd=module, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "TF_CLI_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)},
    )  # fmt: skip
    # (terraform console reports an invalid variable but may still exit 0)
    refused = "must be pinned by digest" in re.sub(r"\s+", " ", result.stdout + result.stderr)
    assert refused is not valid, result.stdout + result.stderr
    if valid:
        assert result.returncode == 0 and image in result.stdout, result.stderr


# --- bulk backfill (bulk.tf) ----------------------------------------------------------------------------------------


BULK_IMAGE = "europe-docker.pkg.dev/proj/landline/bulk@sha256:" + "c" * 64
BULK_GRANTS = {
    "google_storage_bucket_iam_member.bulk_reads_bucket": "bucket",
    "google_storage_bucket_iam_member.bulk_writes_staging": "bucket",
    "google_secret_manager_secret_iam_member.bulk_reads_salt": "secret_id",
}


def _bulk_scope(tf: Terraform, tenants: dict[str, Any]) -> dict[str, Any]:
    """What Terraform knows once the buckets, salts and bulk accounts exist, with bulk_job_image set."""

    def names(key: str, attribute: str, source: dict[str, Any]) -> dict[str, dict[str, str]]:
        value = tf.resources[key][attribute]
        return {n: {attribute: render(value, {"each": {"key": n, "value": t}})} for n, t in source.items()}

    salts = filter_for(tf.resources["google_secret_manager_secret.privacy_salt"]["for_each"], tenants)
    return {
        "local": {"bulk_tenants": tenants},
        "google_storage_bucket": {
            "tenant": names("google_storage_bucket.tenant", "name", tenants),
            "staging": names("google_storage_bucket.staging", "name", tenants),
        },
        "google_secret_manager_secret": {
            "privacy_salt": names("google_secret_manager_secret.privacy_salt", "secret_id", salts)
        },
        "google_service_account": {
            "bulk": {t["region"]: {"email": f"bulk-{t['region']}@proj.iam"} for t in tenants.values()}
        },
    }


def test_the_bulk_jobs_account_gets_only_its_regions_tenants_buckets_and_salts(tf: Terraform) -> None:
    # GIVEN the sample tenants (one in hash mode) and every grant to a bulk job's account
    tenants = tenants_value(tf)
    scope = _bulk_scope(tf, tenants)
    granting = {
        key for key, body in tf.resources.items()
        if key.split(".")[0].endswith("_iam_member") and "google_service_account.bulk[" in str(body.get("member"))
    }  # fmt: skip
    assert granting == set(BULK_GRANTS)
    # WHEN each grant is rendered for every tenant it ranges over
    granted = set()
    for key, attribute in BULK_GRANTS.items():
        body = tf.resources[key]
        for_each = unwrap(body["for_each"])
        instances = tenants if for_each == "local.bulk_tenants" else filter_for(for_each, tenants)
        # (the account of the granted tenant's region, never one named otherwise)
        assert unwrap(body["member"]) == "serviceAccount:${google_service_account.bulk[each.value.region].email}", key
        for name, t in instances.items():
            each = {"each": {"key": name, "value": t}}
            account = render(body["member"], {**scope, **each}).removeprefix("serviceAccount:")
            granted.add((render(body[attribute], {**scope, **each}), body["role"], account))
    # THEN the account of a tenant's region reads the tenant's bucket, administers its staging bucket's objects (a
    # retried task overwrites its files) and reads its salt in hash mode, as load_events does, and nothing else
    salted = filter_for(tf.resources["google_secret_manager_secret_iam_member.bulk_reads_salt"]["for_each"], tenants)
    expected = set()
    for name, t in tenants.items():
        bucket, _, staging = tenant_buckets(t["bucket"])
        account = f"bulk-{t['region']}@proj.iam"
        expected |= {(bucket, "roles/storage.objectViewer", account), (staging, "roles/storage.objectAdmin", account)}
        if name in salted:
            expected.add((f"landline-{name}-privacy", "roles/secretmanager.secretAccessor", account))
    assert granted == expected
    targets = {
        (tf.resources[k]["role"], re.sub(r"^\$\{|\[.*$", "", tf.resources[k][a])) for k, a in BULK_GRANTS.items()
    }
    assert targets == EXPECTED_BULK_ROLES  # the roles test_terraform.py holds the account to
    # ... the same hash-mode tenants as load_events' salt grant
    load_events = tf.resources["google_secret_manager_secret_iam_member.load_events_reads_salt"]
    assert unwrap(load_events["for_each"]) == "google_secret_manager_secret.privacy_salt"
    salts = tf.resources["google_secret_manager_secret.privacy_salt"]
    assert set(salted) == set(filter_for(salts["for_each"], tenants))
    assert set(salted) == {"globex_eu"}
    # ... and nothing dataset- or project-wide: no BigQuery or project grant names it, nor does any dataset's ACL
    for key, body in tf.resources.items():
        if key.startswith(("google_bigquery_", "google_project_iam_")):
            assert "google_service_account.bulk" not in json.dumps(body), key


def test_bulk_accounts_are_per_region_with_valid_ids_no_function_shares(tf: Terraform) -> None:
    # GIVEN the account resource and the regions with the longest names
    account = tf.resources["google_service_account.bulk"]
    assert unwrap(account["for_each"]) == "local.bulk_regions"
    regions = {"europe-west1", "us-central1", "northamerica-northeast1", "australia-southeast2"}
    topology = yaml.safe_load(TOPOLOGY_FILE.read_text())
    functions = {
        render(tf.resources["google_service_account.fn"]["account_id"], {"each": {"value": d}})
        for d in function_deployments(tf, topology, regions).values()
    }
    # WHEN its account id is rendered for each region
    ids = {render(account["account_id"], {"each": {"value": {"region": r}}}) for r in regions}
    # THEN each is a valid account id (6-30 characters), one per region, none a function's
    for account_id in ids:
        assert re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", account_id), f"invalid account_id {account_id}"
    assert len(ids) == len(regions) and not ids & functions


def test_the_bulk_job_runs_the_task_as_its_regions_account_with_the_functions_settings(tf: Terraform) -> None:
    # GIVEN the job resource
    job = tf.resources["google_cloud_run_v2_job.bulk"]
    [execution] = job["template"]
    [task] = execution["template"]
    [container] = task["containers"]
    # THEN there is one per region with the job (named as the operator executes it), running as that region's account
    assert unwrap(job["for_each"]) == "local.bulk_regions"
    assert render(job["name"], {"each": {"value": {"region": "europe-west1"}}}) == "landline-bulk-europe-west1"
    assert unwrap(job["location"]) == "each.value.region"
    assert unwrap(task["service_account"]) == "google_service_account.bulk[each.key].email"
    # ... the digest-pinned image running shared/bulk.py's task command (--tenant/--run come from the execution's
    # --args), which takes its index and count from Cloud Run Jobs
    assert unwrap(container["image"]) == "var.bulk_job_image"
    assert container["command"] == ["python", "-m", "shared.bulk", "task"]
    assert "args" not in container
    bulk = (REPO / "shared" / "bulk.py").read_text()
    assert 'add_parser("task"' in bulk and "CLOUD_RUN_TASK_INDEX" in bulk and "CLOUD_RUN_TASK_COUNT" in bulk
    # ... an hour per task, retried (a retry rewrites the same files), and removable (it holds no data)
    assert (task["timeout"], task["max_retries"]) == ("3600s", 3)
    assert job["deletion_protection"] is False
    # ... and the functions' settings: the project and the region's tenants, by the same expressions
    [dynamic] = container["dynamic"]
    env = dynamic["env"]
    assert env["content"] == [{"name": "${env.key}", "value": "${env.value}"}]
    functions = {k: unwrap(v) for k, v in environment(tf).items() if k != "THREADS"}  # THREADS: gunicorn's
    assert {k: unwrap(v) for k, v in env["for_each"].items()} == functions


@needs_terraform
@pytest.mark.parametrize("image", [None, BULK_IMAGE])
def test_the_bulk_job_and_its_account_exist_only_with_an_image(tmp_path: Path, image: str | None) -> None:
    # GIVEN the sample tenants, with or without bulk_job_image WHEN terraform computes what the job ranges over
    computed = terraform_eval(
        tmp_path,
        "{regions = local.bulk_regions, tenants = keys(local.bulk_tenants)}",
        variables={"bulk_job_image": image},
    )
    # THEN without an image there is no job, account or grant; with one, one per region and a grant per tenant
    if image is None:
        assert computed == {"regions": {}, "tenants": []}
    else:
        regions = {t["region"] for t in SAMPLE_TENANTS.values()}
        assert computed == {"regions": {r: {"region": r} for r in regions}, "tenants": sorted(SAMPLE_TENANTS)}


@needs_terraform
@pytest.mark.parametrize(
    ("image", "valid"),
    [
        ("europe-docker.pkg.dev/proj/landline/bulk:v1", False),
        ("europe-docker.pkg.dev/proj/landline/bulk@sha256:" + "C" * 64, False),
        ("europe-docker.pkg.dev/proj/landline/bulk:v1@sha256:" + "c" * 63, False),
        (BULK_IMAGE, True),
        ("europe-docker.pkg.dev/proj/landline/bulk:v1@sha256:" + "c" * 64, True),
    ],
)
def test_a_bulk_job_image_not_pinned_by_digest_is_refused(tmp_path: Path, image: str, valid: bool) -> None:
    module = _module_of_locals(tmp_path)
    (module / "sample.tfvars.json").write_text(json.dumps({"tenants": SAMPLE_TENANTS, "bulk_job_image": image}))
    result = subprocess.run(
        ["terraform", "console", "-var", "project=proj", "-var", "source_version=v", "-var-file=sample.tfvars.json"],
        input="var.bulk_job_image", cwd=module, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "TF_CLI_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)},
    )  # fmt: skip
    # (terraform console reports an invalid variable but may still exit 0)
    refused = "must be pinned by digest" in re.sub(r"\s+", " ", result.stdout + result.stderr)
    assert refused is not valid, result.stdout + result.stderr
    if valid:
        assert result.returncode == 0 and image in result.stdout, result.stderr


OWNERS = ["user:ops@acme.com", "group:data@acme.com", "serviceAccount:deployer@proj.iam.gserviceaccount.com"]


@needs_terraform
def test_operators_use_every_staging_bucket_and_nothing_else_there(tf: Terraform, tmp_path: Path) -> None:
    # GIVEN dataset_owners of each kind the variable takes WHEN terraform computes the operators' staging grants
    grant = tf.resources["google_storage_bucket_iam_member.operators_use_staging"]
    computed = terraform_eval(tmp_path, unwrap(grant["for_each"]), variables={"dataset_owners": OWNERS})
    # THEN each owner (an IAM member as it is) gets every tenant's staging bucket, with or without the job (tasks may
    # run locally) ...
    assert computed == {
        f"{tenant}/{member}": {"tenant": tenant, "member": member} for tenant in SAMPLE_TENANTS for member in OWNERS
    }
    assert unwrap(grant["bucket"]) == "google_storage_bucket.staging[each.value.tenant].name"
    # ... as objectAdmin: `landline backfill --bulk` writes bulk/<run>/plan.json there (and, with local tasks, the row
    # files and manifests), lists the run's objects and its load jobs read them; objectViewer could not write the plan
    assert (grant["role"], unwrap(grant["member"])) == ("roles/storage.objectAdmin", "each.value.member")
    bulk = (REPO / "shared" / "bulk.py").read_text()
    assert '_put_json(staging_bucket(tenant), f"{PREFIX}/{plan.run}/plan.json"' in bulk
    # ... and no operator grant on the tenants' own buckets
    for key, body in tf.resources.items():
        if key.startswith("google_storage_bucket_iam_member.") and "var.dataset_owners" in unwrap(body["for_each"]):
            assert "google_storage_bucket.tenant" not in json.dumps(body), key


@needs_terraform
@pytest.mark.parametrize("image", [None, BULK_IMAGE])
@pytest.mark.parametrize("owners", [OWNERS, []])
def test_operators_execute_each_bulk_job_with_overrides_only_when_it_exists(
    tf: Terraform, tmp_path: Path, image: str | None, owners: list[str]
) -> None:
    # GIVEN the sample tenants (two regions), with or without bulk_job_image, with or without dataset_owners
    grant = tf.resources["google_cloud_run_v2_job_iam_member.operators_execute_bulk"]
    # WHEN terraform computes the operators' grants on the jobs
    computed = terraform_eval(
        tmp_path, unwrap(grant["for_each"]), variables={"dataset_owners": owners, "bulk_job_image": image}
    )
    # THEN without the job there is none; with it, each owner on each region's job (one job per region with tenants)
    regions = sorted({t["region"] for t in SAMPLE_TENANTS.values()}) if image else []
    assert computed == {
        f"{region}/{member}": {"region": region, "member": member} for region in regions for member in owners
    }
    assert "local.bulk_regions" in unwrap(grant["for_each"])  # the job's own gating
    # ... on that region's job, by its name and location ...
    assert unwrap(grant["name"]) == "google_cloud_run_v2_job.bulk[each.value.region].name"
    assert unwrap(grant["location"]) == "google_cloud_run_v2_job.bulk[each.value.region].location"
    assert unwrap(tf.resources["google_cloud_run_v2_job.bulk"]["for_each"]) == "local.bulk_regions"
    # ... executing it with overrides (--args=--tenant,T,--run,R --tasks N: run.jobs.runWithOverrides, which
    # roles/run.invoker or roles/run.jobsExecutor lack), and nothing more (no developer or admin role on the job)
    assert (grant["role"], unwrap(grant["member"])) == ("roles/run.jobsExecutorWithOverrides", "each.value.member")


@needs_terraform
def test_operators_may_run_bigquery_jobs_in_the_project(tf: Terraform, tmp_path: Path) -> None:
    # GIVEN dataset_owners of each kind WHEN terraform computes the operators' project grants
    grant = tf.resources["google_project_iam_member.operators_run_bigquery_jobs"]
    computed = terraform_eval(tmp_path, unwrap(grant["for_each"]), variables={"dataset_owners": OWNERS})
    # THEN each owner, an IAM member as it is, with or without the job (local tasks load too) ...
    assert sorted(computed) == sorted(OWNERS) and unwrap(grant["member"]) == "each.value"
    (tmp_path / "none").mkdir()
    assert terraform_eval(tmp_path / "none", unwrap(grant["for_each"]), variables={"dataset_owners": []}) == []
    # ... may create jobs in the deployment's project (load jobs and the DELETE query: bigquery.jobs.create), the
    # same role send_due's deployments have, and no BigQuery data role: what the jobs touch is the datasets' ACL
    assert (unwrap(grant["project"]), grant["role"]) == ("var.project", "roles/bigquery.jobUser")
    assert grant["role"] == tf.resources["google_project_iam_member.job_users"]["role"]
    bulk = (REPO / "shared" / "bulk.py").read_text()
    assert "client.load_table_from_uri(" in bulk and 'run_dml(tenant.name, f"DELETE FROM' in bulk
