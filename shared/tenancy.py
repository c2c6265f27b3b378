"""Creating a tenant: its bucket and its dataset, both in the tenant's region, and its registry entry.

Works against the local stack and against a real project (with the caller's credentials).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc

from shared.clients import storage_client
from shared.config import PrivacyConfig, PushPolicy, Settings, Tenant, settings
from shared.errors import SetupError
from shared.warehouse.client import bigquery_client, provision_dataset

if TYPE_CHECKING:
    from pathlib import Path


def default_bucket(project: str, name: str) -> str:
    return f"{project}-{name}".replace("_", "-").lower()


def default_dataset(name: str) -> str:
    return f"landline_{name}"


def add_tenant(
    name: str,
    region: str,
    *,
    bucket: str | None = None,
    dataset: str | None = None,
    prefix: str = "",
    push_provider: str | None = None,
    push_policy: dict[str, object] | None = None,
    privacy: dict[str, object] | None = None,
    cfg: Settings | None = None,
) -> Tenant:
    cfg = cfg or settings()
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
    from shared.push.claims import claims_bucket

    client = storage_client()
    for bucket in (tenant.bucket, claims_bucket(tenant)):
        try:
            client.create_bucket(bucket, location=tenant.region)
        except gexc.Conflict:
            pass
    provision_dataset(bigquery_client(cfg), tenant)
    if cfg.tenants_file is None:
        raise SetupError("no tenant registry file", "set LANDLINE_TENANTS_FILE")
    _write_registry(cfg.tenants_file, tenant)
    return tenant


def _write_registry(path: Path, tenant: Tenant) -> None:
    current = json.loads(path.read_text()) if path.exists() else {}
    current[tenant.name] = tenant.model_dump()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
    tmp.replace(path)  # atomic: functions re-read the file while it changes
