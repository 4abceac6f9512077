"""Alerts on the local cloud (devtools/localcloud.py, the topology of infra/topology.json): a clean tick
through Pub/Sub push runs the clean function, whose batch rules see a quarantine spike and dead letters
waiting on dead-letters-inspect; both alerts reach the `alerts` topic (its `alerts-inspect`
subscription) and the analytics function's /api/alerts over HTTP, once each, however many ticks."""

from __future__ import annotations

import gzip

import orjson
import pytest
import requests

from devtools.localcloud import Ports, Stack
from shared.adapters.storage import open_store
from tests.factories import event
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(
        port_base=Ports.free().base,
        store="local",
        state_dir=tmp_path_factory.mktemp("alerts-stack"),
        fresh=True,
        functions=["clean", "analytics"],
        scheduler=False,
        push_backoff_s=(0.5, 2),
    )
    s.start()
    yield s
    s.stop()


def _pull_all(bus, sub: str, seconds: float = 4.0) -> list:
    out: list = []
    wait_for(lambda: out.extend(bus.pull(sub, 100, timeout_s=1.0)) or False, timeout=seconds, interval=0.2)
    if out:
        bus.ack(sub, [m.ack_id for m in out])
    return out


def test_clean_tick_publishes_alerts_to_the_topic_and_the_dashboard(stack):
    store = open_store(stack.env["DAIHUO_STORE"])
    ts = "2026-12-02T10:00:00.000Z"
    rows = [orjson.dumps({**event("like", ts=ts, user_id=f"u{i}"), "received_at": ts}) for i in range(150)]
    rows += [b"{not json"] * 50  # 25 % quarantined
    store.put("raw/date=2026-12-02/hour=10/a.ndjson.gz", gzip.compress(b"\n".join(rows) + b"\n", mtime=0))
    for i in range(2):
        stack.bus.publish("dead-letters", f"gave up {i}".encode())
    stack.fire("clean-hourly")
    auth = {"Authorization": "Bearer " + stack.identity["operator_token"]}

    def listed():
        r = requests.get(stack.url("analytics") + "api/alerts", headers=auth, timeout=30)
        rules = sorted(a["rule"] for a in r.json()["alerts"]) if r.status_code == 200 else []
        return rules == ["dead_letter_depth", "quarantine_rate"] and r.json()

    body = wait_for(listed, timeout=120, interval=1.0)
    assert body, "the clean tick's alerts never showed on /api/alerts"
    by_rule = {a["rule"]: a for a in body["alerts"]}
    assert by_rule["quarantine_rate"]["value"] == pytest.approx(0.25) and by_rule["quarantine_rate"]["published"]
    assert by_rule["dead_letter_depth"]["subject"] == "subscription:dead-letters-inspect"
    assert by_rule["dead_letter_depth"]["value"] == 2
    msgs = _pull_all(stack.bus, "alerts-inspect")
    assert sorted(orjson.loads(m.data)["rule"] for m in msgs) == ["dead_letter_depth", "quarantine_rate"]
    # another tick (nothing new to clean; the dead letters still wait, the same hour): judged again, nothing more published
    log = stack.log_dir / "clean.log"

    def evaluations() -> list[dict]:
        lines = [orjson.loads(x) for x in log.read_bytes().splitlines() if b'"alerts evaluated"' in x]
        return [x for x in lines if x.get("message") == "alerts evaluated"]

    assert len(evaluations()) == 1
    stack.fire("clean-hourly")
    assert wait_for(lambda: len(evaluations()) == 2, timeout=60, interval=0.5)
    second = evaluations()[1]  # a noop run: no quarantine rate to judge; the dead letters again, the same alert
    assert second["status"] == "noop" and list(second["fired"].values()) == ["duplicate"]
    assert _pull_all(stack.bus, "alerts-inspect", 3.0) == []
    page = requests.get(stack.url("analytics") + "alerts", headers=auth, timeout=30)
    assert page.status_code == 200 and "quarantine_rate" in page.text and "dead-letters-inspect" in page.text
