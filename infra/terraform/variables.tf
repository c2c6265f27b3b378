variable "project" {
  type        = string
  description = "GCP project id"
}

variable "tenants" {
  description = "Tenants: name => {region, bucket, dataset, prefix, push_provider, publishers, push_policy, privacy, activity}"
  type = map(object({
    region        = string
    bucket        = string
    dataset       = string
    prefix        = optional(string, "")
    push_provider = optional(string)
    # Who may publish as this tenant, per topic: {"raw-events": ["serviceAccount:..."], "send-requests": [...]}.
    # Granted on the tenant's own copy ("<topic>.<tenant>") only; deployment-only, not passed to the functions.
    publishers = optional(map(list(string)), {})
    # Sending policy (shared/config.py PushPolicy); the defaults are the model's (tests/unit/test_terraform.py).
    push_policy = optional(object({
      quiet_hours_start      = optional(string)
      quiet_hours_end        = optional(string)
      frequency_cap          = optional(number, 3)
      frequency_window_hours = optional(number, 24)
      opt_out_properties     = optional(list(string), ["push_opt_out", "unsubscribed_push"])
      max_deferrals          = optional(number, 20)
    }), {})
    # PII policy of event metadata (shared/config.py PrivacyConfig); mode "hash" needs the privacy_salt secret (functions.tf).
    privacy = optional(object({
      mode           = optional(string, "remove")
      extra_pii_keys = optional(list(string), [])
      context_keep   = optional(list(string))
      scan_values    = optional(bool, true)
      # Days the raw payloads in `rejected` are kept (its partitions expire; landline tenant add applies it).
      rejected_retention_days = optional(number, 30)
    }), {})
    # Activity-level thresholds of the contact_activity view (shared/config.py ActivityLevels): events in 30 days.
    activity = optional(object({
      low    = optional(number, 1)
      medium = optional(number, 3)
      high   = optional(number, 10)
    }), {})
  }))
  validation {
    # object-notifications is published by the bucket's notification config (Cloud Storage) only.
    condition = alltrue([
      for t in values(var.tenants) :
      alltrue([for topic in keys(t.publishers) : contains(["raw-events", "send-requests"], topic)])
    ])
    error_message = "publishers: only raw-events and send-requests take publishers."
  }
}

variable "alert_notification_channels" {
  type        = list(string)
  default     = []
  description = "Cloud Monitoring notification channels (ids) for the dead-letter and setup-error alerts"
}

variable "source_version" {
  type        = string
  description = "Version tag of the function source archives uploaded by Cloud Build"
}

variable "source_bucket_location" {
  type    = string
  default = "EU"
}

variable "max_instances" {
  type        = number
  default     = 20
  description = "Back-pressure on BigQuery quotas and provider APIs"
}

variable "claim_retention_days" {
  type        = number
  default     = 30
  description = "Send claims (create-if-absent objects in each claims bucket) are deleted after this many days"
  validation {
    condition     = var.claim_retention_days >= 1
    error_message = "claim_retention_days must be at least 1: a claim must outlive the 15-minute lease."
  }
}

variable "staging_retention_days" {
  type        = number
  default     = 7
  description = "Bulk backfill's staged rows (each tenant's <bucket>-staging) are deleted after this many days: they are only needed until the run's load jobs ran"
  validation {
    condition     = var.staging_retention_days >= 1
    error_message = "staging_retention_days must be at least 1: a run's files must outlive its tasks and its load jobs."
  }
}

variable "bulk_job_image" {
  type        = string
  default     = null
  description = "Image of the bulk backfill job (bulk.tf: `python -m shared.bulk task`), name@sha256:<digest>; null: no job (`landline backfill --bulk` runs the tasks locally)"
  validation {
    # A tag would run whatever it points at on the day the job is executed, not the reviewed image.
    condition     = var.bulk_job_image == null ? true : can(regex("^[^@]+@sha256:[0-9a-f]{64}$", var.bulk_job_image))
    error_message = "bulk_job_image must be pinned by digest (name@sha256:<64 hex>)."
  }
}

variable "raw_file_retention_days" {
  type        = number
  default     = 30
  description = "Raw files are kept this long for replays"
}

variable "dataset_owners" {
  type        = list(string)
  default     = []
  description = "Owners of every tenant dataset besides the project's owners (\"user:...\", \"group:...\", \"serviceAccount:...\"): the account that applies this Terraform and the operators who run `landline` against the datasets"
  validation {
    condition     = alltrue([for m in var.dataset_owners : can(regex("^(user|group|serviceAccount):[^:@]+@[^:@]+$", m))])
    error_message = "dataset_owners: each is \"user:EMAIL\", \"group:EMAIL\" or \"serviceAccount:EMAIL\"."
  }
}

variable "deploy" {
  description = "The approval-gated apply trigger (deploy.tf); null: none (apply a reviewed plan by hand)"
  type = object({
    repo_uri        = string # the repository cloudbuild.yaml builds, e.g. https://github.com/acme/landline
    repo_type       = optional(string, "GITHUB")
    ref             = optional(string, "refs/heads/main")
    state_bucket    = string # cloudbuild.yaml's _TF_STATE_BUCKET
    service_account = string # the account builds apply as (projects/P/serviceAccounts/EMAIL)
    terraform_image = string # name@sha256:<digest> (no tags: the image that applies is the reviewed one)
    gsutil_image    = string # name@sha256:<digest>
  })
  default = null
  validation {
    condition = var.deploy == null ? true : alltrue([
      for image in [var.deploy.terraform_image, var.deploy.gsutil_image] : can(regex("^[^@:]+(:[^@]+)?@sha256:[0-9a-f]{64}$", image))
    ])
    error_message = "deploy: terraform_image and gsutil_image must be pinned by digest (name@sha256:<64 hex>)."
  }
}

variable "plan_retention_days" {
  type        = number
  default     = 30
  description = "Saved plans (and their text) are deleted from the plans bucket after this many days"
}
