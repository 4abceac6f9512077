variable "project_id" {
  description = "Google Cloud project id that hosts everything."
  type        = string
}

variable "region" {
  description = "Region of the functions, Eventarc triggers, Scheduler jobs and Secret Manager replicas."
  type        = string
  default     = "asia-east1"
}

variable "bucket_name" {
  description = "The one data bucket (raw/, clean/, quarantine/, analytics/, state/, models/). Default: <project_id>-daihuo."
  type        = string
  default     = null
}

variable "bucket_location" {
  description = "Location of the data bucket (a region or multi-region). Default: the region, upper-cased."
  type        = string
  default     = null
}

variable "source_bucket_name" {
  description = "Bucket holding the functions' source bundles. Default: <project_id>-daihuo-sources."
  type        = string
  default     = null
}

variable "dist_dir" {
  description = "Folder with the bundles built by `make package` (<name>.zip per function). Default: ../dist beside infra/."
  type        = string
  default     = null
}

variable "function_overrides" {
  description = "Per-function overrides of the defaults in locals.function_defaults / topology.json (memory like \"1Gi\", cpu like \"1\", timeout in seconds, instance limits, concurrent requests per instance)."
  type = map(object({
    memory        = optional(string)
    cpu           = optional(string)
    timeout_s     = optional(number)
    min_instances = optional(number)
    max_instances = optional(number)
    concurrency   = optional(number)
  }))
  default = {}
}

variable "schedule_overrides" {
  description = "Cron expression per schedule name of topology.json (e.g. { clean-hourly = \"5 */2 * * *\" })."
  type        = map(string)
  default     = {}
}

variable "schedule_time_zone" {
  description = "Time zone of the Scheduler cron expressions."
  type        = string
  default     = "Etc/UTC"
}

variable "schedules_paused" {
  description = "Create the Scheduler jobs paused (e.g. for a staging project)."
  type        = bool
  default     = false
}

variable "public_functions" {
  description = "HTTP functions callable by allUsers (roles/run.invoker). ingest authenticates every request with the platform's webhook HMAC; recommend is called by the viewer app, which authenticates its users itself. analytics stays private (IAM-authenticated callers only)."
  type        = list(string)
  default     = ["ingest", "recommend"]
  validation {
    condition     = !contains(var.public_functions, "analytics")
    error_message = "analytics serves operator data: it stays IAM-only (grant operators with var.analytics_operators)."
  }
}

variable "raw_nearline_after_days" {
  description = "raw/ objects move to NEARLINE after this many days."
  type        = number
  default     = 30
}

variable "raw_delete_after_days" {
  description = "raw/ objects are deleted after this many days."
  type        = number
  default     = 365
}

variable "quarantine_delete_after_days" {
  description = "quarantine/ objects are deleted after this many days."
  type        = number
  default     = 90
}

variable "clean_delete_after_days" {
  description = "clean/ retention in days, by partition date: clean stops naming older files in its manifest (DAIHUO_RETENTION_DAYS); the lifecycle rule deletes clean/ objects 31 days after that (a file's creation can trail its partition date by DAIHUO_MAX_PAST_S)."
  type        = number
  default     = 400
}

variable "dedupe_lookback_days" {
  description = "How far back clean's dedupe index and done list remember (DAIHUO_DEDUPE_LOOKBACK_DAYS); duplicates older than that are accepted and counted. state/dedupe/ parts are deleted by clean when compacted, by the lifecycle rule 31 days later at the latest."
  type        = number
  default     = 35
}

variable "reports_delete_after_days" {
  description = "reports/ (clean run reports) are deleted after this many days."
  type        = number
  default     = 400
}

variable "noncurrent_delete_after_days" {
  description = "Noncurrent (overwritten or deleted) object versions are deleted after this many days."
  type        = number
  default     = 7
}

variable "dead_letter_retention" {
  description = "How long the dead-letter inspection subscription keeps messages."
  type        = string
  default     = "604800s"
}

variable "labels" {
  description = "Labels on every labelled resource."
  type        = map(string)
  default     = { app = "daihuo" }
}

variable "analytics_operators" {
  description = "Principals allowed to open the analytics dashboard/API (roles/run.invoker on that service only), e.g. [\"group:daihuo-ops@example.com\"]. They reach it with a Google ID token: `gcloud run services proxy daihuo-analytics` or an IAP-fronted load balancer (docs/dashboard.md)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.analytics_operators : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "analytics is for operators only: allUsers / allAuthenticatedUsers are not allowed."
  }
}

# --- the live layer (infra/live.tf, docs/live.md) ----------------------------------------------
variable "bigtable_instance" {
  description = "Bigtable instance of the live layer."
  type        = string
  default     = "daihuo-live"
}

variable "bigtable_zone" {
  description = "Zone of the live Bigtable cluster. Default: <region>-a."
  type        = string
  default     = null
}

variable "bigtable_min_nodes" {
  description = "Autoscaling floor of the live Bigtable cluster."
  type        = number
  default     = 1
}

variable "bigtable_max_nodes" {
  description = "Autoscaling ceiling of the live Bigtable cluster (docs/live.md sizes 50k events/s)."
  type        = number
  default     = 5
}

variable "bigtable_cpu_target" {
  description = "Autoscaling CPU target (percent) of the live Bigtable cluster."
  type        = number
  default     = 60
}

variable "bigtable_deletion_protection" {
  description = "Protect the live instance and table from terraform destroy."
  type        = bool
  default     = true
}

variable "live_table" {
  description = "The live table (DAIHUO_LIVE_TABLE)."
  type        = string
  default     = "live"
}

variable "live_shards" {
  description = "Minute / unique-viewer rows per room (DAIHUO_LIVE_SHARDS). Change it only between streams: an event's claim row depends on it."
  type        = number
  default     = 4
}

variable "live_dedupe_s" {
  description = "Dedupe look-back of the live layer: GC max age of the claims family x (seconds)."
  type        = number
  default     = 86400
}

variable "live_retention_s" {
  description = "How long live counters, state and sessions are kept: GC max age of the c/s/o/e families (seconds)."
  type        = number
  default     = 604800
}

variable "live_session_events" {
  description = "Product events kept per viewer and (type, item): GC max versions of the e family."
  type        = number
  default     = 20
}

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/<p>/notificationChannels/<id>) the alert policies notify (infra/alerts.tf). Empty: incidents are opened without notifications."
  type        = list(string)
  default     = []
}

variable "dead_letter_alert_threshold" {
  description = "The dead-letter alert policy fires when more messages than this wait on the inspection subscription for 5 minutes."
  type        = number
  default     = 0
}

variable "alert_retention_days" {
  description = "Days the alerts/ objects (recorded alerts and their sent markers) are kept."
  type        = number
  default     = 90
}

variable "raw_writer" {
  description = "Who writes raw/: \"archive\" (the function, pulling viewer-events-archive each minute; the default) or \"subscription\" (a Pub/Sub Cloud Storage subscription writing raw/pubsub/*.ndjson; no archive ticks). docs/deploy.md"
  type        = string
  default     = "archive"
  validation {
    condition     = contains(["archive", "subscription"], var.raw_writer)
    error_message = "raw_writer must be \"archive\" or \"subscription\"."
  }
}

variable "raw_writer_max_duration" {
  description = "Cloud Storage subscription: a new object at least this often (60s..600s; <= its ack deadline, 600s)."
  type        = string
  default     = "300s"
  validation {
    condition     = can(regex("^[0-9]+s$", var.raw_writer_max_duration)) && tonumber(trimsuffix(var.raw_writer_max_duration, "s")) >= 60 && tonumber(trimsuffix(var.raw_writer_max_duration, "s")) <= 600
    error_message = "raw_writer_max_duration: \"<seconds>s\", 60s..600s (the API's bounds; the subscription's ack deadline is 600s)."
  }
}

variable "raw_writer_max_bytes" {
  description = "Cloud Storage subscription: a new object after this many bytes (1 KB..10 GiB). clean reads one object at a time into memory: keep it well below the clean function's memory."
  type        = number
  default     = 67108864
  validation {
    condition     = var.raw_writer_max_bytes >= 1000 && var.raw_writer_max_bytes <= 10737418240
    error_message = "raw_writer_max_bytes: 1 KB..10 GiB (the API's bounds)."
  }
}

variable "dataflow_enabled" {
  description = "Create what the Dataflow Flex Templates of the Beam jobs need (infra/dataflow.tf): the template bucket, the image repository, the worker identity and the template specs from dist/dataflow/ (make package). Off by default: the embedded DuckDB clean needs none of it."
  type        = bool
  default     = false
}

variable "dataflow_jobs" {
  description = "Jobs to launch from the templates at apply, name => { template = \"daihuo-clean\" | \"daihuo-itemknn\", parameters = {...} } (store is filled in). A batch job runs once: use it for a backfill; the recurring clean is dataflow_clean_schedule's (docs/deploy.md). Needs dataflow_enabled and the images pushed."
  type = map(object({
    template   = string
    parameters = optional(map(string), {})
  }))
  default = {}
  validation {
    condition     = alltrue([for j in values(var.dataflow_jobs) : contains(["daihuo-clean", "daihuo-itemknn"], j.template)])
    error_message = "dataflow_jobs: template must be daihuo-clean or daihuo-itemknn (devtools/flex_template.py TEMPLATES)."
  }
}

variable "dataflow_max_workers" {
  description = "Upper bound of a Dataflow job's autoscaling (docs/scale.md: ~2 n1-standard-4 at 50k events/s, ~5 at 150k)."
  type        = number
  default     = 5
}

variable "dataflow_machine_type" {
  description = "Dataflow worker machine type."
  type        = string
  default     = "n1-standard-4"
}

variable "dataflow_clean_schedule" {
  description = "With dataflow_enabled: the cron of the Cloud Scheduler job that launches the daihuo-clean Flex Template on Dataflow (infra/dataflow.tf); the clean function then cleans nothing (DAIHUO_CLEAN_ENGINE=dataflow: its ticks only evaluate the alert rules). Empty: no schedule, the clean function cleans (DuckDB)."
  type        = string
  default     = "5 * * * *"
}
