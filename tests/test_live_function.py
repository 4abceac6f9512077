"""The live function served by functions-framework over HTTP (Pub/Sub push envelopes): applied once
however often delivered, malformed input acknowledged and quarantined, Bigtable down -> 500 (so Pub/Sub
redelivers); and one end-to-end run: signed webhook -> ingest -> Pub/Sub push -> live -> Bigtable ->
LiveReader."""

from __future__ import annotations

import base64
import gzip
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from devtools import emulators
from shared.live import schema
from shared.live.reader import LiveReader
from shared.signing import signed_headers
from tests.live_helpers import ev, fresh_config, ndjson
from tests.logdir import LOGS
from tests.waiting import wait_for


def _live_env(cfg, store: Path, emulator_host: str) -> dict[str, str]:
    return {
        "BIGTABLE_EMULATOR_HOST": emulator_host,
        "DAIHUO_BIGTABLE_PROJECT": cfg.project,
        "DAIHUO_BIGTABLE_INSTANCE": cfg.instance,
        "DAIHUO_LIVE_TABLE": cfg.table,
        "DAIHUO_STORE": str(store),
    }


@pytest.fixture(scope="module")
def served(bigtable_emulator, tmp_path_factory):
    cfg = fresh_config()
    store = tmp_path_factory.mktemp("live-store")
    fn = emulators.start_function(
        "live", "live", signature_type="cloudevent", env=_live_env(cfg, store, bigtable_emulator.host), log_dir=LOGS
    )
    yield cfg, store, fn
    fn.stop()
    schema.drop_table(cfg)


def _push(host: str, data: bytes | str, attributes: dict | None = None, message_id: str | None = None) -> int:
    raw = data if isinstance(data, str) else base64.b64encode(data).decode()
    envelope = {
        "message": {
            "data": raw,
            "attributes": attributes or {},
            "messageId": message_id or uuid.uuid4().hex,
            "publishTime": "2026-12-02T04:00:00Z",
        },
        "subscription": "projects/daihuo-local/subscriptions/viewer-events-live",
    }
    req = urllib.request.Request(
        f"http://{host}/", json.dumps(envelope).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _quarantined(store: Path) -> list[dict]:
    rows = []
    for p in sorted((store / "quarantine" / "live").rglob("*.ndjson.gz")):
        rows += [orjson.loads(line) for line in gzip.decompress(p.read_bytes()).splitlines() if line]
    return rows


def test_a_message_is_applied_once_however_often_pushed(served):
    cfg, store, fn = served
    now = time.time()
    evs = [ev("purchase", "f1", now - 1, user=f"u{i}", item="i1", price=2.5) for i in range(40)]
    body = ndjson(evs)
    attrs = {"type": "purchase", "stream_id": "f1", "count": "40"}
    assert _push(fn.host, body, attrs, "m-1") == 200
    assert _push(fn.host, body, attrs, "m-1") == 200  # redelivery
    room = LiveReader(cfg=cfg).room("f1")
    assert room.totals["orders"] == 40 and room.totals["gmv"] == pytest.approx(100.0)


def test_malformed_messages_are_acknowledged_and_quarantined(served):
    cfg, store, fn = served
    assert _push(fn.host, "***not base64***", {"type": "purchase"}, "m-bad") == 200
    good = ev("stream_enter", "f2", time.time(), user="u1")
    assert _push(fn.host, ndjson([good]) + b"\n{broken", {"type": "stream_enter"}, "m-half") == 200
    rows = _quarantined(store)
    by_message = {r["message_id"]: r for r in rows}
    assert "base64" in by_message["m-bad"]["reasons"][0]
    assert by_message["m-half"]["raw"] == "{broken" and by_message["m-half"]["stage"] == "live"
    assert LiveReader(cfg=cfg).room("f2").totals["entries"] == 1


def test_bigtable_down_answers_500_so_pubsub_redelivers(bigtable_emulator, tmp_path):
    cfg = fresh_config()
    env = _live_env(cfg, tmp_path, f"127.0.0.1:{emulators.free_port()}")  # nothing listens there
    fn = emulators.start_function(
        "live", "live", signature_type="cloudevent", env={**env, "DAIHUO_LIVE_TIMEOUT_S": "1"}, log_dir=LOGS
    )
    try:
        body = ndjson([ev("stream_enter", "f3", time.time(), user="u1")])
        assert _push(fn.host, body, {"type": "stream_enter"}) == 500
    finally:
        fn.stop()
        schema.drop_table(cfg)


@pytest.mark.slow
def test_end_to_end_ingest_pubsub_push_live_bigtable_reader(bigtable_emulator, pubsub_emulator, tmp_path):
    from shared.adapters.bus import Bus

    cfg = fresh_config()
    secret = "e2e-secret-" + uuid.uuid4().hex
    topic, sub = f"ve-{uuid.uuid4().hex[:8]}", f"live-{uuid.uuid4().hex[:8]}"
    env = _live_env(cfg, tmp_path, bigtable_emulator.host)
    log = LOGS / "live.log"
    offset = log.stat().st_size if log.exists() else 0
    live = emulators.start_function("live", "live", signature_type="cloudevent", env=env, log_dir=LOGS)
    ingest = emulators.start_function(
        "ingest",
        "ingest",
        env={
            **pubsub_emulator.env,
            "DAIHUO_STORE": str(tmp_path),
            "DAIHUO_EVENTS_TOPIC": topic,
            "DAIHUO_SECRET_DOUYIN": secret,
        },
        log_dir=LOGS,
    )
    bus = Bus()
    try:
        bus.ensure_topic(topic)
        bus.ensure_subscription(sub, topic, push_endpoint=f"http://{live.host}/", min_backoff_s=0.1, max_backoff_s=1)
        now = time.time()
        events = [ev("stream_enter", "e2e", now - 2, user=f"u{i}") for i in range(30)]
        events += [ev("purchase", "e2e", now - 1, user=f"u{i}", item="i9", price=10.0) for i in range(10)]
        body = ndjson(events)
        for _ in range(2):  # the platform retries the whole webhook: the second copy must not count
            req = urllib.request.Request(
                f"http://{ingest.host}/",
                body,
                {"Content-Type": "application/x-ndjson", **signed_headers("douyin", secret, body)},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert json.loads(resp.read())["accepted"] == 40
        reader = LiveReader(cfg=cfg)
        room = wait_for(
            lambda: (r := reader.room("e2e")).totals["orders"] == 10 and r.totals["entries"] == 30 and r, timeout=60
        )
        assert room, reader.room("e2e").totals

        def duplicates_seen() -> int:  # the live function's own log: the second copy was pushed and refused
            lines = log.read_bytes()[offset:].splitlines()
            docs = [json.loads(x) for x in lines if x.startswith(b"{") and b"live applied" in x]
            return sum(d.get("duplicates", 0) for d in docs)

        assert wait_for(lambda: duplicates_seen() >= 40, timeout=60), duplicates_seen()
        again = reader.room("e2e")
        assert (again.totals["entries"], again.totals["orders"], again.totals["gmv"]) == (30, 10, 100.0)
        assert again.funnel["unique"]["buyer"] == 10
    finally:
        bus.delete_subscription(sub)
        bus.close()
        ingest.stop()
        live.stop()
        schema.drop_table(cfg)
