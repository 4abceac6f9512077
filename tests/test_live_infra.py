"""infra/live.tf: the Bigtable instance autoscales, the table's GC rules are shared/live/schema.py's,
the push subscription authenticates (OIDC) and dead-letters, data grants are table-level and minimal."""

from __future__ import annotations

import re

import pytest

from shared.live import schema
from shared.live.config import LiveConfig
from tests.test_infra import TOPOLOGY, _default, _load, _one, _res


@pytest.fixture(scope="module")
def tf():
    return _load()


def test_instance_autoscales_and_table_has_the_schema_families(tf):
    inst = _res(tf, "google_bigtable_instance", "live")
    auto = _one(_one(inst["cluster"])["autoscaling_config"])
    assert {"min_nodes", "max_nodes", "cpu_target"} <= set(auto)
    assert _default(tf, auto["min_nodes"]) >= 1 and _default(tf, auto["max_nodes"]) >= _default(tf, auto["min_nodes"])
    table = _res(tf, "google_bigtable_table", "live")
    assert "column_family" in {k for d in table["dynamic"] for k in d}


def test_gc_rules_match_the_code(tf):
    fams = tf["locals"]["live_families"]
    cfg = LiveConfig(
        dedupe_s=_default(tf, "${var.live_dedupe_s}"),
        retention_s=_default(tf, "${var.live_retention_s}"),
        session_events=_default(tf, "${var.live_session_events}"),
    )
    rules = schema.gc_rules(cfg)
    assert set(fams) == set(rules)
    for name, rule in rules.items():
        f = fams[name]
        assert _default(tf, f["max_age_s"]) == rule["max_age_s"], name
        versions = f["max_versions"]
        assert (None if versions in (None, "null", "${null}") else _default(tf, versions)) == rule.get(
            "max_versions"
        ), name
        assert (f["type"] == "intsum") == rule["aggregate"], name
    gc = _res(tf, "google_bigtable_gc_policy", "live")
    assert gc["for_each"] == "${local.live_families}"


def test_push_subscription_is_authenticated_and_dead_letters(tf):
    push = {n: s for n, s in TOPOLOGY["functions"].items() if s["trigger"] == "push"}
    assert set(push) == {"live"} and push["live"]["topic"] == "viewer-events"
    sub = _res(tf, "google_pubsub_subscription", "push")
    assert sub["for_each"] == "${local.push_functions}"
    cfg = _one(sub["push_config"])
    oidc = _one(cfg["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.invoker.email}"
    dl = _one(sub["dead_letter_policy"])
    assert dl["dead_letter_topic"] == "${google_pubsub_topic.topic[local.topology.push_defaults.dead_letter_topic].id}"
    inv = _res(tf, "google_cloud_run_v2_service_iam_member", "push_invoker")
    assert (
        inv["role"] == "roles/run.invoker" and inv["member"] == "serviceAccount:${google_service_account.invoker.email}"
    )
    ack = _res(tf, "google_pubsub_subscription_iam_member", "push_dead_letter_ack")
    assert ack["member"] == "serviceAccount:${local.pubsub_service_agent}"


def test_bigtable_grants_are_table_level_and_minimal(tf):
    assert _res(tf, "google_bigtable_table_iam_member", "writer")["role"] == "roles/bigtable.user"
    assert _res(tf, "google_bigtable_table_iam_member", "reader")["role"] == "roles/bigtable.reader"
    assert not re.search(r"roles/bigtable\.admin", tf["text"])
    for rtype in ("google_bigtable_instance_iam_member", "google_project_iam_member"):
        for body in tf["resource"].get(rtype, {}).values():
            assert "bigtable" not in str(body.get("role", "")) + str(body.get("for_each", ""))
    assert {n for n, s in TOPOLOGY["functions"].items() if s.get("bigtable") == "write"} == {"live"}
    assert tf["locals"]["storage_grants"]["live"] == {"role": "roles/storage.objectCreator", "prefix": "quarantine/"}
