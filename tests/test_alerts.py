"""Alerts (shared/alert_rules.py, shared/alerts.py, docs/alerts.md): every rule fires on a constructed
situation and stays quiet on a normal one; the thresholds' validation; an alert reaches the real
Pub/Sub emulator topic and the dashboard's API once, however often its condition is evaluated; the
live rule on a real Bigtable room; the batch rules after a real clean run."""

from __future__ import annotations

import gzip
import time
import uuid

import orjson
import pytest

from shared import alert_rules, alerts, layout
from shared.adapters.bus import Bus
from shared.adapters.storage import open_store
from shared.alert_rules import Alert, AlertRules, RulesError, parse_rules
from shared.dashboard.app import App
from shared.pipeline import alerts as batch_alerts
from shared.settings import SettingsError, load
from tests.factories import event, host_event
from tests.waiting import wait_for

RULES = AlertRules()
G = RULES.gmv_drop


def _series(
    rate_before: float, rate_after: float, *, minutes_before: int = 30, minutes_after: int = 10, m0: int = 1000
):
    s = {m0 + i: rate_before for i in range(minutes_before)}
    s.update({m0 + minutes_before + i: rate_after for i in range(minutes_after)})
    return s, m0 + minutes_before + minutes_after - 1


# ------------------------------------------------------------------------------ the rules (pure)
def test_gmv_drop_fires_on_a_drop_and_not_on_a_steady_room():
    s, last = _series(100.0, 20.0)
    a = alert_rules.gmv_drop_series("stream:s1", s, last, G)
    assert a is not None and a.rule == "gmv_drop" and a.subject == "stream:s1"
    assert a.value == pytest.approx(20.0) and a.threshold == pytest.approx(50.0)
    steady, last = _series(100.0, 95.0)
    assert alert_rules.gmv_drop_series("stream:s1", steady, last, G) is None
    # a rise, a quiet room (baseline under min_baseline_gmv_per_min), a room too young for a rate
    assert alert_rules.gmv_drop_series("stream:s1", *_series(100.0, 300.0), G) is None
    assert alert_rules.gmv_drop_series("stream:s1", *_series(5.0, 0.0), G) is None
    young, last = _series(100.0, 0.0, minutes_before=5)
    assert alert_rules.gmv_drop_series("stream:s1", young, last, G) is None
    assert (
        alert_rules.gmv_drop_series("stream:s1", *_series(100.0, 0.0), G.model_copy(update={"enabled": False})) is None
    )


def test_gmv_drop_is_one_condition_per_window():
    s, last = _series(100.0, 0.0, minutes_after=25)
    w = G.window_min
    ids = {
        alert_rules.gmv_drop_series("stream:s1", s, m, G, first_minute=1000).id for m in range(last - w + 1, last + 1)
    }
    buckets = {m // w for m in range(last - w + 1, last + 1)}
    assert len(ids) == len(buckets) <= 2  # the same bucket twice: the same id (the sink fires it once)


def test_gmv_drop_against_the_host():
    rows = [
        {"stream_id": "a", "host_id": "h1", "gmv": 6000.0, "duration_s": 3600.0, "end": "2026-12-01T20:00:00Z"},
        {"stream_id": "b", "host_id": "h1", "gmv": 6600.0, "duration_s": 3600.0, "end": "2026-12-02T20:00:00Z"},
        {"stream_id": "c", "host_id": "h1", "gmv": 900.0, "duration_s": 3600.0, "end": "2026-12-03T20:00:00Z"},
        {"stream_id": "d", "host_id": "h2", "gmv": 10.0, "duration_s": 3600.0, "end": "2026-12-03T20:00:00Z"},
    ]
    got = alert_rules.gmv_drop_vs_host(rows, G, at="2026-12-03T21:00:00Z")
    assert [a.subject for a in got] == ["stream:c"]  # d: its host has no other stream to compare with
    assert got[0].threshold == pytest.approx(0.5 * (6000 + 6600) / 120) and got[0].value == pytest.approx(15.0)
    assert alert_rules.gmv_drop_vs_host(rows[:2], G, at="x") == []


def test_host_rates_and_the_live_host_comparison():
    rows = [
        {"stream_id": "a", "host_id": "h1", "gmv": 6000.0, "duration_s": 3600.0},
        {"stream_id": "b", "host_id": "h1", "gmv": 3000.0, "duration_s": 1800.0},
        {"stream_id": "c", "host_id": "h1", "gmv": 99999.0, "duration_s": 60.0},  # under min_stream_minutes
        {"stream_id": "d", "host_id": None, "gmv": 10.0, "duration_s": 3600.0},
    ]
    rates = alert_rules.host_rates(rows, G)
    assert rates == {"h1": {"gmv_per_min": pytest.approx(100.0), "streams": 2, "minutes": pytest.approx(90.0)}}
    weak = {1000 + i: 20.0 for i in range(15)}
    a = alert_rules.gmv_drop_vs_host_live(
        "stream:s", weak, 1014, G, first_minute=1000, host_id="h1", host_per_min=100.0
    )
    assert a is not None and a.window == "host-live" and a.value == pytest.approx(20.0) and a.threshold == 50.0
    later = alert_rules.gmv_drop_vs_host_live(
        "stream:s", weak, 1014 + 30, G, first_minute=1000, host_id="h1", host_per_min=100.0
    )
    assert later is not None and later.id == a.id  # once per room, however long it stays weak
    kw = {"first_minute": 1000, "host_id": "h1"}
    assert alert_rules.gmv_drop_vs_host_live("stream:s", weak, 1014, G, host_per_min=30.0, **kw) is None
    assert alert_rules.gmv_drop_vs_host_live("stream:s", weak, 1005, G, host_per_min=100.0, **kw) is None  # young
    assert alert_rules.gmv_drop_vs_host_live("stream:s", weak, 1014, G, host_per_min=5.0, **kw) is None  # quiet host


def test_quarantine_rate():
    q = RULES.quarantine_rate
    run = {"status": "committed", "run_id": "r-1", "rows_in": 1000, "dropped": 80, "dropped_by_reason": {"schema": 80}}
    a = alert_rules.quarantine_rate(run, q, at="2026-12-02T18:00:00Z")
    assert a is not None and a.value == pytest.approx(0.08) and a.threshold == 0.05 and a.window == "run:r-1"
    assert "schema 80" in a.message
    assert alert_rules.quarantine_rate({**run, "dropped": 10}, q, at="t") is None
    assert alert_rules.quarantine_rate({**run, "rows_in": 50, "dropped": 40}, q, at="t") is None  # too few rows
    assert alert_rules.quarantine_rate({"status": "noop"}, q, at="t") is None


def test_dead_letter_depth():
    d = RULES.dead_letter_depth
    got = alert_rules.dead_letter_depth({"dl-inspect": 3, "other": 0}, d, now=7200.5, capped=1000)
    assert [(a.subject, a.value, a.threshold) for a in got] == [("subscription:dl-inspect", 3.0, 0.0)]
    assert alert_rules.dead_letter_depth({"dl-inspect": 0}, d, now=0, capped=1000) == []
    again = alert_rules.dead_letter_depth({"dl-inspect": 5}, d, now=7200.5 + 600, capped=1000)
    assert again[0].id == got[0].id  # the same hour: the same condition


def _meta(v: str, promote: bool, created: str) -> dict:
    return {"version": v, "created_at": created, "decision": {"promote": promote, "reason": "below tolerance"}}


def test_model_not_promoted_streak():
    m = RULES.model_not_promoted
    metas = [_meta("v1", True, "2026-12-01T01:00:00+00:00")]
    metas += [_meta(f"v{i}", False, f"2026-12-01T0{i}:00:00+00:00") for i in range(2, 5)]
    a = alert_rules.model_not_promoted(metas, {"version": "v1"}, m)
    assert a is not None and a.value == 3 and a.threshold == 3 and a.details["versions"] == ["v4", "v3", "v2"]
    assert alert_rules.model_not_promoted(metas[:3], {"version": "v1"}, m) is None  # 2 < 3
    assert alert_rules.model_not_promoted(metas, {"version": "v4"}, m) is None  # the newest serves
    assert alert_rules.model_not_promoted([], None, m) is None
    assert alert_rules.model_not_promoted(metas[1:], None, m).details["served"] is None  # never promoted


# ------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    "doc, words",
    [
        ({"gmv_dropp": {}}, ["unknown rule 'gmv_dropp'"]),
        ({"gmv_drop": {"drop_beloww": 0.3}}, ["gmv_drop.drop_beloww", "Extra inputs"]),
        ({"gmv_drop": {"drop_below": 1.5}}, ["gmv_drop.drop_below", "less than 1"]),
        ({"gmv_drop": {"window_min": 30, "baseline_min": 10}}, ["baseline_min (10) is shorter than window_min (30)"]),
        ({"quarantine_rate": {"max_rate": "lots"}}, ["quarantine_rate.max_rate", "valid number"]),
        ({"dead_letter_depth": {"subscriptions": []}}, ["dead_letter_depth.subscriptions"]),
        ({"model_not_promoted": 3}, ["model_not_promoted: expected an object"]),
    ],
)
def test_bad_rules_are_refused_with_a_clear_message(doc, words):
    with pytest.raises(RulesError) as exc:
        parse_rules(doc)
    for w in words:
        assert w in str(exc.value)
    with pytest.raises(SettingsError) as exc2:
        load({"DAIHUO_ALERT_RULES": orjson.dumps(doc).decode()})
    assert "DAIHUO_ALERT_RULES" in str(exc2.value) and words[0] in str(exc2.value)


def test_rules_settings_defaults_and_overrides():
    assert load({}).alerts == AlertRules()
    s = load({"DAIHUO_ALERT_RULES": '{"gmv_drop": {"drop_below": 0.3}, "dead_letter_depth": {"enabled": false}}'})
    assert s.alerts.gmv_drop.drop_below == 0.3 and s.alerts.gmv_drop.window_min == G.window_min
    assert s.alerts.dead_letter_depth.enabled is False
    for bad in ("not json", "[1, 2]"):
        with pytest.raises(SettingsError, match="DAIHUO_ALERT_RULES"):
            load({"DAIHUO_ALERT_RULES": bad})


# ------------------------------------------------------------------------------ the sink (Pub/Sub)
@pytest.fixture(scope="module")
def bus(pubsub_emulator):
    b = Bus()
    yield b
    b.close()


@pytest.fixture
def topic(bus):
    """A fresh alerts topic and a pull subscription on it (as topology.json's alerts-inspect)."""
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    bus.ensure_topic(name)
    bus.ensure_subscription(f"{name}-inspect", name)
    return name


def _drain(bus, sub: str, wait_s: float = 3.0) -> list:
    out, deadline = [], time.monotonic() + wait_s
    while time.monotonic() < deadline:
        msgs = bus.pull(sub, max_messages=100, timeout_s=1.0)
        if msgs:
            bus.ack(sub, [m.ack_id for m in msgs])
            out += msgs
        elif out:
            break
    return out


def _alert(**kw) -> Alert:
    base = dict(
        rule="quarantine_rate",
        subject="clean",
        value=0.2,
        threshold=0.05,
        time="2026-12-02T18:00:00Z",
        window="run:r-x",
        message="m",
    )
    return Alert(**{**base, **kw})


def test_an_alert_is_published_once_and_shown_on_the_dashboard(bus, topic, tmp_path):
    store = open_store(str(tmp_path))
    when = alert_rules.iso(time.time() - 60)
    sink = alerts.AlertSink(store, bus, topic)
    a = _alert(time=when)
    assert sink.fire(a) == "published"
    assert sink.fire(a) == "duplicate"  # the same condition evaluated again
    assert alerts.AlertSink(store, bus, topic).fire(a) == "duplicate"  # another instance
    msgs = _drain(bus, f"{topic}-inspect")
    assert len(msgs) == 1
    doc = orjson.loads(msgs[0].data)
    assert {k: doc[k] for k in ("rule", "subject", "value", "threshold", "time")} == {
        "rule": "quarantine_rate",
        "subject": "clean",
        "value": 0.2,
        "threshold": 0.05,
        "time": when,
    }
    assert doc["id"] == a.id and doc["source"] == "clean" and doc["message"] == "m"
    assert msgs[0].attributes == {"alert_id": a.id, "rule": "quarantine_rate", "subject": "clean"}
    assert store.exists(layout.alert_key(when[:10], a.id)) and store.exists(layout.alert_sent_key(a.id))
    ans = App(lambda: store, check_every_s=0).handle("GET", "/api/alerts")
    assert ans.status == 200 and ans.headers["Cache-Control"] == "no-store"
    body = orjson.loads(ans.body)
    assert body["rules"] == list(alert_rules.RULE_NAMES)
    assert [x["id"] for x in body["alerts"]] == [a.id] and body["alerts"][0]["published"] is True
    assert body["alerts"][0]["value"] == 0.2 and body["alerts"][0]["time"] == when


def test_a_crash_between_claim_and_publish_is_published_by_the_next_evaluation(bus, topic, tmp_path):
    store = open_store(str(tmp_path))
    a = _alert(window="run:r-crash")
    clock = [1_000_000.0]
    # the claim was written, then the process died before publishing (no sent marker)
    alerts.AlertSink(store, None, topic, clock=lambda: clock[0]).fire(a)
    sink = alerts.AlertSink(store, bus, topic, lease_s=60, clock=lambda: clock[0])
    clock[0] += 10
    assert sink.fire(a) == "duplicate"  # within the lease: maybe still publishing elsewhere
    clock[0] += 100
    assert sink.fire(a) == "republished"
    assert sink.fire(a) == "duplicate"
    assert len(_drain(bus, f"{topic}-inspect")) == 1


def test_dashboard_alerts_routes(tmp_path):
    store = open_store(str(tmp_path))
    now = time.time()
    sink = alerts.AlertSink(store, None)
    t = alert_rules.iso(now - 60)
    sink.fire(_alert(time=t, window="run:1"))
    sink.fire(_alert(rule="gmv_drop", subject="stream:s-1", time=alert_rules.iso(now - 30), window="own:1"))
    app = App(lambda: store, check_every_s=0)
    body = orjson.loads(app.handle("GET", "/api/alerts").body)
    assert [x["rule"] for x in body["alerts"]] == ["gmv_drop", "quarantine_rate"]  # newest first
    assert body["alerts"][0]["published"] is False  # recorded without a bus
    only = orjson.loads(app.handle("GET", "/api/alerts", {"rule": "quarantine_rate"}).body)
    assert [x["rule"] for x in only["alerts"]] == ["quarantine_rate"]
    assert len(orjson.loads(app.handle("GET", "/api/alerts", {"limit": "1"}).body)["alerts"]) == 1
    for args, param in (
        ({"rule": "nope"}, "rule"),
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"z": "1"}, "z"),
    ):
        ans = app.handle("GET", "/api/alerts", args)
        assert ans.status == 400 and orjson.loads(ans.payload)["parameter"] == param, args
    page = app.handle("GET", "/alerts")
    html = page.body.decode()
    assert page.status == 200 and "告警 Alerts" in html and 'href="/streams/s-1"' in html and "stream:s-1" in html
    assert app.handle("GET", "/alerts", {"rule": "nope"}).status == 400
    assert (
        "没有告警"
        in App(lambda: open_store(str(tmp_path / "empty")), check_every_s=0).handle("GET", "/alerts").body.decode()
    )


# ------------------------------------------------------------------------------ batch rules on real runs
def _raw(store, key: str, rows: list[bytes]) -> None:
    store.put(key, gzip.compress(b"\n".join(rows) + b"\n", mtime=0), content_type="application/gzip")


def _ev(type_: str, ts: str, **kw) -> bytes:
    return orjson.dumps({**event(type_, ts=ts, **kw), "received_at": ts})


def test_after_clean_fires_on_a_quarantine_spike_not_on_a_normal_run(bus, topic, tmp_path):
    from shared.pipeline.clean import CleanConfig, run_clean

    store = open_store(str(tmp_path))
    cfg = CleanConfig(threads=2, memory_limit="512MB")
    rules = parse_rules({"dead_letter_depth": {"enabled": False}, "model_not_promoted": {"enabled": False}})
    ts = "2026-12-02T10:00:00.000Z"
    _raw(
        store,
        "raw/date=2026-12-02/hour=10/a.ndjson.gz",
        [_ev("like", ts, user_id=f"u{i}") for i in range(200)] + [b"{oops"] * 2,
    )
    normal = run_clean(store, None, cfg)
    assert normal["status"] == "committed" and normal["dropped"] == 2
    assert batch_alerts.evaluate_batch(store, bus, normal, rules) == []
    _raw(
        store,
        "raw/date=2026-12-02/hour=11/b.ndjson.gz",
        [_ev("like", ts, user_id=f"v{i}") for i in range(150)] + [b"{oops"] * 50,
    )
    spike = run_clean(store, None, cfg)
    sink_topic = alerts.AlertSink(store, bus, topic)
    fired = sink_topic.fire_all(batch_alerts.evaluate_batch(store, bus, spike, rules))
    assert list(fired.values()) == ["published"]
    (msg,) = _drain(bus, f"{topic}-inspect")
    doc = orjson.loads(msg.data)
    assert doc["rule"] == "quarantine_rate" and doc["value"] == pytest.approx(50 / 200) and doc["threshold"] == 0.05
    assert doc["window"] == f"run:{spike['run_id']}"
    # the same run judged again (a retried tick): nothing more
    assert set(sink_topic.fire_all(batch_alerts.evaluate_batch(store, bus, spike, rules)).values()) == {"duplicate"}


def test_dead_letters_are_counted_without_being_consumed(bus, topic, tmp_path):
    dl = f"dl-{uuid.uuid4().hex[:8]}"
    bus.ensure_topic(dl)
    bus.ensure_subscription(f"{dl}-inspect", dl)
    rules = parse_rules(
        {
            "dead_letter_depth": {"subscriptions": [f"{dl}-inspect"]},
            "model_not_promoted": {"enabled": False},
            "gmv_drop": {"enabled": False},
        }
    )
    store = open_store(str(tmp_path))
    assert batch_alerts.evaluate_batch(store, bus, {"status": "noop"}, rules) == []  # none waiting: quiet
    for i in range(3):
        bus.publish(dl, f"dead {i}".encode())
    # counted by pulling and giving back (ack deadline 0): after the subscription's retry back-off
    # (1 s here) every message is there again, for the next count and for an operator
    sub = f"{dl}-inspect"
    for _ in range(2):
        assert wait_for(lambda: batch_alerts.dead_letter_depths(bus, [sub]) == {sub: 3}, timeout=20, interval=1.5)
    got = wait_for(lambda: batch_alerts.evaluate_batch(store, bus, {"status": "noop"}, rules), timeout=20, interval=1.5)
    assert [(a.rule, a.subject, a.value) for a in got] == [("dead_letter_depth", f"subscription:{sub}", 3.0)]
    out = wait_for(
        lambda: batch_alerts.after_clean(store, bus, {"status": "noop"}, rules, topic=topic)["fired"],
        timeout=20,
        interval=1.5,
    )
    assert out == {got[0].id: "published"}
    again = wait_for(
        lambda: batch_alerts.after_clean(store, bus, {"status": "noop"}, rules, topic=topic)["fired"],
        timeout=20,
        interval=1.5,
    )
    assert again == {got[0].id: "duplicate"}  # the same hour: one alert
    seen: set[bytes] = set()  # an operator still finds every dead letter (they come back after the back-off)
    assert wait_for(lambda: len(seen.update(m.data for m in _drain(bus, sub, 2.0)) or seen) == 3, timeout=20)


def test_model_rule_reads_the_registry(tmp_path):
    store = open_store(str(tmp_path))
    rule = parse_rules({"model_not_promoted": {"runs": 2}})
    assert alerts.model_alert(store, rule) is None  # no model yet
    metas = [_meta("20261201T010000Z-a", True, "2026-12-01T01:00:00+00:00")]
    metas += [_meta(f"20261201T0{i}0000Z-b", False, f"2026-12-01T0{i}:00:00+00:00") for i in (2, 3)]
    for m in metas[:2]:
        store.put(layout.model_meta_key(m["version"]), orjson.dumps(m))
    store.put(layout.LATEST, orjson.dumps({"version": metas[0]["version"]}))
    assert alerts.model_alert(store, rule) is None  # one run not promoted
    store.put(layout.model_meta_key(metas[2]["version"]), orjson.dumps(metas[2]))
    a = alerts.model_alert(store, rule)
    assert a is not None and a.value == 2 and a.time == "2026-12-01T03:00:00+00:00"


def test_host_gmv_drop_after_a_real_clean_run(tmp_path):
    """Three streams of one host, cleaned: the one selling far below the host's other two fires."""
    from shared.pipeline.clean import CleanConfig, run_clean

    store = open_store(str(tmp_path))
    rows = []
    for sid, day, price in (("s-a", "2026-11-28", 100.0), ("s-b", "2026-11-29", 110.0), ("s-c", "2026-11-30", 10.0)):
        t0 = f"{day}T20:00:00.000Z"
        rows.append(orjson.dumps({**host_event("stream_start", stream_id=sid, ts=t0, host_id="h1"), "received_at": t0}))
        for m in range(60):
            ts = f"{day}T20:{m:02d}:30.000Z"
            rows.append(_ev("purchase", ts, stream_id=sid, user_id=f"u{m}", price=price))
        t1 = f"{day}T21:00:00.000Z"
        rows.append(orjson.dumps({**host_event("stream_end", stream_id=sid, ts=t1, host_id="h1"), "received_at": t1}))
    _raw(store, "raw/date=2026-11-30/hour=20/a.ndjson.gz", rows)
    summary = run_clean(store, None, CleanConfig(threads=2, memory_limit="512MB"))
    assert summary["status"] == "committed" and summary["dropped"] == 0, summary
    got = batch_alerts.host_gmv_alerts(store, summary, RULES, time.time())
    assert [a.subject for a in got] == ["stream:s-c"]
    assert got[0].details["host_id"] == "h1" and got[0].value < got[0].threshold
    # the hosts' typical rates for the live rule
    doc = orjson.loads(store.get(layout.HOST_RATES))
    assert doc["hosts"]["h1"]["streams"] == 3
    from shared.pipeline.clean import read_analytics

    st = read_analytics(store, "stream").to_pylist()
    expect = sum(r["gmv"] for r in st) / sum(r["duration_s"] / 60 for r in st)
    assert sum(r["gmv"] for r in st) == pytest.approx(6000 + 6600 + 600)
    assert doc["hosts"]["h1"]["gmv_per_min"] == pytest.approx(expect)


# ------------------------------------------------------------------------------ live rule on Bigtable
@pytest.fixture
def room(bigtable_emulator):
    from shared.live import schema
    from shared.live.apply import LiveWriter
    from shared.live.reader import LiveReader
    from tests.live_helpers import fresh_config

    cfg = fresh_config()
    table = schema.open_table(cfg)
    yield LiveWriter(table, cfg), LiveReader(table, cfg)
    schema.drop_table(cfg)


def _evening(writer, stream: str, now: float, *, drop: bool, minutes: int = 45, end: bool = False) -> None:
    from tests.live_helpers import ev, ndjson

    t0 = (int(now // 60) - minutes) * 60
    evs = [ev("stream_start", stream, t0, title="今晚", host_id="h1")]
    for m in range(minutes):
        t = t0 + m * 60 + 5
        evs.append(ev("stream_enter", stream, t, user=f"u{m}"))
        if not (drop and m >= minutes - 10):
            evs.append(ev("purchase", stream, t + 1, user=f"u{m}", item="i1", price=100.0))
    if end:
        evs.append(ev("stream_end", stream, t0 + minutes * 60 - 10))
    writer.apply_message(ndjson(evs))


def test_live_gmv_drop_fires_once_on_a_real_room(room, bus, topic, tmp_path):
    writer, reader = room
    now = time.time()
    _evening(writer, "s-drop", now, drop=True)
    _evening(writer, "s-steady", now, drop=False)
    _evening(writer, "s-ended", now, drop=True, end=True)
    store = open_store(str(tmp_path))
    sink = alerts.AlertSink(store, bus, topic)
    live = alerts.LiveAlerts(reader, sink, RULES, every_s=60, clock=lambda: now)
    assert live.evaluate("s-steady") is None and live.evaluate("s-ended") is None
    assert live.evaluate("s-unknown") is None
    assert live.check(["s-drop", "s-steady", "s-ended"]) == {"s-drop": "published"}
    assert live.check(["s-drop"]) == {}  # rate-limited: not read again within every_s
    # a redelivered message on another instance (no rate limit): the same window, the same alert
    other = alerts.LiveAlerts(reader, alerts.AlertSink(store, bus, topic), RULES, every_s=0, clock=lambda: now)
    assert other.check(["s-drop"]) == {"s-drop": "duplicate"}
    (msg,) = _drain(bus, f"{topic}-inspect")
    doc = orjson.loads(msg.data)
    assert doc["rule"] == "gmv_drop" and doc["subject"] == "stream:s-drop" and doc["source"] == "live"
    assert doc["value"] < doc["threshold"] and doc["details"]["baseline_per_min"] == pytest.approx(100.0)
    assert [d["subject"] for d in alerts.recent(store, now=now)] == ["stream:s-drop"]


def test_the_live_function_publishes_a_gmv_drop_once_however_often_pushed(
    bigtable_emulator, pubsub_emulator, bus, topic, tmp_path
):
    """functions/live over HTTP (Pub/Sub push envelopes): the room's evening, then the same message
    pushed again and a later message of the room: one alert on the topic, on the dashboard's API."""
    from devtools import emulators
    from shared.live import schema
    from tests.live_helpers import ev, fresh_config, ndjson
    from tests.test_live_function import LOGS, _live_env, _push

    cfg = fresh_config()
    env = {
        **_live_env(cfg, tmp_path, bigtable_emulator.host),
        **pubsub_emulator.env,
        "DAIHUO_ALERTS_TOPIC": topic,
        "DAIHUO_ALERT_LIVE_CHECK_S": "0",  # judge the room at every message: the dedupe is the store's
    }
    fn = emulators.start_function("live", "live", signature_type="cloudevent", env=env, log_dir=LOGS)
    try:
        now = time.time()
        t0 = (int(now // 60) - 45) * 60
        evs = [ev("stream_start", "s-fn", t0, title="今晚", host_id="h1")]
        for m in range(45):
            evs.append(ev("stream_enter", "s-fn", t0 + m * 60 + 5, user=f"u{m}"))
            if m < 35:
                evs.append(ev("purchase", "s-fn", t0 + m * 60 + 6, user=f"u{m}", item="i1", price=100.0))
        body = ndjson(evs)
        assert _push(fn.host, body, {"stream_id": "s-fn"}, message_id="m-1") == 200
        assert _push(fn.host, body, {"stream_id": "s-fn"}, message_id="m-1") == 200  # redelivered
        later = ndjson([ev("like", "s-fn", now - 1, user="u1", count=1)])
        assert _push(fn.host, later, {"stream_id": "s-fn"}) == 200
        msgs = _drain(bus, f"{topic}-inspect", 5.0)
        assert len(msgs) == 1, [m.data for m in msgs]
        doc = orjson.loads(msgs[0].data)
        assert (doc["rule"], doc["subject"], doc["source"]) == ("gmv_drop", "stream:s-fn", "live")
        body = orjson.loads(App(lambda: open_store(str(tmp_path)), check_every_s=0).handle("GET", "/api/alerts").body)
        assert [(a["id"], a["published"]) for a in body["alerts"]] == [(doc["id"], True)]
    finally:
        fn.stop()
        schema.drop_table(cfg)


def test_bad_inputs_have_defined_outcomes(bigtable_emulator, tmp_path):
    """A room that cannot be read: nothing fires, nothing raises, it is judged again when due; an
    unreadable alert object is left out of the listing; a publish to a missing topic is 'failed'."""
    from shared.live.config import LiveConfig
    from shared.live.reader import LiveReader

    store = open_store(str(tmp_path))
    reader = LiveReader(cfg=LiveConfig(table=f"missing-{uuid.uuid4().hex[:6]}"), timeout_s=2.0)
    clock = [time.time()]
    live = alerts.LiveAlerts(reader, alerts.AlertSink(store, None), RULES, every_s=60, clock=lambda: clock[0])
    assert live.check(["s-1"]) == {}
    assert not live._due("s-1", clock[0] + 1)  # a failing room is not read at every message...
    assert live._due("s-1", clock[0] + 61)  # ...but again when due
    store.put(layout.alert_key(alert_rules.iso(time.time())[:10], "broken"), b"{not json")
    alerts.AlertSink(store, None).fire(_alert(time=alert_rules.iso(time.time() - 5)))
    assert [d["rule"] for d in alerts.recent(store)] == ["quarantine_rate"]
    assert App(lambda: store, check_every_s=0).handle("GET", "/api/alerts").status == 200


def test_a_publish_that_fails_is_reported_and_retried_after_the_lease(bus, tmp_path):
    store = open_store(str(tmp_path))
    clock = [2_000_000.0]
    missing = f"missing-{uuid.uuid4().hex[:6]}"
    a = _alert(window="run:r-fail")
    sink = alerts.AlertSink(store, Bus(publish_timeout_s=2.0), missing, lease_s=60, clock=lambda: clock[0])
    assert sink.fire_all([a]) == {a.id: "failed"}
    assert not store.exists(layout.alert_sent_key(a.id))
    bus.ensure_topic(missing)
    bus.ensure_subscription(f"{missing}-inspect", missing)
    clock[0] += 61
    assert sink.fire(a) == "republished" and store.exists(layout.alert_sent_key(a.id))
    assert len(_drain(bus, f"{missing}-inspect")) == 1


def test_after_train_and_after_clean_fire_the_model_rule_once(bus, topic, tmp_path):
    store = open_store(str(tmp_path))
    rules = parse_rules(
        {"model_not_promoted": {"runs": 2}, "dead_letter_depth": {"enabled": False}, "gmv_drop": {"enabled": False}}
    )
    metas = [_meta("20261201T010000Z-a", True, "2026-12-01T01:00:00+00:00")]
    metas += [_meta(f"20261201T0{i}0000Z-b", False, f"2026-12-01T0{i}:00:00+00:00") for i in (2, 3)]
    for m in metas:
        store.put(layout.model_meta_key(m["version"]), orjson.dumps(m))
    store.put(layout.LATEST, orjson.dumps({"version": metas[0]["version"]}))
    assert list(alerts.after_train(store, bus, rules, topic=topic).values()) == ["published"]
    assert list(batch_alerts.after_clean(store, bus, {"status": "noop"}, rules, topic=topic)["fired"].values()) == [
        "duplicate"
    ]
    (msg,) = _drain(bus, f"{topic}-inspect")
    assert orjson.loads(msg.data)["rule"] == "model_not_promoted" and msg.attributes["subject"] == "model"


def test_live_room_below_its_host_fires_once(room, tmp_path):
    """A room selling steadily (no drop of its own) at a fifth of its host's typical rate."""
    writer, reader = room
    now = time.time()
    store = open_store(str(tmp_path))
    store.put(layout.HOST_RATES, orjson.dumps({"hosts": {"h1": {"gmv_per_min": 500.0, "streams": 4}}}))
    _evening(writer, "s-weak", now, drop=False)  # 100 per minute, host h1
    live = alerts.LiveAlerts(reader, alerts.AlertSink(store, None), RULES, every_s=0, clock=lambda: now)
    a = live.evaluate("s-weak")
    assert a is not None and a.details["compare"] == "host" and a.value == pytest.approx(100.0)
    assert a.threshold == pytest.approx(250.0)
    assert live.check(["s-weak"]) == {"s-weak": "recorded"}
    assert live.check(["s-weak"]) == {"s-weak": "duplicate"}
    store.put(layout.HOST_RATES, orjson.dumps({"hosts": {"h1": {"gmv_per_min": 150.0}}}))
    live._rates = None  # the next read of the rates (every RATES_TTL_S)
    assert live.evaluate("s-weak") is None  # 100 >= 50 % of 150
    store.delete(layout.HOST_RATES)
    live._rates = None
    assert live.evaluate("s-weak") is None  # no batch data: nothing to compare with
