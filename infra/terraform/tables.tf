# Every tenant's tables and views, created at apply with its dataset: files that arrive right after `apply` find their
# tables (before this, they existed only once `python -m shared.warehouse.provision` had run, and rows written before
# that were lost). Made from schemas/, which `python -m shared.warehouse.terraform_schemas` generates from
# shared/warehouse/schema.py, the one definition (also what the local stack uses): tests/unit/test_terraform_tables.py
# fails when they differ. `python -m shared.warehouse.provision` still upgrades what exists (provision_dataset).

locals {
  table_specs = jsondecode(file("${path.module}/schemas/tables.json"))
  view_specs  = jsondecode(file("${path.module}/schemas/views.json"))
  # "<tenant>/<table>" => what google_bigquery_table.tenant makes of it.
  tenant_tables = merge([
    for tenant, t in var.tenants : {
      for table, spec in local.table_specs : "${tenant}/${table}" => {
        tenant          = tenant
        table           = table
        description     = spec.description
        partition_field = spec.partition_field
        clustering      = length(spec.clustering) > 0 ? spec.clustering : null
        # The raw-payload table (personal data unscrubbed) keeps a partition for the tenant's
        # privacy.rejected_retention_days (default 30, as shared/config.py PrivacyConfig): partition_expiration_ms.
        expiration_ms = spec.raw_payload ? t.privacy.rejected_retention_days * 86400000 : null
      }
    }
  ]...)
  # "<tenant>/<view>" => the view's SQL for the tenant: the template rendered is view_sql(view, dataset, activity).
  tenant_views = merge([
    for tenant, t in var.tenants : {
      for view, spec in local.view_specs : "${tenant}/${view}" => {
        tenant      = tenant
        view        = view
        reads_views = length(spec.reads_views) > 0
        query = templatefile("${path.module}/schemas/views/${view}.sql", {
          dataset = "${var.project}.${t.dataset}"
          low     = t.activity.low
          medium  = t.activity.medium
          high    = t.activity.high
        })
      }
    }
  ]...)
}

resource "google_bigquery_table" "tenant" {
  # checkov:skip=CKV_GCP_80: Google-managed encryption; CMEK would need a Cloud KMS key in every tenant region, granted to BigQuery's service agent, which this deployment does not manage
  for_each    = local.tenant_tables
  dataset_id  = google_bigquery_dataset.tenant[each.value.tenant].dataset_id
  table_id    = each.value.table
  description = each.value.description
  schema      = file("${path.module}/schemas/${each.value.table}.json")
  clustering  = each.value.clustering
  # The tables hold the tenant's data: a change Terraform could only make by replacing a table (a column dropped or
  # retyped, partitioning changed) fails instead, and so does destroying them (a tenant taken out of var.tenants):
  # a tenant's data is deleted on purpose only.
  deletion_protection = true
  dynamic "time_partitioning" {
    for_each = each.value.partition_field == null ? [] : [each.value.partition_field]
    content {
      type          = "DAY"
      field         = time_partitioning.value
      expiration_ms = each.value.expiration_ms
    }
  }
}

# Views that read only tables ...
resource "google_bigquery_table" "view" {
  # checkov:skip=CKV_GCP_80: a view stores no data to encrypt (it runs its query over the tenant's tables, encrypted as google_bigquery_table.tenant)
  # checkov:skip=CKV_GCP_121: a view holds no rows and is made again from schemas/views at every apply; protection would only block dropping a view the code no longer has
  for_each   = { for key, v in local.tenant_views : key => v if !v.reads_views }
  dataset_id = google_bigquery_dataset.tenant[each.value.tenant].dataset_id
  table_id   = each.value.view
  # A view holds no rows: replacing or dropping one loses nothing (its SQL comes from the code at every apply).
  deletion_protection = false
  view {
    query          = each.value.query
    use_legacy_sql = false
  }
  depends_on = [google_bigquery_table.tenant] # BigQuery checks a view's query when it is created
}

# ... then the views that read those (contact_activity reads users_latest and events_deduped; campaign_assignments
# reads campaign_launched). The generator refuses a view that reads a view of views (it would need a third round).
resource "google_bigquery_table" "view_of_views" {
  # checkov:skip=CKV_GCP_80: a view stores no data to encrypt (it runs its query over the tenant's tables, encrypted as google_bigquery_table.tenant)
  # checkov:skip=CKV_GCP_121: a view holds no rows and is made again from schemas/views at every apply; protection would only block dropping a view the code no longer has
  for_each            = { for key, v in local.tenant_views : key => v if v.reads_views }
  dataset_id          = google_bigquery_dataset.tenant[each.value.tenant].dataset_id
  table_id            = each.value.view
  deletion_protection = false # as google_bigquery_table.view
  view {
    query          = each.value.query
    use_legacy_sql = false
  }
  depends_on = [google_bigquery_table.tenant, google_bigquery_table.view]
}
