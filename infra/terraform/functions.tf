# One service account per function and region with only the roles it needs (least privilege), one deployment per
# function and region, and triggers from ../topology.yaml. Every trigger (main trigger and extra_triggers) is a push subscription
# managed here (google_pubsub_subscription.trigger), one per copy of its topic, with the topology's ack deadline, retry
# backoff and dead-letter topic (main.tf), like the subscriptions the local stack creates (infra/local/provision.py):
# Eventarc would not apply these to the subscriptions it creates, and would drop a message that keeps failing after
# its retry window instead of keeping it. Ingest too: each tenant bucket notifies its tenant's object-notifications
# topic (main.tf), so a file whose ingest keeps failing is parked, listed and replayable like any message.

locals {
  # one deployment of each function per region with tenants: "<function>@<region>"
  function_deployments = merge([
    for region in local.regions : {
      for name, fn in local.topology.functions : "${name}@${region}" => { name = name, region = region, fn = fn }
    }
  ]...)
  # every trigger of every function on every copy of its topic (main.tf local.topics), in the copy's region:
  # "<function>@<region>/<topic>" for a regional copy (the keys of earlier versions), ".../<topic>.<tenant>" for a
  # tenant's. endpoint_topic is the topic the function is told it was delivered from (the push endpoint's path): the
  # copy's own name, except for a legacy shared copy of a per-tenant topic, named by its bare name, which the
  # functions refuse with a setup error naming the tenant's topic.
  pubsub_triggers = merge([
    for key, topic in local.topics : {
      for name, fn in local.topology.functions :
      "${name}@${topic.region}/${topic.tenant == null ? topic.base : topic.name}" => {
        deployment = "${name}@${topic.region}", name = name, region = topic.region, topic = key,
        endpoint_topic = (
          topic.tenant == null && try(local.topology.topics[topic.base].per_tenant, false) ? topic.base : topic.name
        )
      }
      if contains([for trigger in concat([fn.trigger], try(fn.extra_triggers, [])) : trigger.topic], topic.base)
    }
  ]...)
  # Pub/Sub's service agent: mints the push subscriptions' OIDC tokens, moves messages to the dead-letter topics
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

data "google_project" "this" {}

# One account per deployment ("<function>@<region>", finding 14): each is granted only on the resources of its own
# region's tenants, so a deployment in one region cannot read or write another region's buckets, tables, topics or
# secrets. account_id "<first word of the function>-<region>" fits the 30-character limit for every region name
# (the longest, northamerica-northeast1, gives "ingest-northamerica-northeast1").
resource "google_service_account" "fn" {
  for_each     = local.function_deployments
  account_id   = "${split("_", each.value.name)[0]}-${each.value.region}"
  display_name = "landline ${each.value.name} (${each.value.region})"
  description  = "landline ${each.value.name} in ${each.value.region}: its tenants' resources only (infra/terraform/functions.tf)"
}

# ingest_file: reads tenant buckets, publishes to each tenant's raw-events topic, writes the file ledger.
resource "google_storage_bucket_iam_member" "ingest_reads_bucket" {
  for_each = var.tenants
  bucket   = google_storage_bucket.tenant[each.key].name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.fn["ingest_file@${each.value.region}"].email}"
}

# The tick fans a campaign's due chunks out as shards to its tenant's send-shards topic, which triggers send_due again.
resource "google_pubsub_topic_iam_member" "send_due_publishes_shards" {
  for_each = { for k, v in local.topics : k => v if v.base == "send-shards" && v.tenant != null }
  topic    = google_pubsub_topic.topic[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.fn["send_due@${each.value.region}"].email}"
}

resource "google_pubsub_topic_iam_member" "ingest_publishes" {
  for_each = { for k, v in local.topics : k => v if v.base == "raw-events" && v.tenant != null }
  topic    = google_pubsub_topic.topic[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.fn["ingest_file@${each.value.region}"].email}"
}

# BigQuery, least privilege (finding 14): no dataset-wide roles/bigquery.dataEditor (which also deletes tables). Each
# deployment's account gets, on each table or view of its own region's tenants only:
# - write: landlineTableWriter (tables.get + tables.updateData): streaming inserts (shared/warehouse/writer.py
#   write_rows) and DML INSERT (shared/warehouse/query.py run_dml); it cannot read, delete or alter a table;
# - read: roles/bigquery.dataViewer on that table or view, for query jobs (run_query). A view is read with the
#   caller's rights on the tables under it too (no authorised views), so a view's tables are listed as well.
# Datasets: roles/bigquery.metadataViewer via the dataset's `access` (main.tf), for check_region's datasets.get.
# Query jobs: roles/bigquery.jobUser on the project, for send_due only (the others never run a query); the operators'
# bulk load jobs: bulk.tf operators_run_bigquery_jobs.
# Which tables: from the code (the row types each function's modules build, the tables and views their SQL names);
# tests/unit/test_terraform_iam.py derives them from the code and fails when this map differs.
locals {
  function_tables = {
    # ingest_file: its file-ledger rows; a row BigQuery refuses becomes a `rejected` row (writer.py).
    ingest_file = { writes = ["files", "rejected"], reads = [] }
    # load_events: parsed events and user properties, and the lines it rejects.
    load_events = { writes = ["events", "rejected", "user_properties"], reads = [] }
    # send_due: schedules (send requests, campaign launches' INSERT ... SELECT), sends, invalid tokens, campaign
    # requests (audiences, campaigns, launches, assignments) and rejected requests; it reads the schedule and sends
    # (pending.py, tick.py), users (users_latest, tick's narrowed user_properties query), campaigns and audiences
    # (store.py), launches (campaign_launched) and assignments (launch.py; campaign_assignments for the next wave's
    # shares, waves.py), and audiences' events (contact_activity, events_deduped in audience.py).
    send_due = {
      writes = [
        "audiences", "campaign_assignments_all", "campaign_launches", "campaigns", "invalid_tokens",
        "message_schedule", "message_sends", "rejected",
      ]
      reads = [
        "audiences", "campaign_assignments_all", "campaign_launches", "campaigns", "events", "invalid_tokens",
        "message_schedule", "message_sends", "user_properties",
        "campaign_assignments", "campaign_launched", "contact_activity", "events_deduped", "users_latest",
      ]
    }
  }
  # "<function>@<region>/<tenant>/<table>/<write|read>": one grant per deployment, tenant of its region, table, use.
  table_grants = merge([
    for key, d in local.function_deployments : merge([
      for tenant, t in var.tenants : merge([
        for use in ["write", "read"] : {
          for table in local.function_tables[d.name]["${use}s"] : "${key}/${tenant}/${table}/${use}" => {
            deployment = key, tenant = tenant, table = table, use = use
          }
        }
      ]...) if t.region == d.region
    ]...)
  ]...)
}

resource "google_project_iam_custom_role" "table_writer" {
  role_id     = "landlineTableWriter"
  title       = "landline table writer"
  description = "Append rows to a table (streaming insert, DML INSERT): no read, no delete, no schema change"
  permissions = ["bigquery.tables.get", "bigquery.tables.updateData"]
}

# Each grant is on the tenant's table or view of that name (tables.tf: "<tenant>/<name>" in one of the three).
resource "google_bigquery_table_iam_member" "fn_tables" {
  for_each   = local.table_grants
  dataset_id = merge(google_bigquery_table.tenant, google_bigquery_table.view, google_bigquery_table.view_of_views)["${each.value.tenant}/${each.value.table}"].dataset_id
  table_id   = merge(google_bigquery_table.tenant, google_bigquery_table.view, google_bigquery_table.view_of_views)["${each.value.tenant}/${each.value.table}"].table_id
  role       = each.value.use == "write" ? google_project_iam_custom_role.table_writer.id : "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.fn[each.value.deployment].email}"
}

# Only send_due runs query jobs (shared/warehouse/query.py run_query, run_dml); ingest_file and load_events only
# stream rows in. A job is project-wide by nature; what it may read or write is the table grants above.
resource "google_project_iam_member" "job_users" {
  for_each = { for key, d in local.function_deployments : key => d if d.name == "send_due" }
  project  = var.project
  role     = "roles/bigquery.jobUser"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# send_due reads provider credentials from Secret Manager: one secret per tenant and provider, named as
# shared/secrets.py expects (landline-<tenant>-<provider>); the values are added out of band, never by
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
  member    = "serviceAccount:${google_service_account.fn["send_due@${var.tenants[each.key].region}"].email}"
}

# send_due claims each send in the tenant's claims bucket (create-if-absent, then reads the holder when it lost).
resource "google_storage_bucket_iam_member" "send_due_creates_claims" {
  for_each = google_storage_bucket.claims
  bucket   = each.value.name
  role     = "roles/storage.objectCreator"
  member   = "serviceAccount:${google_service_account.fn["send_due@${var.tenants[each.key].region}"].email}"
}

resource "google_storage_bucket_iam_member" "send_due_reads_claims" {
  for_each = google_storage_bucket.claims
  bucket   = each.value.name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.fn["send_due@${var.tenants[each.key].region}"].email}"
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
  member    = "serviceAccount:${google_service_account.fn["load_events@${var.tenants[each.key].region}"].email}"
}

# Each function's events are delivered as the function's own service account (the push subscriptions' OIDC token):
# that account (the deployment's own, in the function's region) invokes the function's Cloud Run service.
resource "google_cloud_run_v2_service_iam_member" "trigger_invokes" {
  for_each = local.function_deployments
  location = each.value.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_62: holds only the function archives cloudbuild.yaml uploads (each upload is in its build's log) for the functions' builds to read: no data worth a usage-log bucket
  # checkov:skip=CKV_GCP_78: each archive is named by its commit (cloudbuild.yaml uploads <function>-${SHORT_SHA}.zip) and is rebuilt from git at that commit; a re-run of that build uploads the same code again
  name                        = local.function_source_bucket
  location                    = var.source_bucket_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced" # read by the functions' builds only, never public
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = local.function_deployments
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
    available_cpu                    = each.value.fn.concurrency > 1 ? "1" : null # concurrency > 1 needs >= 1 vCPU
    max_instance_count               = var.max_instances
    service_account_email            = google_service_account.fn[each.key].email
    # Only this project's push subscriptions call the functions (google_pubsub_subscription.trigger, on the run.app
    # URL): Cloud Run counts Pub/Sub pushes from the same project as internal, so nothing outside it reaches them.
    ingress_settings = "ALLOW_INTERNAL_ONLY"
    environment_variables = {
      LANDLINE_PROJECT = var.project
      # The topic settings keep their defaults, the topology's base names: a tenant's topic is "<base>.<tenant>".
      LANDLINE_TENANTS_JSON = jsonencode({
        for name, t in var.tenants : name => merge({ for k, v in t : k => v if k != "publishers" }, { name = name })
        if t.region == each.value.region
      })
      THREADS          = tostring(each.value.fn.concurrency)
      MALLOC_ARENA_MAX = "2" # gRPC threads would each keep a malloc arena: bounded RSS for big files
    }
  }
}

# One push subscription per trigger of each function and copy of its topic, with the retry and dead-letter settings
# of ../topology.yaml. It pushes the raw Pub/Sub message to the function's Cloud Run service in the copy's region;
# functions-framework turns it into the google.cloud.pubsub.topic.v1.messagePublished CloudEvent the function expects
# (tests/integration/test_raw_push.py), taking the event's source from the ".../projects/P/topics/T" path of the
# endpoint: the functions take the tenant from that topic (never from an attribute), and send_due tells a send
# request from a tick by it. A non-2xx answer is retried with backoff, and after max_delivery_attempts the message is
# kept in the topic's dead-letter topic.
resource "google_pubsub_subscription" "trigger" {
  for_each             = local.pubsub_triggers
  name                 = "${replace(each.value.name, "_", "-")}-${google_pubsub_topic.topic[each.value.topic].name}"
  topic                = google_pubsub_topic.topic[each.value.topic].id
  ack_deadline_seconds = local.topology.defaults.ack_deadline_seconds # above the function's timeout
  retry_policy {
    minimum_backoff = "${local.topology.defaults.retry.minimum_backoff_seconds}s"
    maximum_backoff = "${local.topology.defaults.retry.maximum_backoff_seconds}s"
  }
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.value.topic].id
    max_delivery_attempts = local.topology.defaults.max_delivery_attempts
  }
  expiration_policy {
    ttl = "" # never expires, however long the topic stays quiet
  }
  push_config {
    push_endpoint = "${google_cloudfunctions2_function.fn[each.value.deployment].service_config[0].uri}/projects/${var.project}/topics/${each.value.endpoint_topic}"
    oidc_token {
      service_account_email = google_service_account.fn[each.value.deployment].email
      # Cloud Run accepts the service URL as audience (the default, the endpoint URL, has a path)
      audience = google_cloudfunctions2_function.fn[each.value.deployment].service_config[0].uri
    }
  }
}

# Pub/Sub's service agent moves a message to the dead-letter topic: it publishes there, and acks the message on the
# subscription it leaves.
resource "google_pubsub_topic_iam_member" "pubsub_agent_publishes_dead_letters" {
  for_each = google_pubsub_topic.dead_letter
  topic    = each.value.name
  role     = "roles/pubsub.publisher"
  member   = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_acks_dead_letters" {
  for_each     = google_pubsub_subscription.trigger
  subscription = each.value.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# ... and mints the OIDC token of each push subscription: token creator on the accounts the subscriptions push as
# (not project-wide). Google's push-authentication docs ask for it in projects created before April 2021.
resource "google_service_account_iam_member" "pubsub_agent_mints_tokens" {
  for_each           = toset([for t in values(local.pubsub_triggers) : t.deployment])
  service_account_id = google_service_account.fn[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
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
