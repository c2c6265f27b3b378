"""Newcomer review row 8: re-running `landline tenant add NAME --region R` keeps what is stored and changes only what is
given; weaker privacy needs an explicit flag; a region change is refused (a dataset's data cannot move)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from shared import tenancy
from shared.config import PrivacyConfig, Settings
from shared.tenancy import TenantChangeRefused, differences, plan_tenant, privacy_weakenings

if TYPE_CHECKING:
    from pathlib import Path

STORED = {
    "name": "acme", "region": "europe-west1", "bucket": "acme-segment", "dataset": "landline_acme", "prefix": "exports",
    "push_provider": "fcm",
    "push_policy": {"quiet_hours_start": "21:00", "quiet_hours_end": "08:00", "frequency_cap": 5},
    "privacy": {"mode": "hash", "extra_pii_keys": ["member_no"], "scan_values": True, "rejected_retention_days": 14},
}  # fmt: skip


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"acme": STORED}))
    return Settings(tenants_file=path, tenants_json=None, project="proj")


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}{key}.").items()}
    return {path.rstrip("."): json.dumps(value)}


def test_re_adding_with_only_the_region_keeps_every_stored_setting(cfg: Settings) -> None:
    # WHEN the README's upgrade step runs: tenant add NAME --region R, no other flag
    plan = plan_tenant("acme", "europe-west1", cfg=cfg)
    # THEN nothing stored is lost or changed, and nothing is reported as changed
    before, after = leaves(STORED), leaves(plan.tenant.model_dump(mode="json"))
    assert {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v} == {}
    assert not plan.created and plan.changes == []


def test_only_the_given_values_change(cfg: Settings) -> None:
    plan = plan_tenant("acme", "europe-west1", push_policy={"frequency_cap": 7}, add_pii_keys=["member_no", "loyalty_id"],
                       prefix="exports2", cfg=cfg)  # fmt: skip
    tenant = plan.tenant
    assert tenant.push_policy.frequency_cap == 7 and tenant.push_policy.quiet_hours_start == "21:00"
    assert tenant.privacy.extra_pii_keys == ("member_no", "loyalty_id")  # added once, in order, never twice
    assert tenant.privacy.mode == "hash" and tenant.push_provider == "fcm" and tenant.prefix == "exports2"
    assert plan.changes == [
        "prefix: exports -> exports2",
        "push_policy.frequency_cap: 5 -> 7",
        "privacy.extra_pii_keys: [member_no] -> [member_no, loyalty_id]",
    ]


@pytest.mark.parametrize(
    ("given", "what"),
    [({"privacy": {"mode": "remove"}}, "privacy mode hash -> remove"),
     ({"drop_pii_keys": ["member_no"]}, "personal keys no longer scrubbed: member_no"),
     ({"privacy": {"scan_values": False}}, "value scan switched off"),
     ({"privacy": {"rejected_retention_days": 90}}, "raw rejected payloads kept 14 -> 90 days")],
)  # fmt: skip
def test_weaker_privacy_is_refused_without_the_flag(cfg: Settings, given: dict[str, Any], what: str) -> None:
    with pytest.raises(TenantChangeRefused, match=what) as refused:
        plan_tenant("acme", "europe-west1", cfg=cfg, **given)
    assert "--allow-weaker-privacy" in refused.value.fix
    # AND with the flag it is made, and reported
    plan = plan_tenant("acme", "europe-west1", cfg=cfg, allow_weaker_privacy=True, **given)
    assert plan.changes


def test_stronger_privacy_needs_no_flag(cfg: Settings) -> None:
    plan = plan_tenant("acme", "europe-west1", add_pii_keys=["loyalty_id"], privacy={"rejected_retention_days": 7},
                       cfg=cfg)  # fmt: skip
    assert plan.tenant.privacy.rejected_retention_days == 7


def test_a_region_change_is_refused_unless_the_dataset_already_lives_there(
    cfg: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = {"value": "europe-west1"}

    class Client:
        def get_dataset(self, ref: str) -> Any:
            return type("Dataset", (), {"location": location["value"].upper()})()

    monkeypatch.setattr(tenancy, "bigquery_client", lambda cfg: Client())
    with pytest.raises(TenantChangeRefused, match="pinned to 'europe-west1'; its data cannot move to 'us-central1'"):
        plan_tenant("acme", "us-central1", cfg=cfg)
    # a registry that says another region than where the dataset is may be corrected (RegionMismatchError's fix)
    location["value"] = "us-central1"
    assert plan_tenant("acme", "us-central1", cfg=cfg).changes == ["region: europe-west1 -> us-central1"]


@pytest.mark.parametrize(
    ("given", "message"),
    [({"bucket": "other-bucket"}, "already uses bucket 'acme-segment'"),
     ({"dataset": "other"}, "already uses dataset 'landline_acme'")],
)  # fmt: skip
def test_an_existing_tenants_bucket_and_dataset_do_not_change(
    cfg: Settings, given: dict[str, str], message: str
) -> None:
    with pytest.raises(TenantChangeRefused, match=message):
        plan_tenant("acme", "europe-west1", cfg=cfg, **given)


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [("globex", {"push_provider": "fcmm"}, "unknown push provider 'fcmm'"),
     ("globex", {"push_policy": {"frequency_cap": 0}}, "frequency_cap"),
     ("Globex", {}, "tenant names are lowercase letters")],
)  # fmt: skip
def test_bad_values_are_one_line_errors(cfg: Settings, name: str, given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        plan_tenant(name, "europe-west1", cfg=cfg, **given)
    assert "\n" not in str(err.value)


def test_a_new_tenant_gets_the_defaults() -> None:
    cfg = Settings(tenants_file=None, tenants_json=None, project="proj")
    plan = plan_tenant("globex", "us-central1", cfg=cfg)
    assert plan.created and plan.tenant.bucket == "proj-globex" and plan.tenant.dataset == "landline_globex"
    assert plan.tenant.privacy == PrivacyConfig() and plan.tenant.privacy.rejected_retention_days == 30


def test_weakenings_and_differences_are_described() -> None:
    assert privacy_weakenings(PrivacyConfig(), PrivacyConfig()) == []
    assert privacy_weakenings(PrivacyConfig(), PrivacyConfig(context_keep=("locale", "traits"))) == [
        "context sections kept: traits"
    ]
    assert differences({"a": 1, "b": {"c": None}}, {"a": 1, "b": {"c": "x"}, "new": 3}) == ["b.c: none -> x"]


class _Buckets:
    """A storage client whose bucket names are all taken; ``listed`` is what list_buckets shows for this project."""

    def __init__(self, listed: list[Any]) -> None:
        self.listed = listed

    def create_bucket(self, name: str, location: str) -> None:
        from google.api_core import exceptions as gexc

        raise gexc.Conflict("taken")

    def list_buckets(self, prefix: str, project: str) -> list[Any]:
        return [b for b in self.listed if b.name.startswith(prefix)]


def _bucket(name: str, location: str) -> Any:
    return type("Bucket", (), {"name": name, "location": location})()


@pytest.mark.parametrize(
    ("listed", "local", "problem"),
    [([], False, "exists but not in project 'proj'"),
     ([_bucket("acme-segment-2", "EUROPE-WEST1")], False, "exists but not in project 'proj'"),
     ([_bucket("acme-segment", "US-CENTRAL1")], False, "is in location 'us-central1'"),
     ([_bucket("acme-segment", "EUROPE-WEST1")], False, None),
     ([_bucket("acme-segment", "US-CENTRAL1")], True, None)],  # the emulator keeps no locations
    ids=["someone else's", "a prefix match only", "ours, other region", "ours", "ours on the emulator"],
)  # fmt: skip
def test_a_taken_bucket_name_is_used_only_if_it_is_ours_and_in_the_region(
    listed: list[Any], local: bool, problem: str | None
) -> None:
    from shared.config import Tenant
    from shared.errors import SetupError

    tenant = Tenant.model_validate(STORED)
    cfg = Settings(project="proj", bigquery_endpoint="http://127.0.0.1:1" if local else None)
    if problem is None:
        tenancy._ensure_bucket(_Buckets(listed), "acme-segment", tenant, cfg)
    else:
        with pytest.raises(SetupError, match=problem):
            tenancy._ensure_bucket(_Buckets(listed), "acme-segment", tenant, cfg)
