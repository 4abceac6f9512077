# One runtime service account per function, holding only what that function does (docs/deploy.md).
# No project-level role is granted to a runtime identity: every binding below is on one bucket,
# topic, subscription, secret or Cloud Run service.

resource "google_service_account" "fn" {
  for_each = local.functions

  project      = var.project_id
  account_id   = "daihuo-fn-${each.key}"
  display_name = "Daihuo ${each.key} function (runtime)"
}

# Pushes the Eventarc (Pub/Sub) deliveries into archive/clean/train with an OIDC token.
resource "google_service_account" "invoker" {
  project      = var.project_id
  account_id   = "daihuo-invoker"
  display_name = "Daihuo Eventarc trigger identity (invokes the Pub/Sub-triggered functions)"
}

# Builds the bundles (Cloud Build) instead of the Compute default service account, which is Editor
# on many projects.
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "daihuo-build"
  display_name = "Daihuo Cloud Functions build"
}

# --- data bucket -----------------------------------------------------------------------------
resource "google_storage_bucket_iam_member" "fn_data" {
  for_each = local.function_storage

  bucket = google_storage_bucket.data.name
  role   = each.value.role
  member = "serviceAccount:${google_service_account.fn[each.key].email}"

  dynamic "condition" {
    for_each = each.value.prefix == null ? [] : [each.value.prefix]
    content {
      title       = "only-${trimsuffix(condition.value, "/")}"
      description = "New objects under ${condition.value} only"
      expression  = "resource.name.startsWith(\"projects/_/buckets/${local.bucket_name}/objects/${condition.value}\")"
    }
  }
}

# --- Pub/Sub -----------------------------------------------------------------------------------
resource "google_pubsub_topic_iam_member" "fn_publisher" {
  for_each = local.publisher_grants

  project = var.project_id
  topic   = google_pubsub_topic.topic[each.value.topic].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.fn[each.value.fn].email}"
}

resource "google_pubsub_subscription_iam_member" "fn_subscriber" {
  for_each = local.subscriber_grants

  project      = var.project_id
  subscription = google_pubsub_subscription.pull[each.value.subscription].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.fn[each.value.fn].email}"
}

# --- invoking the functions ----------------------------------------------------------------------
# A 2nd-gen function is served by the Cloud Run service of the same name: invoking = run.invoker.
resource "google_cloud_run_v2_service_iam_member" "trigger_invoker" {
  for_each = local.topic_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.invoker.email}"
}

# Public HTTP endpoints (var.public_functions, default ingest and recommend). They are public at the
# network/IAM layer on purpose: webhook senders (Douyin, Kuaishou, ...) cannot mint Google ID tokens,
# so ingest authenticates every request itself (HMAC-SHA256 over timestamp + body with the
# platform's secret, 5-minute replay window: shared/signing.py); recommend is called by the viewer
# app without Google credentials and answers anonymous callers with non-personal results only: a
# personal answer needs a viewer token the platform signed (Ed25519, shared/identity.py, keys in the
# DAIHUO_VIEWER_KEYS secret). analytics is not in the list: IAM callers only.
resource "google_cloud_run_v2_service_iam_member" "public" {
  for_each = toset([for name in var.public_functions : name if contains(keys(local.http_functions), name)])

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# The Pub/Sub service agent mints the OIDC tokens of the push deliveries as the invoker SA.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${local.pubsub_service_agent}"
}

# --- build ------------------------------------------------------------------------------------------
# Minimal build identity (instead of roles/cloudbuild.builds.builder): write logs, push the built
# image to Artifact Registry (gcf-artifacts), read the source bundles.
resource "google_project_iam_member" "build" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer"])

  project = var.project_id
  role    = each.key
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_storage_bucket_iam_member" "build_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
}

# Operators of the dashboard: run.invoker on the analytics service only (IAM-authenticated; the
# function runs with DAIHUO_OPERATOR_AUTH=iam and trusts Cloud Run's check). docs/dashboard.md.
resource "google_cloud_run_v2_service_iam_member" "operators" {
  for_each = toset(var.analytics_operators)

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn["analytics"].name
  role     = "roles/run.invoker"
  member   = each.value
}
