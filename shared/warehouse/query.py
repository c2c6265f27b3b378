"""Query jobs against one tenant's dataset: the send tick's candidates, backfill's ledger look-up, and the CLI.

Every query runs with the tenant's dataset as its default dataset and in the tenant's location, after the region
check, so an unqualified table name can only mean the tenant's own table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import bigquery

from shared.config import settings, tenants
from shared.warehouse.client import bigquery_client, check_region


def tenant_job_config(tenant_name: str, params: dict[str, Any] | None = None, **options: Any) -> bigquery.QueryJobConfig:
    """A job config whose default dataset is the tenant's (``options``: more QueryJobConfig fields, e.g. dry_run)."""
    job_config = bigquery.QueryJobConfig(
        default_dataset=f"{settings().project}.{tenants().get(tenant_name).dataset}", **options
    )
    if params:
        job_config.query_parameters = [_parameter(k, v) for k, v in params.items()]
    return job_config


def _parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    """A list is an ARRAY parameter (``IN UNNEST(@name)``): of INT64 if every item is an int, else of STRING;
    anything else a scalar of its type."""
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return bigquery.ArrayQueryParameter(name, "INT64", list(value))
        return bigquery.ArrayQueryParameter(name, "STRING", [str(v) for v in value])
    return bigquery.ScalarQueryParameter(name, _bq_type(value), value)


def run_query(tenant_name: str, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run ``sql`` with the tenant's dataset as default dataset, in the tenant's location."""
    tenant = tenants().get(tenant_name)
    client = bigquery_client()
    check_region(client, tenant)
    job = client.query(sql, job_config=tenant_job_config(tenant_name, params), location=tenant.region)
    return [dict(row.items()) for row in job.result()]


def run_dml(tenant_name: str, sql: str, params: dict[str, Any] | None = None) -> int:
    """Run one DML statement (``INSERT ... SELECT``) like ``run_query``; returns the rows it changed."""
    tenant = tenants().get(tenant_name)
    client = bigquery_client()
    check_region(client, tenant)
    job = client.query(sql, job_config=tenant_job_config(tenant_name, params), location=tenant.region)
    job.result()
    return int(job.num_dml_affected_rows or 0)


def _bq_type(value: Any) -> str:
    if isinstance(value, datetime):
        return "TIMESTAMP"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    return "STRING"
