"""Creating and updating a tenant: its bucket and its dataset, both in the tenant's region, and its registry entry.

Works against the local stack and against a real project (with the caller's credentials).

Re-running `landline tenant add NAME --region R` is the upgrade step (it adds columns, refreshes views, applies the
retention), so it must never reset a tenant: ``plan_tenant`` starts from what is stored and changes only what is given.
Two changes are refused: a region change (a dataset's location is fixed: its data cannot move), and a weaker privacy
setting without ``allow_weaker_privacy`` (``privacy_weakenings``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from pydantic import ValidationError

from shared.clients import storage_client
from shared.config import (
    TENANT_NAME_PATTERN,
    PrivacyConfig,
    PushPolicy,
    Settings,
    Tenant,
    region_problem,
    settings,
    tenant_buckets,
    validation_message,
)
from shared.errors import SetupError
from shared.push.names import PROVIDER_NAMES, ProviderName
from shared.warehouse.client import bigquery_client, provision_dataset

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

PUSH_PROVIDERS = PROVIDER_NAMES


class TenantChangeRefused(SetupError):
    """A change `landline tenant add` will not make on its own: the message says what, the fix how to make it."""


def default_bucket(project: str, name: str) -> str:
    return f"{project}-{name}".replace("_", "-").lower()


def default_dataset(name: str) -> str:
    return f"landline_{name}"


# -- planning: what is stored + what is given ----------------------------------------------------------------------
@dataclass
class TenantPlan:
    """The tenant as it will be, and how it differs from what was stored (``stored`` None: a new tenant)."""

    tenant: Tenant
    stored: dict[str, Any] | None
    changes: list[str] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return self.stored is None


def registered(cfg: Settings, name: str) -> dict[str, Any] | None:
    """The tenant's registry entry as stored (not validated: an old entry may predate today's checks)."""
    if cfg.tenants_file is None or not cfg.tenants_file.exists():
        return None
    entry: dict[str, Any] | None = json.loads(cfg.tenants_file.read_text() or "{}").get(name)
    return entry


def plan_tenant(
    name: str,
    region: str,
    *,
    bucket: str | None = None,
    dataset: str | None = None,
    prefix: str | None = None,
    push_provider: str | None = None,
    push_policy: dict[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
    add_pii_keys: Sequence[str] = (),
    drop_pii_keys: Sequence[str] = (),
    allow_weaker_privacy: bool = False,
    cfg: Settings | None = None,
) -> TenantPlan:
    """The tenant after this `tenant add`: the stored entry with only the given values changed (None: not given).

    ``add_pii_keys`` adds personal keys, ``drop_pii_keys`` removes some (a weakening). Raises ``TenantChangeRefused``
    for a region, bucket or dataset change, or a weaker privacy without ``allow_weaker_privacy``; ``ValueError`` for
    a value the model refuses (one line)."""
    cfg = cfg or settings()
    if not re.fullmatch(TENANT_NAME_PATTERN, name):
        raise ValueError(
            f"tenant names are lowercase letters, digits and '_' (at most 40), starting with a letter; got {name!r}"
        )
    if push_provider is not None and push_provider not in PUSH_PROVIDERS:
        raise ValueError(f"unknown push provider {push_provider!r}: use one of {', '.join(PUSH_PROVIDERS)}")
    stored = registered(cfg, name)
    entry: dict[str, Any] = dict(stored) if stored else {
        "name": name, "bucket": bucket or default_bucket(cfg.project, name), "dataset": dataset or default_dataset(name),
    }  # fmt: skip
    for key, given in (("bucket", bucket), ("dataset", dataset)):
        if stored and given is not None and given != stored.get(key):
            raise TenantChangeRefused(
                f"tenant {name!r} already uses {key} {stored.get(key)!r}; its data stays there",
                f"leave out --{key} (or create a new tenant for {given!r})",
            )
    entry["name"], entry["region"] = name, region
    if prefix is not None:
        entry["prefix"] = prefix
    if push_provider is not None:
        entry["push_provider"] = push_provider
    entry["push_policy"] = {**(entry.get("push_policy") or {}), **(push_policy or {})}
    new_privacy = {**(entry.get("privacy") or {}), **(privacy or {})}
    keys = [k for k in new_privacy.get("extra_pii_keys") or () if k not in drop_pii_keys]
    new_privacy["extra_pii_keys"] = tuple(dict.fromkeys([*keys, *add_pii_keys]))
    entry["privacy"] = new_privacy
    try:
        tenant = Tenant.model_validate(entry)
    except ValidationError as exc:
        raise ValueError(validation_message(exc)) from None
    if stored is None:
        return TenantPlan(tenant, None)
    old_region = str(stored.get("region", "")).lower()
    if tenant.region != old_region:
        _check_region_change(cfg, tenant, old_region)
    weaker = privacy_weakenings(_stored_privacy(stored), tenant.privacy)
    if weaker and not allow_weaker_privacy:
        raise TenantChangeRefused(
            f"refusing to weaken the privacy of tenant {name!r}: {'; '.join(weaker)}",
            "pass --allow-weaker-privacy to confirm (leave the privacy flags out to keep what is stored)",
        )
    return TenantPlan(tenant, stored, differences(stored, tenant.model_dump(mode="json")))


def _stored_privacy(stored: dict[str, Any]) -> PrivacyConfig:
    try:
        return PrivacyConfig.model_validate(stored.get("privacy") or {})
    except ValidationError:
        return PrivacyConfig()


def _check_region_change(cfg: Settings, tenant: Tenant, old_region: str) -> None:
    """A region change only corrects the registry when the dataset already lives in the new region (the fix a
    ``RegionMismatchError`` suggests); otherwise the data would have to move, which BigQuery cannot do."""
    try:
        location = (bigquery_client(cfg).get_dataset(f"{cfg.project}.{tenant.dataset}").location or "").lower()
    except gexc.NotFound:
        location = ""
    if location == tenant.region:
        return
    raise TenantChangeRefused(
        f"tenant {tenant.name!r} is pinned to {old_region!r}; its data cannot move to {tenant.region!r}",
        f"keep --region {old_region}, or create a new tenant in {tenant.region} and ingest its files there",
    )


def privacy_weakenings(old: PrivacyConfig, new: PrivacyConfig) -> list[str]:
    """What in ``new`` protects personal data less than ``old`` (empty: nothing). A mode change counts both ways:
    remove -> hash stores pseudonyms where nothing was; hash -> remove breaks the joins the tenant relies on."""
    weaker = []
    if new.mode != old.mode:
        weaker.append(f"privacy mode {old.mode} -> {new.mode}")
    dropped = [k for k in old.extra_pii_keys if k not in new.extra_pii_keys]
    if dropped:
        weaker.append(f"personal keys no longer scrubbed: {', '.join(dropped)}")
    if old.scan_values and not new.scan_values:
        weaker.append("value scan switched off")
    if new.context_keep is not None and (old.context_keep is None or set(new.context_keep) - set(old.context_keep)):
        from shared.privacy import DEFAULT_CONTEXT_KEEP

        added = set(new.context_keep) - set(DEFAULT_CONTEXT_KEEP if old.context_keep is None else old.context_keep)
        if added:
            weaker.append(f"context sections kept: {', '.join(sorted(added))}")
    if new.rejected_retention_days > old.rejected_retention_days:
        weaker.append(f"raw rejected payloads kept {old.rejected_retention_days} -> {new.rejected_retention_days} days")
    return weaker


def differences(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """``field: old -> new`` for every leaf that differs (fields the old entry lacks, added by a newer version, are
    not changes)."""
    out = []
    for key, value in new.items():
        where = f"{path}{key}"
        before = old.get(key)
        if isinstance(value, dict):
            out += differences(before if isinstance(before, dict) else {}, value, f"{where}.")
        elif key in old and _json(before) != _json(value):
            out.append(f"{where}: {_show(before)} -> {_show(value)}")
    return out


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return "none" if value is None else str(value)


# -- applying: buckets, dataset, registry --------------------------------------------------------------------------
def add_tenant(
    name: str,
    region: str,
    *,
    bucket: str | None = None,
    dataset: str | None = None,
    prefix: str = "",
    push_provider: ProviderName | None = None,
    push_policy: dict[str, object] | None = None,
    privacy: dict[str, object] | None = None,
    cfg: Settings | None = None,
) -> Tenant:
    """Create (or re-provision) a tenant exactly as described: what `landline up` does for every registered tenant
    (so a dataset this version already provisioned in full is not checked table by table again)."""
    cfg = cfg or settings()
    try:
        tenant = Tenant(
            name=name,
            region=region,
            bucket=bucket or default_bucket(cfg.project, name),
            dataset=dataset or default_dataset(name),
            prefix=prefix,
            push_provider=push_provider,
            push_policy=PushPolicy.model_validate(push_policy or {}),
            privacy=PrivacyConfig.model_validate(privacy or {}),
        )
    except ValidationError as exc:
        raise SetupError(f"tenant {name!r} is invalid: {validation_message(exc)}", "correct the value named") from None
    return save_tenant(tenant, cfg, skip_if_current=True)


def save_tenant(tenant: Tenant, cfg: Settings | None = None, *, skip_if_current: bool = False) -> Tenant:
    """Create the tenant's buckets and dataset (idempotent, upgrading older tables) and write its registry entry."""
    cfg = cfg or settings()
    problem = region_problem(tenant.region)
    if problem:
        raise SetupError(f"tenant {tenant.name!r}: {problem}", "pass --region with a Google Cloud region")
    if cfg.tenants_file is None:
        raise SetupError("no tenant registry file", "set LANDLINE_TENANTS_FILE")
    _check_unique(cfg.tenants_file, tenant)
    client = storage_client()
    for bucket in tenant_buckets(tenant.bucket):
        _ensure_bucket(client, bucket, tenant, cfg)
    provision_dataset(bigquery_client(cfg), tenant, skip_if_current=skip_if_current)
    _write_registry(cfg.tenants_file, tenant)
    return tenant


def _check_unique(path: Path, tenant: Tenant) -> None:
    """No other tenant may use this tenant's buckets (its own, claims, staging) or dataset: their data would mix."""
    current = json.loads(path.read_text() or "{}") if path.exists() else {}
    mine = set(tenant_buckets(tenant.bucket))
    for other, entry in current.items():
        if other == tenant.name or not isinstance(entry, dict):
            continue
        theirs = set(tenant_buckets(str(entry.get("bucket"))))
        if mine & theirs:
            raise SetupError(
                f"bucket {sorted(mine & theirs)[0]!r} for tenant {tenant.name!r} belongs to tenant {other!r}",
                "give each tenant its own bucket (--bucket)",
            )
        if entry.get("dataset") == tenant.dataset:
            raise SetupError(
                f"dataset {tenant.dataset!r} for tenant {tenant.name!r} belongs to tenant {other!r}",
                "give each tenant its own dataset (--dataset)",
            )


def _ensure_bucket(client: Any, name: str, tenant: Tenant, cfg: Settings) -> None:
    """Create the bucket; if the name is taken, use it only if it is this project's, in the tenant's region.

    Bucket names are global: a Conflict may be someone else's bucket, and writing a tenant's data there (or reading
    files from it) would be a leak. In the cloud, ``list_buckets`` shows only this project's buckets; the emulator
    shows every bucket and does not keep locations, so there the check is that the bucket exists."""
    try:
        client.create_bucket(name, location=tenant.region)
        return
    except gexc.Conflict:
        pass
    try:
        ours = next((b for b in client.list_buckets(prefix=name, project=cfg.project) if b.name == name), None)
    except gexc.Forbidden:
        ours = None
    if ours is None:
        raise SetupError(
            f"bucket {name!r} exists but not in project {cfg.project!r}: bucket names are global",
            f"choose another bucket for tenant {tenant.name!r} with --bucket",
        )
    location = (ours.location or "").lower()
    if not cfg.is_local and location != tenant.region:
        raise SetupError(
            f"bucket {name!r} is in location {location!r}, not in tenant {tenant.name!r}'s region {tenant.region!r}",
            "choose another bucket with --bucket (a bucket's location cannot change)",
        )


@contextmanager
def registry_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside the registry: two `tenant add` at once must not drop each other's entry."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_registry(path: Path, tenant: Tenant) -> None:
    with registry_lock(path):
        current = json.loads(path.read_text() or "{}") if path.exists() else {}
        current[tenant.name] = tenant.model_dump()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(current, indent=2, sort_keys=True))
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)  # atomic: functions re-read the file while it changes
