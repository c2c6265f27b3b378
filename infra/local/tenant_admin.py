"""`landline tenant remove`: unregister a tenant on the local stack, and with ``purge`` delete what it owned.

The registry entry goes first (under the registry's lock): from then on the functions refuse the tenant's messages
as an unknown tenant's, so nothing is half-removed while its data is deleted.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc

from infra.local.cli_support import fail

if TYPE_CHECKING:
    from infra.local.stack_config import StackConfig


def remove_tenant(cfg: StackConfig, name: str, *, purge: bool = False) -> list[str]:
    """Remove ``name`` from the registry; with ``purge`` also its buckets, dataset and local keys. Returns what was
    deleted."""
    from infra.local.secrets_file import locked, write_private_file
    from shared.clients import storage_client
    from shared.config import settings, tenant_buckets, tenants
    from shared.tenancy import registry_lock
    from shared.warehouse.client import bigquery_client

    path = cfg.paths.tenants
    with registry_lock(path):
        registry = json.loads(path.read_text() or "{}") if path.exists() else {}
        entry = registry.pop(name, None)
        if entry is None:
            fail(f"unknown tenant {name!r}: `landline tenant list` shows the registered ones")
        write_private_file(path, json.dumps(registry, indent=2, sort_keys=True))  # atomic: functions re-read it
        path.chmod(0o644)  # as shared.tenancy writes it: it holds no secret
    tenants.cache_clear()
    if not purge:
        return []
    deleted = []
    client = storage_client()
    for bucket in tenant_buckets(str(entry.get("bucket"))):
        try:
            # not delete(force=True): it refuses a bucket of more than 256 objects, and a tenant's bucket has more
            client.bucket(bucket).delete_blobs(list(client.list_blobs(bucket)), on_error=lambda _blob: None)
            client.bucket(bucket).delete()
            deleted.append(f"gs://{bucket}")
        except gexc.NotFound:
            pass
    dataset = f"{settings().project}.{entry.get('dataset')}"
    bigquery_client().delete_dataset(dataset, delete_contents=True, not_found_ok=True)
    deleted.append(f"dataset {entry.get('dataset')}")
    with locked(cfg.paths.secrets):
        secrets = json.loads(cfg.paths.secrets.read_text() or "{}") if cfg.paths.secrets.exists() else {}
        if secrets.pop(name, None) is not None:
            write_private_file(cfg.paths.secrets, json.dumps(secrets, indent=2))
            deleted.append("local keys")
    return deleted
