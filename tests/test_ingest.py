"""The ingest function served by functions-framework over HTTP, publishing to Google's Pub/Sub
emulator; a subscriber reads back exactly what was accepted."""

from __future__ import annotations

import gzip
import json
import time
import uuid

import orjson
import pytest
import requests

from devtools import emulators
from shared.adapters.bus import Bus
from shared.adapters.storage import open_store
from shared.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, signed_headers
from tests import factories
from tests.logdir import LOGS

SECRET = "test-secret-douyin"
OTHER_SECRET = "test-secret-kuaishou"


@pytest.fixture(scope="module")
def bus(pubsub_emulator):
    b = Bus()
    b.ensure_topic("viewer-events")
    b.ensure_subscription("ingest-test-sub", "viewer-events", ack_deadline_s=30)
    yield b
    b.close()


def _env(pubsub_host: str, store_dir) -> dict[str, str]:
    return {
        "PUBSUB_EMULATOR_HOST": pubsub_host,
        "PUBSUB_PROJECT_ID": "daihuo-local",
        "DAIHUO_STORE": str(store_dir),
        "DAIHUO_SECRET_DOUYIN": SECRET,
        "DAIHUO_SECRET_KUAISHOU": OTHER_SECRET,
        "DAIHUO_PUBLISH_TIMEOUT_S": "3",
    }


@pytest.fixture(scope="module")
def ingest(pubsub_emulator, bus, tmp_path_factory):
    store_dir = tmp_path_factory.mktemp("ingest-store")
    fn = emulators.start_function("ingest", env=_env(pubsub_emulator.host, store_dir), log_dir=LOGS)
    drain(bus)  # start from an empty subscription
    yield f"http://{fn.host}/", open_store(str(store_dir))
    fn.stop()


def drain(bus: Bus, expect: int | None = None, timeout: float = 15.0) -> list[tuple[dict, dict]]:
    """Pull everything (until `expect` events arrived, or the subscription stays empty); ack it."""
    events: list[tuple[dict, dict]] = []
    deadline = time.monotonic() + timeout
    empty = 0
    while time.monotonic() < deadline:
        msgs = bus.pull("ingest-test-sub", 1000, timeout_s=2)
        if msgs:
            bus.ack("ingest-test-sub", [m.ack_id for m in msgs])
            for m in msgs:
                for line in m.data.split(b"\n"):
                    events.append((orjson.loads(line), m.attributes))
            empty = 0
        else:
            empty += 1
        if expect is not None and len(events) >= expect and empty >= 1:
            break
        if expect is None and empty >= 2:
            break
    return events


def post(
    url: str, body: bytes, *, platform="douyin", secret=SECRET, ts=None, headers=None, content_type="application/json"
):
    h = {"Content-Type": content_type, **signed_headers(platform, secret, body, ts)}
    h.update(headers or {})
    return requests.post(url, data=body, headers=h, timeout=30)


def quarantined(store) -> list[dict]:
    rows = []
    for key in store.list("quarantine/ingest/"):
        rows += [json.loads(line) for line in gzip.decompress(store.get(key)).splitlines() if line]
    return rows


def test_single_event_is_published_with_attributes(ingest, bus):
    url, _ = ingest
    ev = factories.event("add_to_cart", quantity=2, props={"device": "ios"})
    r = post(url, orjson.dumps(ev))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"] == 0
    assert body["results"] == [{"index": 0, "event_id": ev["event_id"], "status": "accepted"}]
    got = drain(bus, expect=1)
    assert len(got) == 1
    event, attrs = got[0]
    assert {k: event[k] for k in ev} == ev
    assert event["received_at"] == body["received_at"]
    assert attrs["type"] == attrs["types"] == "add_to_cart" and attrs["stream_id"] == "s-1"
    assert attrs["platform"] == "douyin" and attrs["count"] == "1" and attrs["encoding"] == "ndjson"


def test_array_batch_is_published_exactly(ingest, bus):
    url, _ = ingest
    events = factories.batch(500)
    r = post(url, orjson.dumps(events))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 500
    got = drain(bus, expect=500)
    assert sorted(e["event_id"] for e, _ in got) == sorted(e["event_id"] for e in events)
    by_stream: dict[str, list[str]] = {}
    for event, attrs in got:  # one message per stream, its types listed
        assert attrs["stream_id"] == event["stream_id"] and event["type"] in attrs["types"].split(",")
        by_stream.setdefault(event["stream_id"], []).append(event["event_id"])
    assert r.json()["messages"] == len({e["stream_id"] for e in events}) == len(by_stream)
    for stream, ids in by_stream.items():  # each stream's message keeps the request's order
        assert ids == [e["event_id"] for e in events if e["stream_id"] == stream]


def test_ndjson_batch_with_some_bad_events(ingest, bus):
    url, store = ingest
    good = factories.batch(5)
    bad_price = factories.event("purchase", price=-3)
    unknown_type = factories.event("superchat")
    missing_user = factories.event("like")
    del missing_user["user_id"]
    lines = (
        [orjson.dumps(e) for e in good[:2]]
        + [b'{"event_id": "x", "type": ']
        + [orjson.dumps(e) for e in (bad_price, unknown_type, missing_user)]
        + [orjson.dumps(e) for e in good[2:]]
    )
    before = len(quarantined(store))
    r = post(url, b"\n".join(lines) + b"\n", content_type="application/x-ndjson")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (5, 4)
    status = {res["index"]: res for res in body["results"]}
    assert status[2]["status"] == "rejected" and "not valid JSON" in status[2]["reasons"][0]
    assert status[3]["reasons"] == ["price: Input should be greater than or equal to 0"]
    assert status[4]["reasons"][0].startswith("type: unknown type 'superchat'")
    assert status[5]["reasons"] == ["user_id: Field required"]
    got = drain(bus, expect=5)
    assert sorted(e["event_id"] for e, _ in got) == sorted(e["event_id"] for e in good)
    rows = quarantined(store)[before:]
    assert len(rows) == 4
    assert {r["raw"]["event_id"] for r in rows if isinstance(r["raw"], dict)} == {
        bad_price["event_id"],
        unknown_type["event_id"],
        missing_user["event_id"],
    }
    assert all(r["reasons"] and r["platform"] == "douyin" for r in rows)


def test_signed_host_events_are_accepted_and_published_like_viewer_events(ingest, bus):
    url, store = ingest
    host = [
        factories.host_event("stream_start", stream_id="s-9", host_id="h-1", host_name="主播 A", title="今晚 上新"),
        factories.host_event("slot_start", stream_id="s-9", slot_id="slot-1", item_id="sku-3", price=9.9),
        factories.host_event("showcase_update", stream_id="s-9", item_id="sku-3", change="sold_out"),
        factories.host_event("showcase_update", stream_id="s-9", item_id="sku-4", change="stock", stock=0),
        factories.host_event("slot_end", stream_id="s-9", slot_id="slot-1", item_id="sku-3"),
        factories.host_event("stream_end", stream_id="s-9"),
    ]
    viewer = factories.event("product_click", stream_id="s-9")
    bad = factories.host_event("showcase_update", stream_id="s-9", change="price")  # no price
    before = len(quarantined(store))
    r = post(url, orjson.dumps(host + [viewer, bad]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (7, 1)
    assert body["results"][7]["reasons"] == ["price: Field required when change is 'price'"]
    # grouped by stream: one message, the request's order, every type in `types`, no `type`
    assert body["messages"] == 1
    got = drain(bus, expect=7)
    assert [e["event_id"] for e, _ in got] == [e["event_id"] for e in host + [viewer]]
    types = ",".join(sorted({e["type"] for e in host + [viewer]}))
    for event, attrs in got:
        assert attrs["types"] == types and "type" not in attrs
        assert attrs["stream_id"] == "s-9" and attrs["platform"] == "douyin" and attrs["count"] == "7"
        assert event["received_at"] == body["received_at"]
        if event["type"] != "product_click":
            assert "user_id" not in event
    by_id = {e["event_id"]: e for e, _ in got}
    for ev in host:  # published verbatim (+ received_at)
        assert {k: by_id[ev["event_id"]][k] for k in ev} == ev
    rows = quarantined(store)[before:]
    assert [r["raw"]["event_id"] for r in rows] == [bad["event_id"]]


def test_duplicate_event_ids_are_accepted_and_passed_on(ingest, bus):
    url, _ = ingest
    ev = factories.event("like")
    assert post(url, orjson.dumps([ev, ev])).json()["accepted"] == 2
    assert post(url, orjson.dumps(ev)).json()["accepted"] == 1
    got = drain(bus, expect=3)
    assert [e["event_id"] for e, _ in got] == [ev["event_id"]] * 3


def test_event_for_another_platform_is_rejected(ingest, bus):
    url, _ = ingest
    ev = factories.event("like", platform="kuaishou")
    r = post(url, orjson.dumps(ev))  # signed as douyin
    assert r.status_code == 200
    assert r.json()["results"][0]["reasons"] == ["platform: 'kuaishou' does not match the signed platform 'douyin'"]
    assert drain(bus) == []


@pytest.mark.parametrize("case", ["missing", "wrong-secret", "tampered", "unknown-platform", "bad-scheme"])
def test_bad_signature_is_401(ingest, bus, case):
    url, _ = ingest
    body = orjson.dumps(factories.event("like"))
    if case == "missing":
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
    elif case == "wrong-secret":
        r = post(url, body, secret="not-the-secret")
    elif case == "tampered":
        h = signed_headers("douyin", SECRET, body)
        r = requests.post(url, data=body.replace(b"like", b"share"), headers=h, timeout=10)
    elif case == "unknown-platform":
        r = post(url, body, platform="taobao", secret="whatever")
    else:
        h = signed_headers("douyin", SECRET, body)
        h[HEADER_SIGNATURE] = h[HEADER_SIGNATURE].replace("v1=", "v0=")
        r = requests.post(url, data=body, headers=h, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"].startswith("unauthorized")
    assert drain(bus) == []


def test_replayed_request_is_refused(ingest, bus):
    url, _ = ingest
    body = orjson.dumps(factories.event("like"))
    captured = signed_headers("douyin", SECRET, body, int(time.time()) - 301)  # signed 5 min + 1 s ago
    r = requests.post(url, data=body, headers=captured, timeout=10)
    assert r.status_code == 401 and "window" in r.json()["error"]
    future = signed_headers("douyin", SECRET, body, int(time.time()) + 400)
    assert requests.post(url, data=body, headers=future, timeout=10).status_code == 401
    # the same body, signed afresh, goes through: the refusal was about the timestamp only
    assert post(url, body).status_code == 200
    assert len(drain(bus, expect=1)) == 1


def test_timestamp_is_covered_by_the_signature(ingest, bus):
    url, _ = ingest
    body = orjson.dumps(factories.event("like"))
    h = signed_headers("douyin", SECRET, body, int(time.time()) - 100)
    h[HEADER_TIMESTAMP] = str(int(time.time()))  # refresh the timestamp without re-signing
    assert requests.post(url, data=body, headers=h, timeout=10).status_code == 401


def test_unparseable_body_is_400_and_quarantined(ingest, bus):
    url, store = ingest
    before = len(quarantined(store))
    body = b'{"event_id": "e-1", "type": "like",'
    r = post(url, body)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    rows = quarantined(store)[before:]
    assert [row["raw"] for row in rows] == [body.decode()]
    assert post(url, b"42").status_code == 400
    assert post(url, b"   ").status_code == 400
    assert drain(bus) == []


def test_limits_are_413(ingest, bus):
    url, _ = ingest
    big_body = b"[" + b",".join([orjson.dumps(factories.event("like"))] * 8000) + b"]"  # > 1 MiB
    assert len(big_body) > 1_048_576
    r = post(url, big_body)
    assert r.status_code == 413 and "body over" in r.json()["error"]
    r = post(url, orjson.dumps(factories.batch(1001)))
    assert r.status_code == 413 and "limit is 1000" in r.json()["error"]
    assert drain(bus) == []


def test_oversized_event_is_rejected_alone(ingest, bus):
    url, store = ingest
    ok, huge = factories.event("like"), factories.event("comment", text="很好" * 9000)  # one event > 16 KiB
    before = len(quarantined(store))
    r = post(url, orjson.dumps([ok, huge]))
    assert r.status_code == 200 and (r.json()["accepted"], r.json()["rejected"]) == (1, 1)
    assert "16384-byte limit" in r.json()["results"][1]["reasons"][0]
    assert [e["event_id"] for e, _ in drain(bus, expect=1)] == [ok["event_id"]]
    rows = quarantined(store)[before:]
    assert len(rows) == 1 and rows[0]["raw"]["event_id"] == huge["event_id"]


def _deep(levels: int) -> bytes:
    """An event whose props value nests `levels` arrays (well under 16 KiB)."""
    ev = orjson.dumps(factories.event("like", props={"x": 1}))
    return ev.replace(b'{"x":1}', b'{"x":' + b"[" * levels + b"1" + b"]" * levels + b"}")


POISON = {  # name -> (raw bytes of one event, a word of the reason)
    "deep-300": (_deep(300), "nested deeper"),
    "deep-1000": (_deep(1000), "nested deeper"),
    "deep-5000": (_deep(5000), "nested deeper"),  # beyond orjson's own parse limit (1024)
    "objects-600": (b'{"a":' * 600 + b"1" + b"}" * 600, "nested deeper"),
    "number-inf": (b'{"event_id": "n-1", "type": "like", "count": 1e999}', "not valid JSON"),
    "bigint": (
        orjson.dumps(factories.event("like"))[:-1] + b', "count": ' + b"9" * 400 + b"}",
        "not valid JSON",
    ),  # beyond a double
    "bad-utf8": (b'{"event_id": "\xff\xfe", "type": "like"}', "not valid JSON"),
    "lone-surrogate": (b'{"event_id": "\\ud800", "type": "like"}', "not valid JSON"),
    "dup-keys": (b'{"type": "like", "type": {"x": [1]}}', "type"),
}


@pytest.mark.parametrize("encoding", ["array", "ndjson"])
def test_poison_pills_are_rejected_alone_and_never_503(ingest, bus, encoding):
    """Every hostile event of a batch is refused with its reason and quarantined with its raw
    value; the good events beside it are published; the request is a 200, not a 503/500."""
    url, store = ingest
    good = factories.batch(6)
    names = list(POISON)
    parts = [orjson.dumps(good[0])]
    for i, name in enumerate(names):
        parts += [POISON[name][0], orjson.dumps(good[1 + i % 5])] if i < 5 else [POISON[name][0]]
    body = (b"[" + b",".join(parts) + b"]") if encoding == "array" else b"\n".join(parts)
    before = len(quarantined(store))
    r = post(url, body, content_type="application/json" if encoding == "array" else "application/x-ndjson")
    assert r.status_code == 200, r.text
    res = r.json()
    assert (res["accepted"], res["rejected"]) == (6, len(POISON)), res
    rejected = [x for x in res["results"] if x["status"] == "rejected"]
    for name, x in zip(names, rejected):
        assert POISON[name][1] in x["reasons"][0], (name, x)
    assert sorted(e["event_id"] for e, _ in drain(bus, expect=6)) == sorted(e["event_id"] for e in good)
    rows = quarantined(store)[before:]
    assert len(rows) == len(POISON) and all(row["raw"] is not None and row["reasons"] for row in rows)


def test_single_deep_event_is_a_rejection_not_a_503(ingest, bus):
    url, store = ingest
    for levels in (253, 300, 1000):
        r = post(url, _deep(levels))
        assert r.status_code == 200 and r.json()["rejected"] == 1, (levels, r.text)
        assert "nested deeper than 16 levels" in r.json()["results"][0]["reasons"][0]
    r = post(url, b"[" * 100_000 + b"]" * 100_000)  # one element, 100k levels: refused before parsing
    assert r.status_code == 200 and r.json()["rejected"] == 1
    r = post(url, b"[" * 1000)  # never closed: not an array of events at all
    assert r.status_code == 400
    assert drain(bus) == []


@pytest.mark.parametrize("ts", ["²", "١٢٣٤٥٦٧٨٩٠", "１７９５８１０５０３", "-1", "1e9", "1 2", "9" * 13])
def test_non_ascii_digit_timestamps_are_401(ingest, ts):
    url, _ = ingest
    body = orjson.dumps(factories.event("like"))
    h = {**signed_headers("douyin", SECRET, body), HEADER_TIMESTAMP: ts}
    r = requests.post(url, data=body, headers={k: v.encode() for k, v in h.items()}, timeout=10)
    assert r.status_code == 401, r.text


def test_storage_down_is_503_and_the_log_says_storage(pubsub_emulator, bus, tmp_path):
    """A quarantine write that the store refuses (its root is a file: every write fails, even as
    root) is the one case a rejected event makes the request a 503; the log names the dependency."""
    store_dir = tmp_path / "not-a-dir"
    store_dir.write_text("a file where the store's directory should be")
    fn = emulators.start_function("ingest", env=_env(pubsub_emulator.host, store_dir), log_dir=tmp_path)
    try:
        r = post(f"http://{fn.host}/", orjson.dumps([factories.event("like"), factories.event("superchat")]))
        assert r.status_code == 503 and r.json()["error"].startswith("storage unavailable")
        assert int(r.headers["Retry-After"]) > 0
        log = fn.log_path.read_text()
        assert '"dependency": "storage"' in log, log[-2000:]
        ok = factories.event("like")
        r = post(f"http://{fn.host}/", orjson.dumps([ok]))  # nothing to quarantine: published
        assert r.status_code == 200
        assert [e["event_id"] for e, _ in drain(bus, expect=1)] == [ok["event_id"]]  # only this one
    finally:
        fn.stop()


def test_wrong_method_is_405(ingest):
    url, _ = ingest
    r = requests.get(url, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert requests.put(url, data=b"{}", timeout=10).status_code == 405


def test_pubsub_down_is_503_and_nothing_is_lost(ingest, bus, pubsub_emulator, tmp_path):
    """An instance whose Pub/Sub is unreachable answers 503 + Retry-After and reports nothing as
    accepted; the sender's retry to a healthy instance then delivers every event."""
    url, _ = ingest
    dead = emulators.start_function("ingest", env=_env(f"127.0.0.1:{emulators.free_port()}", tmp_path), log_dir=LOGS)
    try:
        events = factories.batch(50)
        body = orjson.dumps(events)
        r = post(f"http://{dead.host}/", body)
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) > 0
        assert r.json()["accepted"] == 0 and "results" not in r.json()
    finally:
        dead.stop()
    r = post(url, body)  # the platform retries
    assert r.status_code == 200 and r.json()["accepted"] == 50
    got = drain(bus, expect=50)
    assert sorted(e["event_id"] for e, _ in got) == sorted(e["event_id"] for e in events)


def test_missing_topic_is_503_not_a_silent_loss(tmp_path, pubsub_emulator):
    env = {**_env(pubsub_emulator.host, tmp_path), "DAIHUO_EVENTS_TOPIC": f"no-such-topic-{uuid.uuid4().hex[:8]}"}
    fn = emulators.start_function("ingest", env=env, log_dir=LOGS)
    try:
        r = post(f"http://{fn.host}/", orjson.dumps(factories.event("like")))
        assert r.status_code == 503 and r.json()["accepted"] == 0
    finally:
        fn.stop()


@pytest.mark.parametrize("point", ["bus:publish", "bus:published"])
def test_a_failed_publish_is_5xx_loses_nothing_and_its_retry_is_deduplicated(pubsub_emulator, tmp_path, point):
    """One batch's publish fails (``bus:publish``: the RPC never left; ``bus:published``: Pub/Sub
    committed the messages but the answer was lost) while the batches around it succeed: that
    request is a 503 reporting nothing accepted, the platform's retry is a 200, every event is in
    Pub/Sub at least once, and archive + clean (the real downstream) keep each event exactly once."""
    from datetime import UTC, datetime

    from shared.pipeline.archive import ArchiveConfig, run_archive
    from shared.pipeline.clean import CleanConfig, load_manifest, read_clean, run_clean
    from shared.pipeline.config import TimeRules

    topic, sub = f"fault-events-{uuid.uuid4().hex[:8]}", f"fault-archive-{uuid.uuid4().hex[:8]}"
    b = Bus()
    b.ensure_topic(topic)
    b.ensure_subscription(sub, topic, ack_deadline_s=30)
    env = {**_env(pubsub_emulator.host, tmp_path / "fn-store"), "DAIHUO_EVENTS_TOPIC": topic}
    fn = emulators.start_function("ingest", env={**env, "DAIHUO_TEST_FAULTS": point}, log_dir=LOGS)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    first, failing, last = (factories.batch(120, ts=now) for _ in range(3))
    url = f"http://{fn.host}/"
    try:
        ndjson = "application/x-ndjson"
        r1 = post(url, b"\n".join(map(orjson.dumps, failing)), content_type=ndjson)  # the planned fault: once
        assert r1.status_code == 503 and r1.json()["accepted"] == 0 and "results" not in r1.json()
        assert int(r1.headers["Retry-After"]) > 0
        assert post(url, orjson.dumps(first)).json()["accepted"] == 120
        r2 = post(url, b"\n".join(map(orjson.dumps, failing)), content_type=ndjson)  # the platform retries
        assert r2.status_code == 200 and r2.json()["accepted"] == 120
        assert post(url, orjson.dumps(last)).json()["accepted"] == 120
    finally:
        fn.stop()
    log = (LOGS / "ingest.log").read_text()
    assert "injected crash at " + point in log and '"dependency": "pubsub"' in log

    store = open_store(str(tmp_path / "store"))
    cfg = ArchiveConfig(subscription=sub, max_events=10_000, pull_timeout_s=2.0)
    archived = 0
    deadline = time.monotonic() + 30
    expected = 360 + (120 if point == "bus:published" else 0)  # the lost answer's copy is a duplicate
    while archived < expected and time.monotonic() < deadline:
        archived += run_archive(b, store, cfg)["events"]
    assert archived == expected  # nothing lost; a duplicate only where Pub/Sub had the first copy
    assert not b.pull(sub, 100, timeout_s=1)
    rules = TimeRules(max_future_s=300, max_past_s=30 * 86400, late_after_s=3600)
    s = run_clean(store, None, CleanConfig(rules=rules, threads=2))
    assert s["status"] == "committed" and s["dropped"] == 0
    assert s["rows_out"] == 360 and s["duplicates"] == expected - 360
    clean = read_clean(store, load_manifest(store)[0]).to_pandas()
    assert clean["event_id"].is_unique
    assert set(clean["event_id"]) == {e["event_id"] for e in first + failing + last}
    b.delete_subscription(sub)
    b.close()


def test_the_bench_refuses_to_print_figures_without_wrk(tmp_path):
    """bench/bench_ingest.py has no Python fallback loader (it measured itself): without wrk on PATH it
    says how to install it and exits 2 before starting anything."""
    import os
    import subprocess
    import sys

    py_dir = os.path.dirname(sys.executable)
    out = subprocess.run(
        [sys.executable, str(emulators.REPO_ROOT / "bench" / "bench_ingest.py"), "--duration", "1"],
        env={**os.environ, "PATH": f"{py_dir}:{tmp_path}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "apt-get install wrk" in out.stderr and "RESULT" not in out.stdout


def test_accepted_requests_are_logged_as_a_summary_rejections_at_once(bus, tmp_path):
    """``Ingestor``'s log: the first request logs at once; fully accepted requests after it are counted
    into one ``ingested`` line per platform per ``log_every_s``; a request with a rejection gets its own
    line at once. In process, against the emulator (the function's stdout is the same JSON lines)."""
    import logging

    from shared.ingest import IngestConfig, Ingestor

    lines: list[dict] = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.getMessage() == "ingested":
                lines.append(
                    {
                        k: getattr(record, k)
                        for k in ("platform", "requests", "accepted", "rejected", "messages", "seconds")
                    }
                )

    keep = Keep()
    logger = logging.getLogger("daihuo.ingest")
    logger.addHandler(keep)
    ing = Ingestor(
        bus, open_store(str(tmp_path)), IngestConfig(), environ={"DAIHUO_SECRET_DOUYIN": SECRET}, log_every_s=0.5
    )

    def send(events):
        body = orjson.dumps(events)
        a = ing.handle("POST", signed_headers("douyin", SECRET, body), body, content_type="application/json")
        assert a.status == 200, a.json
        return a.json

    try:
        send([factories.event("like")])
        assert lines == [
            {"platform": "douyin", "requests": 1, "accepted": 1, "rejected": 0, "messages": 1, "seconds": 0.0}
        ]
        counted = [send(factories.batch(20)), send([factories.event("like")])]
        assert len(lines) == 1  # counted, not logged
        send([factories.event("like"), factories.event("superchat")])  # one rejection: logged at once
        assert lines[1] == {
            "platform": "douyin",
            "requests": 1,
            "accepted": 1,
            "rejected": 1,
            "messages": 1,
            "seconds": 0.0,
        }
        time.sleep(0.6)
        counted.append(send([factories.event("like")]))  # due: this one writes the summary
        assert len(lines) == 3
        summary = lines[2]
        assert (summary["requests"], summary["accepted"], summary["rejected"]) == (3, 22, 0)
        assert summary["messages"] == sum(a["messages"] for a in counted)
        assert summary["seconds"] >= 0.5
    finally:
        logger.removeHandler(keep)
    drain(bus)
