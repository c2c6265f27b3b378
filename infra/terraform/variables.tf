variable "project" {
  type        = string
  description = "GCP project id"
}

variable "tenants" {
  description = "Tenants: name => {region, bucket, dataset, prefix, push_provider, push_policy, privacy}"
  type = map(object({
    region        = string
    bucket        = string
    dataset       = string
    prefix        = optional(string, "")
    push_provider = optional(string)
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
  }))
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

variable "raw_file_retention_days" {
  type        = number
  default     = 30
  description = "Raw files are kept this long for replays"
}
