# Alerts (docs/alerts.md). The functions evaluate the threshold rules of DAIHUO_ALERT_RULES (clean after
# every run, live per room) and publish what fires on the `alerts` topic (topology.json: the topic, its
# `alerts-inspect` pull subscription and the publisher grants of clean and live come from there).
# Here: the extra least-privilege grants those functions need, and Cloud Monitoring wired to both the
# alerts and the dead letters, notifying var.alert_notification_channels.

locals {
  # functions that read a dead-letter subscription's depth (clean: topology "alert_reads")
  alert_readers = toset([for name, f in local.topology.functions : name if contains(lookup(f, "alert_reads", []), "${local.topology.push_defaults.dead_letter_topic}-inspect")])
  # functions that record alerts under alerts/ without an objectAdmin grant (live: create-only)
  alert_writers = toset([for name, f in local.topology.functions : name if contains(lookup(f, "publishes", []), "alerts") && lookup(local.storage_grants, name, { role = "" }).role != "roles/storage.objectAdmin"])
}

# live records an alert as a new object under alerts/ (never an overwrite: alerts/date=.../<id>.json,
# then alerts/sent/<id>), like its quarantine/ grant.
resource "google_storage_bucket_iam_member" "alert_writer" {
  for_each = local.alert_writers

  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_service_account.fn[each.key].email}"

  condition {
    title       = "only-alerts"
    description = "New objects under alerts/ only"
    expression  = "resource.name.startsWith(\"projects/_/buckets/${local.bucket_name}/objects/alerts/\")"
  }
}

# ... and reads back what it needs to fire once: an alert's claim and sent marker (alerts/) and the
# hosts' typical GMV per minute that clean writes (state/host-rates.json); nothing else.
resource "google_storage_bucket_iam_member" "alert_writer_reads" {
  for_each = local.alert_writers

  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.fn[each.key].email}"

  condition {
    title       = "only-alerts-read"
    description = "Read alerts/ and state/host-rates.json only"
    expression  = "resource.name.startsWith(\"projects/_/buckets/${local.bucket_name}/objects/alerts/\") || resource.name == \"projects/_/buckets/${local.bucket_name}/objects/state/host-rates.json\""
  }
}

# clean counts the dead letters waiting (pull, then give every message back at once: never acks).
resource "google_pubsub_subscription_iam_member" "alert_reader" {
  for_each = local.alert_readers

  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letters_inspect.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# --- Cloud Monitoring ------------------------------------------------------------------------------
# Every alert a function publishes is also one structured log line ("alert published", with rule,
# subject, value, threshold): counted per rule by this log-based metric.
resource "google_logging_metric" "alerts" {
  project     = var.project_id
  name        = "daihuo-alerts"
  description = "Daihuo alerts published by the functions (shared/alerts.py), per rule"
  filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.message=\"alert published\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "rule"
      value_type  = "STRING"
      description = "gmv_drop, quarantine_rate, dead_letter_depth or model_not_promoted"
    }
    labels {
      key         = "subject"
      value_type  = "STRING"
      description = "stream:<id>, clean, subscription:<name> or model"
    }
  }
  label_extractors = {
    rule    = "EXTRACT(jsonPayload.rule)"
    subject = "EXTRACT(jsonPayload.subject)"
  }
}

resource "google_monitoring_alert_policy" "alerts_published" {
  project               = var.project_id
  display_name          = "Daihuo: an alert rule fired"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "daihuo-alerts log metric > 0 (per rule and subject)"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.alerts.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.rule", "metric.label.subject"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Daihuo alert rule fired (GMV drop, quarantine rate, dead-letter depth or model not promoted). The alert itself (rule, subject, value, threshold, time) is on the `alerts` topic, under alerts/ in the data bucket and on the dashboard's /alerts page. Runbook: docs/alerts.md."
  }
}

# Dead letters: messages a push subscription gave up on wait on <dead-letter topic>-inspect. Measured
# by Pub/Sub itself, so it fires even when clean is down (clean's own dead_letter_depth rule cannot).
resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "Daihuo: dead letters waiting"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "num_undelivered_messages on ${google_pubsub_subscription.dead_letters_inspect.name} > ${var.dead_letter_alert_threshold}"
    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.dead_letters_inspect.name}\" AND metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.dead_letter_alert_threshold
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Messages were dead-lettered (a function failed on them max_delivery_attempts times). Inspect: `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letters_inspect.name} --limit 10`; replay by hand after the fix. Runbook: docs/alerts.md."
  }
}
