# Bulk backfill tasks (shared/bulk.py) as a Cloud Run Job per region with tenants, made only when var.bulk_job_image
# is set: `gcloud run jobs execute landline-bulk-<region> --region <region> --tasks N --args=--tenant,T,--run,R`
# (Cloud Run Jobs sets CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT). A task reads the tenant's bucket, and its privacy
# salt in hash mode, and writes rows to the tenant's staging bucket (main.tf); it never writes BigQuery: the operator's
# `landline backfill --bulk` runs the load jobs, with the operator's own credentials (the operators' grants: at the
# end of this file).

locals {
  # The job's account and its grants exist only with the job: no idle identity that can read the tenants' buckets.
  bulk_regions = { for region in local.regions : region => { region = region } if var.bulk_job_image != null }
  bulk_tenants = { for name, t in var.tenants : name => t if var.bulk_job_image != null }
}

# One account per region, like the functions' (finding 14): granted only on its region's tenants. account_id
# "bulk-<region>" fits the 30-character limit for every region name ("bulk-northamerica-northeast1": 28).
resource "google_service_account" "bulk" {
  for_each     = local.bulk_regions
  account_id   = "bulk-${each.value.region}"
  display_name = "landline bulk backfill (${each.value.region})"
  description  = "landline bulk backfill tasks in ${each.value.region}: its tenants' buckets only (infra/terraform/bulk.tf)"
}

# A task reads the objects of its share from the tenant's bucket ...
resource "google_storage_bucket_iam_member" "bulk_reads_bucket" {
  for_each = local.bulk_tenants
  bucket   = google_storage_bucket.tenant[each.key].name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.bulk[each.value.region].email}"
}

# ... and writes its rows and manifest to the staging bucket, reading the run's plan there. objectAdmin, not
# objectCreator: a retried task overwrites its own files (an overwrite needs delete).
resource "google_storage_bucket_iam_member" "bulk_writes_staging" {
  for_each = local.bulk_tenants
  bucket   = google_storage_bucket.staging[each.key].name
  role     = "roles/storage.objectAdmin"
  member   = "serviceAccount:${google_service_account.bulk[each.value.region].email}"
}

# It parses as load_events does, so it reads the pseudonymisation salt of each hash-mode tenant (functions.tf
# load_events_reads_salt).
resource "google_secret_manager_secret_iam_member" "bulk_reads_salt" {
  for_each  = { for name, t in local.bulk_tenants : name => t if t.privacy.mode == "hash" }
  secret_id = google_secret_manager_secret.privacy_salt[each.key].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.bulk[each.value.region].email}"
}

resource "google_cloud_run_v2_job" "bulk" {
  for_each = local.bulk_regions
  name     = "landline-bulk-${each.value.region}"
  location = each.value.region
  # The provider protects jobs by default; this one holds no data and is made again from this file, and unsetting
  # bulk_job_image must be able to remove it.
  deletion_protection = false
  template {
    template {
      service_account = google_service_account.bulk[each.key].email
      timeout         = "3600s" # per task: choose --tasks so that a task's share fits
      max_retries     = 3       # a retried task rewrites the same files (the plan fixes its objects and time)
      containers {
        image = var.bulk_job_image
        # The operator's --args (--tenant T --run R) follow the subcommand.
        command = ["python", "-m", "shared.bulk", "task"]
        resources {
          # A task stages its rows in /tmp, which is memory on Cloud Run, until it uploads them.
          limits = { cpu = "2", memory = "4Gi" }
        }
        # The functions' settings (functions.tf): the project and the region's tenants.
        dynamic "env" {
          for_each = {
            LANDLINE_PROJECT = var.project
            LANDLINE_TENANTS_JSON = jsonencode({
              for name, t in var.tenants : name => merge({ for k, v in t : k => v if k != "publishers" }, { name = name })
              if t.region == each.value.region
            })
            MALLOC_ARENA_MAX = "2" # gRPC threads would each keep a malloc arena: bounded RSS for big files
          }
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }
}

# The operators (var.dataset_owners) run `landline backfill --bulk` from their machine, with their own credentials.
# dataset_owners are IAM members already ("user:", "group:" or "serviceAccount:" and an email, as the variable's
# validation holds them). On each tenant's staging bucket they write the run's plan (bulk/<run>/plan.json) and, when
# the tasks run locally, the row files and manifests, list the run's objects, and their load jobs read the files:
# objectAdmin (create, read, list, and delete for an overwrite), on the staging buckets only, not the tenants' buckets.
resource "google_storage_bucket_iam_member" "operators_use_staging" {
  for_each = merge([
    for tenant in keys(var.tenants) : {
      for member in var.dataset_owners : "${tenant}/${member}" => { tenant = tenant, member = member }
    }
  ]...)
  bucket = google_storage_bucket.staging[each.value.tenant].name
  role   = "roles/storage.objectAdmin"
  member = each.value.member
}

# They execute the region's job with the run's arguments and task count (`gcloud run jobs execute
# landline-bulk-<region> --args=--tenant,T,--run,R --tasks N`): overrides need run.jobs.runWithOverrides, which
# roles/run.invoker lacks. On each job only (not project-wide), and only when the job exists (local.bulk_regions).
resource "google_cloud_run_v2_job_iam_member" "operators_execute_bulk" {
  for_each = merge([
    for region in keys(local.bulk_regions) : {
      for member in var.dataset_owners : "${region}/${member}" => { region = region, member = member }
    }
  ]...)
  location = google_cloud_run_v2_job.bulk[each.value.region].location
  name     = google_cloud_run_v2_job.bulk[each.value.region].name
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = each.value.member
}

# Their load jobs, and the DELETE before them (a query job: shared/bulk.py load_run), need bigquery.jobs.create, which
# only a project-level role grants (as for send_due: functions.tf job_users). What a job may read or write is still
# the tables' IAM and the datasets' ACL, which dataset_owners own (main.tf). With or without the job: tasks may also
# run locally.
resource "google_project_iam_member" "operators_run_bigquery_jobs" {
  for_each = toset(var.dataset_owners)
  project  = var.project
  role     = "roles/bigquery.jobUser"
  member   = each.value
}
