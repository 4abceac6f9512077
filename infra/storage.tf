# The one data bucket (DESIGN.md section 3) and the bucket holding the functions' source bundles.

resource "google_storage_bucket" "data" {
  #checkov:skip=CKV_GCP_62:Usage/access logs go to Cloud Audit Logs (enable DATA_READ/DATA_WRITE for storage.googleapis.com in the project's audit config); legacy bucket usage logs would need a second bucket and add nothing.
  name                        = local.bucket_name
  project                     = var.project_id
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = 604800
  }

  # raw/: immutable archive. Rarely read after the hourly clean has consumed it -> Nearline, then gone.
  lifecycle_rule {
    condition {
      age                   = var.raw_nearline_after_days
      matches_prefix        = ["raw/"]
      matches_storage_class = ["STANDARD"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.raw_delete_after_days
      matches_prefix = ["raw/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.quarantine_delete_after_days
      matches_prefix = ["quarantine/"]
    }
    action {
      type = "Delete"
    }
  }

  # Retention per prefix (docs/privacy.md): the code forgets objects by partition date first
  # (shared/pipeline/retention.py), these rules delete them by object age.
  lifecycle_rule {
    condition {
      age            = var.clean_delete_after_days + 31
      matches_prefix = ["clean/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.dedupe_lookback_days + 31
      matches_prefix = ["state/dedupe/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.reports_delete_after_days
      matches_prefix = ["reports/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.alert_retention_days
      matches_prefix = ["alerts/"]
    }
    action {
      type = "Delete"
    }
  }

  # Versioning keeps overwritten pointers (state/clean-manifest.json, models/LATEST.json) for a
  # while for recovery; noncurrent versions older than a week, or beyond the 5 newest, are removed.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_delete_after_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 5
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}

resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Same as the data bucket: Cloud Audit Logs instead of legacy usage logs.
  name                        = local.source_bucket_name
  project                     = var.project_id
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  versioning {
    enabled = true
  }

  # Bundles are content-addressed (hash in the object name); old ones are only kept for rollback.
  lifecycle_rule {
    condition {
      age = 180
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

# One bundle per function, built by `make package` (devtools/package.py): dist/<name>.zip. The object
# name carries the bundle's SHA-256, so a changed bundle is a new object and the function redeploys;
# an unchanged source gives a byte-identical zip (the packager is deterministic) and no diff.
resource "google_storage_bucket_object" "source" {
  for_each = local.functions

  bucket       = google_storage_bucket.sources.name
  name         = "functions/${each.key}/${filesha256("${local.dist_dir}/${each.key}.zip")}.zip"
  source       = "${local.dist_dir}/${each.key}.zip"
  content_type = "application/zip"
}
