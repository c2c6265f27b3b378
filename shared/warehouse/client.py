"""BigQuery client construction, dataset provisioning and the region pin.

The region check compares the dataset's stored location in code: the local emulator ignores job locations, and in
the cloud a check before writing turns a silent cross-region write into a setup error that names the fix.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from typing import TYPE_CHECKING

import grpc
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient
from google.cloud.bigquery_storage_v1.services.big_query_write.transports import BigQueryWriteGrpcTransport

from shared.config import Settings, Tenant, settings
from shared.errors import RegionMismatchError, SetupError
from shared.warehouse.schema import TABLES, VIEWS, view_sql

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


@lru_cache(maxsize=8)
def _write_client(endpoint: str | None) -> BigQueryWriteClient:
    if endpoint:  # the emulator speaks plaintext gRPC without credentials
        channel = grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", 16 * 1024 * 1024)])
        return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))
    return BigQueryWriteClient()


def write_client(cfg: Settings | None = None) -> BigQueryWriteClient:
    """The Storage Write API client (the writer's appends), one per process: its channel is reused."""
    cfg = cfg or settings()
    if cfg.bigquery_endpoint and not cfg.bigquery_write_endpoint:
        raise SetupError(
            "LANDLINE_BIGQUERY_ENDPOINT is set (the local emulator) but LANDLINE_BIGQUERY_WRITE_ENDPOINT is not",
            "set it to 127.0.0.1:<port> of the emulator's gRPC server (`bigquery_grpc` in the stack's ports); "
            "infra/local/stack_config.py client_env() sets both for the functions, the CLI and tests",
        )
    return _write_client(cfg.bigquery_write_endpoint)


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
            "apply infra/terraform: it grants each function's regional account the tables it uses and metadata on the dataset",
        ) from exc
    if location != tenant.region.lower():
        _region_checked.pop(key, None)
        raise RegionMismatchError(ds, location, tenant.name, tenant.region)
    _region_checked[key] = time.monotonic()


# The table that keeps raw lines (personal data unscrubbed, unhashed in hash mode): its partitions expire after the
# tenant's ``privacy.rejected_retention_days``, so a replay must happen within that window.
RAW_PAYLOAD_TABLE = "rejected"


def partition_expiration_ms(tenant: Tenant, table: str) -> int | None:
    """How long a partition of ``table`` lives for ``tenant`` (None: forever)."""
    return tenant.privacy.rejected_retention_days * 86_400_000 if table == RAW_PAYLOAD_TABLE else None


def provision_dataset(
    client: bigquery.Client, tenant: Tenant, *, tables: Iterable[str] | None = None, skip_if_current: bool = False
) -> None:
    """Create the tenant's dataset (location = region), tables and views; idempotent. Also upgrades what an older
    version made: missing columns, outdated views, and the raw-payload table's partition expiration.

    ``skip_if_current`` trusts the dataset's schema label (a restart re-provisioning every tenant); an explicit
    upgrade (`landline tenant add`, ``python -m shared.warehouse.provision``) checks every table, so a table changed
    by hand is put right too."""
    ds_id = f"{client.project}.{tenant.dataset}"
    dataset = bigquery.Dataset(ds_id)
    dataset.location = tenant.region
    dataset.labels = {"landline-tenant": tenant.name.replace("_", "-")}
    dataset = client.create_dataset(dataset, exists_ok=True)
    check_region(client, tenant, force=True)
    fingerprint = schema_fingerprint(tenant, ds_id)
    if skip_if_current and tables is None and _provisioned(client, dataset, fingerprint):
        return
    wanted = set(tables) if tables is not None else None
    for spec in TABLES:
        if wanted is not None and spec.name not in wanted:
            continue
        table = bigquery.Table(f"{ds_id}.{spec.name}", schema=spec.schema)
        table.description = spec.description
        expiration_ms = partition_expiration_ms(tenant, spec.name)
        if spec.partition_field:
            table.time_partitioning = bigquery.TimePartitioning(field=spec.partition_field, expiration_ms=expiration_ms)
        if spec.clustering:
            table.clustering_fields = spec.clustering
        created = client.create_table(table, exists_ok=True)
        _add_missing_columns(client, created, spec.schema)
        if expiration_ms is not None:
            _expire_partitions(client, created, expiration_ms)
    for name in VIEWS:
        view = bigquery.Table(f"{ds_id}.{name}")
        view.view_query = view_sql(name, ds_id, tenant.activity)
        _refresh_view(client, client.create_table(view, exists_ok=True), view.view_query, tenant.region)
    if tables is None:
        dataset.labels = {**dataset.labels, SCHEMA_LABEL: fingerprint}
        client.update_dataset(dataset, ["labels"])


# The dataset label that says which version of the tables and views provisioning last made in full: `landline up`
# re-provisions every registered tenant, and on the emulator each table or view costs a DDL transaction (0.3-1.5 s,
# growing with the catalog), so a stack with a hundred tenants took minutes to come back after a restart.
SCHEMA_LABEL = "landline-schema"


def schema_fingerprint(tenant: Tenant, dataset: str) -> str:
    """A hash of everything provisioning makes for ``tenant``: tables (columns, partitioning, expiry, clustering)
    and views (their SQL, which carries the tenant's activity thresholds). A new version or setting changes it."""
    tables = [
        [spec.name, [f.to_api_repr() for f in spec.schema], spec.partition_field, spec.clustering, spec.description,
         partition_expiration_ms(tenant, spec.name)]
        for spec in TABLES
    ]
    views = [[name, view_sql(name, dataset, tenant.activity)] for name in VIEWS]
    return hashlib.sha256(json.dumps([tables, views], sort_keys=True).encode()).hexdigest()[:32]


def _provisioned(client: bigquery.Client, dataset: bigquery.Dataset, fingerprint: str) -> bool:
    """Whether this version already provisioned ``dataset`` in full and every table and view is still there (one
    list call; a table dropped by hand is made again)."""
    if (dataset.labels or {}).get(SCHEMA_LABEL) != fingerprint:
        return False
    have = {t.table_id for t in client.list_tables(dataset.reference)}
    return {spec.name for spec in TABLES} | set(VIEWS) <= have


def _expire_partitions(client: bigquery.Client, table: bigquery.Table, expiration_ms: int) -> None:
    """Give an existing partitioned table (made before retention existed, or with another one) this expiration."""
    partitioning = table.time_partitioning
    if partitioning is None or partitioning.expiration_ms == expiration_ms:
        return
    table = client.get_table(table.reference)  # fresh: adding columns may have changed its etag
    partitioning = table.time_partitioning
    partitioning.expiration_ms = expiration_ms
    table.time_partitioning = partitioning
    client.update_table(table, ["time_partitioning"])


def _add_missing_columns(client: bigquery.Client, table: bigquery.Table, wanted: list[bigquery.SchemaField]) -> None:
    """Upgrade a table an older version created: add the columns this version writes (BigQuery only allows adding
    NULLABLE/REPEATED columns, which is what new columns must be). Without this, rows with a new field would be
    rejected as ``warehouse_invalid`` after an upgrade."""
    have = {field.name for field in table.schema}
    missing = [field for field in wanted if field.name not in have]
    if not missing:
        return
    required = [field.name for field in missing if field.mode == "REQUIRED"]
    if required:
        raise SetupError(
            f"table {table.full_table_id} lacks the REQUIRED columns {required}, which cannot be added in place",
            "copy the table into one created by this version (`landline tenant add` on a new dataset) and swap them",
        )
    table.schema = [*table.schema, *missing]
    client.update_table(table, ["schema"])


def _refresh_view(client: bigquery.Client, view: bigquery.Table, sql: str, location: str) -> None:
    """Point an existing view at this version's SQL (views hold no rows, so replacing one loses nothing).

    ``CREATE OR REPLACE VIEW`` rather than patching ``view_query``: it is atomic in BigQuery (no moment without the
    view), and local-bigquery 0.4.0 stores a patched query without running it (queries keep the old definition).
    """
    if " ".join((view.view_query or "").split()) == " ".join(sql.split()):  # DDL stores it whitespace-normalised
        return
    ref = view.reference
    client.query(
        f"CREATE OR REPLACE VIEW `{ref.project}.{ref.dataset_id}.{ref.table_id}` AS {sql}", location=location
    ).result()
