# Reviewed deploys (finding 32). cloudbuild.yaml tests, packages and uploads the functions, then runs `terraform plan
# -out` and stores the saved plan and its text in this bucket under the commit's short SHA; it never applies. The
# apply trigger below applies exactly that saved plan, after someone approves the build (approval_config), from the
# same commit: run it with `gcloud builds triggers run landline-apply --sha=<commit>`. Terraform refuses a saved plan
# whose state changed since it was made, so what is applied is what was reviewed or nothing.

resource "google_storage_bucket" "plans" {
  # checkov:skip=CKV_GCP_62: holds only saved plans of this deployment, each written and read by a Cloud Build build whose log records it; usage logs would add nothing
  # checkov:skip=CKV_GCP_78: a plan is written once per commit and deleted after plan_retention_days; old versions would keep stale plans (with state values) longer
  name                        = "${var.project}-landline-plans"
  location                    = var.source_bucket_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced" # a plan holds state values: never public
  lifecycle_rule {
    condition { age = var.plan_retention_days }
    action { type = "Delete" }
  }
}

resource "google_cloudbuild_trigger" "apply" {
  count           = var.deploy == null ? 0 : 1
  name            = "landline-apply"
  description     = "Apply the saved plan of a commit (cloudbuild.yaml stored it); needs approval"
  service_account = var.deploy.service_account
  approval_config {
    approval_required = true
  }
  source_to_build {
    uri       = var.deploy.repo_uri
    ref       = var.deploy.ref
    repo_type = var.deploy.repo_type
  }
  build {
    substitutions = {
      _PLANS_BUCKET    = google_storage_bucket.plans.name
      _TF_STATE_BUCKET = var.deploy.state_bucket
    }
    step {
      id   = "fetch-plan"
      name = var.deploy.gsutil_image
      args = ["cp", "gs://$${_PLANS_BUCKET}/$${SHORT_SHA}/tfplan", "/workspace/infra/terraform/tfplan"]
    }
    step {
      id         = "apply"
      name       = var.deploy.terraform_image
      dir        = "infra/terraform"
      entrypoint = "sh"
      args = ["-c", join(" && ", [
        "terraform init -input=false -backend-config=\"bucket=$${_TF_STATE_BUCKET}\"",
        "terraform apply -input=false tfplan",
      ])]
    }
    options {
      logging = "CLOUD_LOGGING_ONLY"
    }
  }
}
