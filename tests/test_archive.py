"""archive against Google's Pub/Sub emulator and a local store: ack after write (crash between write
and ack), partitioning by event time with the documented fallbacks, bounded batches, empty
subscription, and redelivery in a different batch composition still reaching clean exactly once."""

from __future__ import annotations

import gzip
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from shared.adapters.storage import open_store
from shared.pipeline.archive import ArchiveConfig, archive_batch, partition_of, run_archive
from shared.pipeline.clean import CleanConfig, load_manifest, read_clean, run_clean
from shared.pipeline.config import TimeRules
from shared.runtime import faults

ROOT = Path(__file__).resolve().parent.parent
RULES = TimeRules(max_future_s=300, max_past_s=30 * 86400, late_after_s=3600)
NOW = datetime(2026, 11, 29, 5, 30, tzinfo=UTC).timestamp()  # the archive run's clock
ACK_DEADLINE_S = 10  # the emulator's minimum: a "crashed" batch is redelivered after this


def ev(eid: str, ts: str = "2026-11-27T20:15:00.000Z", rec: str = "2026-11-27T20:15:01.000Z", **kw) -> dict:
    return {
        "event_id": eid,
        "type": "like",
        "ts": ts,
        "platform": "douyin",
        "stream_id": "s-1",
        "user_id": "u-1",
        "count": 1,
        "received_at": rec,
        **kw,
    }


def body(events: list) -> bytes:
    return b"\n".join(e if isinstance(e, bytes) else orjson.dumps(e) for e in events) + b"\n"


@pytest.fixture(scope="module")
def bus(pubsub_emulator):
    from shared.adapters.bus import Bus

    b = Bus()
    yield b
    b.close()


@pytest.fixture
def sub(bus):
    """A fresh topic + pull subscription per test: (topic, subscription)."""
    run = uuid.uuid4().hex[:8]
    topic, name = f"viewer-events-{run}", f"viewer-events-archive-{run}"
    bus.ensure_topic(topic)
    bus.ensure_subscription(name, topic, ack_deadline_s=ACK_DEADLINE_S)
    yield topic, name
    bus.delete_subscription(name)


def acfg(sub_name: str, **kw) -> ArchiveConfig:
    return ArchiveConfig(subscription=sub_name, rules=RULES, **{"pull_timeout_s": 2.0, **kw})


def raw_lines(store) -> list[dict]:
    out = []
    for k in store.list("raw/"):
        out += [orjson.loads(x) for x in gzip.decompress(store.get(k)).splitlines() if x]
    return out


def drain(bus, sub_name: str, timeout: float = 2.0) -> list:
    return bus.pull(sub_name, 1000, timeout_s=timeout)


# ------------------------------------------------------------------------------- partitioning
@pytest.mark.parametrize(
    "line, want",
    [
        (ev("a"), "date=2026-11-27/hour=20"),  # the event's own ts
        (ev("b", ts="2026-11-28T04:59:59.000+08:00", rec="2026-11-27T21:00:00Z"), "date=2026-11-27/hour=20"),  # UTC
        (ev("c", ts="not a time", rec="2026-11-27T22:10:00Z"), "date=2026-11-27/hour=22"),  # unparseable ts
        (ev("d", ts="2026-11-27T20:15:00", rec="2026-11-27T22:10:00Z"), "date=2026-11-27/hour=22"),  # no offset
        (ev("e", ts="2026-11-27T23:00:00Z", rec="2026-11-27T20:00:00Z"), "date=2026-11-27/hour=20"),  # > 300 s ahead
        (
            ev("f", ts="2026-11-27T21:02:00Z", rec="2026-11-27T20:59:00Z"),
            "date=2026-11-27/hour=21",
        ),  # 180 s ahead: kept
        (ev("g", ts="2020-01-01T00:00:00Z", rec="2026-11-27T20:00:00Z"), "date=2026-11-27/hour=20"),  # > 30 days old
        (ev("h", ts="2026-11-20T03:00:00Z", rec="2026-11-27T20:00:00Z"), "date=2026-11-20/hour=03"),  # late, plausible
        (ev("i", ts="2026-11-27T20:15:00Z", rec=None), "date=2026-11-27/hour=20"),  # ts without received_at
        (ev("j", ts=None, rec="bogus"), "date=2026-11-29/hour=05"),  # neither: the run's time
        (b'{"event_id": "k", "ts": "2026-11-27T', "date=2026-11-29/hour=05"),  # malformed JSON
        (b"[1, 2, 3]", "date=2026-11-29/hour=05"),  # not an object
    ],
)
def test_partition_of(line, want):
    raw = line if isinstance(line, bytes) else orjson.dumps(line)
    assert partition_of(raw, RULES, NOW) == want


def test_partitions_are_objects_and_lines_verbatim(bus, sub, tmp_path):
    topic, name = sub
    store = open_store(tmp_path / "store")
    lines = [
        orjson.dumps(ev("p1")),
        orjson.dumps(ev("p2", ts="2026-11-27T21:30:00Z", rec="2026-11-27T21:30:00Z")),
        b'{"event_id":"p3" , "type":"like"}',
        b"not json at all",
    ]
    bus.publish(topic, b"\n".join(lines))
    s = archive_batch(bus, store, acfg(name), now=NOW)
    assert s["events"] == 4 and s["partitions"] == 3
    keys = sorted(store.list("raw/"))
    assert [k.rsplit("/", 1)[0] for k in keys] == [
        "raw/date=2026-11-27/hour=20",
        "raw/date=2026-11-27/hour=21",
        "raw/date=2026-11-29/hour=05",
    ]
    got = sorted(x for k in keys for x in gzip.decompress(store.get(k)).splitlines() if x)
    assert got == sorted(lines)  # bytes exactly as published
    assert not drain(bus, name)  # acked


def test_host_events_are_archived_like_viewer_events(bus, sub, tmp_path):
    from tests import factories

    topic, name = sub
    store = open_store(tmp_path / "store")
    rec = {"received_at": "2026-11-27T20:00:02.000Z"}
    host = [
        {**factories.host_event("stream_start", ts="2026-11-27T20:00:00.000Z", title="今晚"), **rec},
        {**factories.host_event("slot_start", ts="2026-11-27T20:00:01.000Z"), **rec},
        # a console clock 2 h ahead: partitioned by received_at, like a viewer event
        {**factories.host_event("showcase_update", ts="2026-11-27T22:00:00Z", change="sold_out"), **rec},
    ]
    for h in host:  # one message per (type, stream), as ingest published them until 2026-12-03
        bus.publish(topic, orjson.dumps(h), type=h["type"], stream_id=h["stream_id"])
    s = archive_batch(bus, store, acfg(name), now=NOW)
    assert s["events"] == 3 and s["partitions"] == 1
    assert [k.rsplit("/", 1)[0] for k in store.list("raw/")] == ["raw/date=2026-11-27/hour=20"]
    assert sorted(raw_lines(store), key=lambda r: r["event_id"]) == sorted(host, key=lambda r: r["event_id"])
    assert not drain(bus, name)


# ------------------------------------------------------------------------- ack after write
def test_crash_between_write_and_ack_is_redelivered_and_rewrites_nothing(bus, sub, tmp_path):
    topic, name = sub
    store = open_store(tmp_path / "store")
    events = [
        ev(f"c{i}", ts=f"2026-11-27T{20 + i % 3}:00:00Z", rec=f"2026-11-27T{20 + i % 3}:00:05Z") for i in range(30)
    ]
    for i in range(0, 30, 10):
        bus.publish(topic, body(events[i : i + 10]))
    with faults.installed("archive:write"), pytest.raises(RuntimeError, match="injected crash"):
        run_archive(bus, store, acfg(name), now=NOW)
    keys = sorted(store.list("raw/"))
    assert len(keys) == 3 and len(raw_lines(store)) == 30  # written, not acked
    gens = {k: store.generation(k) for k in keys}
    # nothing acked: after the ack deadline the same messages come back, the re-run maps them to the
    # same object names (only-if-absent): nothing new is written, nothing lost, and now they are acked
    deadline = time.monotonic() + 4 * ACK_DEADLINE_S
    total = {"messages": 0, "objects": [], "existing_objects": []}
    while total["messages"] < 3 and time.monotonic() < deadline:
        s = run_archive(bus, store, acfg(name), now=NOW)
        for k in total:
            total[k] += s[k]
    assert total["messages"] == 3
    assert total["objects"] == [] and sorted(total["existing_objects"]) == keys
    assert {k: store.generation(k) for k in store.list("raw/")} == gens
    assert sorted(e["event_id"] for e in raw_lines(store)) == sorted(e["event_id"] for e in events)
    assert not drain(bus, name)


# ------------------------------------------------------------------------------ batch bound
def test_batches_are_bounded_and_the_excess_is_redelivered(bus, sub, tmp_path):
    topic, name = sub
    store = open_store(tmp_path / "store")
    events = [ev(f"b{i:03d}") for i in range(120)]
    for i in range(0, 120, 10):  # 12 messages of 10 lines
        bus.publish(topic, body(events[i : i + 10]))
    sizes = []
    deadline = time.monotonic() + 60
    while sum(sizes) < 120 and time.monotonic() < deadline:  # nacked messages come back after a backoff
        s = archive_batch(bus, store, acfg(name, max_events=35, pull_size=7, pull_timeout_s=1.0), now=NOW)
        if s["messages"]:
            sizes.append(s["events"])
    assert max(sizes) <= 35 and sum(sizes) == 120, sizes
    assert all(len(gzip.decompress(store.get(k)).splitlines()) <= 35 for k in store.list("raw/"))
    assert sorted(e["event_id"] for e in raw_lines(store)) == sorted(e["event_id"] for e in events)
    # a tick runs several bounded batches until the backlog is drained
    store2 = open_store(tmp_path / "store2")
    for i in range(0, 120, 10):
        bus.publish(topic, body([dict(e, event_id="t" + e["event_id"]) for e in events[i : i + 10]]))
    events, batches = 0, 0
    deadline = time.monotonic() + 60
    while events < 120 and time.monotonic() < deadline:
        t = run_archive(bus, store2, acfg(name, max_events=35, max_batches=10, pull_timeout_s=1.0), now=NOW)
        events, batches = events + t["events"], batches + t["batches"]
        assert t["events"] <= 35 * max(1, t["batches"])
    assert events == 120 and batches >= 4


def test_pulls_are_sized_by_the_lines_per_message(bus, sub, tmp_path):
    """The first pull asks for FIRST_PULL messages, the next ones for what the batch still holds at
    the lines per message seen: 100-line messages (a webhook batch) fill a 3,000-line batch without
    pulling, and nacking, hundreds of messages; single-line messages are pulled pull_size at a time."""
    from shared.pipeline import archive

    topic, name = sub
    store = open_store(tmp_path / "store")
    asked: list[int] = []

    class Counting:  # the real bus; the sizes asked for are recorded
        def pull(self, subscription, max_messages, timeout_s):
            asked.append(max_messages)
            return bus.pull(subscription, max_messages, timeout_s)

        def __getattr__(self, attr):
            return getattr(bus, attr)

    events = [ev(f"p{i:04d}") for i in range(4000)]
    for i in range(0, 4000, 100):  # 40 messages of 100 lines
        bus.publish(topic, body(events[i : i + 100]))
    s = archive_batch(Counting(), store, acfg(name, max_events=3000, pull_size=1000, pull_timeout_s=1.0), now=NOW)
    assert s["events"] <= 3000 and asked[0] == archive.FIRST_PULL
    assert all(n <= 30 for n in asked), asked  # never more than the batch can hold
    deadline = time.monotonic() + 60
    while len(raw_lines(store)) < 4000 and time.monotonic() < deadline:
        archive_batch(Counting(), store, acfg(name, max_events=3000, pull_timeout_s=1.0), now=NOW)
    assert sorted(e["event_id"] for e in raw_lines(store)) == sorted(e["event_id"] for e in events)
    asked.clear()
    for i in range(300):
        bus.publish(topic, body([ev(f"q{i:04d}")]))
    s = archive_batch(Counting(), store, acfg(name, max_events=3000, pull_size=1000, pull_timeout_s=1.0), now=NOW)
    assert asked[:2] == [archive.FIRST_PULL, 1000] and s["events"] == 300
    assert not drain(bus, name)


def test_oversized_message_still_progresses(bus, sub, tmp_path):
    topic, name = sub
    store = open_store(tmp_path / "store")
    bus.publish(topic, body([ev(f"o{i}") for i in range(50)]))
    s = archive_batch(bus, store, acfg(name, max_events=20), now=NOW)
    assert s["messages"] == 1 and s["events"] == 50  # a message is never split (its lines are one unit)
    assert not drain(bus, name)


def test_empty_subscription_writes_nothing(bus, sub, tmp_path):
    _, name = sub
    store = open_store(tmp_path / "store")
    s = run_archive(bus, store, acfg(name, pull_timeout_s=0.5), now=NOW)
    assert s["batches"] == 0 and s["messages"] == 0 and s["objects"] == []
    assert list(store.list("")) == []


# ------------------------------------------------------------- redelivery -> clean exactly once
def test_redelivery_in_another_batch_composition_reaches_clean_once(bus, sub, tmp_path):
    topic, name = sub
    store = open_store(tmp_path / "store")
    first = [ev(f"x{i:02d}", user_id=f"u-{i}") for i in range(20)]
    later = [ev(f"y{i:02d}", user_id=f"u-{i}") for i in range(10)]
    bus.publish(topic, body(first[:10]))
    bus.publish(topic, body(first[10:]))
    with faults.installed("archive:write"), pytest.raises(RuntimeError):
        archive_batch(bus, store, acfg(name), now=NOW)
    n_objects = len(list(store.list("raw/")))
    # the same messages come back in another composition (here: one message per batch, as a smaller
    # bound or a partial redelivery would cut them; plus new traffic) -> other batch ids, so their lines
    # are archived a second time: duplicates in raw/, never a loss
    bus.publish(topic, body(later))
    deadline = time.monotonic() + 4 * ACK_DEADLINE_S
    events = 0
    while events < 30 and time.monotonic() < deadline:
        events += run_archive(bus, store, acfg(name, max_events=10, max_batches=10), now=NOW)["events"]
    assert events == 30
    assert len(list(store.list("raw/"))) > n_objects
    ids = [e["event_id"] for e in raw_lines(store)]
    assert len(ids) == 50 and set(ids) == {e["event_id"] for e in first + later}
    s = run_clean(store, None, CleanConfig(rules=RULES, threads=2))
    assert s["status"] == "committed"
    assert s["rows_out"] == 30 and s["duplicates"] == 20 and s["dropped"] == 0
    clean = read_clean(store, load_manifest(store)[0]).to_pandas()
    assert clean["event_id"].is_unique and set(clean["event_id"]) == {e["event_id"] for e in first + later}


def test_write_failure_nacks_at_once(bus, sub, tmp_path):
    """The store refuses the write (its root is a file): the batch is nacked, not left to the ack
    deadline; the next tick, with a working store, archives every event well before the deadline."""
    topic, name = sub
    broken = tmp_path / "not-a-dir"
    broken.write_text("x")
    events = [ev(f"w{i}") for i in range(20)]
    bus.publish(topic, body(events))
    with pytest.raises(Exception):
        archive_batch(bus, open_store(broken), acfg(name), now=NOW)
    store = open_store(tmp_path / "store")
    t0 = time.monotonic()
    s = archive_batch(bus, store, acfg(name), now=NOW)
    assert s["events"] == 20 and time.monotonic() - t0 < ACK_DEADLINE_S - 2  # redelivered at once (nack)
    assert sorted(e["event_id"] for e in raw_lines(store)) == sorted(e["event_id"] for e in events)


# ------------------------------------------------------------- no crash switch in a message
def test_a_tick_body_cannot_make_the_function_crash(bus, sub, tmp_path, monkeypatch):
    """The archive function, served in-process by functions-framework, gets a tick whose body asks
    for the old test crash (``crash_after``): it archives and acks as always."""
    import base64

    import functions_framework

    from shared import runtime

    topic, name = sub
    monkeypatch.setenv("DAIHUO_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("DAIHUO_ARCHIVE_SUBSCRIPTION", name)
    monkeypatch.setenv("DAIHUO_ARCHIVE_PULL_TIMEOUT_S", "2")
    bus.publish(topic, body([ev(f"m{i}") for i in range(5)]))
    runtime.reset_all()  # this test's store, a fresh bus
    try:
        app = functions_framework.create_app(
            target="archive", source=str(ROOT / "functions" / "archive" / "main.py"), signature_type="cloudevent"
        )
        tick = base64.b64encode(orjson.dumps({"crash_after": "write"})).decode()
        event = {
            "specversion": "1.0",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/p/topics/archive-tick",
            "id": "tick-1",
            "data": {"message": {"data": tick, "messageId": "tick-1"}, "subscription": "archive-push"},
        }
        r = app.test_client().post("/", data=orjson.dumps(event), content_type="application/cloudevents+json")
        assert r.status_code == 200, r.get_data(as_text=True)
        store = open_store(tmp_path / "store")
        assert sorted(e["event_id"] for e in raw_lines(store)) == [f"m{i}" for i in range(5)]
        assert not drain(bus, name)  # acked: no crash between write and ack
    finally:
        runtime.reset_all()
