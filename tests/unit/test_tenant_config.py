"""Finding 26: a tenant's bucket, dataset and region are checked as Google Cloud checks them, and no two tenants share a
bucket or a dataset (that would mix their data)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from shared.config import Settings, Tenant, TenantRegistry, region_problem
from shared.errors import SetupError

if TYPE_CHECKING:
    from pathlib import Path


def tenant(name: str = "acme", **fields: Any) -> dict[str, Any]:
    return {"name": name, "region": "europe-west1", "bucket": f"{name}-segment", "dataset": f"landline_{name}"} | fields


@pytest.mark.parametrize(
    "bucket", ["acme-landline-segment", "landline-local-t-0a1b2c3d4e", "with_underscore", "exports.acme.example", "a1c"]
)
def test_valid_bucket_names_are_accepted(bucket: str) -> None:
    assert Tenant.model_validate(tenant(bucket=bucket)).bucket == bucket


@pytest.mark.parametrize(
    "bucket",
    ["Acme-Segment", "ab", "-acme", "acme-", "acme segment", "goog-acme", "acme-google-data", "acme-g00gle",
     "192.168.1.10", "a" * 60, "acme..segment", "acme/segment", ""],
)  # fmt: skip
def test_invalid_bucket_names_are_refused(bucket: str) -> None:
    # "a" * 60 is valid alone, but its claims bucket (<bucket>-claims) would not be
    with pytest.raises(ValidationError, match="bucket"):
        Tenant.model_validate(tenant(bucket=bucket))


@pytest.mark.parametrize("dataset", ["landline-acme", "", "landline acme", "landline.acme", "x" * 1025])
def test_invalid_dataset_ids_are_refused(dataset: str) -> None:
    with pytest.raises(ValidationError, match="dataset"):
        Tenant.model_validate(tenant(dataset=dataset))


@pytest.mark.parametrize("region", ["mars-1", "europe west1", "eu", "us", "europe-west", "europe_west1", ""])
def test_regions_that_are_not_region_shaped_are_refused(region: str) -> None:
    with pytest.raises(ValidationError, match="region"):
        Tenant.model_validate(tenant(region=region))


def test_a_region_is_lowercased_and_unknown_regions_get_a_suggestion() -> None:
    assert Tenant.model_validate(tenant(region="EUROPE-WEST1")).region == "europe-west1"
    assert region_problem("europe-west1") is None
    assert "did you mean 'europe-west1'" in str(region_problem("europe-wst1"))
    assert "did you mean" in str(region_problem("us-central9"))
    assert "unknown region 'mars-west1'" in str(region_problem("mars-west1"))


def registry(tmp_path: Path, entries: list[dict[str, Any]]) -> TenantRegistry:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({t["name"]: t for t in entries}))
    return TenantRegistry(Settings(tenants_file=path, tenants_json=None))


@pytest.mark.parametrize(
    "shared",
    [{"bucket": "acme-segment"}, {"dataset": "landline_acme"}, {"bucket": "acme-segment-claims"}],
    ids=["bucket", "dataset", "the other's claims bucket"],
)
def test_two_tenants_sharing_a_bucket_or_a_dataset_are_both_refused(tmp_path: Path, shared: dict[str, str]) -> None:
    # GIVEN a registry where globex uses acme's bucket, dataset or claims bucket, and a third, unrelated tenant
    reg = registry(tmp_path, [tenant("acme"), tenant("globex", **shared), tenant("initech")])
    # THEN neither of the two gets anything (their data would mix), and each error names the other
    assert [t.name for t in reg.all()] == ["initech"]
    for name, other in (("acme", "globex"), ("globex", "acme")):
        with pytest.raises(SetupError, match=f"shares .* with tenant {other}"):
            reg.get(name)
    # AND nobody finds a tenant by the shared bucket
    assert reg.by_bucket("acme-segment") is None
    assert reg.get("initech").bucket == "initech-segment"


def test_one_invalid_tenant_does_not_make_the_others_unusable(tmp_path: Path) -> None:
    # GIVEN a registry written before names were checked: one tenant in region "mars-1"
    reg = registry(tmp_path, [tenant("acme"), tenant("uxmars", region="mars-1")])
    # THEN the others work, and asking for it is a setup error that says what is wrong
    assert reg.get("acme").region == "europe-west1"
    with pytest.raises(SetupError, match="tenant 'uxmars' is not usable: region: 'mars-1' is not a Google Cloud region"):
        reg.get("uxmars")
    assert reg.problem("uxmars") and reg.problem("acme") is None


def test_the_registry_sees_an_atomic_replace_at_once(tmp_path: Path) -> None:
    # GIVEN a registry that has been read
    reg = registry(tmp_path, [tenant("acme")])
    assert [t.name for t in reg.all()] == ["acme"]
    # WHEN the file is atomically replaced (as `landline tenant add` does), possibly within the same mtime tick
    path = tmp_path / "tenants.json"
    tmp = tmp_path / "tenants.tmp"
    tmp.write_text(json.dumps({t["name"]: t for t in (tenant("acme"), tenant("globex"))}))
    tmp.replace(path)
    # THEN the new tenant is there
    assert sorted(t.name for t in reg.all()) == ["acme", "globex"]
