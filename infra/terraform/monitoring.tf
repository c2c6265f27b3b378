# Alerts (finding 10): a message nobody could process, and a setup error a human must fix, reach someone instead of
# waiting in a subscription or a log. Notification channels come from var.alert_notification_channels.

# Every dead-letter keep subscription (main.tf: "<topic>-dead-letter-keep", regional copies with a region suffix):
# alert while any holds a message. `landline dead-letters --tenant T` lists them and why; `landline replay --tenant T
# --dead-letters` sends them back after the fix. They are kept 7 days.
resource "google_monitoring_alert_policy" "dead_letters" {
  display_name = "landline: dead-lettered messages waiting"
  combiner     = "OR"
  conditions {
    display_name = "a dead-letter keep subscription holds messages"
    condition_threshold {
      filter          = <<-EOT
        resource.type = "pubsub_subscription"
        AND metric.type = "pubsub.googleapis.com/subscription/num_undelivered_messages"
        AND resource.labels.subscription_id = monitoring.regex.full_match(".*-dead-letter-keep.*")
      EOT
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
  notification_channels = var.alert_notification_channels
  documentation {
    mime_type = "text/markdown"
    content = join(" ", [
      "Messages wait in $${resource.labels.subscription_id}, the tenant's `<topic>.<tenant>-dead-letter-keep`:",
      "run `landline dead-letters --tenant <tenant>` (why each is parked), fix what it says, then",
      "`landline replay --tenant <tenant> --dead-letters`. Dead letters are kept 7 days.",
    ])
  }
}

# Every function logs a setup error (shared/runtime.py run_stage) as JSON with error_class "setup" and the fix.
resource "google_monitoring_alert_policy" "setup_errors" {
  display_name = "landline: setup error"
  combiner     = "OR"
  conditions {
    display_name = "a function logged error_class=setup"
    condition_matched_log {
      filter = "resource.type=\"cloud_run_revision\" AND jsonPayload.error_class=\"setup\""
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "300s" # log-match alerts need one; at most one notification per 5 minutes
    }
    auto_close = "1800s"
  }
  notification_channels = var.alert_notification_channels
  documentation {
    mime_type = "text/markdown"
    content = join(" ", [
      "A landline function cannot work until someone fixes its setup; the log entry's `fix` says how. The message",
      "or file is retried and, after its attempts, kept in a dead-letter topic (see the dead-letter alert).",
    ])
  }
}
