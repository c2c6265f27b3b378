# The cloud deployment. Topics, subscriptions and functions come from ../topology.yaml (the same file the local stack
# reads); tenants (bucket + dataset + per-region trigger) come from var.tenants. Everything a tenant owns is pinned to
# the tenant's region: bucket location, dataset location, the Pub/Sub message storage policy of its region's topics,
# and the function and Eventarc trigger region.

terraform {
  required_version = ">= 1.6"
  required_providers {
    google = { source = "hashicorp/google", version = ">= 6.0" }
  }
}

provider "google" {
  project = var.project
}

locals {
  topology = yamldecode(file("${path.module}/../topology.yaml"))
  regions  = toset([for t in values(var.tenants) : t.region])
  # one copy of each topic per region, so messages never leave the region they belong to
  regional_topics = merge([
    for region in local.regions : {
      for name, topic in local.topology.topics : "${name}@${region}" => { name = name, region = region }
    }
  ]...)
  function_source_bucket = "${var.project}-landline-sources"
}

resource "google_pubsub_topic" "topic" {
  for_each = local.regional_topics
  name     = "${each.value.name}-${each.value.region}"
  message_storage_policy {
    allowed_persistence_regions = [each.value.region]
    enforce_in_transit          = true
  }
  message_retention_duration = local.topology.defaults.message_retention
}

resource "google_pubsub_topic" "dead_letter" {
  for_each = local.regional_topics
  name     = "${each.value.name}-dead-letter-${each.value.region}"
  message_storage_policy {
    allowed_persistence_regions = [each.value.region]
    enforce_in_transit          = true
  }
}

# A topic without subscriptions drops what it receives: keep dead letters.
resource "google_pubsub_subscription" "dead_letter_keep" {
  for_each                   = local.regional_topics
  name                       = "${each.value.name}-dead-letter-keep-${each.value.region}"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  message_retention_duration = "604800s" # the maximum: replay or drain dead letters within a week
  expiration_policy {
    ttl = "" # a quiet dead-letter subscription must not expire (the default is 31 days without activity)
  }
}

resource "google_storage_bucket" "tenant" {
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
  for_each                    = { for name, t in var.tenants : name => t if t.push_provider != null }
  name                        = "${each.value.bucket}-claims"
  location                    = upper(each.value.region)
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
}

resource "google_bigquery_dataset" "tenant" {
  for_each   = var.tenants
  dataset_id = each.value.dataset
  location   = each.value.region
  labels     = { landline-tenant = replace(each.key, "_", "-") }
}

# Tables and views are created by `landline tenant add --project ...` from shared/warehouse/schema.py, the single
# definition of the schema (it is also what the local stack uses).
