# Daihuo on Google Cloud. infra/topology.json is THE declaration of functions, triggers, topics,
# subscriptions and schedules; the local stack (devtools/localcloud.py) reads the same file. Every
# for_each below iterates over it, so adding a function/topic/schedule there (plus its bundle in
# dist/) is all it takes here.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  topology = jsondecode(file("${path.module}/topology.json"))

  bucket_name        = coalesce(var.bucket_name, "${var.project_id}-daihuo")
  bucket_location    = coalesce(var.bucket_location, upper(var.region))
  source_bucket_name = coalesce(var.source_bucket_name, "${var.project_id}-daihuo-sources")
  dist_dir           = coalesce(var.dist_dir, "${path.module}/../dist")

  # Sizing that topology.json does not carry (it has memory and timeout). CPU >= 1 lets an instance
  # serve concurrent requests; the tick-driven batch functions take one request at a time and run as
  # a single instance (their work is serialized by the manifest / pointer compare-and-swap anyway).
  # train: the gate on one CPU, the served fit in a forked child on the other (shared/serving/train.py
  # _ServedFit); at 10M events the two peak at 5.7 GiB together (bench_train), hence 8Gi in
  # topology.json, the most Cloud Run gives an instance of 2 CPUs.
  function_defaults = {
    ingest    = { cpu = "1", min_instances = 0, max_instances = 20, concurrency = 40 }
    archive   = { cpu = "1", min_instances = 0, max_instances = 2, concurrency = 1 }
    clean     = { cpu = "2", min_instances = 0, max_instances = 1, concurrency = 1 }
    train     = { cpu = "2", min_instances = 0, max_instances = 1, concurrency = 1 }
    recommend = { cpu = "1", min_instances = 0, max_instances = 20, concurrency = 40 }
    analytics = { cpu = "1", min_instances = 0, max_instances = 3, concurrency = 20 }
    # one warm instance keeps accepted -> visible under 5 s; each takes ~20k events/s (docs/live.md)
    live = { cpu = "1", min_instances = 1, max_instances = 10, concurrency = 16 }
  }
  fallback_defaults = { cpu = "1", min_instances = 0, max_instances = 3, concurrency = 1 }

  # Normalized: every function gets the same attributes, so the map has one element type.
  functions = {
    for name, f in local.topology.functions : name => {
      trigger       = f.trigger
      topic         = lookup(f, "topic", null)
      entry_point   = f.entry_point
      storage       = lookup(f, "storage", "read")
      publishes     = lookup(f, "publishes", [])
      pulls         = lookup(f, "pulls", [])
      secrets       = lookup(f, "secrets", [])
      env           = lookup(f, "env", [])
      memory        = coalesce(try(var.function_overrides[name].memory, null), f.memory)
      timeout_s     = coalesce(try(var.function_overrides[name].timeout_s, null), f.timeout_s)
      cpu           = coalesce(try(var.function_overrides[name].cpu, null), lookup(local.function_defaults, name, local.fallback_defaults).cpu)
      min_instances = coalesce(try(var.function_overrides[name].min_instances, null), lookup(local.function_defaults, name, local.fallback_defaults).min_instances)
      max_instances = coalesce(try(var.function_overrides[name].max_instances, null), lookup(local.function_defaults, name, local.fallback_defaults).max_instances)
      concurrency   = coalesce(try(var.function_overrides[name].concurrency, null), lookup(local.function_defaults, name, local.fallback_defaults).concurrency)
    }
  }
  http_functions  = { for name, f in local.functions : name => f if f.trigger == "http" }
  topic_functions = { for name, f in local.functions : name => f if f.trigger == "topic" }

  # Values of the plain environment variables a function may declare in topology.json ("env").
  env_values = {
    DAIHUO_STORE                = "gs://${local.bucket_name}"
    DAIHUO_EVENTS_TOPIC         = "viewer-events"
    DAIHUO_CLEANED_TOPIC        = "events-cleaned"
    DAIHUO_MODEL_TOPIC          = "model-published"
    DAIHUO_ALERTS_TOPIC         = "alerts"
    DAIHUO_ARCHIVE_SUBSCRIPTION = "viewer-events-archive"
    # analytics is IAM-only (no allUsers binding, iam.tf): Cloud Run admits only operators holding
    # run.invoker with a Google ID token (gcloud run services proxy / IAP), docs/dashboard.md
    DAIHUO_OPERATOR_AUTH = "iam"
    # clean compacts its manifest / dedupe index with the look-back and forgets clean/ files past their
    # retention (shared/pipeline/retention.py); the lifecycle rules in storage.tf delete the objects
    DAIHUO_DEDUPE_LOOKBACK_DAYS = tostring(var.dedupe_lookback_days)
    DAIHUO_RETENTION_DAYS       = "raw=${var.raw_delete_after_days},clean=${var.clean_delete_after_days},quarantine=${var.quarantine_delete_after_days}"
    # the live layer (infra/live.tf, docs/live.md)
    DAIHUO_BIGTABLE_INSTANCE = var.bigtable_instance
    DAIHUO_LIVE_TABLE        = var.live_table
    DAIHUO_LIVE_SHARDS       = tostring(var.live_shards)
    DAIHUO_LIVE_RETENTION_S  = tostring(var.live_retention_s)
  }

  # Webhook secrets: one Secret Manager secret per DAIHUO_SECRET_<PLATFORM> declared by any function.
  # The secret's id is the variable name in kebab case: DAIHUO_SECRET_DOUYIN -> daihuo-secret-douyin.
  secret_envs = toset(flatten([for f in values(local.functions) : f.secrets]))
  secret_ids  = { for env in local.secret_envs : env => lower(replace(env, "_", "-")) }
  secret_grants = {
    for pair in flatten([
      for name, f in local.functions : [for env in f.secrets : { fn = name, env = env }]
    ]) : "${pair.fn}/${pair.env}" => pair
  }

  # Least privilege on the data bucket, per function (docs/deploy.md explains each):
  #  * ingest, archive only create new objects (quarantine/ingest/, raw/), never read or overwrite;
  #    the grant is conditioned on their prefix.
  #  * clean, train overwrite pointers with a generation precondition (state/clean-manifest.json,
  #    models/LATEST.json), which needs storage.objects.delete: objectAdmin on this bucket only.
  #  * recommend, analytics only read.
  #  * live only creates quarantine/live/ objects (malformed messages); its state is in Bigtable.
  storage_grants = {
    ingest    = { role = "roles/storage.objectCreator", prefix = "quarantine/" }
    archive   = { role = "roles/storage.objectCreator", prefix = "raw/" }
    clean     = { role = "roles/storage.objectAdmin", prefix = null }
    train     = { role = "roles/storage.objectAdmin", prefix = null }
    recommend = { role = "roles/storage.objectViewer", prefix = null }
    analytics = { role = "roles/storage.objectViewer", prefix = null }
    live      = { role = "roles/storage.objectCreator", prefix = "quarantine/" }
  }
  # A function that topology.json adds later gets read-only or create-only access until it is listed above.
  function_storage = {
    for name, f in local.functions : name => lookup(local.storage_grants, name, {
      role   = f.storage == "write" ? "roles/storage.objectCreator" : "roles/storage.objectViewer"
      prefix = null
    })
  }

  publisher_grants = {
    for pair in flatten([
      for name, f in local.functions : [for t in f.publishes : { fn = name, topic = t }]
    ]) : "${pair.fn}/${pair.topic}" => pair
  }
  subscriber_grants = {
    for pair in flatten([
      for name, f in local.functions : [for s in f.pulls : { fn = name, subscription = s }]
    ]) : "${pair.fn}/${pair.subscription}" => pair if contains(keys(local.pull_subscriptions), pair.subscription)
  }

  # var.raw_writer = "subscription": the Pub/Sub Cloud Storage subscription (pubsub.tf) writes raw/
  # instead of archive; archive's pull subscription and its ticks are then not created (a pull
  # subscription nobody drains would hold 7 days of every event). The archive function stays deployed,
  # idle, so switching back is one apply.
  archive_replaced = var.raw_writer == "subscription"
  pull_subscriptions = {
    for name, s in local.topology.pull_subscriptions : name => s
    if !(local.archive_replaced && name == local.env_values.DAIHUO_ARCHIVE_SUBSCRIPTION)
  }
  schedules = {
    for name, s in local.topology.schedules : name => s
    if !(local.archive_replaced && s.topic == local.topology.functions.archive.topic)
  }

  pubsub_service_agent = "service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
