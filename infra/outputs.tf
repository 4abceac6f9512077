output "function_urls" {
  description = "HTTPS endpoint of every function (the topic-triggered ones accept internal traffic only)."
  value       = { for name, fn in google_cloudfunctions2_function.fn : name => fn.url }
}

output "ingest_url" {
  description = "Give this to the live-stream platforms as the webhook URL."
  value       = try(google_cloudfunctions2_function.fn["ingest"].url, null)
}

output "recommend_url" {
  description = "The viewer app calls GET <url>?user_id=..&stream_id=..&k=10 (or POST <url> with a JSON object of the same names), Authorization: Bearer <viewer token> for personal results; docs/api.md, schema/openapi/recommend.json"
  value       = try(google_cloudfunctions2_function.fn["recommend"].url, null)
}

output "analytics_url" {
  description = "Operator dashboard / KPIs (IAM-authenticated: gcloud auth print-identity-token)."
  value       = try(google_cloudfunctions2_function.fn["analytics"].url, null)
}

output "data_bucket" {
  value = google_storage_bucket.data.name
}

output "store_url" {
  value = "gs://${google_storage_bucket.data.name}"
}

output "service_accounts" {
  description = "Runtime identity per function."
  value       = { for name, sa in google_service_account.fn : name => sa.email }
}

output "webhook_secrets" {
  description = "Secret Manager secrets to fill out of band: gcloud secrets versions add <id> --data-file=-"
  value       = { for env, s in google_secret_manager_secret.webhook : env => s.secret_id }
}

# Eventarc owns the push subscriptions of the topic-triggered functions and the Google provider
# cannot give them a dead-letter policy (hashicorp/terraform-provider-google#17697, #25069). These
# commands attach topology.json's push_defaults (dead-letter topic, attempts, backoff) after apply.
output "dead_letter_commands" {
  description = "Run once after each apply that (re)creates a topic-triggered function."
  value = [
    for name, fn in google_cloudfunctions2_function.fn : join(" ", [
      "SUB=$(gcloud eventarc triggers describe ${basename(fn.event_trigger[0].trigger)} --location=${var.region} --project=${var.project_id} --format='value(transport.pubsub.subscription)') &&",
      "gcloud pubsub subscriptions update \"$SUB\" --project=${var.project_id}",
      "--dead-letter-topic=${google_pubsub_topic.topic[local.topology.push_defaults.dead_letter_topic].id}",
      "--max-delivery-attempts=${local.topology.push_defaults.max_delivery_attempts}",
      "--min-retry-delay=${local.topology.push_defaults.min_backoff_s}s --max-retry-delay=${local.topology.push_defaults.max_backoff_s}s",
      "--ack-deadline=${local.topology.push_defaults.ack_deadline_s} &&",
      "gcloud pubsub subscriptions add-iam-policy-binding \"$SUB\" --project=${var.project_id}",
      "--member=serviceAccount:${local.pubsub_service_agent} --role=roles/pubsub.subscriber",
    ]) if local.functions[name].trigger == "topic"
  ]
}

output "raw_writer_subscription" {
  description = "var.raw_writer = \"subscription\": the Cloud Storage subscription writing raw/pubsub/ and its state (ACTIVE; PERMISSION_DENIED or NOT_FOUND when it cannot write the bucket: check the Pub/Sub service agent's grants). null with archive."
  value = local.archive_replaced ? {
    name  = google_pubsub_subscription.raw_writer[0].name
    state = google_pubsub_subscription.raw_writer[0].cloud_storage_config[0].state
  } : null
}

output "dataflow_templates" {
  description = "var.dataflow_enabled: each Flex Template's spec (gs://) and the image to build and push there (docs/deploy.md); launch with gcloud dataflow flex-template run."
  value = {
    for t in local.dataflow_templates : t => {
      spec            = "gs://${google_storage_bucket.dataflow[0].name}/${google_storage_bucket_object.flex_template[t].name}"
      image           = local.dataflow_images[t]
      service_account = google_service_account.dataflow[0].email
    }
  }
}

output "dataflow_clean_schedule" {
  description = "var.dataflow_clean_schedule: the Cloud Scheduler job launching the Dataflow clean, its cron and the identity it launches as (null: no schedule, the clean function cleans)."
  value = local.dataflow_clean_scheduled ? {
    job      = google_cloud_scheduler_job.dataflow_clean[0].id
    schedule = google_cloud_scheduler_job.dataflow_clean[0].schedule
    launcher = google_service_account.dataflow_launcher[0].email
  } : null
}
