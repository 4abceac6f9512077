# The 2nd-gen Cloud Functions, one per entry of topology.json "functions", each with its trigger:
#  * "http"  -> an HTTPS endpoint (public or IAM-only, see iam.tf)
#  * "topic" -> an Eventarc Pub/Sub trigger on the declared topic: each message is POSTed to the
#               function as a CloudEvent, authenticated as the invoker SA; an exception / 5xx is
#               retried with exponential backoff (RETRY_POLICY_RETRY) for the subscription's retention.

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:Only the HTTP functions take ALLOW_ALL (webhooks from the platforms, the viewer app, IAM-authenticated operators); the topic-triggered ones are ALLOW_INTERNAL_ONLY. checkov cannot tell the two apart through the conditional.
  for_each = local.functions

  name        = "daihuo-${each.key}"
  project     = var.project_id
  location    = var.region
  description = "Daihuo ${each.key} (${each.value.trigger} trigger)"
  labels      = merge(var.labels, { function = each.key })

  build_config {
    runtime         = "python311"
    entry_point     = each.value.entry_point
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.source[each.key].name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout_s
    min_instance_count               = each.value.min_instances
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = each.value.concurrency
    service_account_email            = google_service_account.fn[each.key].email
    all_traffic_on_latest_revision   = true
    # Pub/Sub/Eventarc deliveries from this project count as internal traffic: the topic-triggered
    # functions take nothing from the internet.
    ingress_settings = each.value.trigger == "http" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"

    environment_variables = merge(
      { for name in each.value.env : name => local.env_values[name] },
      # the scheduled Dataflow job cleans (infra/dataflow.tf): clean's ticks then only evaluate the alert rules
      each.key == "clean" && local.dataflow_clean_scheduled ? { DAIHUO_CLEAN_ENGINE = "dataflow" } : {},
      {
        GOOGLE_CLOUD_PROJECT = var.project_id
        PUBSUB_PROJECT_ID    = var.project_id
        LOG_EXECUTION_ID     = "true"
      },
    )

    # DAIHUO_SECRET_<PLATFORM> from Secret Manager, resolved when an instance starts. Rotate by
    # adding a version; new instances pick it up (redeploy to force every instance).
    dynamic "secret_environment_variables" {
      for_each = toset(each.value.secrets)
      content {
        key        = secret_environment_variables.value
        project_id = var.project_id
        secret     = google_secret_manager_secret.webhook[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  dynamic "event_trigger" {
    for_each = each.value.trigger == "topic" ? [each.value.topic] : []
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = google_pubsub_topic.topic[event_trigger.value].id
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = google_service_account.invoker.email
    }
  }

  # The runtime identity must be able to do its job from the first request.
  depends_on = [
    google_storage_bucket_iam_member.fn_data,
    google_pubsub_topic_iam_member.fn_publisher,
    google_pubsub_subscription_iam_member.fn_subscriber,
    google_secret_manager_secret_iam_member.accessor,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_sources,
  ]
}
