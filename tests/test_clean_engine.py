"""The clean function when a scheduled Dataflow job does the cleaning (``DAIHUO_CLEAN_ENGINE=dataflow``, which
infra/dataflow.tf sets on it together with the Cloud Scheduler launch): its tick, a CloudEvent over HTTP to
the real function under functions-framework, cleans nothing -- the pending raw object stays pending, no
manifest is written, nothing is published on events-cleaned -- and the batch alert rules are still
evaluated."""

from __future__ import annotations

import base64
import gzip
import uuid

import orjson
import requests

from devtools import emulators
from shared.adapters.bus import Bus
from shared.adapters.storage import open_store
from shared.layout import MANIFEST
from tests.factories import event
from tests.waiting import wait_for


def _tick(host: str) -> requests.Response:
    """A Pub/Sub push of the clean-hourly tick as Eventarc delivers it (binary-mode CloudEvent)."""
    data = base64.b64encode(orjson.dumps({"job": "clean"})).decode()
    body = {"message": {"data": data, "messageId": uuid.uuid4().hex}, "subscription": "clean-tick"}
    headers = {
        "ce-id": uuid.uuid4().hex,
        "ce-source": "//pubsub.googleapis.com/projects/daihuo-local/topics/clean-tick",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    return requests.post(f"http://{host}/", data=orjson.dumps(body), headers=headers, timeout=120)


def test_a_tick_with_the_dataflow_engine_cleans_nothing_and_still_judges_alerts(pubsub_emulator, tmp_path):
    run = uuid.uuid4().hex[:8]
    bus = Bus()
    bus.ensure_topic(f"events-cleaned-{run}")
    bus.ensure_subscription(f"events-cleaned-pull-{run}", f"events-cleaned-{run}")
    store = open_store(tmp_path / "store")
    ts = "2026-12-02T10:00:00.000Z"
    rows = [orjson.dumps({**event("like", ts=ts, user_id=f"u{i}"), "received_at": ts}) for i in range(20)]
    store.put("raw/date=2026-12-02/hour=10/a.ndjson.gz", gzip.compress(b"\n".join(rows) + b"\n", mtime=0))
    env = {
        **pubsub_emulator.env,
        "DAIHUO_STORE": str(tmp_path / "store"),
        "DAIHUO_CLEAN_ENGINE": "dataflow",
        "DAIHUO_CLEANED_TOPIC": f"events-cleaned-{run}",
        "DAIHUO_ALERTS_TOPIC": f"alerts-{run}",
    }
    fn = emulators.start_function("clean", signature_type="cloudevent", env=env, log_dir=tmp_path)
    try:
        r = _tick(fn.host)
        assert r.status_code == 200, r.text  # (a CloudEvent function's return value is not the response)
        log = tmp_path / "clean.log"

        def evaluated() -> list[dict]:
            lines = [orjson.loads(x) for x in log.read_bytes().splitlines() if x.startswith(b"{")]
            return [x for x in lines if x.get("message") == "alerts evaluated"]

        assert wait_for(evaluated, timeout=30), "the alert rules were not evaluated"
        assert evaluated()[0]["status"] == "external"
    finally:
        fn.stop()
    assert not store.exists(MANIFEST)  # nothing committed: the raw object is still pending for Dataflow
    assert list(store.list("clean/")) == [] and list(store.list("quarantine/")) == []
    assert bus.pull(f"events-cleaned-pull-{run}", 10, timeout_s=2) == []
    bus.close()
