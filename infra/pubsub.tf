# Topics and subscriptions from topology.json. The push deliveries to the CloudEvent functions are
# the Eventarc triggers in functions.tf (Eventarc creates and owns those subscriptions).

resource "google_pubsub_topic" "topic" {
  #checkov:skip=CKV_GCP_83:Messages are encrypted at rest with Google-managed keys; CMEK (Cloud KMS) is not required for pseudonymous viewer events and would add a key to operate per topic. Add kms_key_name here if a customer demands it.
  for_each = toset(local.topology.topics)

  name    = each.key
  project = var.project_id
  labels  = var.labels

  # Keep a day of every topic's messages so a subscription can be seeked back after a bad deploy.
  message_retention_duration = "86400s"
}

# The archive's pull subscription(s): the archive function pulls a bounded batch per tick and acks
# only after raw/ holds it. No dead-letter policy on purpose: raw/ is the system of record, so an
# outage must leave the events waiting here (7 days), never divert them.
resource "google_pubsub_subscription" "pull" {
  for_each = local.topology.pull_subscriptions

  name                       = each.key
  project                    = var.project_id
  topic                      = google_pubsub_topic.topic[each.value.topic].id
  ack_deadline_seconds       = min(600, each.value.ack_deadline_s)
  message_retention_duration = each.value.retention
  retain_acked_messages      = false
  labels                     = var.labels

  expiration_policy {
    ttl = "" # never expires, even when no one pulls for 31 days
  }

  retry_policy {
    minimum_backoff = "${local.topology.push_defaults.min_backoff_s}s"
    maximum_backoff = "${local.topology.push_defaults.max_backoff_s}s"
  }
}

# Dead letters: a pull subscription that nobody consumes automatically, for an operator to inspect
# (`gcloud pubsub subscriptions pull dead-letters-inspect --limit 10`) and replay by hand.
resource "google_pubsub_subscription" "dead_letters_inspect" {
  name                       = "${local.topology.push_defaults.dead_letter_topic}-inspect"
  project                    = var.project_id
  topic                      = google_pubsub_topic.topic[local.topology.push_defaults.dead_letter_topic].id
  ack_deadline_seconds       = 60
  message_retention_duration = var.dead_letter_retention
  retain_acked_messages      = true
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must be allowed to publish to the
# dead-letter topic (and to acknowledge on the source subscription, see the dead_letter_commands
# output for the Eventarc-owned subscriptions).
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.topic[local.topology.push_defaults.dead_letter_topic].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${local.pubsub_service_agent}"
}
