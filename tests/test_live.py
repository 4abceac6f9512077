"""The live layer against Google's Bigtable emulator: what the writer counts, exact dedupe (the same
message twice, concurrently, after a crash at every step, ids regrouped across messages), and the
read API (room, viewer, streams, unavailability)."""

from __future__ import annotations

import copy
import threading
import time

import pytest

from shared.live import schema
from shared.live.apply import LiveStoreError, LiveWriter, minute_counters
from shared.live.reader import LiveReader, LiveUnavailable
from tests.live_helpers import ev, fresh_config, ndjson

NOW = (int(time.time()) // 60) * 60 + 59.0  # the end of a minute: the 5-minute windows below are fixed


@pytest.fixture
def live(bigtable_emulator):
    cfg = fresh_config(shards=2)
    table = schema.open_table(cfg)
    yield cfg, table, LiveWriter(table, cfg), LiveReader(table, cfg)
    schema.drop_table(cfg)


def _evening(stream: str = "s1", t0: float = NOW - 600) -> tuple[list[dict], list[dict]]:
    """Host events and viewer events of a small evening, with the numbers they must give."""
    host = [
        ev("stream_start", stream, t0, title="今晚好物", host_id="h1", host_name="安娜"),
        ev("slot_start", stream, t0 + 60, slot_id="sl1", item_id="i1", price=9.9),
        ev("slot_start", stream, t0 + 300, slot_id="sl2", item_id="i2", price=20.0),  # ends sl1
        ev("showcase_update", stream, t0 + 310, item_id="i3", change="sold_out"),
        ev("showcase_update", stream, t0 + 320, item_id="i4", change="stock", stock=0),
        ev("showcase_update", stream, t0 + 330, item_id="i4", change="add"),  # available again
        ev("showcase_update", stream, t0 + 340, item_id="i2", change="price", price=18.0, currency="CNY"),
    ]
    viewer = [ev("stream_enter", stream, t0 + 5 + i, user=f"u{i}") for i in range(6)]
    viewer += [ev("stream_leave", stream, t0 + 400, user="u5")]
    viewer += [ev("product_impression", stream, t0 + 70, user=f"u{i}", item="i1") for i in range(6)]
    viewer += [ev("product_click", stream, t0 + 80, user=f"u{i}", item="i1") for i in range(3)]
    viewer += [ev("product_click", stream, t0 + 81, user="u0", item="i1")]  # a second click, same viewer
    viewer += [ev("add_to_cart", stream, t0 + 90, user="u0", item="i1", quantity=2)]
    viewer += [
        ev("purchase", stream, t0 + 100, user="u0", item="i1", price=9.9, quantity=2),  # in sl1
        ev("purchase", stream, t0 + 310, user="u1", item="i1", price=9.9),  # i1 after sl1 ended: no slot
        ev("purchase", stream, t0 + 320, user="u1", item="i2", price=20.0),  # in sl2
        ev("refund", stream, t0 + 500, user="u0", item="i1", price=9.9, quantity=1),
        ev("like", stream, t0 + 30, user="u2", count=5),
        ev("gift", stream, t0 + 40, user="u3", gift_value=1.5),
        ev("comment", stream, t0 + 50, user="u4", text="好"),
    ]
    return host, viewer


def _check_evening(room, session):
    t = room.totals
    assert (t["entries"], t["leaves"], t["viewers_now"]) == (6, 1, 5)
    assert (t["impressions"], t["clicks"], t["add_to_carts"], t["cart_units"]) == (6, 4, 1, 2)
    assert (t["orders"], t["units"]) == (3, 4)
    assert t["gmv"] == pytest.approx(9.9 * 2 + 9.9 + 20.0)
    assert (t["refunds"], t["refund_units"]) == (1, 1) and t["refund_amount"] == pytest.approx(9.9)
    assert t["net_gmv"] == pytest.approx(t["gmv"] - 9.9)
    assert (t["likes"], t["like_events"], t["gifts"], t["comments"]) == (5, 1, 1, 1)
    assert t["gift_value"] == pytest.approx(1.5)
    assert room.funnel["unique"] == {"viewer": 6, "impression": 6, "click": 3, "cart": 1, "buyer": 2}
    assert (t["buyers"], t["unique_viewers"]) == (2, 6)
    assert sum(m["orders"] for m in room.minutes) == 3
    assert room.minutes[-1]["viewers"] == 5
    assert room.info["title"] == "今晚好物" and room.info["host_name"] == "安娜" and room.on_air
    slots = {s["slot_id"]: s for s in room.slots}
    assert slots["sl1"]["ended_at"] == slots["sl2"]["started_at"]  # a new slot ends the previous one
    assert slots["sl1"]["sales"] == {"orders": 1, "units": 2, "gmv": pytest.approx(19.8)}
    assert slots["sl2"]["sales"] == {"orders": 1, "units": 1, "gmv": pytest.approx(20.0)}
    assert room.on_stage["slot_id"] == "sl2" and room.on_stage["item_id"] == "i2"
    assert room.sold_out == ["i3"]
    assert room.showcase["i4"]["status"] == "available" and room.showcase["i2"]["price"] == 18.0
    # the last 5 minutes: i1 and i2 one order each; i1 was busier before (clicks, cart, an order), i2 rises
    assert [x["item_id"] for x in room.trending] == ["i2", "i1"]
    assert room.trending[0]["rise"] > 0 > room.trending[1]["rise"]
    assert [e["type"] for e in session.events] == [
        "refund",
        "purchase",
        "add_to_cart",
        "product_click",
        "product_click",
    ]
    assert session.items("product_click") == ["i1"]


def test_the_evening_adds_up(live):
    cfg, table, writer, reader = live
    host, viewer = _evening()
    assert writer.apply_message(ndjson(host)).host == len(host)
    res = writer.apply_message(ndjson(viewer))
    assert (res.counted, res.duplicates, res.rejected) == (len(viewer), 0, [])
    _check_evening(reader.room("s1", now=NOW), reader.viewer("s1", "u0"))
    assert [s["stream_id"] for s in reader.streams()] == ["s1"]
    doc = reader.room("s1", now=NOW).to_dict()
    import json

    json.dumps(doc)  # JSON-able


def test_counters_are_what_minute_counters_says(live):
    cfg, table, writer, reader = live
    _, viewer = _evening()
    writer.apply_message(ndjson(viewer))
    expected = minute_counters(copy.deepcopy([dict(e, _ms=0) for e in viewer]), [])
    room = reader.room("s1", now=NOW)
    assert room.totals["orders"] == expected["n:purchase"] and room.totals["units"] == expected["units"]


def test_the_same_message_twice_counts_once(live):
    cfg, table, writer, reader = live
    host, viewer = _evening()
    writer.apply_message(ndjson(host))
    body = ndjson(viewer)
    assert writer.apply_message(body).counted == len(viewer)
    again = writer.apply_message(body)
    assert (again.counted, again.duplicates) == (0, len(viewer))
    _check_evening(reader.room("s1", now=NOW), reader.viewer("s1", "u0"))


def test_ids_regrouped_across_messages_count_once(live):
    """An ingest retry regroups events: overlapping batches, a duplicate inside one message."""
    cfg, table, writer, reader = live
    host, viewer = _evening()
    writer.apply_message(ndjson(host))
    writer.apply_message(ndjson(viewer[:10]))
    res = writer.apply_message(ndjson(viewer[5:] + viewer[12:14]))
    assert res.counted == len(viewer) - 10 and res.duplicates == 5 + 2
    _check_evening(reader.room("s1", now=NOW), reader.viewer("s1", "u0"))


def test_concurrent_redelivery_counts_once(live):
    cfg, table, writer, reader = live
    host, viewer = _evening()
    writer.apply_message(ndjson(host))
    bodies = [ndjson(viewer), ndjson(viewer[::-1]), ndjson(viewer[3:]), ndjson(viewer[:7])] * 3
    counted, errors = [], []
    barrier = threading.Barrier(len(bodies))

    def run(body):
        barrier.wait()
        try:
            counted.append(LiveWriter(table, cfg).apply_message(body).counted)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in bodies]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    assert sum(counted) == len(viewer)
    _check_evening(reader.room("s1", now=NOW), reader.viewer("s1", "u0"))


class _Crashing:
    """The real table, but the ``fail_at``-th write call raises: before it reaches Bigtable
    (``after=False``) or after Bigtable applied it, the answer lost (``after=True``). Write calls:
    the table's conditional / single-row mutations and the raw GAPIC appends and MutateRows of
    shared/live/rpc.py."""

    WRITES = ("check_and_mutate_row", "mutate_row")
    GAPIC_WRITES = ("read_modify_write_row", "mutate_rows")

    def __init__(self, table, fail_at: int, after: bool):
        self.table, self.fail_at, self.after, self.calls = table, fail_at, after, 0
        self.lock = threading.Lock()
        crashing = self

        class _Gapic:
            def __getattr__(self, name):
                fn = getattr(table.client._gapic_client, name)
                if name not in crashing.GAPIC_WRITES:
                    return fn
                if name == "mutate_rows":  # a stream: the answer is read before the crash
                    return crashing._wrap(lambda *a, **kw: list(fn(*a, **kw)))
                return crashing._wrap(fn)

        class _Client:
            _gapic_client = _Gapic()

            def __getattr__(self, name):
                return getattr(table.client, name)

        self.client = _Client()

    def _wrap(self, fn):
        def call(*a, **kw):
            with self.lock:  # the writer overlaps a message's calls
                self.calls += 1
                n = self.calls
            if n == self.fail_at and not self.after:
                raise ConnectionError("crash before the write")
            out = fn(*a, **kw)
            if n == self.fail_at:
                raise ConnectionError("crash after the write, answer lost")
            return out

        return call

    def __getattr__(self, name):
        fn = getattr(self.table, name)
        return self._wrap(fn) if name in self.WRITES else fn


@pytest.mark.parametrize("after", [False, True])
def test_a_crash_at_any_step_then_redelivery_counts_once(bigtable_emulator, after):
    host, viewer = _evening()
    body = ndjson(viewer)
    probe_cfg = fresh_config(shards=2)
    probe = _Crashing(schema.open_table(probe_cfg), 0, after)
    LiveWriter(probe, probe_cfg).apply_message(ndjson(host))
    LiveWriter(probe, probe_cfg).apply_message(body)
    steps = probe.calls - 1  # write calls of the viewer message
    schema.drop_table(probe_cfg)
    assert steps >= 4
    for fail_at in range(1, steps + 1):
        cfg = fresh_config(shards=2)
        table = schema.open_table(cfg)
        LiveWriter(table, cfg).apply_message(ndjson(host))
        with pytest.raises(LiveStoreError):
            LiveWriter(_Crashing(table, fail_at, after), cfg).apply_message(body)
        LiveWriter(table, cfg).apply_message(body)  # Pub/Sub redelivers
        LiveWriter(table, cfg).apply_message(body)  # and once more, for good measure
        reader = LiveReader(table, cfg)
        _check_evening(reader.room("s1", now=NOW), reader.viewer("s1", "u0"))
        schema.drop_table(cfg)


def test_malformed_lines_are_rejected_alone(live):
    cfg, table, writer, reader = live
    good = [ev("purchase", "s2", NOW - 5, user="u1", item="i1", price=3.0)]
    bad = [
        b"not json",
        b'{"event_id": "x1", "type": "purchase", "ts": "2026-01-01T00:00:00Z"}',  # no stream / user
        ndjson([ev("purchase", "s2", NOW, user="u1", item="i1")]),  # no price
        ndjson([ev("product_click", "s2", NOW, user="u1", item="i1", price="free")]),
        b"[1, 2]",
    ]
    res = writer.apply_message(b"\n".join([ndjson(good), *bad]))
    assert res.counted == 1 and len(res.rejected) == len(bad)
    assert all(r["reasons"] for r in res.rejected)
    assert reader.room("s2", now=NOW).totals["orders"] == 1
    catalog = {"event_id": "c1", "type": "catalog_item", "ts": "2026-01-01T00:00:00Z", "item_id": "i1"}
    assert writer.apply_message(ndjson([catalog])).ignored == 1
    old = ev("purchase", "s2", NOW - cfg.retention_s - 3600, user="u1", item="i1", price=3.0)
    assert writer.apply_message(ndjson([old])).too_old == 1


def test_reader_window_and_empty_room(live):
    cfg, table, writer, reader = live
    writer.apply_message(ndjson([ev("purchase", "s3", NOW - 3600, item="i1", price=1.0)]))
    writer.apply_message(ndjson([ev("purchase", "s3", NOW - 60, item="i2", price=2.0)]))
    assert reader.room("s3", now=NOW).totals["orders"] == 2
    recent = reader.room("s3", now=NOW, since_minutes=10)
    assert recent.totals["orders"] == 1 and recent.totals["viewers_now"] is None
    empty = reader.room("nobody", now=NOW)
    assert not empty.exists and empty.totals["orders"] == 0 and empty.on_stage is None
    assert reader.viewer("nobody", "u1").events == []


def test_unavailable_bigtable_raises_fast(monkeypatch):
    from devtools.emulators import free_port

    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    from shared.live.config import LiveConfig

    cfg = LiveConfig(table="absent")
    reader = LiveReader(cfg=cfg, timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(LiveUnavailable):
        reader.room("s1")
    with pytest.raises(LiveUnavailable):
        reader.viewer("s1", "u1")
    assert time.monotonic() - t0 < 5
    writer = LiveWriter(schema.open_table(LiveConfig(table="absent", timeout_s=0.5)), LiveConfig(timeout_s=0.5))
    with pytest.raises(LiveStoreError):
        writer.apply_message(ndjson([ev("stream_enter", "s1", NOW)]))


def test_single_event_messages_redelivered_and_regrouped_count_once(live):
    """The one-conditional-mutation path of small messages, mixed with the append path of batches."""
    cfg, table, writer, reader = live
    host, viewer = _evening()
    writer.apply_message(ndjson(host))
    singles = [ndjson([e]) for e in viewer]
    work = singles + singles[::-1] + [ndjson(viewer[:9]), ndjson(viewer[9:])]
    counted, errors = [], []

    def run(chunk):
        try:
            w = LiveWriter(table, cfg)
            counted.extend(w.apply_message(b, message_id=f"m{hash(b)}").counted for b in chunk)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(work[i::4],)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors and sum(counted) == len(viewer)
    _check_evening(reader.room("s1", now=NOW), reader.viewer("s1", "u0"))


def test_an_ended_rooms_trending_is_its_last_picture(live):
    """A refund days after the stream lands in a later minute; the ended room's trending windows stay
    the ones before its stream_end (they used to end at the refund's minute and come out empty)."""
    cfg, table, writer, reader = live
    t0 = NOW - 3 * 3600
    writer.apply_message(ndjson([ev("stream_start", "s9", t0, host_id="h1")]))
    writer.apply_message(
        ndjson(
            [ev("product_click", "s9", t0 + 60, user="u1", item="i1")]
            + [ev("purchase", "s9", t0 + 120, user=f"u{i}", item="i1", price=5.0) for i in range(3)]
        )
    )
    writer.apply_message(ndjson([ev("stream_end", "s9", t0 + 240)]))
    before = reader.room("s9", now=NOW).trending
    assert [x["item_id"] for x in before] == ["i1"]
    writer.apply_message(ndjson([ev("refund", "s9", NOW - 60, user="u1", item="i1", price=5.0)]))
    after = reader.room("s9", now=NOW)
    assert not after.on_air and after.totals["refunds"] == 1
    assert after.trending == before
