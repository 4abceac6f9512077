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
