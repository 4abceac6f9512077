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
  for_each = local.pull_subscriptions

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

# --- raw/ without archive: the Pub/Sub Cloud Storage subscription (var.raw_writer = "subscription") ---
# Pub/Sub itself writes batches of viewer-events to the data bucket: one object per max_duration /
# max_bytes, text format (each message's data followed by a newline, NOT compressed: ingest publishes
# NDJSON, so an object is NDJSON), named <filename_prefix><datetime>_<uuid><filename_suffix>:
#   raw/pubsub/2026-12-02/19_37_05Z_<uuid>.ndjson
# The datetime format cannot spell archive's "date=YYYY-MM-DD/hour=HH" (only the datetime tokens and
# delimiters are allowed), so clean's raw listing also accepts these names (shared/layout.py:
# RAW_SUBSCRIPTION_*, is_raw_object, partition_date; tests/test_raw_subscription.py writes objects
# exactly so and cleans them). Partitioned by write time, not by the event's ts as archive does:
# clean does not depend on the partition (it dedupes and dates rows by their own fields); only the
# look-back and retention count from it. At-least-once, as archive: clean dedupes by event_id.
resource "google_pubsub_subscription" "raw_writer" {
  count = local.archive_replaced ? 1 : 0

  name    = "viewer-events-raw-gcs"
  project = var.project_id
  topic   = google_pubsub_topic.topic["viewer-events"].id
  labels  = var.labels

  # must be >= max_duration (the API refuses a shorter deadline)
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"

  cloud_storage_config {
    bucket                   = google_storage_bucket.data.name
    filename_prefix          = "raw/pubsub/"
    filename_datetime_format = "YYYY-MM-DD/hh_mm_ssZ"
    filename_suffix          = ".ndjson"
    max_duration             = var.raw_writer_max_duration
    max_bytes                = var.raw_writer_max_bytes
    # no avro_config: text format, the message data only (attributes are not needed: ingest puts
    # everything clean reads into the NDJSON lines, received_at included)
  }

  expiration_policy {
    ttl = "" # never expires
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  depends_on = [
    google_storage_bucket_iam_member.pubsub_raw_writer,
    google_storage_bucket_iam_member.pubsub_raw_bucket_reader,
  ]
}

# What the Pub/Sub service agent needs to write the subscription's objects, as Google documents it:
# storage.objects.create (objectCreator: create only, never read, overwrite or delete) and the
# bucket's metadata (legacyBucketReader: storage.buckets.get, which the service checks when the
# subscription is created). Both on this bucket only, only when the subscription exists. No IAM
# condition on the raw/pubsub/ prefix: the service verifies its access on the bucket, and a
# conditioned grant would not pass that check.
resource "google_storage_bucket_iam_member" "pubsub_raw_writer" {
  count = local.archive_replaced ? 1 : 0

  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${local.pubsub_service_agent}"
}

resource "google_storage_bucket_iam_member" "pubsub_raw_bucket_reader" {
  count = local.archive_replaced ? 1 : 0

  bucket = google_storage_bucket.data.name
  role   = "roles/storage.legacyBucketReader"
  member = "serviceAccount:${local.pubsub_service_agent}"
}
