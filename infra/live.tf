# The live layer (docs/live.md): the Bigtable instance (autoscaling) and the live table with the GC
# rules of shared/live/schema.py, the live function's own push subscription of viewer-events (OIDC as
# the invoker SA, dead-letter topic, short backoff) and least-privilege data grants on the table.
# Functions declare their Bigtable access in topology.json: "bigtable": "write" | "read".

locals {
  push_functions   = { for name, f in local.topology.functions : name => f if f.trigger == "push" }
  bigtable_writers = toset([for name, f in local.topology.functions : name if lookup(f, "bigtable", "") == "write"])
  bigtable_readers = toset([for name, f in local.topology.functions : name if lookup(f, "bigtable", "") == "read"])

  # family -> GC rule (union: a cell goes when either says so); must match shared/live/schema.gc_rules
  live_families = {
    x = { max_age_s = var.live_dedupe_s, max_versions = 1, type = null }                          # claimed event ids / unique flags
    c = { max_age_s = var.live_retention_s, max_versions = null, type = "intsum" }                # AddToCell sums
    i = { max_age_s = var.live_retention_s, max_versions = 1, type = null }                       # per-item sums (a JSON cell per message)
    s = { max_age_s = var.live_retention_s, max_versions = 1, type = null }                       # room state
    o = { max_age_s = var.live_retention_s, max_versions = 1, type = null }                       # showcase
    e = { max_age_s = var.live_retention_s, max_versions = var.live_session_events, type = null } # sessions
  }
}

resource "google_bigtable_instance" "live" {
  #checkov:skip=CKV_GCP_85:Encrypted at rest with Google-managed keys, like the topics (pubsub.tf): pseudonymous counters kept 7 days; set cluster.kms_key_name if a customer demands CMEK.
  #checkov:skip=CKV_GCP_122:deletion_protection is var.bigtable_deletion_protection (true by default); a staging project may turn it off.
  name                = var.bigtable_instance
  project             = var.project_id
  display_name        = "Daihuo live"
  deletion_protection = var.bigtable_deletion_protection
  labels              = var.labels

  cluster {
    cluster_id   = "${var.bigtable_instance}-c1"
    zone         = coalesce(var.bigtable_zone, "${var.region}-a")
    storage_type = "SSD"

    autoscaling_config {
      min_nodes  = var.bigtable_min_nodes
      max_nodes  = var.bigtable_max_nodes
      cpu_target = var.bigtable_cpu_target
    }
  }
}

resource "google_bigtable_table" "live" {
  name                = var.live_table
  project             = var.project_id
  instance_name       = google_bigtable_instance.live.name
  deletion_protection = var.bigtable_deletion_protection ? "PROTECTED" : "UNPROTECTED"

  dynamic "column_family" {
    for_each = local.live_families
    content {
      family = column_family.key
      type   = column_family.value.type
    }
  }
}

resource "google_bigtable_gc_policy" "live" {
  for_each = local.live_families

  project         = var.project_id
  instance_name   = google_bigtable_instance.live.name
  table           = google_bigtable_table.live.name
  column_family   = each.key
  mode            = each.value.max_versions == null ? null : "UNION"
  deletion_policy = "ABANDON"

  max_age {
    duration = "${each.value.max_age_s}s"
  }

  dynamic "max_version" {
    for_each = each.value.max_versions == null ? [] : [each.value.max_versions]
    content {
      number = max_version.value
    }
  }
}

# --- data access: on the table only, never the instance or project ------------------------------
resource "google_bigtable_table_iam_member" "writer" {
  for_each = local.bigtable_writers

  project       = var.project_id
  instance_name = google_bigtable_instance.live.name
  table         = google_bigtable_table.live.name
  role          = "roles/bigtable.user" # read + write data; no table or instance administration
  member        = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_bigtable_table_iam_member" "reader" {
  for_each = local.bigtable_readers

  project       = var.project_id
  instance_name = google_bigtable_instance.live.name
  table         = google_bigtable_table.live.name
  role          = "roles/bigtable.reader"
  member        = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# --- the push subscription ------------------------------------------------------------------------
resource "google_pubsub_subscription" "push" {
  for_each = local.push_functions

  name                       = each.value.subscription
  project                    = var.project_id
  topic                      = google_pubsub_topic.topic[each.value.topic].id
  ack_deadline_seconds       = each.value.push.ack_deadline_s
  message_retention_duration = "86400s" # live state older than a day is of no use; raw/ keeps everything
  labels                     = var.labels

  push_config {
    push_endpoint = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.topic[local.topology.push_defaults.dead_letter_topic].id
    max_delivery_attempts = each.value.push.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "${each.value.push.min_backoff_s}s"
    maximum_backoff = "${each.value.push.max_backoff_s}s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_v2_service_iam_member.push_invoker]
}

# The invoker SA (its OIDC tokens minted by the Pub/Sub service agent, iam.tf) may call the function.
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.push_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.invoker.email}"
}

# Dead-lettering: the Pub/Sub service agent acknowledges on the source subscription (and publishes
# to the dead-letter topic: pubsub.tf).
resource "google_pubsub_subscription_iam_member" "push_dead_letter_ack" {
  for_each = local.push_functions

  project      = var.project_id
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_service_agent}"
}
