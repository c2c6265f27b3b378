"""infra/terraform against what it deploys: it parses, it follows infra/topology.yaml, and it gives the code the
functions, environment, tenants, topics, secrets, buckets and roles the code expects.

No registry access for providers, so this is no `terraform validate`: the HCL is parsed with python-hcl2 and the few
expressions whose value matters are evaluated by the small helpers below, on sample data. The locals that are too
rich for those helpers (every topic copy, every trigger) have a Python mirror here, which names a tenant's topics as the
code does; where a terraform binary is installed, test_the_mirrors_are_what_terraform_computes checks the mirrors
against Terraform's own evaluation of the locals (a provider-free module of the variables and locals).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from pydantic import BaseModel

import shared.load.pipeline as load_pipeline
from shared.config import (
    PrivacyConfig,
    Settings,
    Tenant,
    TenantRegistry,
    tenant_buckets,
    tenant_of_topic,
    tenant_topic,
)
from shared.dead_letters import dead_letter_topic, keep_subscription
from shared.errors import SetupError
from shared.push.claims import claims_bucket
from shared.secrets import PRIVACY_ENTRY, SecretManagerSecrets

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "infra" / "terraform"
TOPOLOGY_FILE = REPO / "infra" / "topology.yaml"
HCL = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
HCL_QUOTED = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=False)

# Terraform-side values of tenants: one with only the required attributes, one with everything set.
SAMPLE_TENANTS: dict[str, dict[str, Any]] = {
    "acme": {"region": "europe-west1", "bucket": "acme-segment", "dataset": "landline_acme"},
    "globex_eu": {
        "region": "europe-west1",
        "bucket": "globex-segment",
        "dataset": "landline_globex",
        "prefix": "exports/",
        "push_provider": "fcm",
        "push_policy": {"quiet_hours_start": "22:00", "quiet_hours_end": "07:00", "frequency_cap": 5},
        "publishers": {"raw-events": ["serviceAccount:events@globex.iam"], "send-requests": ["group:crm@globex.com"]},
        "privacy": {"mode": "hash", "extra_pii_keys": ["member_no"], "context_keep": ["app", "locale"]},
    },
    "initech": {
        "region": "us-central1",
        "bucket": "initech-segment",
        "dataset": "landline_initech",
        "push_provider": "apns",
    },
}

# Roles each function's service account must get, on which kind of resource ("project" for project-wide), derived
# from what the code does (the file/function in the comment). Anything more is over-privilege, anything less a
# runtime 403.
# Pub/Sub push (its OIDC token) and Eventarc deliver each function's events as the function's own account.
# Accounts are per function *and region* (finding 14): which region's resources each grant reaches is checked in
# tests/unit/test_terraform_iam.py, with which tables (TABLES below: the table grants of functions.tf local.function_tables).
RUN_INVOKER = ("roles/run.invoker", "google_cloudfunctions2_function.fn")
TABLE_WRITER = ("google_project_iam_custom_role.table_writer", "tenant tables")  # streaming insert / DML INSERT only
TABLE_READER = ("roles/bigquery.dataViewer", "tenant tables")  # the tables and views its queries read
EXPECTED_ROLES: dict[str, set[tuple[str, str]]] = {
    "ingest_file": {
        ("roles/storage.objectViewer", "google_storage_bucket.tenant"),  # ingest/pipeline.py reads the object
        ("roles/pubsub.publisher", "google_pubsub_topic.topic"),  # ... publishes batches on raw-events.<tenant>
        TABLE_WRITER,  # ... streams the file ledger row
        RUN_INVOKER,
    },
    "load_events": {
        TABLE_WRITER,  # load/pipeline.py streams rows
        ("roles/secretmanager.secretAccessor", "google_secret_manager_secret.privacy_salt"),  # hash mode salt
        RUN_INVOKER,
    },
    "send_due": {
        TABLE_WRITER,  # push/tick.py streams sends
        TABLE_READER,  # ... and queries candidates
        ("roles/bigquery.jobUser", "project"),  # ... and queries candidates (stats.py run_query)
        ("roles/secretmanager.secretAccessor", "google_secret_manager_secret.push_credentials"),
        ("roles/storage.objectCreator", "google_storage_bucket.claims"),  # push/claims.py creates a claim
        ("roles/storage.objectViewer", "google_storage_bucket.claims"),  # ... and reads the one it lost to
        ("roles/pubsub.publisher", "google_pubsub_topic.topic"),  # push/fanout.py publishes campaign shards
        RUN_INVOKER,
    },
}
# Roles of the bulk backfill job's account (bulk.tf, one per region; shared/bulk.py run_task), and nothing else: no
# BigQuery role (the operator runs the load jobs). Which tenants' resources each grant reaches: test_terraform_iam.py.
EXPECTED_BULK_ROLES = {
    ("roles/storage.objectViewer", "google_storage_bucket.tenant"),  # reads the objects of its share
    ("roles/storage.objectAdmin", "google_storage_bucket.staging"),  # reads the plan, (over)writes its rows
    ("roles/secretmanager.secretAccessor", "google_secret_manager_secret.privacy_salt"),  # parses as load_events
}
# Grants to var.dataset_owners (operators running `landline backfill --bulk` from their machine, with their own
# credentials) outside the datasets' ACLs, and nothing else. Which buckets, jobs and gating: test_terraform_iam.py.
EXPECTED_OPERATOR_ROLES = {
    ("roles/storage.objectAdmin", "google_storage_bucket.staging"),  # write the plan (and local tasks' files), load
    ("roles/run.jobsExecutorWithOverrides", "google_cloud_run_v2_job.bulk"),  # execute with --args / --tasks
    ("roles/bigquery.jobUser", "project"),  # their load jobs and the DELETE before them (bigquery.jobs.create)
}
# The resources granting them (each ranges over var.dataset_owners).
OPERATOR_GRANTS = {
    "google_storage_bucket_iam_member.operators_use_staging",
    "google_cloud_run_v2_job_iam_member.operators_execute_bulk",
    "google_project_iam_member.operators_run_bigquery_jobs",
}
# Grants to Google's service agents (not to a function).
PUBSUB_AGENT = "service-<project number>@gcp-sa-pubsub.iam.gserviceaccount.com"
EXPECTED_AGENT_ROLES = {
    # Cloud Storage publishes each tenant bucket's notifications, on that tenant's object-notifications topic only.
    ("data.google_storage_project_service_account.gcs", "roles/pubsub.publisher", "google_pubsub_topic.topic"),
    # Pub/Sub moves a message that keeps failing to the dead-letter topic (publishes there, acks on the subscription)
    (PUBSUB_AGENT, "roles/pubsub.publisher", "google_pubsub_topic.dead_letter"),
    (PUBSUB_AGENT, "roles/pubsub.subscriber", "google_pubsub_subscription.trigger"),
    # ... and mints the push subscriptions' OIDC tokens for the functions' accounts.
    (PUBSUB_AGENT, "roles/iam.serviceAccountTokenCreator", "google_service_account.fn"),
}
# The attribute naming what an IAM member grant is on, per resource type.
IAM_TARGET = {
    "google_storage_bucket_iam_member": "bucket",
    "google_pubsub_topic_iam_member": "topic",
    "google_bigquery_dataset_iam_member": "dataset_id",
    "google_bigquery_table_iam_member": "table_id",
    "google_secret_manager_secret_iam_member": "secret_id",
    "google_project_iam_member": "project",
    "google_cloud_run_v2_service_iam_member": "name",
    "google_cloud_run_v2_job_iam_member": "name",
    "google_pubsub_subscription_iam_member": "subscription",
    "google_service_account_iam_member": "service_account_id",
}
# Attributes of var.tenants for the deployment only (IAM), not passed to the functions as tenant configuration.
DEPLOYMENT_ONLY = frozenset({"publishers"})
# Environment variables that are not the application's settings, and who reads them.
RUNTIME_ENV = {
    "THREADS": "functions-framework: gunicorn threads per instance",
    "MALLOC_ARENA_MAX": "glibc: malloc arenas per process",
}


@dataclass
class Terraform:
    files: dict[str, dict[str, Any]]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # "type.name" -> body
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # "data.type.name" -> body
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_files(cls, files: dict[str, dict[str, Any]]) -> Terraform:
        tf = cls(files)
        for parsed in files.values():
            for block in parsed.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        assert f"{rtype}.{name}" not in tf.resources, f"{rtype}.{name} is declared twice"
                        tf.resources[f"{rtype}.{name}"] = body
            for block in parsed.get("data", []):
                for dtype, named in block.items():
                    for name, body in named.items():
                        tf.data[f"data.{dtype}.{name}"] = body
            for block in parsed.get("variable", []):
                tf.variables.update(block)
            for block in parsed.get("locals", []):
                tf.locals.update(block)
        return tf


def parse_tf(text: str) -> dict[str, Any]:
    return hcl2.loads(text, serialization_options=HCL)


@pytest.fixture(scope="module")
def tf() -> Terraform:
    return Terraform.from_files({p.name: parse_tf(p.read_text()) for p in sorted(TF_DIR.glob("*.tf"))})


@pytest.fixture(scope="module")
def topology() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TOPOLOGY_FILE.read_text())
    return loaded


# --- expression helpers ---------------------------------------------------------------------------------------------


def unwrap(value: Any) -> str:
    """The expression of an attribute: "${expr}" -> "expr" (a template with text around stays as it is)."""
    text = str(value).strip()
    if text.startswith("${") and text.endswith("}") and _closing_brace(text, 1) == len(text) - 1:
        return text[2:-1].strip()
    return text


def _closing_brace(text: str, start: int) -> int:
    depth, quoted, i = 0, False, start
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced: {text}")


def split_top_level(text: str) -> list[str]:
    """Split at the commas that are outside brackets and strings."""
    parts, depth, quoted, current = [], 0, False, ""
    for ch in text:
        if quoted:
            quoted = ch != '"' or current.endswith("\\")
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


class _Obj(dict[str, Any]):
    """A dict with HCL's attribute access (t.privacy.mode)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Any:
        return _wrap(super().__getitem__(key))


def _wrap(value: Any) -> Any:
    return _Obj(value) if isinstance(value, dict) and not isinstance(value, _Obj) else value


_FUNCTIONS = {
    "replace": lambda s, old, new: s.replace(old, new),
    "upper": str.upper,
    "lower": str.lower,
    "tostring": str,
    "split": lambda sep, s: s.split(sep),
}


def hcl_eval(expr: str, scope: dict[str, Any]) -> Any:
    """Evaluate a simple HCL expression (references, comparisons, replace/upper/tostring): enough for conditions and
    names. Anything else fails loudly, so a new construct in the .tf makes the test say what it cannot check."""
    expr = re.sub(r'"([^"]*\$\{[^"]*\}[^"]*)"', lambda m: repr(render(m.group(1), scope)), expr)
    py = re.sub(r"\bnull\b", "None", expr)
    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", py)).replace("&&", " and ").replace("||", " or ")
    return eval(py, {"__builtins__": {}, **_FUNCTIONS}, {k: _wrap(v) for k, v in scope.items()})


def render(template: Any, scope: dict[str, Any]) -> Any:
    text = str(template)
    expr = unwrap(text)
    if expr != text:
        return hcl_eval(expr, scope)
    return re.sub(r"\$\{([^{}]*)\}", lambda m: str(hcl_eval(m.group(1), scope)), text)


FOR_MAP = re.compile(r"\{for (\w+), (\w+) in ([\w.]+) : (\w+) => (.+?)(?: if (.+))?\}", re.S)


def match_for(expr: str) -> tuple[str, ...]:
    """(key var, value var, source, key expr, value expr, condition or None) of `{for k, v in SOURCE : K => V if C}`."""
    m = FOR_MAP.fullmatch(unwrap(expr))
    assert m, f"not a simple for expression: {expr}"
    return m.groups()


def _split_if(text: str) -> tuple[str, str | None]:
    """`VALUE if COND` -> (VALUE, COND), at the last ` if ` outside brackets and strings."""
    depth, quoted, cut = 0, False, None
    for i, ch in enumerate(text):
        if quoted:
            quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(" if ", i):
            cut = i
    return (text, None) if cut is None else (text[:cut].strip(), text[cut + 4 :].strip())


def filter_for(expr: str, source: dict[str, Any]) -> dict[str, Any]:
    """`{for k, v in SOURCE : k => v if COND}` applied to `source`."""
    key_var, value_var, _, key_expr, value_expr, cond = match_for(expr)
    assert (key_expr, value_expr) == (key_var, value_var), f"not a filter: {expr}"
    return {k: v for k, v in source.items() if cond is None or hcl_eval(cond, {key_var: k, value_var: v})}


# --- the variable's type ----------------------------------------------------------------------------------------------


@dataclass
class TfType:
    kind: str  # string, number, bool, any, list, set, map, object
    elem: TfType | None = None
    attrs: dict[str, TfAttr] = field(default_factory=dict)


@dataclass
class TfAttr:
    type: TfType
    optional: bool = False
    default: Any = None  # for an optional attribute: its value when absent or null


def parse_type(expr: Any) -> TfType:
    text = unwrap(expr)
    if text in {"string", "number", "bool", "any"}:
        return TfType(text)
    m = re.fullmatch(r"(\w+)\((.*)\)", text, re.S)
    assert m, f"unsupported type expression {text}"
    kind, inner = m.groups()
    if kind in {"list", "set", "map"}:
        return TfType(kind, elem=parse_type(inner))
    assert kind == "object", f"unsupported type {kind}"
    body = parse_tf(f"x = {inner}")["x"]
    return TfType("object", attrs={name: parse_attr(value) for name, value in body.items()})


def parse_attr(expr: Any) -> TfAttr:
    text = unwrap(expr)
    if text.startswith("optional("):
        args = split_top_level(text[len("optional(") : -1])
        default = parse_tf(f"x = {args[1]}")["x"] if len(args) > 1 else None
        return TfAttr(parse_type(args[0]), optional=True, default=default)
    return TfAttr(parse_type(text))


def apply_type(t: TfType, value: Any) -> Any:
    """What Terraform makes of `value` converted to type `t`: optional attributes that are absent or null get their
    default (nested defaults included), a missing required attribute is an error."""
    if value is None:
        return None
    if t.kind == "object":
        assert isinstance(value, dict), f"expected an object, got {value!r}"
        unknown = set(value) - set(t.attrs)
        assert not unknown, f"attributes not in the type: {sorted(unknown)}"
        out = {}
        for name, attr in t.attrs.items():
            given = value.get(name)
            if given is None:
                assert attr.optional, f"required attribute {name!r} is missing"
                given = attr.default
            out[name] = apply_type(attr.type, given)
        return out
    if t.kind in {"list", "set"}:
        assert t.elem
        return [apply_type(t.elem, v) for v in value]
    if t.kind == "map":
        assert t.elem
        return {k: apply_type(t.elem, v) for k, v in value.items()}
    return value


def tenants_type(tf: Terraform) -> TfType:
    t = parse_type(tf.variables["tenants"]["type"])
    assert t.kind == "map" and t.elem and t.elem.kind == "object", "var.tenants is a map of objects"
    return t


def tenants_value(tf: Terraform, tenants: dict[str, Any] = SAMPLE_TENANTS) -> dict[str, Any]:
    value: dict[str, Any] = apply_type(tenants_type(tf), tenants)
    return value


def function_resource(tf: Terraform) -> dict[str, Any]:
    return tf.resources["google_cloudfunctions2_function.fn"]


def environment(tf: Terraform) -> dict[str, Any]:
    env: dict[str, Any] = function_resource(tf)["service_config"][0]["environment_variables"]
    return env


def object_literal(text: str, scope: dict[str, Any]) -> dict[str, Any]:
    """The value of an HCL object literal `{a = expr, b = "template"}` (bare expressions and string templates)."""
    raw = hcl2.loads(f"x = {text}", serialization_options=HCL_QUOTED)["x"]
    out = {}
    for name, value in raw.items():
        value = str(value)
        quoted = value.startswith('"') and value.endswith('"')
        out[name] = render(value[1:-1], scope) if quoted else hcl_eval(unwrap(value), scope)
    return out


def function_deployments(tf: Terraform, topology: dict[str, Any], regions: set[str]) -> dict[str, dict[str, Any]]:
    """local.function_deployments for `regions` (what local.regions is for the tenants)."""
    m = re.fullmatch(
        r"merge\(\[for (\w+) in local\.regions : \{for (\w+), (\w+) in local\.topology\.functions : "
        r'"([^"]*)" => (\{[^{}]*\})\}\] \.\.\.\)',
        unwrap(tf.locals["function_deployments"]),
    )
    assert m, f"local.function_deployments has a form this test cannot evaluate: {tf.locals['function_deployments']}"
    region_var, name_var, fn_var, key, value = m.groups()
    out: dict[str, dict[str, Any]] = {}
    for region in sorted(regions):
        for name, fn in topology["functions"].items():
            scope = {region_var: region, name_var: name, fn_var: fn}
            out[render(key, scope)] = object_literal(value, scope)
    return out


def topic_copies(topology: dict[str, Any], tenants: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mirror of local.topics (main.tf): a copy per region of a shared topic and legacy copy of a per-tenant one, and
    a copy per tenant of a per-tenant topic, named as the code names them (shared/config.py, shared/dead_letters.py)."""
    copies: dict[str, dict[str, Any]] = {}
    for region in sorted({t["region"] for t in tenants.values()}):
        for base, spec in topology["topics"].items():
            if not spec.get("per_tenant") or spec.get("legacy_shared"):
                copies[f"{base}@{region}"] = {
                    "base": base, "region": region, "tenant": None, "name": f"{base}-{region}",
                    "dead_letter": f"{base}-dead-letter-{region}", "keep": f"{base}-dead-letter-keep-{region}",
                }
    for tenant, t in tenants.items():
        for base, spec in topology["topics"].items():
            if spec.get("per_tenant"):
                name = tenant_topic(base, tenant)
                copies[name] = {
                    "base": base, "region": t["region"], "tenant": tenant, "name": name,
                    "dead_letter": dead_letter_topic(name), "keep": keep_subscription(name),
                }
    return copies


def pubsub_triggers(topology: dict[str, Any], topics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mirror of local.pubsub_triggers (functions.tf): each trigger of each function on each copy of its topic."""
    out: dict[str, dict[str, Any]] = {}
    for key, topic in topics.items():
        for name, fn in topology["functions"].items():
            if topic["base"] not in [t["topic"] for t in [fn["trigger"], *fn.get("extra_triggers", [])]]:
                continue
            legacy = topic["tenant"] is None and topology["topics"][topic["base"]].get("per_tenant", False)
            out[f"{name}@{topic['region']}/{topic['base'] if topic['tenant'] is None else topic['name']}"] = {
                "deployment": f"{name}@{topic['region']}", "name": name, "region": topic["region"], "topic": key,
                "endpoint_topic": topic["base"] if legacy else topic["name"],
            }
    return out


def tenant_publishers(tenants: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Mirror of google_pubsub_topic_iam_member.tenant_publishers' for_each: a grant per tenant, topic and member."""
    return {
        f"{tenant_topic(base, tenant)}/{member}": {"topic": tenant_topic(base, tenant), "member": member}
        for tenant, t in tenants.items()
        for base, members in t["publishers"].items()
        for member in members
    }


# --- tests ----------------------------------------------------------------------------------------------------------


def test_every_terraform_file_parses() -> None:
    # GIVEN every .tf file of the deployment
    files = sorted(TF_DIR.glob("*.tf"))
    assert files, f"no .tf files in {TF_DIR}"
    for path in files:
        # WHEN it is parsed as HCL2
        parsed = parse_tf(path.read_text())
        # THEN it parses into at least one top-level block
        assert parsed, f"{path.name} is empty"


def test_terraform_reads_the_topology_the_local_stack_reads(tf: Terraform) -> None:
    # GIVEN the topology local of the Terraform
    expr = unwrap(tf.locals["topology"])
    # WHEN its file argument is resolved against the module's directory
    m = re.fullmatch(r'yamldecode\(file\("\$\{path\.module\}/(.+)"\)\)', expr)
    # THEN it is infra/topology.yaml, decoded as YAML
    assert m, f"local.topology is not yamldecode(file(...)): {expr}"
    assert (TF_DIR / m.group(1)).resolve() == TOPOLOGY_FILE


def test_every_function_is_deployed_with_its_entry_point(tf: Terraform, topology: dict[str, Any]) -> None:
    # GIVEN the functions of the topology and the Terraform function resource
    fn = function_resource(tf)
    deployments = unwrap(tf.locals["function_deployments"])
    names = set(topology["functions"])
    # WHEN the deployment map, the build config and the function folders are compared
    # THEN one deployment per topology function (and region), named by the topology key ...
    assert unwrap(fn["for_each"]) == "local.function_deployments"
    assert "for name, fn in local.topology.functions" in deployments and "name = name" in deployments, deployments
    # ... whose entry point is that name, defined in functions/<name>/main.py as a CloudEvent function
    assert unwrap(fn["build_config"][0]["entry_point"]) == "each.value.name"
    assert {p.parent.name for p in (REPO / "functions").glob("*/main.py")} == names, "functions/ vs topology"
    for name in names:
        tree = ast.parse((REPO / "functions" / name / "main.py").read_text())
        defs = {d.name: d for d in tree.body if isinstance(d, ast.FunctionDef)}
        assert name in defs, f"functions/{name}/main.py does not define {name}()"
        decorators = {ast.unparse(d) for d in defs[name].decorator_list}
        assert "functions_framework.cloud_event" in decorators, f"{name}() is not a CloudEvent function"
    # ... running as its own service account, triggered as it too
    # (one account per deployment, "<function>@<region>", as the functions are)
    sa = "google_service_account.fn[each.key].email"
    assert unwrap(tf.resources["google_service_account.fn"]["for_each"]) == "local.function_deployments"
    assert unwrap(fn["service_config"][0]["service_account_email"]) == sa
    subscription = tf.resources["google_pubsub_subscription.trigger"]
    assert unwrap(subscription["push_config"][0]["oidc_token"][0]["service_account_email"]) == (
        "google_service_account.fn[each.value.deployment].email"
    )
    # ... a valid, distinct account id for every function in every region, the longest region name included
    regions = {"europe-west1", "us-central1", "northamerica-northeast1", "australia-southeast2"}
    ids = set()
    for deployment in function_deployments(tf, topology, regions).values():
        account_id = render(tf.resources["google_service_account.fn"]["account_id"], {"each": {"value": deployment}})
        assert re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", account_id), f"invalid account_id {account_id}"
        ids.add(account_id)
    assert len(ids) == len(names) * len(regions), "two deployments would share an account"


def test_function_sources_are_where_the_build_uploads_them(tf: Terraform, tmp_path: Path) -> None:
    # GIVEN the Terraform's source object and the archives infra/package.py builds and cloudbuild.yaml uploads
    from infra.package import package

    source = function_resource(tf)["build_config"][0]["source"][0]["storage_source"][0]
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    upload = next(step for step in build["steps"] if step.get("id") == "upload")
    # WHEN both are rendered for one function and version
    archive = package("send_due", tmp_path, "abc123").name
    obj = render(source["object"], {"each": {"value": {"name": "send_due"}}, "var": {"source_version": "abc123"}})
    bucket = render(tf.locals["function_source_bucket"], {"var": {"project": "proj"}})
    # THEN Terraform deploys the archive the build uploaded, from the bucket it uploaded to
    assert unwrap(source["bucket"]) == "google_storage_bucket.sources.name"
    assert unwrap(tf.resources["google_storage_bucket.sources"]["name"]) == "local.function_source_bucket"
    assert obj == archive
    assert upload["args"][-1].replace("${PROJECT_ID}", "proj") == f"gs://{bucket}/"


def test_function_settings_come_from_the_topology(tf: Terraform, topology: dict[str, Any]) -> None:
    # GIVEN the service config of the function resource
    service = function_resource(tf)["service_config"][0]
    # WHEN it is compared with what each topology function declares
    # THEN memory, timeout and concurrency come from the topology, which must state them (Terraform has no defaults)
    assert unwrap(service["available_memory"]) == "each.value.fn.memory"
    assert unwrap(service["timeout_seconds"]) == "each.value.fn.timeout_seconds"
    assert unwrap(service["max_instance_request_concurrency"]) == "each.value.fn.concurrency"
    assert unwrap(environment(tf)["THREADS"]) == "tostring(each.value.fn.concurrency)"  # one thread per request
    for name, fn in topology["functions"].items():
        missing = {"memory", "timeout_seconds", "concurrency", "trigger"} - set(fn)
        assert not missing, f"topology function {name} does not state {sorted(missing)}"
        # ... and Cloud Run refuses concurrency > 1 below one vCPU
        cpu_value = _eval_conditional(unwrap(service.get("available_cpu", "null")), {"each": {"value": {"fn": fn}}})
        if fn["concurrency"] > 1:
            assert cpu_value is not None and float(cpu_value) >= 1, f"{name}: concurrency > 1 needs available_cpu >= 1"


def _eval_conditional(expr: str, scope: dict[str, Any]) -> Any:
    """`COND ? A : B` (parenthesised or not) or a plain expression."""
    if expr.startswith("(") and _closing_brace(expr, 0) == len(expr) - 1:
        expr = expr[1:-1].strip()
    m = re.fullmatch(r"(.+?) \? (.+?) : (.+)", expr, re.S)
    if not m:
        return hcl_eval(expr, scope)
    cond, yes, no = m.groups()
    return hcl_eval(yes if hcl_eval(cond, scope) else no, scope)


def _cloud(tf: Terraform, topology: dict[str, Any], tenants: dict[str, Any]) -> dict[str, Any]:
    """What Terraform would know after creating the topics, functions and accounts: a scope to render resources in."""
    copies = topic_copies(topology, tenants)
    deployments = function_deployments(tf, topology, {t["region"] for t in tenants.values()})
    fn = function_resource(tf)
    topic, dead_letter = tf.resources["google_pubsub_topic.topic"], tf.resources["google_pubsub_topic.dead_letter"]
    return {
        "var": {"project": "proj"},
        "local": {"topology": topology, "topics": copies},
        "google_pubsub_topic": {
            kind: {
                key: {
                    "name": (n := render(r["name"], {"each": {"key": key, "value": c}})),
                    "id": f"projects/proj/topics/{n}",
                }
                for key, c in copies.items()
            }
            for kind, r in (("topic", topic), ("dead_letter", dead_letter))
        },
        "google_cloudfunctions2_function": {
            "fn": {
                key: {
                    "name": (name := render(fn["name"], {"each": {"key": key, "value": d}})),
                    "service_config": [_Obj(uri=f"https://{name}-abc123-ew.a.run.app")],
                }
                for key, d in deployments.items()
            }
        },
        "google_service_account": {"fn": {key: {"email": f"landline-{key}@proj.iam"} for key in deployments}},
        "google_storage_bucket": {"tenant": {name: {"name": t["bucket"]} for name, t in tenants.items()}},
    }


def _pubsub_event_source(path: str) -> str:
    """The CloudEvent source functions-framework gives a raw Pub/Sub push to `path` (what the functions read)."""
    import flask
    from functions_framework import event_conversion

    body = {"message": {"data": "", "messageId": "1", "publishTime": "2024-05-14T09:00:00Z"}, "subscription": "s"}
    with flask.Flask(__name__).test_request_context(path, method="POST", json=body):
        return str(event_conversion.background_event_to_cloud_event(flask.request)["source"])


def test_every_tenant_has_its_own_topics_with_dead_letters_kept(tf: Terraform, topology: dict[str, Any]) -> None:
    # GIVEN the sample tenants and the topic resources, over local.topics
    tenants = tenants_value(tf)
    cloud = _cloud(tf, topology, tenants)
    copies = cloud["local"]["topics"]
    per_tenant = {base for base, spec in topology["topics"].items() if spec.get("per_tenant")}
    assert per_tenant == {"raw-events", "send-requests", "send-shards", "object-notifications"}, per_tenant
    for kind in ("topic", "dead_letter"):
        assert unwrap(tf.resources[f"google_pubsub_topic.{kind}"]["for_each"]) == "local.topics"
    keep = tf.resources["google_pubsub_subscription.dead_letter_keep"]
    assert unwrap(keep["for_each"]) == "local.topics"
    assert unwrap(keep["topic"]) == "google_pubsub_topic.dead_letter[each.key].id"
    assert "push_config" not in keep and keep["expiration_policy"][0]["ttl"] == ""
    # WHEN each tenant's copies are rendered
    for tenant, t in tenants.items():
        for base in per_tenant:
            name = tenant_topic(base, tenant)
            scope = {**cloud, "each": {"key": name, "value": copies[name]}}
            # THEN the tenant has its own copy of each per-tenant topic, under the name the code publishes to and takes
            # the tenant from, with the dead-letter topic and keep subscription `landline dead-letters` reads ...
            assert cloud["google_pubsub_topic"]["topic"][name]["name"] == name
            assert tenant_of_topic(base, name) == tenant
            assert cloud["google_pubsub_topic"]["dead_letter"][name]["name"] == dead_letter_topic(name)
            assert render(keep["name"], scope) == keep_subscription(name)
            # ... its messages stored only in the tenant's region
            for kind in ("topic", "dead_letter"):
                policy = tf.resources[f"google_pubsub_topic.{kind}"]["message_storage_policy"][0]
                assert [render(r, scope) for r in policy["allowed_persistence_regions"]] == [t["region"]], (name, kind)
    # ... and the shared topic of each region keeps the names of earlier versions (nothing is re-created on upgrade)
    assert cloud["google_pubsub_topic"]["topic"]["raw-events@europe-west1"]["name"] == "raw-events-europe-west1"
    assert cloud["google_pubsub_topic"]["dead_letter"]["send-ticks@us-central1"]["name"] == (
        "send-ticks-dead-letter-us-central1"
    )


def test_publishers_are_granted_per_tenant_topic_and_storage_only_on_notifications(tf: Terraform) -> None:
    # GIVEN the sample tenants (one lists publishers) and the grants on topics
    tenants = tenants_value(tf)
    grant = tf.resources["google_pubsub_topic_iam_member.tenant_publishers"]
    gcs = tf.resources["google_pubsub_topic_iam_member.gcs_publishes_notifications"]
    # WHEN the publisher grants are rendered (their for_each is checked against Terraform by the mirror test)
    granted = {
        (render(grant["topic"], {"each": {"value": v}, "google_pubsub_topic": {"topic": _names(tenants)}}), v["member"])
        for v in tenant_publishers(tenants).values()
    }
    # THEN each listed member may publish on that tenant's copy of that topic, and nowhere else
    assert granted == {
        ("raw-events.globex_eu", "serviceAccount:events@globex.iam"),
        ("send-requests.globex_eu", "group:crm@globex.com"),
    }
    assert grant["role"] == "roles/pubsub.publisher" and unwrap(grant["member"]) == "each.value.member"
    # ... a tenant may list publishers only for the topics a publisher writes (not for its bucket's notifications)
    [validation] = tf.variables["tenants"]["validation"]
    assert '["raw-events", "send-requests"]' in unwrap(validation["condition"])
    # ... and Cloud Storage's agent publishes on each tenant's notification topic, not project-wide
    assert unwrap(gcs["for_each"]) == "var.tenants"
    assert unwrap(gcs["topic"]) == 'google_pubsub_topic.topic["object-notifications.${each.key}"].name'


def _names(tenants: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {k: {"name": c["name"]} for k, c in topic_copies(yaml.safe_load(TOPOLOGY_FILE.read_text()), tenants).items()}


def test_every_tenant_bucket_notifies_its_own_topic_of_finalized_objects(
    tf: Terraform, topology: dict[str, Any]
) -> None:
    # GIVEN the sample tenants and the notification resource
    tenants = tenants_value(tf)
    cloud = _cloud(tf, topology, tenants)
    notification = tf.resources["google_storage_notification.tenant_objects"]
    assert unwrap(notification["for_each"]) == "var.tenants"
    # WHEN it is rendered for each tenant
    for name, t in tenants.items():
        scope = {**cloud, "each": {"key": name, "value": t}}
        # THEN the tenant's bucket sends every finalized object, as the object resource, to the topic ingest_file
        # takes the tenant from (shared/envelopes.py reads this payload; shared/ingest/pipeline.py checks the bucket)
        assert render(notification["bucket"], scope) == t["bucket"]
        topic = render(notification["topic"], scope)
        assert topic == f"projects/proj/topics/{tenant_topic(Settings().object_notifications_topic, name)}"
        assert notification["payload_format"] == "JSON_API_V1"
        assert notification["event_types"] == ["OBJECT_FINALIZE"]
    # ... only after Cloud Storage may publish there (GCS checks it when the notification is created)
    assert notification["depends_on"] == ["${google_pubsub_topic_iam_member.gcs_publishes_notifications}"]


def test_every_topic_is_consumed_by_the_functions_the_topology_names(tf: Terraform, topology: dict[str, Any]) -> None:
    # GIVEN the functions' triggers in the topology, deployed for the sample tenants
    tenants = tenants_value(tf)
    cloud = _cloud(tf, topology, tenants)
    copies = cloud["local"]["topics"]
    topics, dead_letters = cloud["google_pubsub_topic"]["topic"], cloud["google_pubsub_topic"]["dead_letter"]
    functions = cloud["google_cloudfunctions2_function"]["fn"]
    defaults = topology["defaults"]
    wanted: set[tuple[str, str]] = set()  # (function, topic copy)
    for name, fn in topology["functions"].items():
        for trigger in [fn["trigger"], *fn.get("extra_triggers", [])]:
            assert trigger["type"] == "pubsub", f"{name}: trigger type Terraform does not deploy"
            wanted |= {(name, key) for key, c in copies.items() if c["base"] == trigger["topic"]}
    # WHEN the subscriptions Terraform creates are rendered, one per trigger and copy of its topic
    subscription = tf.resources["google_pubsub_subscription.trigger"]
    assert unwrap(subscription["for_each"]) == "local.pubsub_triggers"
    triggers = pubsub_triggers(topology, copies)
    deployed: set[tuple[str, str]] = set()
    for key, t in triggers.items():
        scope = {**cloud, "each": {"key": key, "value": t}}
        copy, fn = copies[t["topic"]], topology["functions"][t["name"]]
        deployed.add((t["name"], t["topic"]))
        # THEN each listens to its copy of the topic, as a push subscription to the function in the copy's region ...
        assert t["deployment"] == f"{t['name']}@{copy['region']}" and t["deployment"] in functions, key
        assert render(subscription["topic"], scope) == topics[t["topic"]]["id"], key
        push = subscription["push_config"][0]
        uri = functions[t["deployment"]]["service_config"][0]["uri"]
        endpoint = render(push["push_endpoint"], scope)
        # ... at a path from which functions-framework gives the function the topic it takes the tenant from: a
        # tenant's copy names the tenant; a legacy shared copy of a per-tenant topic comes as the bare name, which the
        # functions refuse (publish to <topic>.<tenant>); a regional topic as itself (send_due: a tick)
        source = _pubsub_event_source(endpoint.removeprefix(uri)).rsplit("/", 1)[-1]
        assert endpoint == f"{uri}/projects/proj/topics/{source}", key
        base = copy["base"]
        if copy["tenant"] is not None:
            assert source == copy["name"] and tenant_of_topic(base, source) == copy["tenant"], key
        elif topology["topics"][base].get("per_tenant"):
            assert source == base and tenant_of_topic(base, source) is None, key
        else:
            assert source == copy["name"], key
        # ... authenticated as the function's own account, for the service's URL
        oidc = push["oidc_token"][0]
        assert render(oidc["service_account_email"], scope) == f"landline-{t['deployment']}@proj.iam", key
        assert render(oidc["audience"], scope) == uri, key
        # ... with the topology's ack deadline (above the function's timeout: a late answer is a second delivery),
        # backoff and dead-letter topic, and no expiry
        ack_deadline = render(subscription["ack_deadline_seconds"], scope)
        assert ack_deadline == defaults["ack_deadline_seconds"] and ack_deadline >= fn["timeout_seconds"], key
        retry = subscription["retry_policy"][0]
        assert render(retry["minimum_backoff"], scope) == f"{defaults['retry']['minimum_backoff_seconds']}s", key
        assert render(retry["maximum_backoff"], scope) == f"{defaults['retry']['maximum_backoff_seconds']}s", key
        dead_letter = subscription["dead_letter_policy"][0]
        assert render(dead_letter["dead_letter_topic"], scope) == dead_letters[t["topic"]]["id"], key
        assert render(dead_letter["max_delivery_attempts"], scope) == defaults["max_delivery_attempts"], key
        assert subscription["expiration_policy"][0]["ttl"] == "", key
    # ... every trigger on every copy has its subscription, and no topic copy is left without a consumer
    assert deployed == wanted
    assert {t for _, t in deployed} == set(copies)
    names = [render(subscription["name"], {**cloud, "each": {"value": t}}) for t in triggers.values()]
    assert len(set(names)) == len(names), names
    assert "load-events-raw-events-europe-west1" in names, "the shared copies keep their subscriptions' names"
    # ... and nothing goes through Eventarc: ingest is a push subscription too, with its retries and dead letters
    assert not [k for k in tf.resources if k.startswith("google_eventarc_trigger.")]
    assert not [d for d in function_resource(tf).get("dynamic", []) if "event_trigger" in d]
    assert "event_trigger" not in function_resource(tf)
    # ... the scheduled topic gets its ticks from Cloud Scheduler on the topology's schedule
    tick = tf.resources["google_cloud_scheduler_job.tick"]
    scheduled = {t for t, spec in topology["topics"].items() if spec and spec.get("schedule")}
    ticked = re.search(r'google_pubsub_topic\.topic\["([\w-]+)@', tick["pubsub_target"][0]["topic_name"])
    assert ticked and {ticked.group(1)} == scheduled
    assert unwrap(tick["schedule"]) == f'local.topology.topics["{ticked.group(1)}"].schedule'


def test_alerts_cover_every_dead_letter_subscription_and_setup_errors(tf: Terraform, topology: dict[str, Any]) -> None:
    # GIVEN the alert policies and every keep and trigger subscription of the sample tenants
    tenants = tenants_value(tf)
    copies = topic_copies(topology, tenants)
    cloud = _cloud(tf, topology, tenants)
    keep = tf.resources["google_pubsub_subscription.dead_letter_keep"]
    keeps = {render(keep["name"], {"each": {"value": c}}) for c in copies.values()}
    trigger = tf.resources["google_pubsub_subscription.trigger"]
    triggers = {
        render(trigger["name"], {**cloud, "each": {"value": t}}) for t in pubsub_triggers(topology, copies).values()
    }
    dead = tf.resources["google_monitoring_alert_policy.dead_letters"]["conditions"][0]["condition_threshold"][0]
    setup = tf.resources["google_monitoring_alert_policy.setup_errors"]
    # WHEN the dead-letter filter's subscription pattern is applied to them
    filter_text = render(dead["filter"], {})
    [pattern] = re.findall(r'subscription_id = monitoring\.regex\.full_match\("(.+?)"\)', filter_text)
    # THEN it matches every keep subscription and no trigger subscription, on the backlog metric, above 0
    assert "pubsub.googleapis.com/subscription/num_undelivered_messages" in filter_text
    assert {s for s in keeps | triggers if re.fullmatch(pattern, s)} == keeps
    assert (dead["comparison"], dead["threshold_value"]) == ("COMPARISON_GT", 0)
    # ... and the setup alert matches what run_stage logs for a setup error (a JSON field error_class = "setup")
    log_filter = setup["conditions"][0]["condition_matched_log"][0]["filter"]
    assert 'jsonPayload.error_class="setup"' in log_filter
    assert '"error_class": "setup"' in (REPO / "shared" / "runtime.py").read_text()
    assert setup["alert_strategy"][0]["notification_rate_limit"][0]["period"]  # required for log-match alerts
    for policy in (tf.resources["google_monitoring_alert_policy.dead_letters"], setup):
        assert unwrap(policy["notification_channels"]) == "var.alert_notification_channels"


def _module_of_locals(tmp_path: Path) -> Path:
    """The deployment's variables and locals alone (no provider, no resource): terraform evaluates it offline.
    A reference to a data source (the project number) becomes a constant."""
    blocks = []
    for path in sorted(TF_DIR.glob("*.tf")):
        text = path.read_text()
        for m in re.finditer(r"^(locals|variable)\b[^\n{]*\{", text, re.M):
            end = _closing_brace(text, m.end() - 1)
            blocks.append(text[m.start() : end + 1])
    source = (
        "\n\n".join(blocks)
        .replace("${path.module}/../topology.yaml", str(TOPOLOGY_FILE))
        .replace("${path.module}/schemas/", f"{TF_DIR / 'schemas'}/")  # tables.tf's generated files
    )
    module = tmp_path / "locals"
    module.mkdir()
    (module / "main.tf").write_text(re.sub(r"\$\{data\.[^}]*\}", "0", source))
    return module


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary: the mirrors are checked by review")
def test_the_mirrors_are_what_terraform_computes(tf: Terraform, topology: dict[str, Any], tmp_path: Path) -> None:
    # GIVEN the sample tenants and a provider-free module of the deployment's variables and locals
    module = _module_of_locals(tmp_path)
    (module / "sample.tfvars.json").write_text(json.dumps({"tenants": SAMPLE_TENANTS}))
    publishers_for_each = unwrap(tf.resources["google_pubsub_topic_iam_member.tenant_publishers"]["for_each"])
    tenants_json_expr = unwrap(environment(tf)["LANDLINE_TENANTS_JSON"]).replace("each.value.region", '"europe-west1"')
    expression = (
        f"jsonencode({{topics = local.topics, triggers = local.pubsub_triggers, publishers = {publishers_for_each}, "
        f"tenants_json = {tenants_json_expr}}})"
    )
    # WHEN terraform console evaluates them
    result = subprocess.run(
        ["terraform", "console", "-var", "project=proj", "-var", "source_version=v", "-var-file=sample.tfvars.json"],
        input=expression, cwd=module, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "TF_CLI_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    computed = json.loads(json.loads(result.stdout.strip().splitlines()[-1]))
    # THEN Terraform computes what the mirrors say, which name every tenant's topics as the code does
    tenants = tenants_value(tf)
    copies = topic_copies(topology, tenants)
    assert computed["topics"] == copies
    assert computed["triggers"] == pubsub_triggers(topology, copies)
    assert computed["publishers"] == tenant_publishers(tenants)
    assert json.loads(computed["tenants_json"]) == json.loads(tenants_json(tf, tenants, "europe-west1"))


def _explicit_env_reads() -> set[str]:
    pattern = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z0-9_]+)["']""")
    found: set[str] = set()
    for folder in ("shared", "functions"):
        for path in (REPO / folder).rglob("*.py"):
            found.update(pattern.findall(path.read_text()))
    return found


def test_environment_variables_are_ones_the_code_reads(tf: Terraform) -> None:
    # GIVEN the environment Terraform gives every function
    env = environment(tf)
    prefix = Settings.model_config["env_prefix"]
    # WHEN each variable is looked up in the settings and in the code's explicit environment reads
    settings_vars = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    explicit = _explicit_env_reads()
    # THEN every LANDLINE_ variable is a setting or read explicitly, and the others are the runtime's
    for key in env:
        if key.startswith(prefix):
            assert key in settings_vars | explicit, f"{key} is set by Terraform but read by no code"
        else:
            assert key in RUNTIME_ENV, f"{key} is neither a setting nor a known runtime variable"
    import functions_framework

    gunicorn = Path(functions_framework.__file__).parent / "_http" / "gunicorn.py"
    assert 'environ.get("THREADS"' in gunicorn.read_text(), "functions-framework no longer reads THREADS"


def test_settings_the_cloud_needs_are_set_for_the_region(tf: Terraform, topology: dict[str, Any]) -> None:
    # GIVEN the environment of a function deployed in one region, and the settings
    env = environment(tf)
    prefix = Settings.model_config["env_prefix"]
    scope = {"each": {"value": {"region": "europe-west1"}}, "var": {"project": "proj"}}
    # WHEN the settings that name topics are compared with the topology
    topic_settings = {name: f.default for name, f in Settings.model_fields.items() if f.default in topology["topics"]}
    # THEN they are the per-tenant topics, whose copies the code names "<setting>.<tenant>" as Terraform does, so the
    # cloud leaves them at their defaults
    assert set(topic_settings.values()) == {t for t, spec in topology["topics"].items() if spec.get("per_tenant")}
    for name in topic_settings:
        assert f"{prefix}{name}".upper() not in env, f"{name}: a tenant's topic is <base>.<tenant> with the base name"
    # ... the project is set (its default is the local one) and so are the tenants
    assert render(env[f"{prefix}PROJECT"], scope) == "proj"
    assert f"{prefix}TENANTS_JSON" in env
    # ... and the local-stack-only settings are not (an endpoint would make the code use anonymous credentials)
    for local_only in ("bigquery_endpoint", "bigquery_write_endpoint", "secrets_file", "tenants_file"):
        assert f"{prefix}{local_only}".upper() not in env


def _json_default(model: type[BaseModel], name: str) -> Any:
    from pydantic import TypeAdapter

    info = model.model_fields[name]
    assert info.annotation is not None
    return TypeAdapter(info.annotation).dump_python(info.get_default(call_default_factory=True), mode="json")


def _compare_with_model(
    t: TfType,
    model: type[BaseModel],
    added: frozenset[str] = frozenset(),
    deployment_only: frozenset[str] = frozenset(),
) -> None:
    fields = set(t.attrs) - deployment_only
    assert fields | added == set(model.model_fields), f"{model.__name__} fields vs the Terraform object type"
    for name, attr in t.attrs.items():
        if name in deployment_only:
            continue
        info = model.model_fields[name]
        where = f"{model.__name__}.{name}"
        assert attr.optional == (not info.is_required()), f"{where}: optional in one, required in the other"
        if attr.optional:
            tf_default = json.loads(json.dumps(apply_type(attr.type, attr.default)))
            assert tf_default == _json_default(model, name), f"{where}: Terraform default {tf_default!r}"
        if attr.type.kind == "object":
            nested = info.annotation
            assert isinstance(nested, type) and issubclass(nested, BaseModel), where
            _compare_with_model(attr.type, nested)


def test_tenants_variable_has_the_tenant_models_fields_and_defaults(tf: Terraform) -> None:
    # GIVEN the object type of var.tenants
    tenant_type = tenants_type(tf).elem
    assert tenant_type
    # WHEN it is compared with the Tenant model, nested models included (name is added from the map key; publishers
    # are IAM grants, not passed to the functions: tenants_json leaves them out)
    # THEN the fields are the same, the required ones too, and the defaults are the model's
    _compare_with_model(tenant_type, Tenant, added=frozenset({"name"}), deployment_only=DEPLOYMENT_ONLY)


def tenants_json(tf: Terraform, tenants: dict[str, Any], region: str) -> str:
    """LANDLINE_TENANTS_JSON of the functions deployed in `region`."""
    m = re.fullmatch(r"jsonencode\((.+)\)", unwrap(environment(tf)["LANDLINE_TENANTS_JSON"]), re.S)
    assert m, "LANDLINE_TENANTS_JSON is not a jsonencode(...)"
    head = re.fullmatch(r"\{for (\w+), (\w+) in var\.tenants : (\w+) => (.+)\}", m.group(1).strip(), re.S)
    assert head, m.group(1)
    key_var, value_var, key_expr, rest = head.groups()
    value_expr, cond = _split_if(rest)
    assert key_expr == key_var
    left_out = ", ".join(f'k != "{f}"' for f in sorted(DEPLOYMENT_ONLY))
    assert value_expr == f"merge({{for k, v in {value_var} : k => v if {left_out}}}, {{name = {key_var}}})", value_expr
    return json.dumps(
        {
            name: {**{k: v for k, v in t.items() if k not in DEPLOYMENT_ONLY}, "name": name}
            for name, t in tenants.items()
            if cond is None or hcl_eval(cond, {key_var: name, value_var: t, "each": {"value": {"region": region}}})
        }
    )


def test_tenants_json_validates_as_each_regions_tenants(tf: Terraform) -> None:
    # GIVEN sample tenants as Terraform sees them (optional defaults applied)
    tenants = tenants_value(tf)
    for region in {t["region"] for t in SAMPLE_TENANTS.values()}:
        # WHEN the functions of a region read the LANDLINE_TENANTS_JSON Terraform gives them
        raw = tenants_json(tf, tenants, region)
        loaded = {t.name: t for t in TenantRegistry(Settings(tenants_json=raw, tenants_file=None)).all()}
        # THEN they validate as that region's tenants, with what was set kept
        assert set(loaded) == {name for name, t in SAMPLE_TENANTS.items() if t["region"] == region}
        for name, tenant in loaded.items():
            sample = SAMPLE_TENANTS[name]
            assert (tenant.region, tenant.bucket, tenant.dataset) == (region, sample["bucket"], sample["dataset"])
            assert tenant.push_provider == sample.get("push_provider")
    globex = Tenant.model_validate(json.loads(tenants_json(tf, tenants, "europe-west1"))["globex_eu"])
    assert globex.privacy == PrivacyConfig(mode="hash", extra_pii_keys=("member_no",), context_keep=("app", "locale"))
    assert (globex.push_policy.frequency_cap, globex.push_policy.quiet_hours_start) == (5, "22:00")


def test_the_example_tenants_file_is_what_cloud_build_passes_and_it_validates(tf: Terraform) -> None:
    # GIVEN the example tenants file, and Cloud Build's deploy step
    example = json.loads((REPO / "infra" / "terraform" / "tenants.example.tfvars.json").read_text())
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    deploy = next(step for step in build["steps"] if step["id"] == "plan")
    # THEN the deploy passes the tenants file Cloud Build names (not a file Terraform would have to find on its own)
    assert '-var-file="/workspace/${_TENANTS_FILE}"' in deploy["args"][-1]
    assert build["substitutions"]["_TENANTS_FILE"].startswith("infra/terraform/")
    # AND every example tenant, with Terraform's defaults applied, loads as the functions of its region load it
    tenants = tenants_value(tf, example["tenants"])
    for region in {t["region"] for t in tenants.values()}:
        raw = tenants_json(tf, tenants, region)
        loaded = TenantRegistry(Settings(tenants_json=raw, tenants_file=None)).all()
        assert {t.name for t in loaded} == {n for n, t in tenants.items() if t["region"] == region}


class _RecordingSession:
    """Secret Manager that has no secrets, recording which ones the code asked for."""

    def __init__(self) -> None:
        self.secret_ids: set[str] = set()

    def get(self, url: str, timeout: float) -> Any:
        self.secret_ids.add(url.split("/secrets/", 1)[1].split("/versions/", 1)[0])
        return type("Response", (), {"status_code": 404})()


def test_secrets_are_the_ones_the_code_reads(tf: Terraform, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN sample tenants and Secret Manager as the code reads it
    tenants = tenants_value(tf)
    session = _RecordingSession()
    secrets = SecretManagerSecrets("proj", session=session)
    monkeypatch.setattr(load_pipeline, "_secrets", lambda *_: secrets)
    # WHEN send_due asks for each push tenant's credentials (ticks skip tenants without a provider) and load_events
    # compiles each tenant's privacy policy
    for name, t in tenants.items():
        tenant = Tenant.model_validate({**t, "name": name})
        if tenant.push_provider:
            with pytest.raises(SetupError):
                secrets.get(name, tenant.push_provider)
        try:
            load_pipeline.tenant_policy(tenant)
        except SetupError:
            pass
    # THEN Terraform creates exactly the secrets the code reads
    created = set()
    for key in ("google_secret_manager_secret.push_credentials", "google_secret_manager_secret.privacy_salt"):
        resource = tf.resources[key]
        assert match_for(resource["for_each"])[2] == "var.tenants"
        for name, t in filter_for(resource["for_each"], tenants).items():
            created.add(render(resource["secret_id"], {"each": {"key": name, "value": t}}))
    assert SecretManagerSecrets.secret_id("globex_eu", PRIVACY_ENTRY) in session.secret_ids  # the sample has one
    assert created == session.secret_ids


def test_claims_buckets_are_the_ones_send_due_writes(tf: Terraform) -> None:
    # GIVEN sample tenants and the claims bucket resource
    tenants = tenants_value(tf)
    resource = tf.resources["google_storage_bucket.claims"]
    # WHEN its instances are rendered
    created = {
        render(resource["name"], {"each": {"key": n, "value": t}}): render(resource["location"], {"each": {"value": t}})
        for n, t in filter_for(resource["for_each"], tenants).items()
    }
    # THEN there is one per tenant that sends pushes, named as shared/push/claims.py names it, in the tenant's region
    expected = {
        claims_bucket(Tenant.model_validate({**t, "name": n})): t["region"].upper()
        for n, t in tenants.items()
        if t["push_provider"]
    }
    assert created == expected


def test_staging_buckets_are_the_ones_bulk_backfill_writes(tf: Terraform) -> None:
    # GIVEN sample tenants and the tenant, claims and staging bucket resources
    tenants = tenants_value(tf)
    resources = {kind: tf.resources[f"google_storage_bucket.{kind}"] for kind in ("tenant", "claims", "staging")}
    assert unwrap(resources["staging"]["for_each"]) == "var.tenants"
    # WHEN the staging bucket's instances are rendered
    staging = {
        n: (render(resources["staging"]["name"], {"each": {"key": n, "value": t}}),
            render(resources["staging"]["location"], {"each": {"value": t}}))
        for n, t in tenants.items()
    }  # fmt: skip
    # THEN there is one per tenant, named as shared/config.py tenant_buckets names it, in the tenant's region ...
    assert staging == {n: (tenant_buckets(t["bucket"])[2], t["region"].upper()) for n, t in tenants.items()}
    # ... beside the tenant's own bucket and its claims bucket, the other two tenant_buckets names
    for n, t in tenants.items():
        scope = {"each": {"key": n, "value": t}}
        assert render(resources["tenant"]["name"], scope) == tenant_buckets(t["bucket"])[0]
        if t["push_provider"]:
            assert render(resources["claims"]["name"], scope) == tenant_buckets(t["bucket"])[1]
    # ... private, with uniform access, like the claims bucket
    for kind in ("uniform_bucket_level_access", "public_access_prevention"):
        assert resources["staging"][kind] == resources["claims"][kind], kind
    # ... and its files are deleted after staging_retention_days (they are only needed until the load jobs ran), which
    # is at least a day
    [rule] = resources["staging"]["lifecycle_rule"]
    assert unwrap(rule["condition"][0]["age"]) == "var.staging_retention_days"
    assert rule["action"][0]["type"] == "Delete"
    variable = tf.variables["staging_retention_days"]
    assert variable["default"] == 7
    [validation] = variable["validation"]
    assert unwrap(validation["condition"]) == "var.staging_retention_days >= 1"


def _functions_iterated(tf: Terraform, expr: str, topology: dict[str, Any]) -> set[str]:
    """The functions a for_each ranges over (each.key / each.value.<fn>), for the forms the .tf uses."""
    text = re.sub(  # expand the locals it ranges over (local.function_deployments), not the topology itself
        r"\blocal\.(\w+)\b",
        lambda m: m.group(0) if m.group(1) == "topology" else f"({unwrap(tf.locals[m.group(1)])})",
        unwrap(expr),
    )
    functions = topology["functions"]
    m = FOR_MAP.fullmatch(unwrap(expr))
    if m and m.group(3) == "local.function_deployments":  # some deployments, e.g. send_due's in every region
        regions = {t["region"] for t in tenants_value(tf).values()}
        return {d["name"] for d in filter_for(unwrap(expr), function_deployments(tf, topology, regions)).values()}
    if text == "local.topology.functions":
        return set(functions)
    if m := re.fullmatch(r"toset\(\[(.*)\]\)", text):
        return {v.strip().strip('"') for v in split_top_level(m.group(1))}
    if FOR_MAP.fullmatch(text) and match_for(text)[2] == "local.topology.functions":
        return set(filter_for(text, functions))
    if "local.topology.functions" in text and " if " not in text:
        return set(functions)  # merge/nested for expressions over every function
    raise AssertionError(f"the test cannot tell which functions this for_each covers: {text}")


def _grant_target(tf: Terraform, rtype: str, body: dict[str, Any]) -> str:
    assert rtype in IAM_TARGET, f"{rtype}: add it to IAM_TARGET in this test"
    attribute = IAM_TARGET[rtype]
    if unwrap(body[attribute]).startswith("merge(google_bigquery_table.tenant, "):  # functions.tf: a tenant's table or view
        return "tenant tables"
    for text in (unwrap(body[attribute]), unwrap(body.get("for_each", ""))):
        if m := re.match(r"(google_\w+\.\w+)", text):
            return m.group(1)
    assert attribute == "project" and unwrap(body["project"]) == "var.project", f"{rtype}: unknown target"
    return "project"


def _service_agent(tf: Terraform, key: str, member: str) -> str:
    """The Google service agent a grant's member names: a data source's account, or Pub/Sub's by project number."""
    if ref := re.fullmatch(r"serviceAccount:\$\{(data\.\w+\.\w+)\.\w+\}", member):
        return ref.group(1)
    pubsub = re.fullmatch(r"serviceAccount:service-\$\{(data\.google_project\.\w+)\.number\}@gcp-sa-pubsub\.iam\.gserviceaccount\.com", member)
    assert pubsub, f"{key}: member {member} is neither a function's account nor a service agent"
    assert pubsub.group(1) in tf.data, f"{key}: {pubsub.group(1)} is not declared"
    assert "project_id" not in tf.data[pubsub.group(1)], "the project number must be the deployment's project"
    return PUBSUB_AGENT


def _accounts_iterated(expr: str, tf: Terraform, topology: dict[str, Any]) -> set[str]:
    """`toset([for t in values(local.pubsub_triggers) : t.name])`: the functions whose accounts it covers."""
    m = re.fullmatch(r"toset\(\[for (\w+) in values\(local\.pubsub_triggers\) : (.+)\]\)", unwrap(expr))
    assert m, f"the test cannot tell which accounts this for_each covers: {expr}"
    triggers = pubsub_triggers(topology, topic_copies(topology, tenants_value(tf)))
    return {hcl_eval(m.group(2), {m.group(1): t}) for t in triggers.values()}


def _function_tables(tf: Terraform) -> dict[str, dict[str, list[str]]]:
    """functions.tf local.function_tables: {function: {"writes": [...], "reads": [...]}} (a literal)."""
    value: dict[str, dict[str, list[str]]] = tf.locals["function_tables"]
    return value


def test_each_service_account_gets_only_the_roles_its_function_needs(tf: Terraform, topology: dict[str, Any]) -> None:
    # GIVEN every IAM grant in the Terraform (authoritative bindings/policies would remove others' grants: none)
    assert not [k for k in tf.resources if re.search(r"_iam_(binding|policy)$", k.split(".")[0])]
    grants: dict[str, set[tuple[str, str]]] = {name: set() for name in topology["functions"]}
    agents: set[tuple[str, str, str]] = set()
    bulk: set[tuple[str, str]] = set()
    operators: set[tuple[str, str]] = set()
    # WHEN each grant's member, role and target are resolved
    for key, body in tf.resources.items():
        rtype = key.split(".")[0]
        if not rtype.endswith("_iam_member"):
            continue
        role, target, member = body["role"], _grant_target(tf, rtype, body), unwrap(body["member"])
        if local := re.fullmatch(r"local\.(\w+)", member):
            member = unwrap(tf.locals[local.group(1)])
        if "var.dataset_owners" in unwrap(body.get("for_each", "")):  # the operators, each an IAM member as it is
            assert key in OPERATOR_GRANTS and member in {"each.value.member", "each.value"}, key
            operators.add((role, target))
            continue
        if member == "each.value.member":
            # a tenant's own publishers (test_publishers_are_granted_per_tenant_topic...)
            assert key == "google_pubsub_topic_iam_member.tenant_publishers", key
            assert (role, target) == ("roles/pubsub.publisher", "google_pubsub_topic.topic"), key
            continue
        if re.fullmatch(r"serviceAccount:\$\{google_service_account\.bulk\[.+\]\.email\}", member):
            bulk.add((role, target))
            continue
        m = re.fullmatch(r"serviceAccount:\$\{google_service_account\.fn\[(.+)\]\.email\}", member)
        if not m:
            agents.add((_service_agent(tf, key, member), role, target))
            continue
        index = m.group(1)
        if key == "google_bigquery_table_iam_member.fn_tables":
            # one grant per deployment, tenant of its region, table and use: the role is the use's
            assert index == "each.value.deployment", key
            assert unwrap(role) == (
                'each.value.use == "write" ? google_project_iam_custom_role.table_writer.id : "roles/bigquery.dataViewer"'
            ), key
            for name, uses in _function_tables(tf).items():
                grants[name] |= {TABLE_WRITER} if uses["writes"] else set()
                grants[name] |= {TABLE_READER} if uses["reads"] else set()
            continue
        if index.startswith('"'):
            # one function's deployment in the region of what is granted ("send_due@${var.tenants[each.key].region}")
            name, region = index.strip('"').split("@", 1)
            assert region in {"${each.value.region}", "${var.tenants[each.key].region}"}, f"{key}: index {index}"
            names = {name}
        else:
            assert index in {"each.key", "each.value.deployment"}, f"{key}: member index {index}"
            names = _functions_iterated(tf, body["for_each"], topology)
        assert names <= set(grants), f"{key}: grants to functions not in the topology: {names - set(grants)}"
        for name in names:
            grants[name].add((role, target))
    # THEN each account has exactly the roles in the expected table, and service agents only theirs
    assert grants == EXPECTED_ROLES
    assert bulk == EXPECTED_BULK_ROLES
    assert operators == EXPECTED_OPERATOR_ROLES
    to_operators = {k for k, body in tf.resources.items() if "var.dataset_owners" in unwrap(body.get("for_each", ""))}
    assert to_operators == OPERATOR_GRANTS
    assert agents == EXPECTED_AGENT_ROLES
    # ... Pub/Sub's service agent can dead-letter from every trigger subscription to every dead-letter topic, and
    # mint tokens for exactly the accounts the subscriptions push as
    publishes = tf.resources["google_pubsub_topic_iam_member.pubsub_agent_publishes_dead_letters"]
    assert unwrap(publishes["for_each"]) == "google_pubsub_topic.dead_letter"
    assert unwrap(publishes["topic"]) == "each.value.name"
    acks = tf.resources["google_pubsub_subscription_iam_member.pubsub_agent_acks_dead_letters"]
    assert unwrap(acks["for_each"]) == "google_pubsub_subscription.trigger"
    assert unwrap(acks["subscription"]) == "each.value.name"
    tokens = tf.resources["google_service_account_iam_member.pubsub_agent_mints_tokens"]
    pushed_as = {t["deployment"] for t in pubsub_triggers(topology, topic_copies(topology, tenants_value(tf))).values()}
    assert _accounts_iterated(tokens["for_each"], tf, topology) == pushed_as
    assert unwrap(tokens["service_account_id"]) == "google_service_account.fn[each.key].name"
    # ... and ingest_file publishes only on the tenants' own raw-events topics (the setting's topic, per tenant)
    publish = tf.resources["google_pubsub_topic_iam_member.ingest_publishes"]
    assert match_for(publish["for_each"])[2] == "local.topics"
    tenants = tenants_value(tf)
    granted = {v["name"] for v in filter_for(publish["for_each"], topic_copies(topology, tenants)).values()}
    assert granted == {tenant_topic(Settings().raw_events_topic, tenant) for tenant in tenants}
    # ... and send_due publishes campaign shards only on the tenants' own send-shards topics
    shards = tf.resources["google_pubsub_topic_iam_member.send_due_publishes_shards"]
    assert unwrap(shards["member"]) == 'serviceAccount:${google_service_account.fn["send_due@${each.value.region}"].email}'
    granted = {v["name"] for v in filter_for(shards["for_each"], topic_copies(topology, tenants)).values()}
    assert granted == {tenant_topic(Settings().send_shards_topic, tenant) for tenant in tenants}


REFERENCE = re.compile(r"(?<![\w.])(data\.)?(google_[a-z0-9_]+)\.([a-z0-9_]+)")


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_every_reference_is_declared(tf: Terraform, topology: dict[str, Any]) -> None:
    # GIVEN every expression in the Terraform
    expressions = [s for parsed in tf.files.values() for s in _strings(parsed)]
    # WHEN the resources, data sources, variables and locals they reference are collected
    # THEN each is declared in some .tf file
    for text in expressions:
        for data, rtype, name in REFERENCE.findall(text):
            ref = f"{data}{rtype}.{name}"
            assert ref in (tf.data if data else tf.resources), f"{ref} is referenced but not declared: {text}"
        for name in re.findall(r"(?<![\w.])var\.(\w+)", text):
            assert name in tf.variables, f"var.{name} is not declared"
        for name in re.findall(r"(?<![\w.])local\.(\w+)", text):
            assert name in tf.locals, f"local.{name} is not declared"
        # ... and the names written out literally are the topology's
        for name in re.findall(r'google_service_account\.fn\["([\w-]+)@', text):
            assert name in topology["functions"], f"no function {name} in the topology"
        for kind, name in re.findall(r'local\.topology\.(topics|functions)\["([\w-]+)"\]', text):
            assert name in topology[kind], f"no {kind} {name} in the topology"
        for name in re.findall(r'google_pubsub_topic\.topic\["([\w-]+)@', text):
            assert name in topology["topics"], f"no topic {name} in the topology"


def test_claims_expire_after_the_retention_but_never_within_the_lease(tf: Terraform) -> None:
    """Finding 28: the claims bucket has a lifecycle rule; a claim is only needed until its message has a final row
    (the 15-minute lease at most), so any retention of a day or more is safe."""
    claims = tf.resources["google_storage_bucket.claims"]
    rules = claims["lifecycle_rule"]
    rules = rules if isinstance(rules, list) else [rules]
    assert len(rules) == 1
    rule = rules[0]
    condition = rule["condition"][0] if isinstance(rule["condition"], list) else rule["condition"]
    action = rule["action"][0] if isinstance(rule["action"], list) else rule["action"]
    assert unwrap(condition["age"]) == "var.claim_retention_days"
    assert unwrap(action["type"]) == "Delete"
    variable = tf.variables["claim_retention_days"]
    assert variable["default"] >= 1
    assert "claim_retention_days >= 1" in unwrap(variable["validation"][0]["condition"] if isinstance(
        variable["validation"], list) else variable["validation"]["condition"])
