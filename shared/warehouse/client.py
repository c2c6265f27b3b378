"""BigQuery client construction, dataset provisioning and the region pin.

The region check compares the dataset's stored location in code: the local emulator ignores job locations, and in
the cloud a check before writing turns a silent cross-region write into a setup error that names the fix.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from shared.config import Settings, Tenant, settings
from shared.errors import RegionMismatchError, SetupError
from shared.warehouse.schema import TABLES, VIEWS

if TYPE_CHECKING:
    from collections.abc import Iterable

_REGION_CHECK_TTL_S = 300.0
_region_checked: dict[tuple[str, str], float] = {}


@lru_cache(maxsize=8)
def _client(project: str, endpoint: str | None) -> bigquery.Client:
    if endpoint:
        return bigquery.Client(
            project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
        )
    return bigquery.Client(project=project)


def bigquery_client(cfg: Settings | None = None) -> bigquery.Client:
    cfg = cfg or settings()
    return _client(cfg.project, cfg.bigquery_endpoint)


def dataset_ref(tenant: Tenant, cfg: Settings | None = None) -> str:
    cfg = cfg or settings()
    return f"{cfg.project}.{tenant.dataset}"


def check_region(client: bigquery.Client, tenant: Tenant, *, force: bool = False) -> None:
    """Refuse to touch a dataset whose location differs from the tenant's region (cached for a few minutes)."""
    ds = f"{client.project}.{tenant.dataset}"
    key = (ds, tenant.region)
    if not force and time.monotonic() - _region_checked.get(key, -1e9) < _REGION_CHECK_TTL_S:
        return
    try:
        location = (client.get_dataset(ds).location or "").lower()
    except gexc.NotFound as exc:
        raise SetupError(
            f"dataset {ds} for tenant {tenant.name!r} does not exist",
            f"create it with `landline tenant add {tenant.name} --region {tenant.region}` (or apply infra/terraform)",
        ) from exc
    except gexc.Forbidden as exc:
        raise SetupError(
            f"no permission to read dataset {ds}",
            "grant the function's service account roles/bigquery.dataEditor on the tenant's dataset",
        ) from exc
    if location != tenant.region.lower():
        _region_checked.pop(key, None)
        raise RegionMismatchError(ds, location, tenant.name, tenant.region)
    _region_checked[key] = time.monotonic()


def provision_dataset(client: bigquery.Client, tenant: Tenant, *, tables: Iterable[str] | None = None) -> None:
    """Create the tenant's dataset (location = region), tables and views; idempotent."""
    ds_id = f"{client.project}.{tenant.dataset}"
    dataset = bigquery.Dataset(ds_id)
    dataset.location = tenant.region
    dataset.labels = {"landline-tenant": tenant.name.replace("_", "-")}
    client.create_dataset(dataset, exists_ok=True)
    check_region(client, tenant, force=True)
    wanted = set(tables) if tables is not None else None
    for spec in TABLES:
        if wanted is not None and spec.name not in wanted:
            continue
        table = bigquery.Table(f"{ds_id}.{spec.name}", schema=spec.schema)
        table.description = spec.description
        if spec.partition_field:
            table.time_partitioning = bigquery.TimePartitioning(field=spec.partition_field)
        if spec.clustering:
            table.clustering_fields = spec.clustering
        client.create_table(table, exists_ok=True)
    for name, sql in VIEWS.items():
        view = bigquery.Table(f"{ds_id}.{name}")
        view.view_query = sql.format(ds=ds_id)
        client.create_table(view, exists_ok=True)
