"""The whole path through the emulators: clean Parquet in the GCS emulator -> `events-cleaned` on
Google's Pub/Sub emulator -> push to the train function (functions-framework, CloudEvent) -> model
written + LATEST moved + `model-published` pulled -> the recommend function answers from it; a
redelivered event does not train twice."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
import requests

from devtools import emulators
from devtools.simulator import SimConfig, simulate
from shared.adapters.bus import Bus
from shared.adapters.storage import open_store
from shared.serving.data import write_clean_from_frames
from shared.serving.registry import LATEST, arrays_key
from tests.logdir import LOGS

SIM = SimConfig(seed=5, n_streams=10, n_users=2500, n_items=400, mean_viewers_per_stream=400)


@pytest.fixture(scope="module")
def stack(gcs_emulator, pubsub_emulator):
    url = f"gs://daihuo-default/serving-{uuid.uuid4().hex[:8]}"
    store = open_store(url)
    sim = simulate(SIM)
    write_clean_from_frames(store, sim.truth.expected_clean(), sim.truth.catalog_frame())
    env = {**gcs_emulator.env, **pubsub_emulator.env, "DAIHUO_STORE": url, "DAIHUO_MODEL_REFRESH_S": "0.5"}
    train = emulators.start_function("train", signature_type="cloudevent", env=env, log_dir=LOGS)
    bus = Bus()
    for t in ("events-cleaned", "model-published"):
        bus.ensure_topic(t)
    bus.delete_subscription("train-test-push")
    bus.ensure_subscription("train-test-published", "model-published", ack_deadline_s=30)
    bus.ensure_subscription(
        "train-test-push",
        "events-cleaned",
        push_endpoint=f"http://{train.host}/",
        ack_deadline_s=120,
        min_backoff_s=1,
        max_backoff_s=5,
    )
    reco = emulators.start_function("recommend", env=env, log_dir=LOGS)
    yield {"store": store, "bus": bus, "sim": sim, "reco": f"http://{reco.host}/"}
    bus.delete_subscription("train-test-push")
    train.stop()
    reco.stop()
    bus.close()


def pull_published(bus, n=1, timeout=120.0):
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        msgs = bus.pull("train-test-published", 10, timeout_s=2)
        if msgs:
            bus.ack("train-test-published", [m.ack_id for m in msgs])
            got += [(json.loads(m.data), m.attributes) for m in msgs]
    return got


def test_clean_event_trains_promotes_publishes_and_serves(stack):
    store, bus = stack["store"], stack["bus"]
    r = requests.get(stack["reco"], params={"user_id": "u-000001"}, timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"]
    summary = {"run_id": "run-1", "clean_objects": sorted(store.list("clean/")), "events": 1}
    bus.publish("events-cleaned", json.dumps(summary).encode())
    [(msg, attrs)] = pull_published(bus)
    assert msg["promoted"] is True and msg["version"] and "first model" in msg["reason"]
    assert attrs["version"] == msg["version"] and attrs["promoted"] == "true"
    gate = msg["metrics"]["gate"]
    assert gate["candidate"] >= 0 and gate["n_queries"] > 0 and gate["best_baseline"]
    assert json.loads(store.get(LATEST))["version"] == msg["version"]
    import io

    with np.load(io.BytesIO(store.get(arrays_key(msg["version"]))), allow_pickle=False) as z:
        assert "model.base.item_ids" in z.files
    # the recommend function picks the model up (background refresh) and answers with reasons
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = requests.get(stack["reco"], params={"user_id": "u-000001", "k": 5}, timeout=10)
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == msg["version"] and len(body["items"]) == 5
    assert all(it["reason"]["text_zh"] and it["title"] for it in body["items"])
    stack["version"] = msg["version"]

    # redelivery of the same input (a second clean run notification with no new data): no new
    # version, no second fit, LATEST untouched, the same outcome published again
    gen = store.generation(LATEST)
    n_objects = len(list(store.list("models/")))
    bus.publish("events-cleaned", json.dumps(summary).encode())
    [(again, _)] = pull_published(bus)
    assert again["version"] == msg["version"] and again["redelivery"] is True and again["promoted"] is True
    assert store.generation(LATEST) == gen and len(list(store.list("models/"))) == n_objects
