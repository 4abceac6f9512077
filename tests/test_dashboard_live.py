"""The live dashboard's JSON and pages (shared/dashboard/live.py, app.py) against Google's Bigtable
emulator: the numbers are the live writer's, they move when events arrive, titles and hosts are
there, Bigtable down is a 200 that says so (never a 5xx), an unknown room a 404, and the pages show
times in the configured zone."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from shared.adapters.storage import LocalStore
from shared.dashboard.app import App
from shared.dashboard.auth import CSP
from shared.live import schema
from shared.live.apply import LiveWriter
from shared.live.config import LiveConfig
from shared.live.reader import LiveReader
from tests.live_helpers import ev, fresh_config, ndjson

NOW = time.time()


@pytest.fixture
def room(bigtable_emulator, tmp_path):
    cfg = fresh_config()
    table = schema.open_table(cfg)
    writer = LiveWriter(table, cfg)
    app = App(lambda: LocalStore(str(tmp_path)), live_reader=lambda: LiveReader(table, cfg), live_cache_s=0)
    yield cfg, writer, app
    schema.drop_table(cfg)


def _start(writer, stream="s1", t0=NOW - 240):
    writer.apply_message(
        ndjson(
            [
                ev("stream_start", stream, t0, title="双十二好物节", host_id="h1", host_name="小美"),
                ev("slot_start", stream, t0 + 10, slot_id="sl1", item_id="i1", price=59.0),
                ev("showcase_update", stream, t0 + 20, item_id="i9", change="sold_out"),
            ]
        )
    )
    viewers = [ev("stream_enter", stream, t0 + 30 + i, user=f"u{i}") for i in range(8)]
    viewers += [ev("stream_leave", stream, t0 + 60, user="u7")]
    viewers += [ev("product_impression", stream, t0 + 70, user=f"u{i}", item="i1") for i in range(8)]
    viewers += [ev("purchase", stream, t0 + 80, user="u1", item="i1", price=59.0, quantity=2)]
    writer.apply_message(ndjson(viewers))


def _get(app, path, **args):
    ans = app.handle("GET", path, args)
    return ans, ans.json if ans.content_type and "json" in ans.content_type else ans.payload.decode()


def test_room_json_is_the_live_numbers_and_moves(room):
    cfg, writer, app = room
    _start(writer)
    ans, doc = _get(app, "/api/live/s1")
    assert ans.status == 200 and ans.headers["Cache-Control"] == "no-store" and "ETag" not in ans.headers
    assert doc["available"] is True and doc["on_air"] is True
    assert doc["info"]["title"] == "双十二好物节" and doc["info"]["host_name"] == "小美"
    t = doc["tiles"]
    assert (t["viewers_now"], t["entries"], t["orders"], t["units"], t["impressions"]) == (7, 8, 1, 2, 8)
    assert t["gmv"] == pytest.approx(118.0) and t["conversion"] == pytest.approx(1 / 8)
    assert sum(m["orders"] for m in doc["minutes"]) == 1 and doc["minutes"][-1]["viewers"] == 7
    assert doc["on_stage"]["item_id"] == "i1" and doc["on_stage"]["sales"] == {"orders": 1, "units": 2, "gmv": 118.0}
    assert [x["item_id"] for x in doc["trending"]] == ["i1"] and doc["trending"][0]["orders"] == 1
    assert doc["sold_out"] == [{"item_id": "i9", "title": None}]
    # what the reader says, unchanged
    r = LiveReader(schema.open_table(cfg), cfg).room("s1")
    assert t["gmv"] == pytest.approx(r.totals["gmv"]) and t["entries"] == r.totals["entries"]

    more = [ev("stream_enter", "s1", NOW - 20, user=f"w{i}") for i in range(3)]
    more += [ev("purchase", "s1", NOW - 10, user="w1", item="i1", price=59.0)]
    more += [ev("purchase", "s1", NOW - 5, user="w2", item="i2", price=10.5, quantity=3)]
    writer.apply_message(ndjson(more))
    _, doc2 = _get(app, "/api/live/s1")
    t2 = doc2["tiles"]
    assert (t2["viewers_now"], t2["entries"], t2["orders"], t2["units"]) == (10, 11, 3, 6)
    assert t2["gmv"] == pytest.approx(118.0 + 59.0 + 31.5)
    assert doc2["on_stage"]["sales"]["orders"] == 2  # i2 was not on stage
    # redelivery of the same message changes nothing
    writer.apply_message(ndjson(more))
    assert _get(app, "/api/live/s1")[1]["tiles"] == t2


def test_streams_list_and_pages(room):
    cfg, writer, app = room
    _start(writer, "s1")
    _start(writer, "s2", NOW - 600)
    writer.apply_message(ndjson([ev("stream_end", "s2", NOW - 30, host_id="h1")]))
    ans, doc = _get(app, "/api/live")
    assert ans.status == 200 and ans.headers["Cache-Control"] == "no-store"
    assert [(s["stream_id"], s["on_air"]) for s in doc["streams"]] == [("s1", True), ("s2", False)]
    assert doc["streams"][0]["host_name"] == "小美"
    ans, html = _get(app, "/live")
    assert ans.status == 200 and "双十二好物节" in html and 'href="/live/s1"' in html and "小美" in html
    ans, html = _get(app, "/live/s1")
    assert ans.status == 200 and ans.headers["Cache-Control"] == "no-store"
    assert '<script src="/assets/live.js" defer></script>' in html and "<script>" not in html
    assert 'id="tile-orders">1<' in html and 'id="tile-gmv">¥118.00<' in html and "小美" in html
    assert 'data-api="/api/live/s1"' in html and 'data-tz="Asia/Shanghai"' in html


def test_unknown_room_is_404_and_bad_requests(room):
    cfg, writer, app = room
    ans, doc = _get(app, "/api/live/nobody")
    assert ans.status == 404 and doc["error"] == "unknown_stream" and doc["stream_id"] == "nobody"
    ans, html = _get(app, "/live/nobody")
    assert ans.status == 404 and "nobody" in html
    assert app.handle("GET", "/api/live/s1", {"x": "1"}).status == 400
    assert app.handle("POST", "/api/live/s1").status == 405


def test_bigtable_down_is_a_200_that_says_so(bigtable_emulator, tmp_path):
    """A table that is gone (and a Bigtable nobody listens on) -> available: false, no-store, a page
    with the banner; the next read after recovery answers again (the failure is not cached)."""
    cfg = fresh_config()
    table = schema.open_table(cfg)
    LiveWriter(table, cfg).apply_message(ndjson([ev("stream_enter", "s1", NOW - 5)]))
    app = App(lambda: LocalStore(str(tmp_path)), live_reader=lambda: LiveReader(table, cfg), live_cache_s=0)
    assert _get(app, "/api/live/s1")[1]["tiles"]["entries"] == 1
    schema.drop_table(cfg)
    ans, doc = _get(app, "/api/live/s1")
    assert ans.status == 200 and doc["available"] is False and "Bigtable" in doc["message"]
    assert ans.headers["Cache-Control"] == "no-store"
    ans, html = _get(app, "/live/s1")
    assert ans.status == 200 and 'data-state="unavailable"' in html and "live data unavailable" in html
    ans, doc = _get(app, "/api/live")
    assert ans.status == 200 and doc["available"] is False and doc["streams"] == []
    schema.ensure_table(cfg)
    LiveWriter(table, cfg).apply_message(ndjson([ev("stream_enter", "s1", NOW - 4, user="u2")]))
    assert _get(app, "/api/live/s1")[1]["tiles"]["entries"] == 1  # the dropped table's counts are gone

    dead = LiveConfig(table=cfg.table, read_timeout_s=0.5)
    t0 = time.monotonic()
    import os

    old = os.environ["BIGTABLE_EMULATOR_HOST"]
    os.environ["BIGTABLE_EMULATOR_HOST"] = "127.0.0.1:9"  # nothing listens there
    try:
        app2 = App(lambda: LocalStore(str(tmp_path)), live_reader=lambda: LiveReader(cfg=dead), live_cache_s=0)
        ans, doc = _get(app2, "/api/live/s1")
    finally:
        os.environ["BIGTABLE_EMULATOR_HOST"] = old
    assert ans.status == 200 and doc["available"] is False
    assert time.monotonic() - t0 < 10
    schema.drop_table(cfg)


def test_static_script_and_csp(room):
    cfg, writer, app = room
    ans = app.handle("GET", "/assets/live.js")
    assert ans.status == 200 and ans.content_type.startswith("text/javascript")
    assert b"fetch(api" in ans.payload and b"innerHTML" not in ans.payload
    assert "script-src 'self'" in CSP and "connect-src 'self'" in CSP and "unsafe-eval" not in CSP
    assert "script-src 'self' 'unsafe-inline'" not in CSP


def test_times_in_the_configured_zone(room, monkeypatch):
    from shared.dashboard import pages

    cfg, writer, app = room
    _start(writer, "s1", t0=pd.Timestamp("2026-12-02T04:00:00Z").timestamp())
    assert pages.local_time("2026-12-02T04:00:00Z") == "2026-12-02 12:00"
    html = _get(app, "/live")[1]
    assert "2026-12-02 12:00" in html and "Asia/Shanghai (UTC+08:00)" in html
    monkeypatch.setenv("DAIHUO_DASHBOARD_TZ", "Europe/Berlin")
    assert pages.local_time("2026-12-02T04:00:00Z") == "2026-12-02 05:00"
    html = _get(app, "/live")[1]
    assert "2026-12-02 05:00" in html and "Europe/Berlin (UTC+01:00)" in html
    monkeypatch.setenv("DAIHUO_DASHBOARD_TZ", "Mars/Olympus")
    from shared.settings import settings

    with pytest.raises(Exception, match="DAIHUO_DASHBOARD_TZ|dashboard_tz|unknown time zone"):
        settings()


def test_quiet_minutes_are_points_of_the_charts():
    from shared.dashboard.live import _every_minute

    rows = [
        {"minute": "2026-12-02T04:00:00.000Z", "viewers": 3, "gmv": 1.5, "orders": 1},
        {"minute": "2026-12-02T04:03:00.000Z", "viewers": 5, "gmv": 0.0, "orders": 0},
    ]
    out = _every_minute(rows)
    assert [m["minute"][11:16] for m in out] == ["04:00", "04:01", "04:02", "04:03"]
    assert [m["viewers"] for m in out] == [3, 3, 3, 5] and [m["orders"] for m in out] == [1, 0, 0, 0]
