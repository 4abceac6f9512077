"""infra/ for alerts (docs/alerts.md): the alerts topic and its inspection subscription come from
topology.json, only clean, live and train may publish on it, live records alerts with a create-only grant on
alerts/ only, clean may read the dead-letter subscription (nothing else), and Cloud Monitoring is wired
to the dead letters' backlog and to the alerts' log-based metric."""

from __future__ import annotations

import pytest

from shared.settings import settings
from tests.test_infra import TOPOLOGY, _load, _one, _res


@pytest.fixture(scope="module")
def tf():
    return _load()


def test_alerts_topic_and_publishers_in_topology():
    assert settings().alerts_topic in TOPOLOGY["topics"]
    pubs = {n for n, f in TOPOLOGY["functions"].items() if "alerts" in f.get("publishes", [])}
    assert pubs == {"clean", "live", "train"}
    assert TOPOLOGY["pull_subscriptions"]["alerts-inspect"]["topic"] == "alerts"
    for name in pubs:
        assert "DAIHUO_ALERTS_TOPIC" in TOPOLOGY["functions"][name]["env"]
    default_sub = settings().alerts.dead_letter_depth.subscriptions
    assert default_sub == [TOPOLOGY["push_defaults"]["dead_letter_topic"] + "-inspect"]
    assert TOPOLOGY["functions"]["clean"]["alert_reads"] == default_sub


def test_alert_grants_are_least_privilege(tf):
    assert tf["locals"]["env_values"]["DAIHUO_ALERTS_TOPIC"] == "alerts"
    w = _res(tf, "google_storage_bucket_iam_member", "alert_writer")
    assert w["for_each"] == "${local.alert_writers}" and w["role"] == "roles/storage.objectCreator"
    assert "/objects/alerts/" in _one(w["condition"])["expression"]
    assert w["bucket"] == "${google_storage_bucket.data.name}"
    reads = _res(tf, "google_storage_bucket_iam_member", "alert_writer_reads")
    assert reads["role"] == "roles/storage.objectViewer" and reads["for_each"] == "${local.alert_writers}"
    expr = _one(reads["condition"])["expression"]
    assert "/objects/alerts/" in expr and "/objects/state/host-rates.json" in expr and expr.count("||") == 1
    r = _res(tf, "google_pubsub_subscription_iam_member", "alert_reader")
    assert r["role"] == "roles/pubsub.subscriber" and r["for_each"] == "${local.alert_readers}"
    assert r["subscription"] == "${google_pubsub_subscription.dead_letters_inspect.name}"
    # which functions those are: live (create-only elsewhere) writes; clean (objectAdmin) does not need it
    assert "objectAdmin" in tf["locals"]["alert_writers"] and "alert_reads" in tf["locals"]["alert_readers"]


def test_monitoring_policies(tf):
    metric = _res(tf, "google_logging_metric", "alerts")
    assert 'jsonPayload.message=\\"alert published\\"' in metric["filter"] or "alert published" in metric["filter"]
    assert set(metric["label_extractors"]) == {"rule", "subject"}
    fired = _res(tf, "google_monitoring_alert_policy", "alerts_published")
    cond = _one(_one(fired["conditions"])["condition_threshold"])
    assert "logging.googleapis.com/user/${google_logging_metric.alerts.name}" in cond["filter"]
    assert cond["comparison"] == "COMPARISON_GT" and cond["threshold_value"] == 0
    dl = _res(tf, "google_monitoring_alert_policy", "dead_letters")
    cond = _one(_one(dl["conditions"])["condition_threshold"])
    assert "pubsub.googleapis.com/subscription/num_undelivered_messages" in cond["filter"]
    assert "${google_pubsub_subscription.dead_letters_inspect.name}" in cond["filter"]
    for policy in (fired, dl):
        assert policy["notification_channels"] == "${var.alert_notification_channels}"
    assert tf["variable"]["alert_notification_channels"]["default"] == []
    rules = _res(tf, "google_storage_bucket", "data")["lifecycle_rule"]
    assert any("alerts/" in _one(r["condition"]).get("matches_prefix", []) for r in rules)
