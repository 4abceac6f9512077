# Scheduler jobs publishing the ticks declared in topology.json "schedules" (cron overridable per
# job with var.schedule_overrides; archive's ticks are left out when var.raw_writer = "subscription"). A Pub/Sub target is published by the Cloud Scheduler service
# agent (it has pubsub.topics.publish through roles/cloudscheduler.serviceAgent); no user-managed
# identity is involved, so none is granted publish on the tick topics.

resource "google_cloud_scheduler_job" "tick" {
  for_each = local.schedules

  name        = "daihuo-${each.key}"
  project     = var.project_id
  region      = var.region
  description = "Publishes ${jsonencode(each.value.payload)} on ${each.value.topic}"
  schedule    = lookup(var.schedule_overrides, each.key, each.value.cron)
  time_zone   = var.schedule_time_zone
  paused      = var.schedules_paused

  # A missed tick is harmless: the next one does the same work (archive and clean are idempotent).
  retry_config {
    retry_count = 1
  }

  pubsub_target {
    topic_name = google_pubsub_topic.topic[each.value.topic].id
    data       = base64encode(jsonencode(each.value.payload))
    attributes = { job = each.key }
  }
}
