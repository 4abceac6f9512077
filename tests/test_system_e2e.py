"""The whole system on the local cloud, as `make demo` runs it but smaller: the stack from
infra/topology.json (Google's Pub/Sub emulator, every function under functions-framework, push
subscriptions with dead-lettering, the scheduler), simulated traffic through ingest, then archive →
clean → train driven only by the scheduler's ticks and Pub/Sub, then recommend and analytics.

At-least-once: the clean function is made to crash once after writing its clean objects and before
committing (the test-only fault plan DAIHUO_TEST_FAULTS=clean:write_clean, shared/runtime.py); Pub/Sub redelivers the tick and the result in
clean/ is still exactly once per event.
"""

from __future__ import annotations

import gzip
import json

import orjson
import pytest
import requests

from devtools import simulator
from devtools.localcloud import Ports, Stack
from shared.adapters.storage import open_store
from shared.pipeline.clean import load_manifest, read_clean
from tests.waiting import wait_for


def _wait(pred, timeout: float, what: str):
    value = wait_for(pred, timeout, interval=0.5)
    assert value, f"timed out after {timeout:.0f}s waiting for {what}"
    return value


@pytest.fixture(scope="module")
def evening(tmp_path_factory):
    state = tmp_path_factory.mktemp("stack")
    stack = Stack(
        port_base=Ports.free().base,
        store="local",
        state_dir=state,
        fresh=True,
        overrides={"archive-every-minute": 2, "clean-hourly": 6},
        push_backoff_s=(0.5, 2),
        extra_env={
            "DAIHUO_TEST_FAULTS": "clean:write_clean",
            "DAIHUO_MODEL_REFRESH_S": "1",
            "DAIHUO_ARCHIVE_PULL_TIMEOUT_S": "2",
            "DAIHUO_CLEAN_UNKNOWN_ITEMS": "quarantine",
        },
    )
    stack.start()
    try:
        sim = simulator.simulate(
            seed=21, n_streams=3, n_users=600, n_items=150, faults="default", mean_viewers_per_stream=150
        )
        res = simulator.send(sim, stack.url("ingest"), stack.secrets, batch_size=400, concurrency=2, progress=False)
        assert res.failed_batches == 0
        store = open_store(stack.env["DAIHUO_STORE"])
        expected = set(sim.truth.expected_clean()["event_id"])

        def cleaned_all():
            manifest, _ = load_manifest(store)
            if not manifest.get("clean_files"):
                return False
            return set(read_clean(store, manifest).column("event_id").to_pylist()) >= expected

        _wait(cleaned_all, 240, "every event in clean/ (scheduler → archive → clean)")
        _wait(lambda: store.exists("models/LATEST.json"), 240, "a promoted model (events-cleaned → train)")
        yield {"stack": stack, "sim": sim, "sent": res, "store": store, "expected": expected}
    finally:
        stack.stop()


def test_all_processes_healthy(evening):
    health = evening["stack"].health()
    assert health and all(health.values()), health
    assert evening["stack"].scheduler.fired, "the scheduler published no tick"


def test_every_event_is_in_clean_exactly_once_or_quarantined(evening):
    store, sim = evening["store"], evening["sim"]
    ids = read_clean(store).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), "an event is in clean/ twice"
    assert set(ids) == evening["expected"]
    invalid = {k: v for k, v in sim.truth.fault_log.items() if v["kind"] in simulator.INVALID_KINDS}
    n_unknown = sum(v["kind"] == "unknown_item" for v in invalid.values())
    assert evening["sent"].rejected == len(invalid) - n_unknown
    q_ingest = [
        orjson.loads(x)
        for k in store.list("quarantine/ingest/")
        for x in gzip.decompress(store.get(k)).splitlines()
        if x
    ]
    assert len(q_ingest) == len(invalid) - n_unknown and all(q["reasons"] for q in q_ingest)
    q_clean = [
        orjson.loads(x) for k in store.list("quarantine/date=") for x in gzip.decompress(store.get(k)).splitlines() if x
    ]
    assert sorted({q["event_id"] for q in q_clean}) == sorted(
        k for k, v in invalid.items() if v["kind"] == "unknown_item"
    )


def test_clean_crashed_once_and_the_redelivery_committed(evening):
    store = evening["store"]
    assert store.exists("state/faults/clean-write_clean"), "the injected crash never happened"
    log = (evening["stack"].log_dir / "clean.log").read_text(errors="replace")
    assert "InjectedCrash" in log or "injected" in log.lower()
    manifest, _ = load_manifest(store)
    runs = [f["key"] for f in manifest["clean_files"]]
    assert len(runs) == len(set(runs))


def test_model_was_trained_promoted_and_published(evening):
    store = evening["store"]
    latest = json.loads(store.get("models/LATEST.json"))
    version = latest["version"]
    assert store.exists(f"models/{version}/arrays.npz") and store.exists(f"models/{version}/meta.json")
    meta = json.loads(store.get(f"models/{version}/meta.json"))
    assert "metrics" in meta


def test_recommend_serves_the_promoted_model_with_reasons(evening):
    stack, store = evening["stack"], evening["store"]
    version = json.loads(store.get("models/LATEST.json"))["version"]
    clean = read_clean(store).to_pandas()
    buyers = clean[clean["type"].astype(str).isin(["purchase", "add_to_cart"])]
    user = str(buyers["user_id"].iloc[0])
    stream = str(buyers["stream_id"].iloc[0])

    def answer():
        r = requests.get(
            stack.url("recommend"),
            params={"user_id": user, "stream_id": stream, "k": 5},
            headers={"Authorization": "Bearer " + stack.viewer_token(user)},
            timeout=10,
        )  # the app's viewer token
        return r if r.status_code == 200 else None

    r = _wait(answer, 30, "recommend to load the model")
    body = r.json()
    assert body["model_version"] == version
    assert body["strategy"] == "personal" and body["personal"] is True
    assert 1 <= len(body["items"]) <= 5
    for item in body["items"]:
        assert item["reason"] and item["title"]
    cold = requests.get(
        stack.url("recommend"), params={"user_id": "nobody-at-all", "stream_id": stream, "k": 3}, timeout=10
    )
    assert cold.status_code == 200 and cold.json()["strategy"] in ("stream", "global")
    assert requests.get(stack.url("recommend"), params={"user_id": user, "k": 0}, timeout=10).status_code == 400


def test_analytics_serves_the_streams(evening):
    stack, sim = evening["stack"], evening["sim"]
    if "analytics" not in stack.functions():
        pytest.fail("functions/analytics is missing")
    assert requests.get(stack.url("analytics") + "api/streams", timeout=30).status_code == 401  # operators only
    r = requests.get(
        stack.url("analytics") + "api/streams",
        headers={"Authorization": "Bearer " + stack.identity["operator_token"]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    streams = body.get("streams", body.get("items", body))
    truth = sim.truth.expected_clean()
    assert {s["stream_id"] for s in streams} == set(truth["stream_id"].astype(str))
