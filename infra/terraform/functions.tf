# One service account per function with only the roles it needs (least privilege), one deployment per function and
# region, and triggers with retries on and dead-lettering configured from ../topology.yaml.

resource "google_service_account" "fn" {
  for_each     = local.topology.functions
  account_id   = "landline-${replace(each.key, "_", "-")}"
  display_name = "landline ${each.key}"
}

# ingest_file: reads tenant buckets, publishes raw-events, writes the file ledger.
resource "google_storage_bucket_iam_member" "ingest_reads_bucket" {
  for_each = var.tenants
  bucket   = google_storage_bucket.tenant[each.key].name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.fn["ingest_file"].email}"
}

resource "google_pubsub_topic_iam_member" "ingest_publishes" {
  for_each = { for k, v in local.regional_topics : k => v if v.name == "raw-events" }
  topic    = google_pubsub_topic.topic[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.fn["ingest_file"].email}"
}

# Each function writes only into tenant datasets, never project-wide.
resource "google_bigquery_dataset_iam_member" "writers" {
  for_each = merge([
    for fn in keys(local.topology.functions) : { for t, _ in var.tenants : "${fn}@${t}" => { fn = fn, tenant = t } }
  ]...)
  dataset_id = google_bigquery_dataset.tenant[each.value.tenant].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.fn[each.value.fn].email}"
}

resource "google_project_iam_member" "job_users" {
  for_each = local.topology.functions
  project  = var.project
  role     = "roles/bigquery.jobUser"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# send_due reads provider credentials from Secret Manager: one secret per tenant and provider, named as
# shared/push/credentials.py expects (landline-<tenant>-<provider>); the values are added out of band, never by
# Terraform (they would land in its state).
resource "google_secret_manager_secret" "push_credentials" {
  for_each  = { for name, t in var.tenants : name => t if t.push_provider != null }
  secret_id = "landline-${each.key}-${each.value.push_provider}"
  replication {
    user_managed {
      replicas { location = each.value.region }
    }
  }
}

resource "google_secret_manager_secret_iam_member" "send_due_reads_credentials" {
  for_each  = google_secret_manager_secret.push_credentials
  secret_id = each.value.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn["send_due"].email}"
}

# load_events reads the pseudonymisation salt of each tenant whose privacy mode is "hash" (landline-<tenant>-privacy,
# JSON {"salt": "..."}); like the credentials, the value is added out of band.
resource "google_secret_manager_secret" "privacy_salt" {
  for_each  = { for name, t in var.tenants : name => t if t.privacy.mode == "hash" }
  secret_id = "landline-${each.key}-privacy"
  replication {
    user_managed {
      replicas { location = each.value.region }
    }
  }
}

resource "google_secret_manager_secret_iam_member" "load_events_reads_salt" {
  for_each  = google_secret_manager_secret.privacy_salt
  secret_id = each.value.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn["load_events"].email}"
}

resource "google_storage_bucket" "sources" {
  name                        = local.function_source_bucket
  location                    = var.source_bucket_location
  uniform_bucket_level_access = true
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = merge([
    for region in local.regions : {
      for name, fn in local.topology.functions : "${name}@${region}" => { name = name, region = region, fn = fn }
    }
  ]...)
  name     = "${replace(each.value.name, "_", "-")}-${each.value.region}"
  location = each.value.region

  build_config {
    runtime     = "python311"
    entry_point = each.value.name
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = "${each.value.name}-${var.source_version}.zip" # uploaded by cloudbuild.yaml
      }
    }
  }

  service_config {
    available_memory                 = each.value.fn.memory
    timeout_seconds                  = each.value.fn.timeout_seconds
    max_instance_request_concurrency = each.value.fn.concurrency
    max_instance_count               = var.max_instances
    service_account_email            = google_service_account.fn[each.value.name].email
    environment_variables = {
      LANDLINE_PROJECT          = var.project
      LANDLINE_RAW_EVENTS_TOPIC = "raw-events-${each.value.region}"
      LANDLINE_TENANTS_JSON = jsonencode({
        for name, t in var.tenants : name => merge(t, { name = name }) if t.region == each.value.region
      })
      THREADS          = tostring(each.value.fn.concurrency)
      MALLOC_ARENA_MAX = "2" # gRPC threads would each keep a malloc arena: bounded RSS for big files
    }
  }

  event_trigger {
    trigger_region = each.value.region
    event_type = (each.value.fn.trigger.type == "pubsub"
      ? "google.cloud.pubsub.topic.v1.messagePublished"
    : "google.cloud.storage.object.v1.finalized")
    pubsub_topic = (each.value.fn.trigger.type == "pubsub"
      ? google_pubsub_topic.topic["${each.value.fn.trigger.topic}@${each.value.region}"].id
    : null)
    retry_policy          = "RETRY_POLICY_RETRY" # off by default for gen2: failed events would be dropped
    service_account_email = google_service_account.fn[each.value.name].email
    dynamic "event_filters" {
      for_each = each.value.fn.trigger.type == "storage_finalized" ? [1] : []
      content {
        attribute = "bucket"
        # One trigger per region serves the region's first tenant bucket; add one function per extra bucket
        # with var.tenants (Eventarc storage triggers filter on exactly one bucket).
        value = [for t in values(var.tenants) : t.bucket if t.region == each.value.region][0]
      }
    }
  }
}

resource "google_cloud_scheduler_job" "tick" {
  for_each  = local.regions
  name      = "landline-send-tick-${each.value}"
  region    = each.value
  schedule  = local.topology.topics["send-ticks"].schedule
  time_zone = "Etc/UTC"
  pubsub_target {
    topic_name = google_pubsub_topic.topic["send-ticks@${each.value}"].id
    data       = base64encode("{\"source\":\"scheduler\"}")
  }
}
