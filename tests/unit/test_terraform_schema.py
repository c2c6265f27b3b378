"""infra/terraform against the Google provider's own schema (infra/terraform_schema.py): the deployment passes, and
the mistakes the check exists for (a misspelt or missing argument, a wrong block, a type the provider does not
have) are each caught, with a message that says where and what. The mistakes are made in copies of the real .tf
files, so the check is shown to work on the deployment as it is, not only on toy files."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import hcl2
import pytest

import infra.terraform_schema as terraform_schema
from infra.terraform_schema import SCHEMA_DIR, TF_DIR, check, extract, load_schema

REPO = Path(__file__).resolve().parents[2]
HCL = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


@pytest.fixture(scope="module")
def schema() -> terraform_schema.Schema:
    return load_schema()


def broken_copy(tmp_path: Path, file: str, old: str, new: str, count: int = 1) -> Path:
    """The deployment's .tf files in tmp_path, with `old` (which must be in the real file) replaced in one."""
    for path in TF_DIR.glob("*.tf"):
        shutil.copy(path, tmp_path / path.name)
    text = (TF_DIR / file).read_text()
    assert old in text, f"{file} no longer has {old!r}: update this test"
    (tmp_path / file).write_text(text.replace(old, new, count))
    return tmp_path


def test_the_deployment_passes_the_provider_schema_check(schema: terraform_schema.Schema) -> None:
    # GIVEN infra/terraform as committed WHEN checked against the committed schema THEN nothing is wrong
    assert check(TF_DIR, schema) == []


def test_the_provider_is_pinned_to_the_schemas_version(schema: terraform_schema.Schema) -> None:
    # GIVEN main.tf's required_providers
    main = hcl2.loads((TF_DIR / "main.tf").read_text(), serialization_options=HCL)
    google = main["terraform"][0]["required_providers"][0]["google"]
    # THEN it is exactly the provider version the schema was extracted from (the check is true of what runs)
    assert google["source"] == "hashicorp/google"
    assert google["version"] == f"= {schema.provider_version}"


def test_the_committed_schema_says_where_it_came_from(schema: terraform_schema.Schema) -> None:
    # GIVEN the one committed schema file
    (path,) = SCHEMA_DIR.glob("google-*.json.gz")
    # THEN it is named by the provider version it records, it is small, and the module docstring gives the command
    # that made it from that package version (so it can be made again)
    assert path.name == f"google-{schema.provider_version}.json.gz"
    assert path.stat().st_size < 512 * 1024
    assert f"{schema.package['pypi']}=={schema.package['version']}" in (terraform_schema.__doc__ or "")
    assert f"hashicorp/google {schema.provider_version}" in (terraform_schema.__doc__ or "")
    # ... and it has the whole provider, resources and data sources, each with its arguments and blocks
    assert len(schema.resources) > 1000 and len(schema.data_sources) > 300
    function = schema.resources["google_cloudfunctions2_function"]
    assert function["attributes"]["name"] == {"required": True, "type": "string"}
    assert function["blocks"]["service_config"]["max_items"] == 1
    assert function["blocks"]["service_config"]["attributes"]["max_instance_count"]["type"] == "number"


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        pytest.param(
            "functions.tf",
            'runtime     = "python311"',
            'runtimee    = "python311"',
            'functions.tf: google_cloudfunctions2_function.fn: build_config: unknown argument "runtimee" '
            '(did you mean "runtime"?)',
            id="unknown-argument",
        ),
        pytest.param(
            "functions.tf",
            '  secret_id = "landline-${each.key}-privacy"\n',
            "",
            'functions.tf: google_secret_manager_secret.privacy_salt: missing required argument "secret_id"',
            id="required-argument-removed",
        ),
        pytest.param(
            "main.tf",
            "    allowed_persistence_regions = [each.value.region]\n",
            "",
            "main.tf: google_pubsub_topic.topic: message_storage_policy: missing required argument "
            '"allowed_persistence_regions"',
            id="required-nested-argument-removed",
        ),
        pytest.param(
            "functions.tf",
            "    oidc_token {",
            "    oidc_tokens {",
            'functions.tf: google_pubsub_subscription.trigger: push_config: unknown block "oidc_tokens" '
            '(did you mean "oidc_token"?)',
            id="unknown-nested-block",
        ),
        pytest.param(
            "functions.tf",
            'resource "google_cloud_scheduler_job" "tick"',
            'resource "google_cloud_scheduler_jobs" "tick"',
            'functions.tf: google_cloud_scheduler_jobs.tick: unknown resource type "google_cloud_scheduler_jobs" '
            '(did you mean "google_cloud_scheduler_job"?)',
            id="unknown-resource-type",
        ),
        pytest.param(
            "main.tf",
            'data "google_storage_project_service_account" "gcs" {}',
            'data "google_storage_project_service_acount" "gcs" {}',
            "main.tf: data.google_storage_project_service_acount.gcs: unknown data source type "
            '"google_storage_project_service_acount" (did you mean "google_storage_project_service_account"?)',
            id="unknown-data-source-type",
        ),
        pytest.param(
            "main.tf",
            '  expiration_policy {\n    ttl = ""',
            '  expiration_policy = {\n    ttl = ""',
            'main.tf: google_pubsub_subscription.dead_letter_keep: "expiration_policy" is a block, not an argument: '
            "write expiration_policy { ... }",
            id="block-written-as-argument",
        ),
        pytest.param(
            "main.tf",
            '  labels     = { landline-tenant = replace(each.key, "_", "-") }',
            '  labels { landline-tenant = replace(each.key, "_", "-") }',
            'main.tf: google_bigquery_dataset.tenant: "labels" is an argument, not a block: write labels = ...',
            id="argument-written-as-block",
        ),
        pytest.param(
            "functions.tf",
            "= each.value.fn.timeout_seconds",
            '= "60s"',
            'functions.tf: google_cloudfunctions2_function.fn: service_config: argument "timeout_seconds" expects a '
            'number, not the string "60s"',
            id="string-for-a-number",
        ),
        pytest.param(
            "main.tf",
            "    enforce_in_transit          = true",
            '    enforce_in_transit          = "yes"',
            'main.tf: google_pubsub_topic.topic: message_storage_policy: argument "enforce_in_transit" expects a '
            'bool, not the string "yes"',
            id="string-for-a-bool",
        ),
        pytest.param(
            "main.tf",
            "    allowed_persistence_regions = [each.value.region]",
            '    allowed_persistence_regions = "europe-west1"',
            'main.tf: google_pubsub_topic.topic: message_storage_policy: argument "allowed_persistence_regions" '
            'expects a list(string), not the string "europe-west1"',
            id="string-for-a-list",
        ),
        pytest.param(
            "main.tf",
            "    allowed_persistence_regions = [each.value.region]",
            '    allowed_persistence_regions = [each.value.region, { region = "europe-west1" }]',
            'main.tf: google_pubsub_topic.topic: message_storage_policy: argument "allowed_persistence_regions" '
            "expects a list(string), not one with an object",
            id="object-in-a-list-of-strings",
        ),
        pytest.param(
            "functions.tf",
            "  retry_policy {",
            '  retry_policy {\n    minimum_backoff = "10s"\n  }\n  retry_policy {',
            'functions.tf: google_pubsub_subscription.trigger: at most 1 "retry_policy" block(s), found 2',
            id="single-block-twice",
        ),
        pytest.param(
            "main.tf",
            "    ignore_changes = [labels[",
            "    ignore_change = [labels[",
            'main.tf: google_bigquery_dataset.tenant: lifecycle: unknown argument "ignore_change" '
            '(did you mean "ignore_changes"?)',
            id="lifecycle-contents",
        ),
        pytest.param(
            "functions.tf",
            '  time_zone = "Etc/UTC"',
            '  time_zone = "Etc/UTC"\n  count     = 2',
            'functions.tf: google_cloud_scheduler_job.tick: "count" and "for_each" cannot both be set',
            id="count-and-for-each",
        ),
        pytest.param(
            "functions.tf",
            'resource "google_cloud_scheduler_job" "tick" {',
            'resource "random_id" "suffix" {\n  byte_length = 4\n}\n\nresource "google_cloud_scheduler_job" "tick" {',
            'functions.tf: random_id.suffix: no schema for provider "random": only hashicorp/google is checked',
            id="another-provider",
        ),
    ],
)
def test_a_mistake_in_the_deployment_is_reported(
    tmp_path: Path, schema: terraform_schema.Schema, file: str, old: str, new: str, expected: str
) -> None:
    # GIVEN the deployment with one mistake WHEN checked THEN that mistake, and only it, is reported
    assert check(broken_copy(tmp_path, file, old, new), schema) == [expected]


def test_a_provider_pin_other_than_the_schemas_version_is_reported(
    tmp_path: Path, schema: terraform_schema.Schema
) -> None:
    # GIVEN main.tf pinning a range instead of the schema's version, or nothing
    version = schema.provider_version
    ranged = broken_copy(tmp_path, "main.tf", f'version = "= {version}"', 'version = "~> 8.0"')
    assert check(ranged, schema) == [
        f'main.tf: required_providers.google: version "~> 8.0" is not the schema\'s version: pin "= {version}" (or '
        "extract the schema of the version you want, see infra/terraform_schema.py)"
    ]
    unpinned = broken_copy(tmp_path, "main.tf", f', version = "= {version}"', "")
    assert check(unpinned, schema) == [
        f'main.tf: required_providers.google: no version: pin "= {version}" (or extract the schema of the version '
        "you want, see infra/terraform_schema.py)"
    ]


def test_a_dynamic_block_is_checked_as_the_block_it_makes(tmp_path: Path, schema: terraform_schema.Schema) -> None:
    # GIVEN a replicas block written as a dynamic block, once right and once with a misspelt argument
    dynamic = (
        'dynamic "replicas" {\n        for_each = [each.value.region]\n        content { %s = replicas.value }\n      }'
    )
    right = broken_copy(tmp_path, "functions.tf", "replicas { location = each.value.region }", dynamic % "location", 2)
    assert check(right, schema) == []
    wrong = broken_copy(tmp_path, "functions.tf", "replicas { location = each.value.region }", dynamic % "locaton")
    # THEN the content is checked against the replicas block's schema
    assert check(wrong, schema) == [
        "functions.tf: google_secret_manager_secret.push_credentials: replication.user_managed.replicas: unknown "
        'argument "locaton" (did you mean "location"?)',
        "functions.tf: google_secret_manager_secret.push_credentials: replication.user_managed.replicas: missing "
        'required argument "location"',
    ]
    # ... and the name of a dynamic block is checked like a block's
    misnamed = broken_copy(tmp_path, "functions.tf", "replicas { location = each.value.region }", dynamic % "location")
    (misnamed / "functions.tf").write_text((misnamed / "functions.tf").read_text().replace('"replicas"', '"replica"'))
    assert check(misnamed, schema) == [
        'functions.tf: google_secret_manager_secret.push_credentials: replication.user_managed: dynamic "replica": '
        'unknown block "replica" (did you mean "replicas"?)',
        "functions.tf: google_secret_manager_secret.push_credentials: replication.user_managed: missing required "
        'block "replicas"',
    ]


def test_meta_arguments_and_convertible_literals_are_accepted(tmp_path: Path, schema: terraform_schema.Schema) -> None:
    # GIVEN every meta-argument Terraform gives a resource, and literals Terraform converts ("60" to a number)
    meta = """  depends_on = [google_storage_bucket.sources]
  provider   = google
  lifecycle {
    create_before_destroy = true
    prevent_destroy       = false
    precondition {
      condition     = true
      error_message = "never"
    }
  }
  connection {
    type = "ssh"
    host = "example.invalid"
  }
  provisioner "local-exec" {
    command = "true"
  }
  time_zone = "Etc/UTC\""""
    tf_dir = broken_copy(tmp_path, "functions.tf", '  time_zone = "Etc/UTC"', meta)
    text = (tf_dir / "functions.tf").read_text().replace("= each.value.fn.timeout_seconds", '= "60"')
    (tf_dir / "functions.tf").write_text(text)
    # THEN none is a problem
    assert check(tf_dir, schema) == []


def test_a_file_that_does_not_parse_is_reported(tmp_path: Path, schema: terraform_schema.Schema) -> None:
    tf_dir = broken_copy(tmp_path, "monitoring.tf", 'combiner     = "OR"', 'combiner     = "OR')
    (problem,) = check(tf_dir, schema)
    assert problem.startswith("monitoring.tf: does not parse: ")


def test_the_command_line_check_exits_1_on_a_problem(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.terraform_schema", "check", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    clean = run()
    assert (clean.returncode, clean.stdout) == (0, "")
    broken = run(str(broken_copy(tmp_path, "functions.tf", 'runtime     = "python311"', 'runtimee    = "python311"')))
    assert broken.returncode == 1
    assert 'build_config: unknown argument "runtimee" (did you mean "runtime"?)' in broken.stdout


# --- extract, on a small manifest shaped like the real one ---------------------------------------------------------

LINK = "https://registry.terraform.io/providers/hashicorp/google/9.9.9/docs"


def _prop(name: str, type_: dict[str, Any], anchor: str | None, optional: bool = True) -> dict[str, Any]:
    docs = {"summary": f"{name}.", "stability": "stable"}
    if anchor:
        docs["remarks"] = f"Docs at Terraform Registry: {{@link {LINK}/resources/thing#{anchor} Thing#{anchor}}}"
    return {"name": name, "type": type_, **({"optional": True} if optional else {}), "docs": docs}


def _class(fqn: str, base: str, link: str) -> dict[str, Any]:
    config = {"name": "config", "type": {"fqn": f"{fqn}Config"}}
    return {
        "fqn": fqn,
        "kind": "class",
        "base": base,
        "docs": {"summary": f"Represents a {{@link {link}}}."},
        "initializer": {"parameters": [{"name": "scope"}, {"name": "id"}, config]},
    }


P = "@cdktn/provider-google.thing."
MANIFEST: dict[str, Any] = {
    "name": "@cdktn/provider-google",
    "version": "1.2.3",
    "targets": {"python": {"distName": "cdktn-provider-google"}},
    "types": {
        f"{P}Thing": _class(f"{P}Thing", "cdktn.TerraformResource", f"{LINK}/resources/thing google_thing"),
        f"{P}ThingConfig": {
            "fqn": f"{P}ThingConfig",
            "kind": "interface",
            "properties": [
                _prop("name", {"primitive": "string"}, "name", optional=False),
                _prop("buildAttribute", {"primitive": "string"}, "build"),  # renamed by the generator
                _prop("sizeGb", {"primitive": "number"}, None),  # no docs link: from the camelCase name
                _prop(
                    "enabled", {"union": {"types": [{"primitive": "boolean"}, {"fqn": "cdktn.IResolvable"}]}}, "enabled"
                ),
                _prop("tags", {"collection": {"kind": "map", "elementtype": {"primitive": "string"}}}, "tags"),
                _prop("settings", {"fqn": f"{P}ThingSettings"}, "settings", optional=False),
                _prop(
                    "rule",
                    {
                        "union": {
                            "types": [
                                {"fqn": "cdktn.IResolvable"},
                                {"collection": {"kind": "array", "elementtype": {"fqn": f"{P}ThingRule"}}},
                            ]
                        }
                    },
                    "rule",
                ),
            ],
        },
        f"{P}ThingSettings": {
            "fqn": f"{P}ThingSettings",
            "kind": "interface",
            "properties": [
                _prop("zones", {"collection": {"kind": "array", "elementtype": {"primitive": "string"}}}, "zones"),
            ],
        },
        f"{P}ThingSettingsOutputReference": {
            "fqn": f"{P}ThingSettingsOutputReference",
            "kind": "class",
            "base": "cdktn.ComplexObject",
        },
        f"{P}ThingRule": {
            "fqn": f"{P}ThingRule",
            "kind": "interface",
            "properties": [
                _prop("action", {"primitive": "string"}, "action", optional=False),
                # a deep block whose generated interface is reused inside itself: a cycle, left unchecked
                _prop("rule", {"fqn": f"{P}ThingRule"}, "rule"),
            ],
        },
        f"{P}DataGoogleThing": _class(
            f"{P}DataGoogleThing", "cdktn.TerraformDataSource", f"{LINK}/data-sources/thing google_thing"
        ),
        f"{P}DataGoogleThingConfig": {
            "fqn": f"{P}DataGoogleThingConfig",
            "kind": "interface",
            "properties": [
                _prop("name", {"primitive": "string"}, "name"),
            ],
        },
    },
}
EXPECTED = {
    "provider": {"source": "hashicorp/google", "version": "9.9.9"},
    "package": {"jsii": "@cdktn/provider-google", "pypi": "cdktn-provider-google", "version": "1.2.3"},
    "resources": {
        "google_thing": {
            "attributes": {
                "name": {"required": True, "type": "string"},
                "build": {"required": False, "type": "string"},
                "size_gb": {"required": False, "type": "number"},
                "enabled": {"required": False, "type": "bool"},
                "tags": {"required": False, "type": "map(string)"},
            },
            "blocks": {
                "settings": {
                    "attributes": {"zones": {"required": False, "type": "list(string)"}},
                    "blocks": {},
                    "min_items": 1,
                    "max_items": 1,
                },
                "rule": {
                    "attributes": {"action": {"required": True, "type": "string"}},
                    "blocks": {
                        "rule": {"attributes": {}, "blocks": {}, "unchecked": True, "min_items": 0, "max_items": 1}
                    },
                    "min_items": 0,
                },
            },
        }
    },
    "data_sources": {"google_thing": {"attributes": {"name": {"required": False, "type": "string"}}, "blocks": {}}},
}


def _wheel(manifest: dict[str, Any]) -> bytes:
    """A wheel as the real one is: the npm tarball (package/.jsii) inside it, as _jsii/<name>@<version>.jsii.tgz."""
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("package/.jsii")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("cdktn_provider_google/__init__.py", "")
        zf.writestr("cdktn_provider_google/_jsii/provider-google@1.2.3.jsii.tgz", tgz.getvalue())
    return wheel.getvalue()


def test_extract_reduces_the_manifest_to_what_the_check_needs(tmp_path: Path) -> None:
    # GIVEN the manifest as a wheel, and as a gzipped bare manifest
    wheel = tmp_path / "cdktn_provider_google-1.2.3-py3-none-any.whl"
    wheel.write_bytes(_wheel(MANIFEST))
    bare = tmp_path / ".jsii.gz"
    bare.write_bytes(gzip.compress(json.dumps(MANIFEST).encode()))
    # WHEN each is extracted
    from_wheel = extract(wheel, tmp_path / "a")
    from_bare = extract(bare, tmp_path / "b")
    # THEN both give the same bytes, named by the provider version, holding the Terraform names (from the docs
    # anchors), required flags, types, and blocks with their bounds
    assert from_wheel.name == "google-9.9.9.json.gz"
    assert from_wheel.read_bytes() == from_bare.read_bytes()
    assert json.loads(gzip.decompress(from_wheel.read_bytes())) == EXPECTED


def test_the_command_line_extract_writes_the_schema(tmp_path: Path) -> None:
    wheel = tmp_path / "provider.whl"
    wheel.write_bytes(_wheel(MANIFEST))
    assert terraform_schema.main(["extract", str(wheel), "-o", str(tmp_path / "out")]) == 0
    extracted = load_schema(tmp_path / "out" / "google-9.9.9.json.gz")
    assert (extracted.provider_version, extracted.package["version"]) == ("9.9.9", "1.2.3")


def test_a_schema_extracted_from_a_package_checks_terraform(tmp_path: Path) -> None:
    # GIVEN the schema of the small manifest and Terraform using it
    wheel = tmp_path / "provider.whl"
    wheel.write_bytes(_wheel(MANIFEST))
    small = load_schema(extract(wheel, tmp_path / "schema"))
    tf_dir = tmp_path / "tf"
    tf_dir.mkdir()
    main = """terraform {
  required_providers {
    google = { source = "hashicorp/google", version = "= 9.9.9" }
  }
}

resource "google_thing" "ok" {
  name    = "a"
  build   = "b"
  size_gb = "10"
  tags    = { team = "x" }
  settings {
    zones = ["z"]
  }
  rule {
    action = "allow"
    rule {
      whatever = "the manifest cannot say"
    }
  }
}

data "google_thing" "ok" {}

resource "google_thing" "bad" {
  size_gb = "ten"
  enabled = 1
  rule {}
}
"""
    (tf_dir / "main.tf").write_text(main)
    # WHEN checked THEN the right resource passes, and each mistake of the wrong one is found
    assert check(tf_dir, small) == [
        'main.tf: google_thing.bad: argument "size_gb" expects a number, not the string "ten"',
        'main.tf: google_thing.bad: argument "enabled" expects a bool, not the number 1',
        'main.tf: google_thing.bad: rule: missing required argument "action"',
        'main.tf: google_thing.bad: missing required argument "name"',
        'main.tf: google_thing.bad: missing required block "settings"',
    ]
