"""infra/*.tf (parsed with python-hcl2) agrees with infra/topology.json and functions/, and keeps the
security rules: one service account per function, no owner/editor/admin project bindings, secrets
never as literal values, a pinned google provider, `terraform fmt` clean.

`terraform validate` needs the provider (a download); it runs in the deploy pipeline, not here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
TOPOLOGY = json.loads((INFRA / "topology.json").read_text())
TF_FILES = sorted(INFRA.glob("*.tf"))


def _clean(v):
    """python-hcl2 8.x keeps HCL quoting: '"name"' -> 'name'; drop its __is_block__ markers."""
    if isinstance(v, dict):
        return {_clean(k): _clean(x) for k, x in v.items() if k != "__is_block__"}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def _load():
    doc = {"resource": {}, "data": {}, "locals": {}, "variable": {}, "output": {}, "terraform": [], "text": ""}
    for f in TF_FILES:
        text = f.read_text()
        doc["text"] += text
        with f.open() as fh:
            parsed = _clean(hcl2.load(fh))
        for block in parsed.get("resource", []):
            for rtype, by_name in block.items():
                for name, body in by_name.items():
                    assert name not in doc["resource"].setdefault(rtype, {}), f"duplicate {rtype}.{name}"
                    doc["resource"][rtype][name] = body
        for block in parsed.get("data", []):
            for rtype, by_name in block.items():
                doc["data"].setdefault(rtype, {}).update(by_name)
        for block in parsed.get("locals", []):
            doc["locals"].update(block)
        for block in parsed.get("variable", []):
            doc["variable"].update(block)
        for block in parsed.get("output", []):
            doc["output"].update(block)
        doc["terraform"] += parsed.get("terraform", [])
    return doc


@pytest.fixture(scope="module")
def tf():
    assert TF_FILES, "no infra/*.tf"
    return _load()


def _res(tf, rtype, name):
    assert rtype in tf["resource"] and name in tf["resource"][rtype], f"missing resource {rtype}.{name}"
    return tf["resource"][rtype][name]


def _default(tf, ref: str):
    m = re.fullmatch(r"\$\{var\.(\w+)\}", str(ref))
    return tf["variable"][m.group(1)]["default"] if m else ref


def _one(block):
    assert isinstance(block, list) and len(block) == 1, block
    return block[0]


# ------------------------------------------------------------------------- topology <-> functions
def test_topology_is_the_source(tf):
    assert tf["locals"]["topology"] == '${jsondecode(file("${path.module}/topology.json"))}'
    assert "local.topology.functions" in tf["locals"]["functions"]


def test_function_folders_match_topology():
    folders = {p.name for p in (ROOT / "functions").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders == set(TOPOLOGY["functions"]), "functions/ and infra/topology.json disagree"


def test_every_function_is_a_cloudfunction2_with_its_trigger(tf):
    fn = _res(tf, "google_cloudfunctions2_function", "fn")
    assert fn["for_each"] == "${local.functions}"
    build = _one(fn["build_config"])
    assert build["runtime"] == "python311"
    assert build["entry_point"] == "${each.value.entry_point}"
    src = _one(_one(build["source"])["storage_source"])
    assert src["object"] == "${google_storage_bucket_object.source[each.key].name}"
    svc = _one(fn["service_config"])
    assert svc["service_account_email"] == "${google_service_account.fn[each.key].email}"

    # topic-triggered functions get an Eventarc Pub/Sub trigger on their topic, retried, as the invoker SA
    dyn = {k: v for d in fn.get("dynamic", []) for k, v in d.items()}
    trig = dyn["event_trigger"]
    assert trig["for_each"] == '${each.value.trigger == "topic" ? [each.value.topic] : []}'
    content = _one(trig["content"])
    assert content["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert content["pubsub_topic"] == "${google_pubsub_topic.topic[event_trigger.value].id}"
    assert content["retry_policy"] == "RETRY_POLICY_RETRY"
    assert content["service_account_email"] == "${google_service_account.invoker.email}"

    for name, spec in TOPOLOGY["functions"].items():
        # "push": our own push subscription (infra/live.tf, tests/test_live_infra.py) instead of Eventarc's
        assert spec["trigger"] in ("http", "topic", "push"), (
            f"{name}: trigger {spec['trigger']!r} has no Terraform mapping"
        )
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), f"{name}: not a valid function/service name"
        if spec["trigger"] in ("topic", "push"):
            assert spec["topic"] in TOPOLOGY["topics"], f"{name}: trigger topic {spec['topic']} undeclared"
        # every plain env var a function declares has a value in Terraform
        for env in spec.get("env", []):
            assert env in tf["locals"]["env_values"], f"{name}: env {env} has no value in locals.env_values"


def test_bundles_are_content_addressed(tf):
    obj = _res(tf, "google_storage_bucket_object", "source")
    assert obj["for_each"] == "${local.functions}"
    assert obj["source"] == "${local.dist_dir}/${each.key}.zip"
    assert 'filesha256("${local.dist_dir}/${each.key}.zip")' in obj["name"]
    assert "archive_file" not in tf["data"]


def test_http_exposure(tf):
    http = {n for n, s in TOPOLOGY["functions"].items() if s["trigger"] == "http"}
    public = set(tf["variable"]["public_functions"]["default"])
    assert public == {"ingest", "recommend"} and public <= http
    pub = _res(tf, "google_cloud_run_v2_service_iam_member", "public")
    assert pub["member"] == "allUsers" and pub["role"] == "roles/run.invoker"
    inv = _res(tf, "google_cloud_run_v2_service_iam_member", "trigger_invoker")
    assert inv["for_each"] == "${local.topic_functions}"
    assert inv["member"] == "serviceAccount:${google_service_account.invoker.email}"


# ------------------------------------------------------------------------------- Pub/Sub, schedules
def test_topics_and_subscriptions_come_from_topology(tf):
    assert _res(tf, "google_pubsub_topic", "topic")["for_each"] == "${toset(local.topology.topics)}"
    pull = _res(tf, "google_pubsub_subscription", "pull")
    assert pull["for_each"] == "${local.pull_subscriptions}"
    assert pull["topic"] == "${google_pubsub_topic.topic[each.value.topic].id}"
    assert pull["message_retention_duration"] == "${each.value.retention}"
    assert _one(pull["expiration_policy"])["ttl"] == ""
    assert "retry_policy" in pull
    for sub, spec in TOPOLOGY["pull_subscriptions"].items():
        assert spec["topic"] in TOPOLOGY["topics"], sub
    dl = TOPOLOGY["push_defaults"]["dead_letter_topic"]
    assert dl in TOPOLOGY["topics"]
    inspect = _res(tf, "google_pubsub_subscription", "dead_letters_inspect")
    assert inspect["topic"] == "${google_pubsub_topic.topic[local.topology.push_defaults.dead_letter_topic].id}"
    assert "dead_letter_commands" in tf["output"]  # Eventarc-owned subscriptions get their DLQ after apply


def test_schedules_come_from_topology(tf):
    job = _res(tf, "google_cloud_scheduler_job", "tick")
    assert job["for_each"] == "${local.schedules}"
    assert job["schedule"] == "${lookup(var.schedule_overrides, each.key, each.value.cron)}"
    target = _one(job["pubsub_target"])
    assert target["topic_name"] == "${google_pubsub_topic.topic[each.value.topic].id}"
    ticked = {s["topic"] for s in TOPOLOGY["functions"].values() if s["trigger"] == "topic"}
    for name, spec in TOPOLOGY["schedules"].items():
        assert spec["topic"] in TOPOLOGY["topics"], name
        assert spec["topic"] in ticked, f"schedule {name} ticks {spec['topic']}, which no function listens to"


# ------------------------------------------------------------------------------------------- IAM
def test_one_service_account_per_function(tf):
    sa = _res(tf, "google_service_account", "fn")
    assert sa["for_each"] == "${local.functions}"
    assert "${each.key}" in sa["account_id"]
    for name in TOPOLOGY["functions"]:
        assert len(f"daihuo-fn-{name}") <= 30, f"{name}: service account id too long"


def test_storage_roles_are_least_privilege(tf):
    grants = tf["locals"]["storage_grants"]
    assert set(grants) == set(TOPOLOGY["functions"]), "every function needs an explicit storage grant"
    expected = {
        "ingest": ("roles/storage.objectCreator", "quarantine/"),
        "archive": ("roles/storage.objectCreator", "raw/"),
        "clean": ("roles/storage.objectAdmin", None),  # manifest CAS overwrites state/clean-manifest.json
        "train": ("roles/storage.objectAdmin", None),  # models/LATEST.json pointer swap
        "recommend": ("roles/storage.objectViewer", None),
        "analytics": ("roles/storage.objectViewer", None),
    }
    for name, (role, prefix) in expected.items():
        if name in grants:
            assert (grants[name]["role"], grants[name]["prefix"]) == (role, prefix), name
    for name, spec in TOPOLOGY["functions"].items():
        if spec.get("storage") == "read":
            assert grants[name]["role"] == "roles/storage.objectViewer", name
    member = _res(tf, "google_storage_bucket_iam_member", "fn_data")
    assert member["bucket"] == "${google_storage_bucket.data.name}"  # bucket level, never project level


def test_pubsub_roles_follow_topology(tf):
    assert "f.publishes" in tf["locals"]["publisher_grants"]
    assert "f.pulls" in tf["locals"]["subscriber_grants"]
    pub = _res(tf, "google_pubsub_topic_iam_member", "fn_publisher")
    assert pub["role"] == "roles/pubsub.publisher" and pub["for_each"] == "${local.publisher_grants}"
    sub = _res(tf, "google_pubsub_subscription_iam_member", "fn_subscriber")
    assert sub["role"] == "roles/pubsub.subscriber" and sub["for_each"] == "${local.subscriber_grants}"
    for name, spec in TOPOLOGY["functions"].items():
        for t in spec.get("publishes", []):
            assert t in TOPOLOGY["topics"], (name, t)
        for s in spec.get("pulls", []):
            assert s in TOPOLOGY["pull_subscriptions"], (name, s)


def test_no_owner_editor_or_admin_project_bindings(tf):
    assert not re.search(r"roles/(owner|editor)\b", tf["text"])
    for rtype in ("google_project_iam_member", "google_project_iam_binding", "google_project_iam_policy"):
        for name, body in tf["resource"].get(rtype, {}).items():
            roles = [body.get("role", "")]
            if str(body.get("for_each", "")).startswith("${toset(["):
                roles = re.findall(r'"(roles/[^"]+)"', body["for_each"])
            for role in roles:
                assert "admin" not in role.lower(), f"{rtype}.{name}: {role} at project level"
                assert role not in ("roles/owner", "roles/editor"), f"{rtype}.{name}"
    # objectAdmin only as a bucket-level grant, and only for the pointer-swapping functions
    admins = {n for n, g in tf["locals"]["storage_grants"].items() if "admin" in g["role"].lower()}
    assert admins <= {"clean", "train"}
    for m in re.finditer(r"roles/[A-Za-z.]*[Aa]dmin", tf["text"]):
        assert m.group(0) == "roles/storage.objectAdmin", m.group(0)


def test_invoker_and_build_identities(tf):
    _res(tf, "google_service_account", "invoker")
    _res(tf, "google_service_account", "build")
    fn = _res(tf, "google_cloudfunctions2_function", "fn")
    assert _one(fn["build_config"])["service_account"] == "${google_service_account.build.id}"


# ---------------------------------------------------------------------------------------- secrets
def test_secrets_are_never_literal(tf):
    assert "google_secret_manager_secret_version" not in tf["resource"], "secret values are set out of band"
    assert "secret_data" not in tf["text"]
    assert not re.search(r"DAIHUO_SECRET_\w+\s*=", tf["text"]), "a secret as a plain env var"
    declared = {s for spec in TOPOLOGY["functions"].values() for s in spec.get("secrets", [])}
    assert declared, "topology.json declares no webhook secret"
    assert _res(tf, "google_secret_manager_secret", "webhook")["for_each"] == "${local.secret_ids}"
    fn = _res(tf, "google_cloudfunctions2_function", "fn")
    svc = _one(fn["service_config"])
    dyn = {k: v for d in svc.get("dynamic", []) for k, v in d.items()}
    sev = dyn["secret_environment_variables"]
    assert sev["for_each"] == "${toset(each.value.secrets)}"
    content = _one(sev["content"])
    assert content["secret"] == "${google_secret_manager_secret.webhook[secret_environment_variables.value].secret_id}"
    # only the functions that declare a secret may read it (ingest)
    acc = _res(tf, "google_secret_manager_secret_iam_member", "accessor")
    assert acc["for_each"] == "${local.secret_grants}"
    assert acc["role"] == "roles/secretmanager.secretAccessor"
    assert "f.secrets" in tf["locals"]["secret_grants"]
    # ingest: the webhook secrets; recommend: the viewer-token verification keys (public keys)
    assert {n for n, s in TOPOLOGY["functions"].items() if s.get("secrets")} == {"ingest", "recommend"}
    assert TOPOLOGY["functions"]["recommend"]["secrets"] == ["DAIHUO_VIEWER_KEYS"]


# ----------------------------------------------------------------------------------------- bucket
def test_data_bucket_policy(tf):
    b = _res(tf, "google_storage_bucket", "data")
    assert b["uniform_bucket_level_access"] is True
    assert b["public_access_prevention"] == "enforced"
    assert _one(b["versioning"])["enabled"] is True
    rules = [(_one(r["condition"]), _one(r["action"])) for r in b["lifecycle_rule"]]

    def find(prefix, action_type):
        return [(c, a) for c, a in rules if prefix in c.get("matches_prefix", []) and a["type"] == action_type]

    ((c, a),) = find("raw/", "SetStorageClass")
    assert a["storage_class"] == "NEARLINE" and _default(tf, c["age"]) == 30
    ((c, _),) = find("raw/", "Delete")
    assert _default(tf, c["age"]) == 365
    ((c, _),) = find("quarantine/", "Delete")
    assert _default(tf, c["age"]) == 90
    assert any(c.get("with_state") == "ARCHIVED" and a["type"] == "Delete" for c, a in rules), "noncurrent versions"


def test_google_provider_pinned(tf):
    req = _one(_one(tf["terraform"])["required_providers"])["google"]
    assert req["source"] == "hashicorp/google"
    assert re.fullmatch(r"~> ?6\.\d+(\.\d+)?", req["version"]), req["version"]


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("the terraform binary is not installed (CI installs it; `terraform fmt` needs no provider)")
    proc = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"terraform fmt -check failed:\n{proc.stdout}{proc.stderr}"


def test_recommend_url_documents_a_request_recommend_accepts(tf):
    """The output's description is the request the viewer app makes: its query parses (no 400)."""
    from urllib.parse import parse_qsl

    from shared.serving.recommend import parse_params

    desc = tf["output"]["recommend_url"]["description"]
    m = re.search(r"GET <url>\?(\S+)", desc)
    assert m, desc
    args = dict(parse_qsl(m.group(1).replace("..", "x1")))
    p = parse_params(args)  # BadParam (-> 400) on an unknown or malformed parameter
    assert p.user_id and p.stream_id and p.k == 10
    assert "Bearer" in desc and "docs/api.md" in desc


# ------------------------------------------------------------------ raw/ by a Cloud Storage subscription
def test_raw_writer_subscription_replaces_archive_only_when_chosen(tf):
    var = tf["variable"]["raw_writer"]
    assert var["default"] == "archive"  # archive stays the default
    assert "subscription" in str(var["validation"])
    loc = tf["locals"]
    assert loc["archive_replaced"] == '${var.raw_writer == "subscription"}'
    # archive's pull subscription, its grant and its ticks go away together with archive's role
    assert (
        "local.archive_replaced" in loc["pull_subscriptions"]
        and "DAIHUO_ARCHIVE_SUBSCRIPTION" in loc["pull_subscriptions"]
    )
    assert "local.archive_replaced" in loc["schedules"] and "archive.topic" in loc["schedules"]
    assert "local.pull_subscriptions" in loc["subscriber_grants"]
    sub = _res(tf, "google_pubsub_subscription", "raw_writer")
    assert sub["count"] == "${local.archive_replaced ? 1 : 0}"
    assert sub["topic"] == '${google_pubsub_topic.topic["viewer-events"].id}'
    csc = _one(sub["cloud_storage_config"])
    assert csc["bucket"] == "${google_storage_bucket.data.name}"
    assert "avro_config" not in csc and "text_config" not in csc or csc.get("text_config") == [{}]  # text format
    assert csc["filename_prefix"].startswith("raw/") and csc["filename_suffix"] == ".ndjson"
    assert "/" in csc["filename_datetime_format"] and "date=" not in csc["filename_datetime_format"]
    # max_duration <= the ack deadline, both within the API's bounds
    dur = int(str(_default(tf, csc["max_duration"])).rstrip("s"))
    assert 60 <= dur <= 600 and dur <= int(sub["ack_deadline_seconds"])
    assert 1000 <= int(_default(tf, csc["max_bytes"])) <= 10 * 2**30
    for v in ("raw_writer_max_duration", "raw_writer_max_bytes"):  # a bad value fails at plan, not at the API
        assert "validation" in tf["variable"][v], v
    assert _one(sub["expiration_policy"])["ttl"] == ""


def test_raw_writer_service_agent_is_least_privilege(tf):
    roles = {}
    for name in ("pubsub_raw_writer", "pubsub_raw_bucket_reader"):
        m = _res(tf, "google_storage_bucket_iam_member", name)
        assert m["count"] == "${local.archive_replaced ? 1 : 0}", name
        assert m["bucket"] == "${google_storage_bucket.data.name}", name  # this bucket, never the project
        assert m["member"] == "serviceAccount:${local.pubsub_service_agent}", name
        roles[name] = m["role"]
    # create only (no read/overwrite/delete) + the bucket's metadata, nothing else
    assert sorted(roles.values()) == ["roles/storage.legacyBucketReader", "roles/storage.objectCreator"]
    assert "raw_writer_subscription" in tf["output"]


# ------------------------------------------------------------------------ Dataflow (infra/dataflow.tf)
def test_dataflow_templates_match_the_packaged_ones(tf):
    from devtools.flex_template import TEMPLATES

    loc = tf["locals"]
    assert loc["dataflow_enabled"] == "${var.dataflow_enabled}"
    assert tf["variable"]["dataflow_enabled"]["default"] is False  # the embedded DuckDB clean needs none of it
    names = sorted(t.name for t in TEMPLATES)
    assert sorted(re.findall(r'"(daihuo-[a-z]+)"', loc["dataflow_templates"])) == names
    assert sorted(re.findall(r'"(daihuo-[a-z]+)"', str(tf["variable"]["dataflow_jobs"]["validation"]))) == names
    assert "IMAGE_TAG" in loc["dataflow_images"]  # the content-addressed tag make package wrote
    obj = _res(tf, "google_storage_bucket_object", "flex_template")
    assert obj["for_each"] == "${local.dataflow_templates}" and obj["name"] == "templates/${each.key}.json"
    assert ".spec.json" in obj["content"]
    job = _res(tf, "google_dataflow_flex_template_job", "job")
    assert job["provider"] == "${google-beta}" or job["provider"] == "google-beta"
    assert job["for_each"] == "${local.dataflow_enabled ? var.dataflow_jobs : {}}"
    assert job["service_account_email"] == "${google_service_account.dataflow[0].email}"
    assert job["sdk_container_image"] == "${local.dataflow_images[each.value.template]}"
    assert job["ip_configuration"] == "WORKER_IP_PRIVATE"
    assert "store = " in job["parameters"] and "local.bucket_name" in job["parameters"]
    req = _one(_one(tf["terraform"])["required_providers"])
    assert req["google-beta"]["source"] == "hashicorp/google-beta"
    assert req["google-beta"]["version"] == req["google"]["version"]


def test_dataflow_identity_is_least_privilege(tf):
    _res(tf, "google_service_account", "dataflow")
    # the one project-level role: what Dataflow requires of a worker identity
    assert _res(tf, "google_project_iam_member", "dataflow_worker")["role"] == "roles/dataflow.worker"
    data = _res(tf, "google_storage_bucket_iam_member", "dataflow_data")
    assert (data["bucket"], data["role"]) == ("${google_storage_bucket.data.name}", "roles/storage.objectAdmin")
    assert tf["locals"]["storage_grants"]["clean"]["role"] == data["role"]  # what the clean function holds
    temp = _res(tf, "google_storage_bucket_iam_member", "dataflow_temp")
    assert temp["bucket"] == "${google_storage_bucket.dataflow[0].name}"
    ar = _res(tf, "google_artifact_registry_repository_iam_member", "dataflow_reader")
    assert ar["role"] == "roles/artifactregistry.reader"
    assert ar["repository"] == "${google_artifact_registry_repository.dataflow[0].name}"
    # the clean job publishes the committed run's summary (train's trigger): that topic only
    pub = _res(tf, "google_pubsub_topic_iam_member", "dataflow_cleaned_publisher")
    assert (pub["topic"], pub["role"]) == (
        '${google_pubsub_topic.topic["events-cleaned"].name}',
        "roles/pubsub.publisher",
    )
    assert "events-cleaned" in TOPOLOGY["topics"]
    for rtype, by_name in tf["resource"].items():
        for name, body in by_name.items():
            if "google_service_account.dataflow" in str(body.get("member", "")):
                assert name.startswith("dataflow_"), (rtype, name)
    b = _res(tf, "google_storage_bucket", "dataflow")
    assert b["uniform_bucket_level_access"] is True and b["public_access_prevention"] == "enforced"


def _braced(text: str, name: str) -> str:
    """The ``{...}`` object after ``name = `` in an HCL expression (braces balanced: ``${...}`` inside)."""
    m = re.search(rf"\b{name}\s*=\s*\{{", text)
    assert m, name
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end() : i - 1]


def test_dataflow_clean_is_scheduled_through_the_launch_api(tf):
    """Cloud Scheduler POSTs projects.locations.flexTemplates.launch with an OAuth token of the launcher
    identity: the daihuo-clean spec, the store and the events-cleaned topic as template parameters (the
    job's argparse options), the worker identity and its buckets, private IPs, one job name."""
    from devtools.flex_template import TEMPLATES

    assert tf["locals"]["dataflow_clean_scheduled"] == '${local.dataflow_enabled && var.dataflow_clean_schedule != ""}'
    assert re.fullmatch(r"[0-9*/,-]+( [0-9*/,-]+){4}", tf["variable"]["dataflow_clean_schedule"]["default"])
    job = _res(tf, "google_cloud_scheduler_job", "dataflow_clean")
    assert job["count"] == "${local.dataflow_clean_scheduled ? 1 : 0}"
    assert job["schedule"] == "${var.dataflow_clean_schedule}" and job["paused"] == "${var.schedules_paused}"
    http = _one(job["http_target"])
    assert http["http_method"] == "POST"
    assert http["uri"] == (
        "https://dataflow.googleapis.com/v1b3/projects/${var.project_id}/locations/${var.region}/flexTemplates:launch"
    )
    token = _one(http["oauth_token"])
    assert token["service_account_email"] == "${google_service_account.dataflow_launcher[0].email}"
    assert token["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert "oidc_token" not in http  # a Google API takes an OAuth access token
    # the body, as HCL text: jsonencode({launchParameter = {...}}) inside base64encode
    body = http["body"]
    assert body.startswith("${base64encode(jsonencode(") and "launchParameter" in body
    for field in ("jobName", "containerSpecGcsPath", "parameters", "environment"):
        assert re.search(rf"\b{field}\b\s*=", body), field
    assert 'google_storage_bucket_object.flex_template["daihuo-clean"].name' in body
    params = _braced(body, "parameters")
    names = set(re.findall(r"(\w+)\s*=", params))
    clean = next(t for t in TEMPLATES if t.name == "daihuo-clean")
    assert names <= {p.name for p in clean.params} and {"store", "cleaned_topic", "pubsub_project"} <= names
    assert "local.bucket_name" in params and "DAIHUO_CLEANED_TOPIC" in params
    env = _braced(body, "environment")
    for field, value in (
        ("serviceAccountEmail", "google_service_account.dataflow[0].email"),
        ("tempLocation", "local.dataflow_temp"),
        ("stagingLocation", "local.dataflow_staging"),
        ("maxWorkers", "var.dataflow_max_workers"),
        ("machineType", "var.dataflow_machine_type"),
        ("ipConfiguration", '"WORKER_IP_PRIVATE"'),
        ("sdkContainerImage", 'local.dataflow_images["daihuo-clean"]'),
    ):
        assert re.search(rf"\b{field}\s*=\s*{re.escape(value)}", env), field
    # the clean function's ticks do not also clean: its engine is "dataflow" exactly when this exists
    fn_env = _one(_res(tf, "google_cloudfunctions2_function", "fn")["service_config"])["environment_variables"]
    assert 'each.key == "clean" && local.dataflow_clean_scheduled ? {DAIHUO_CLEAN_ENGINE = "dataflow"} : {}' in fn_env
    assert "dataflow_clean_schedule" in tf["output"]
    # the job reads the settings' defaults: the function's look-back and retention must be them
    from shared.settings import DEFAULT_RETENTION_DAYS, Settings

    cond = _one(_one(job["lifecycle"])["precondition"])["condition"]
    want = {
        "dedupe_lookback_days": Settings.model_fields["dedupe_lookback_days"].default,
        **{f"{k}_delete_after_days": v for k, v in DEFAULT_RETENTION_DAYS.items()},
    }
    assert {k: int(v) for k, v in re.findall(r"var\.(\w+) == (\d+)", cond)} == want
    assert all(_default(tf, f"${{var.{k}}}") == v for k, v in want.items())


def test_dataflow_launcher_is_least_privilege(tf):
    sa = _res(tf, "google_service_account", "dataflow_launcher")
    assert sa["count"] == "${local.dataflow_clean_scheduled ? 1 : 0}"
    launcher = "serviceAccount:${google_service_account.dataflow_launcher[0].email}"
    grants = {
        (rtype, name): body
        for rtype, by_name in tf["resource"].items()
        for name, body in by_name.items()
        if body.get("member") == launcher
    }
    assert {(r, n): b["role"] for (r, n), b in grants.items()} == {
        ("google_project_iam_member", "dataflow_launcher_developer"): "roles/dataflow.developer",
        ("google_service_account_iam_member", "dataflow_launcher_act_as_worker"): "roles/iam.serviceAccountUser",
        ("google_storage_bucket_iam_member", "dataflow_launcher_templates"): "roles/storage.objectViewer",
    }
    # actAs on the worker identity only, never project-wide; templates read-only, not the data bucket
    act = grants[("google_service_account_iam_member", "dataflow_launcher_act_as_worker")]
    assert act["service_account_id"] == "${google_service_account.dataflow[0].name}"
    assert grants[("google_storage_bucket_iam_member", "dataflow_launcher_templates")]["bucket"] == (
        "${google_storage_bucket.dataflow[0].name}"
    )
    for rtype in ("google_project_iam_member", "google_project_iam_binding"):
        for name, body in tf["resource"].get(rtype, {}).items():
            assert body.get("role") != "roles/iam.serviceAccountUser", (rtype, name)
