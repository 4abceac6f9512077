# The Beam jobs on Dataflow (pipelines/beam/: clean and item-knn), as Flex Templates built by
# `make package` into dist/dataflow/ (devtools/flex_template.py). Everything here exists only with
# var.dataflow_enabled. The images are built and pushed out of band (Cloud Build: docs/deploy.md);
# this file uploads each template's spec naming its image in the repository below, gives the jobs a
# worker identity with only what they do, launches the jobs of var.dataflow_jobs at apply, and (with
# var.dataflow_clean_schedule) launches the clean job on a schedule, the clean function then cleaning nothing.

locals {
  dataflow_enabled     = var.dataflow_enabled
  dataflow_dist        = "${local.dist_dir}/dataflow"
  dataflow_bucket_name = "${var.project_id}-daihuo-dataflow"
  dataflow_templates   = local.dataflow_enabled ? toset(["daihuo-clean", "daihuo-itemknn"]) : toset([])
  dataflow_image_repo  = "${var.region}-docker.pkg.dev/${var.project_id}/daihuo-dataflow"
  # the scheduled clean: Dataflow cleans, the clean function's ticks do not (functions.tf sets its engine)
  dataflow_clean_scheduled = local.dataflow_enabled && var.dataflow_clean_schedule != ""
  dataflow_temp            = "gs://${local.dataflow_bucket_name}/temp"
  dataflow_staging         = "gs://${local.dataflow_bucket_name}/staging"
  # <repo>/<template>:<content hash of its build context> (dist/dataflow/<template>/IMAGE_TAG)
  dataflow_images = {
    for t in local.dataflow_templates :
    t => "${local.dataflow_image_repo}/${t}:${trimspace(file("${local.dataflow_dist}/${t}/IMAGE_TAG"))}"
  }
}

# Templates (templates/<name>.json), staging and temp files of the jobs: nothing of the data.
resource "google_storage_bucket" "dataflow" {
  #checkov:skip=CKV_GCP_62:Same as the data bucket: Cloud Audit Logs instead of legacy usage logs.
  #checkov:skip=CKV_GCP_78:Templates are re-uploaded from dist/ by every apply and temp/staging files are disposable: nothing to recover from old versions.
  count = local.dataflow_enabled ? 1 : 0

  name                        = local.dataflow_bucket_name
  project                     = var.project_id
  location                    = upper(var.region)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = var.labels

  lifecycle_rule {
    condition {
      age            = 7
      matches_prefix = ["temp/", "staging/"]
    }
    action {
      type = "Delete"
    }
  }
}

# The jobs' images (launcher + workers: one image per template).
resource "google_artifact_registry_repository" "dataflow" {
  count = local.dataflow_enabled ? 1 : 0

  project       = var.project_id
  location      = var.region
  repository_id = "daihuo-dataflow"
  format        = "DOCKER"
  description   = "Daihuo Dataflow Flex Template images (make package: dist/dataflow/)"
  labels        = var.labels
}

# The spec `gcloud dataflow flex-template build` would write, from dist/dataflow/<t>.spec.json with
# the image in this project's repository.
resource "google_storage_bucket_object" "flex_template" {
  for_each = local.dataflow_templates

  bucket       = google_storage_bucket.dataflow[0].name
  name         = "templates/${each.key}.json"
  content_type = "application/json"
  content = jsonencode(merge(jsondecode(file("${local.dataflow_dist}/${each.key}.spec.json")), {
    image              = local.dataflow_images[each.key]
    defaultEnvironment = { sdkContainerImage = local.dataflow_images[each.key] }
  }))
}

# --- the worker identity (the launcher VM and the workers run as it) ----------------------------
resource "google_service_account" "dataflow" {
  count = local.dataflow_enabled ? 1 : 0

  project      = var.project_id
  account_id   = "daihuo-dataflow"
  display_name = "Daihuo Dataflow jobs (Beam clean, item-knn): workers and launcher"
}

# Dataflow requires its workers' identity to hold roles/dataflow.worker on the project (work items,
# metrics, shuffle); it grants nothing on data.
resource "google_project_iam_member" "dataflow_worker" {
  count = local.dataflow_enabled ? 1 : 0

  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = "serviceAccount:${google_service_account.dataflow[0].email}"
}

# The data: the clean job does what the clean function does (reads raw/, writes clean/, quarantine/,
# analytics/, state/, and swaps state/clean-manifest.json with a generation precondition, which needs
# delete): objectAdmin on the data bucket only, as the clean function has (main.tf storage_grants).
resource "google_storage_bucket_iam_member" "dataflow_data" {
  count = local.dataflow_enabled ? 1 : 0

  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.dataflow[0].email}"
}

# Templates, staging and temp: its own bucket.
resource "google_storage_bucket_iam_member" "dataflow_temp" {
  count = local.dataflow_enabled ? 1 : 0

  bucket = google_storage_bucket.dataflow[0].name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.dataflow[0].email}"
}

# The clean job's last step publishes the committed run's summary on events-cleaned (train's trigger),
# and its launcher republishes an unpublished one first: publish on that topic only.
resource "google_pubsub_topic_iam_member" "dataflow_cleaned_publisher" {
  count = local.dataflow_enabled ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.topic["events-cleaned"].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.dataflow[0].email}"
}

# Pull the images (launcher and workers).
resource "google_artifact_registry_repository_iam_member" "dataflow_reader" {
  count = local.dataflow_enabled ? 1 : 0

  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.dataflow[0].name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.dataflow[0].email}"
}

# --- jobs launched at apply (var.dataflow_jobs; a batch job runs once) --------------------------
resource "google_dataflow_flex_template_job" "job" {
  provider = google-beta
  for_each = local.dataflow_enabled ? var.dataflow_jobs : {}

  project                 = var.project_id
  region                  = var.region
  name                    = "daihuo-${each.key}"
  container_spec_gcs_path = "gs://${google_storage_bucket.dataflow[0].name}/${google_storage_bucket_object.flex_template[each.value.template].name}"
  sdk_container_image     = local.dataflow_images[each.value.template]
  service_account_email   = google_service_account.dataflow[0].email
  temp_location           = local.dataflow_temp
  staging_location        = local.dataflow_staging
  max_workers             = var.dataflow_max_workers
  machine_type            = var.dataflow_machine_type
  ip_configuration        = "WORKER_IP_PRIVATE"
  on_delete               = "cancel"
  labels                  = var.labels

  parameters = merge(each.value.parameters, { store = "gs://${local.bucket_name}" })

  depends_on = [
    google_project_iam_member.dataflow_worker,
    google_storage_bucket_iam_member.dataflow_data,
    google_storage_bucket_iam_member.dataflow_temp,
    google_artifact_registry_repository_iam_member.dataflow_reader,
    google_pubsub_topic_iam_member.dataflow_cleaned_publisher,
  ]
}

# --- the scheduled clean (var.dataflow_clean_schedule) -------------------------------------------
# Cloud Scheduler calls the Dataflow REST API (projects.locations.flexTemplates.launch) with an OAuth
# token of its own identity, which may only launch jobs and run them as the worker identity above.
resource "google_service_account" "dataflow_launcher" {
  count = local.dataflow_clean_scheduled ? 1 : 0

  project      = var.project_id
  account_id   = "daihuo-dataflow-launcher"
  display_name = "Daihuo: Cloud Scheduler's launches of the Dataflow clean"
}

# Create (launch) Dataflow jobs in the project: dataflow.developer is the launch role (no data access,
# no worker rights); a Dataflow job is a project resource, so the grant is on the project.
resource "google_project_iam_member" "dataflow_launcher_developer" {
  #checkov:skip=CKV_GCP_49:dataflow.developer is listed because a job it creates runs as a service account; a job can only run as one the caller may actAs, and this identity may actAs the Dataflow worker identity only (dataflow_launcher_act_as_worker), so it can impersonate nothing else. Dataflow's launch permission exists only at project level.
  count = local.dataflow_clean_scheduled ? 1 : 0

  project = var.project_id
  role    = "roles/dataflow.developer"
  member  = "serviceAccount:${google_service_account.dataflow_launcher[0].email}"
}

# Run the job as the worker identity (actAs) -- on that one service account, not project-wide.
resource "google_service_account_iam_member" "dataflow_launcher_act_as_worker" {
  count = local.dataflow_clean_scheduled ? 1 : 0

  service_account_id = google_service_account.dataflow[0].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.dataflow_launcher[0].email}"
}

# Read the template spec it names (templates/daihuo-clean.json): the template bucket only, read-only.
resource "google_storage_bucket_iam_member" "dataflow_launcher_templates" {
  count = local.dataflow_clean_scheduled ? 1 : 0

  bucket = google_storage_bucket.dataflow[0].name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.dataflow_launcher[0].email}"
}

resource "google_cloud_scheduler_job" "dataflow_clean" {
  count = local.dataflow_clean_scheduled ? 1 : 0

  name        = "daihuo-dataflow-clean"
  project     = var.project_id
  region      = var.region
  description = "Launches the daihuo-clean Flex Template on Dataflow (the clean function's ticks clean nothing meanwhile)"
  schedule    = var.dataflow_clean_schedule
  time_zone   = var.schedule_time_zone
  paused      = var.schedules_paused
  # the launch call answers once the job is created (the launcher VM builds the graph after it)
  attempt_deadline = "180s"

  # A failed launch is retried once; a launch refused because the previous run (same job name) is still
  # active is harmless: the next tick cleans what is pending then. Two runs never clean the same objects
  # into the manifest: a run commits only if the manifest is still the one it planned from.
  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = "https://dataflow.googleapis.com/v1b3/projects/${var.project_id}/locations/${var.region}/flexTemplates:launch"
    headers     = { "Content-Type" = "application/json" }
    body = base64encode(jsonencode({
      launchParameter = {
        # one name for every scheduled run: Dataflow refuses a second active job of the same name
        jobName              = "daihuo-clean-scheduled"
        containerSpecGcsPath = "gs://${google_storage_bucket.dataflow[0].name}/${google_storage_bucket_object.flex_template["daihuo-clean"].name}"
        parameters = {
          store          = "gs://${local.bucket_name}"
          cleaned_topic  = google_pubsub_topic.topic[local.env_values.DAIHUO_CLEANED_TOPIC].name
          pubsub_project = var.project_id
          publish        = "true"
        }
        environment = {
          serviceAccountEmail  = google_service_account.dataflow[0].email
          tempLocation         = local.dataflow_temp
          stagingLocation      = local.dataflow_staging
          maxWorkers           = var.dataflow_max_workers
          machineType          = var.dataflow_machine_type
          ipConfiguration      = "WORKER_IP_PRIVATE"
          sdkContainerImage    = local.dataflow_images["daihuo-clean"]
          additionalUserLabels = var.labels
        }
      }
    }))

    oauth_token {
      service_account_email = google_service_account.dataflow_launcher[0].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  # The job runs with the settings' defaults (its launcher and workers get no DAIHUO_* environment): the
  # clean function's look-back and retention must be those defaults, or the two engines would compact
  # the manifest differently.
  lifecycle {
    precondition {
      condition = (var.dedupe_lookback_days == 35 && var.raw_delete_after_days == 365 &&
      var.clean_delete_after_days == 400 && var.quarantine_delete_after_days == 90)
      error_message = "dataflow_clean_schedule: the Dataflow clean uses the default look-back (35 days) and retention (raw 365, clean 400, quarantine 90); keep dedupe_lookback_days and *_delete_after_days at those values, or set dataflow_clean_schedule = \"\"."
    }
  }

  depends_on = [
    google_project_iam_member.dataflow_launcher_developer,
    google_service_account_iam_member.dataflow_launcher_act_as_worker,
    google_storage_bucket_iam_member.dataflow_launcher_templates,
    google_project_iam_member.dataflow_worker,
    google_storage_bucket_iam_member.dataflow_data,
    google_storage_bucket_iam_member.dataflow_temp,
    google_artifact_registry_repository_iam_member.dataflow_reader,
    google_pubsub_topic_iam_member.dataflow_cleaned_publisher,
  ]
}
