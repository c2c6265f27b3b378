# The cloud deployment. Topics, subscriptions and functions come from ../topology.yaml (the same file the local stack
# reads); tenants (bucket + dataset + topics) come from var.tenants. Everything a tenant owns is pinned to the tenant's
# region: bucket location, dataset location, the Pub/Sub message storage policy of its topics, and the function region.

terraform {
  required_version = ">= 1.6"
  required_providers {
    # Exactly the version whose schema infra/terraform/provider-schema/ holds: `python -m infra.terraform_schema
    # check` (tests/unit/test_terraform_schema.py) validates every argument and block against that schema, which is
    # only true of the provider that runs if it is the same version (a range would let `terraform init` take a newer
    # one that adds, renames or requires arguments). Upgrade by extracting the new version's schema, then this pin.
    google = { source = "hashicorp/google", version = "= 8.7.0" }
  }
}

provider "google" {
  project = var.project
}

locals {
  topology = yamldecode(file("${path.module}/../topology.yaml"))
  regions  = toset([for t in values(var.tenants) : t.region])
  # Every topic copy, by key:
  # - "<topic>@<region>": one per region of a topic that is not per tenant (send-ticks), and the legacy shared copy
  #   of one that is (kept so nothing published there by an older publisher is lost: its function refuses each
  #   message, naming the tenant's topic, and the message is parked in the dead-letter topic);
  # - "<topic>.<tenant>": each tenant's own copy of a per-tenant topic, named as shared/config.py tenant_topic names
  #   it. IAM on it decides who may publish as the tenant; the functions take the tenant from it.
  # Dead-letter topic and keep subscription: "<topic>-dead-letter[-keep]" (shared/dead_letters.py), regional copies
  # keeping the names of earlier versions.
  topics = merge(
    merge([
      for region in local.regions : {
        for base, topic in local.topology.topics : "${base}@${region}" => {
          base        = base
          region      = region
          tenant      = null
          name        = "${base}-${region}"
          dead_letter = "${base}-dead-letter-${region}"
          keep        = "${base}-dead-letter-keep-${region}"
        } if !try(topic.per_tenant, false) || try(topic.legacy_shared, false)
      }
    ]...),
    merge([
      for tenant, t in var.tenants : {
        for base, topic in local.topology.topics : "${base}.${tenant}" => {
          base        = base
          region      = t.region
          tenant      = tenant
          name        = "${base}.${tenant}"
          dead_letter = "${base}.${tenant}-dead-letter"
          keep        = "${base}.${tenant}-dead-letter-keep"
        } if try(topic.per_tenant, false)
      }
    ]...),
  )
  function_source_bucket = "${var.project}-landline-sources"
}

resource "google_pubsub_topic" "topic" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption; CMEK would need a Cloud KMS key in every tenant region, granted to Pub/Sub's service agent, which this deployment does not manage
  for_each = local.topics
  name     = each.value.name
  message_storage_policy {
    allowed_persistence_regions = [each.value.region]
    enforce_in_transit          = true
  }
  message_retention_duration = local.topology.defaults.message_retention
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption; CMEK would need a Cloud KMS key in every tenant region, granted to Pub/Sub's service agent, which this deployment does not manage
  for_each = local.topics
  name     = each.value.dead_letter
  message_storage_policy {
    allowed_persistence_regions = [each.value.region]
    enforce_in_transit          = true
  }
}

# A topic without subscriptions drops what it receives: keep dead letters (`landline dead-letters` lists them,
# `landline replay --dead-letters` sends them back; monitoring.tf alerts while any is waiting).
resource "google_pubsub_subscription" "dead_letter_keep" {
  for_each                   = local.topics
  name                       = each.value.keep
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  message_retention_duration = "604800s" # the maximum: replay or drain dead letters within a week
  expiration_policy {
    ttl = "" # a quiet dead-letter subscription must not expire (the default is 31 days without activity)
  }
}

# Who may publish as a tenant: the members var.tenants lists per topic (raw-events, send-requests), on that tenant's
# copy only. A member allowed on one tenant's topic can write nothing into another tenant.
resource "google_pubsub_topic_iam_member" "tenant_publishers" {
  for_each = merge([
    for tenant, t in var.tenants : merge([
      for base, members in t.publishers : { for member in members : "${base}.${tenant}/${member}" => {
        topic = "${base}.${tenant}", member = member
      } }
    ]...)
  ]...)
  topic  = google_pubsub_topic.topic[each.value.topic].name
  role   = "roles/pubsub.publisher"
  member = each.value.member
}

# Each tenant bucket notifies its tenant's object-notifications topic of every finalized object: the ingest trigger
# (a push subscription in functions.tf, with retries and a dead-letter topic, which Eventarc storage triggers lack),
# and the topic names the tenant. Cloud Storage's service agent publishes only there (finding 31: not project-wide).
resource "google_storage_notification" "tenant_objects" {
  for_each       = var.tenants
  bucket         = google_storage_bucket.tenant[each.key].name
  topic          = google_pubsub_topic.topic["object-notifications.${each.key}"].id
  payload_format = "JSON_API_V1"
  event_types    = ["OBJECT_FINALIZE"]
  depends_on     = [google_pubsub_topic_iam_member.gcs_publishes_notifications]
}

data "google_storage_project_service_account" "gcs" {}

resource "google_pubsub_topic_iam_member" "gcs_publishes_notifications" {
  for_each = var.tenants
  topic    = google_pubsub_topic.topic["object-notifications.${each.key}"].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_bucket" "tenant" {
  # checkov:skip=CKV_GCP_62: only ingest_file's account is granted read (functions.tf) and each object generation it reads gets file-ledger rows in the tenant's dataset; usage logs would need a log bucket per tenant region
  # checkov:skip=CKV_GCP_78: raw exports hold personal data and must be gone after raw_file_retention_days; versioning would keep deleted and overwritten copies (a re-upload is a new generation, ingested again)
  for_each                    = var.tenants
  name                        = each.value.bucket
  location                    = upper(each.value.region)
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  lifecycle_rule {
    condition { age = var.raw_file_retention_days }
    action { type = "Delete" }
  }
}

# send_due claims each send before calling the provider: a create-if-absent object in "<bucket>-claims"
# (shared/push/claims.py claims_bucket), in the tenant's region. `landline tenant add` creates it on the local stack.
resource "google_storage_bucket" "claims" {
  # checkov:skip=CKV_GCP_62: claims are tiny create-if-absent markers (message id, attempt, tick id) used only by send_due's account; each send's outcome is recorded in message_sends
  # checkov:skip=CKV_GCP_78: a claim is never overwritten (if_generation_match=0) and is deleted after claim_retention_days; versions would only keep expired claims
  for_each                    = { for name, t in var.tenants : name => t if t.push_provider != null }
  name                        = "${each.value.bucket}-claims"
  location                    = upper(each.value.region)
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # A claim matters only until its message has a final row in message_sends: at most the 15-minute lease, after
  # which a claim held without a record is recorded failed/outcome_unknown. Deleted after claim_retention_days so the
  # bucket does not grow forever (finding 28).
  lifecycle_rule {
    condition { age = var.claim_retention_days }
    action { type = "Delete" }
  }
}

# Bulk backfill (shared/bulk.py, `landline backfill --bulk`) stages validated rows as newline-delimited JSON under
# bulk/<run>/ in "<bucket>-staging" (shared/config.py tenant_buckets), in the tenant's region, for the run's BigQuery
# load jobs to read. The region's bulk job writes them (bulk.tf); the operators write the run's plan (and the files
# when tasks run locally) and their load jobs read them (bulk.tf operators_use_staging).
resource "google_storage_bucket" "staging" {
  # checkov:skip=CKV_GCP_62: staged rows are written only by the region's bulk job account (or an operator's local tasks) and read by the operators' load jobs; each run's task manifests list its files and each loaded object gets file-ledger rows
  # checkov:skip=CKV_GCP_78: every run rewrites its own files (a retried task overwrites them) and they are only needed until its load jobs ran; versions would keep copies of personal data past staging_retention_days
  for_each                    = var.tenants
  name                        = "${each.value.bucket}-staging"
  location                    = upper(each.value.region)
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Staged rows hold the same personal data as the tables: deleted once no load job can still need them.
  lifecycle_rule {
    condition { age = var.staging_retention_days }
    action { type = "Delete" }
  }
}

resource "google_bigquery_dataset" "tenant" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption; CMEK would need a Cloud KMS key in every tenant region, granted to BigQuery's service agent, which this deployment does not manage
  for_each   = var.tenants
  dataset_id = each.value.dataset
  location   = each.value.region
  labels     = { landline-tenant = replace(each.key, "_", "-") }
  # Who may use the dataset itself (finding 13): `access` replaces BigQuery's default ACL, which made every project
  # viewer (specialGroup projectReaders) a reader and every editor a writer of the tenant's data. The provider treats
  # these blocks as the whole ACL (authoritative) and google_bigquery_dataset_iam_* would fight them at every apply, so
  # every dataset-level grant is here and none is made elsewhere (tests/unit/test_terraform_iam.py). Table-level
  # grants (functions.tf google_bigquery_table_iam_member) are each table's own IAM policy and do not touch this ACL.
  # - owners: the project's owners and var.dataset_owners (the deploying account and operators running `landline`);
  # - each function account of the tenant's region: metadata only (check_region's datasets.get, tables' metadata),
  #   its data access is per table.
  access {
    role          = "OWNER"
    special_group = "projectOwners"
  }
  dynamic "access" {
    for_each = var.dataset_owners
    content {
      role           = "OWNER"
      user_by_email  = startswith(access.value, "group:") ? null : split(":", access.value)[1]
      group_by_email = startswith(access.value, "group:") ? split(":", access.value)[1] : null
    }
  }
  dynamic "access" {
    for_each = sort([for key, d in local.function_deployments : key if d.region == each.value.region])
    content {
      role          = "roles/bigquery.metadataViewer"
      user_by_email = google_service_account.fn[access.value].email
    }
  }
  lifecycle {
    # `landline tenant add` stamps which version of the tables and views it made (shared/warehouse/client.py).
    ignore_changes = [labels["landline-schema"]]
  }
}

# Each dataset's tables and views: tables.tf, from the files generated from shared/warehouse/schema.py.
