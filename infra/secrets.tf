# Secrets declared in topology.json: the webhook signing secrets, one per platform
# (DAIHUO_SECRET_<PLATFORM>, read by ingest), and the viewer-token verification keys
# (DAIHUO_VIEWER_KEYS, read by recommend: a JSON object kid -> Ed25519 public key; docs/serving.md).
# Terraform creates the secret containers only: the values are added out of band with
#   printf '%s' "$SECRET" | gcloud secrets versions add daihuo-secret-douyin --data-file=-
# so they never appear in Terraform state, plans or this repository.

resource "google_secret_manager_secret" "webhook" {
  # Encrypted with Google-managed keys; CMEK would need a Cloud KMS key in the replica region for two small HMAC keys.
  for_each = local.secret_ids

  project   = var.project_id
  secret_id = each.value
  labels    = var.labels

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

# Only the functions that declare a secret in topology.json may read it (ingest its webhook secrets,
# recommend the viewer keys).
resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each = local.secret_grants

  project   = var.project_id
  secret_id = google_secret_manager_secret.webhook[each.value.env].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn[each.value.fn].email}"
}
