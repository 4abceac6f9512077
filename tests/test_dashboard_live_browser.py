"""The live page in a real browser (headless Chromium through Playwright, as tests/test_dashboard_browser.py):
the analytics function under functions-framework reads a room of Google's Bigtable emulator; the test
writes events through the live writer, waits for the page's next poll and reads the tiles again: the
numbers on the page change to exactly the new totals, the charts redraw, the slot on stage counts its
sales, titles (the stream's, the host's, the catalog's Chinese item titles) are on the page, no CSP
violation or console error happens. Then the table disappears (Bigtable "down"): the page says so and
keeps the last numbers. Every wait is bounded (a few poll periods)."""

from __future__ import annotations

import time

import pytest

from devtools import emulators
from shared.live import schema
from shared.live.apply import LiveWriter
from tests.data_fixtures import build_pipeline_store
from tests.live_helpers import ev, fresh_config, ndjson
from tests.test_dashboard_browser import IMG, LOGS, OPERATOR, browser, open_page  # noqa: F401 (fixture)

POLL_S = 1.0
WAIT_MS = 15_000  # a few polls, with the machine busy


@pytest.fixture(scope="module")
def live_served(tmp_path_factory, bigtable_emulator):
    built = build_pipeline_store(tmp_path_factory.mktemp("live-store"), seed=7, n_streams=2, runs=1, host_events=True)
    cfg = fresh_config()
    LOGS.mkdir(parents=True, exist_ok=True)
    fn = emulators.start_function(
        "analytics",
        env={
            "DAIHUO_STORE": built.url,
            "DAIHUO_OPERATOR_TOKENS": OPERATOR,
            "DAIHUO_LIVE_TABLE": cfg.table,
            "DAIHUO_DASHBOARD_LIVE_POLL_S": str(POLL_S),
            **bigtable_emulator.env,
        },
        log_dir=LOGS,
        timeout=60,
    )
    yield built, cfg, f"http://{fn.host}"
    fn.stop()
    schema.drop_table(cfg)


def _tile(page, name: str) -> str:
    return page.inner_text(f"#tile-{name}")


def _wait_tile(page, name: str, want: str) -> None:
    page.wait_for_function(
        "([id, want]) => document.getElementById(id).textContent === want", arg=[f"tile-{name}", want], timeout=WAIT_MS
    )


def test_live_page_numbers_move_as_events_arrive(live_served, browser):  # noqa: F811
    built, cfg, base = live_served
    writer = LiveWriter(schema.open_table(cfg), cfg)
    items = [i for i in built.sim.catalog if any("\u4e00" <= ch <= "\u9fff" for ch in i["title"])]
    star, other, gone = items[0], items[1], items[2]
    now = time.time()
    sid = "live-s1"
    writer.apply_message(
        ndjson(
            [
                ev("stream_start", sid, now - 300, title="双十二直播专场", host_id="h7", host_name="李佳"),
                ev("slot_start", sid, now - 240, slot_id="sl1", item_id=star["item_id"], price=49.9),
                ev("showcase_update", sid, now - 200, item_id=gone["item_id"], change="sold_out"),
            ]
        )
    )
    first = [ev("stream_enter", sid, now - 180 + i, user=f"u{i}") for i in range(12)]
    first += [ev("product_impression", sid, now - 150, user=f"u{i}", item=star["item_id"]) for i in range(10)]
    first += [ev("purchase", sid, now - 120, user="u1", item=star["item_id"], price=49.9, quantity=2)]
    writer.apply_message(ndjson(first))

    ctx, page, problems = open_page(browser, f"{base}/live/{sid}")
    try:
        assert "双十二直播专场" in page.inner_text("h1") and "李佳" in page.inner_text("#live-meta")
        page.wait_for_function("() => +document.getElementById('live').dataset.polls >= 1", timeout=WAIT_MS)
        before = {k: _tile(page, k) for k in ("viewers_now", "entries", "gmv", "orders", "units", "conversion")}
        assert before == {
            "viewers_now": "12",
            "entries": "12",
            "gmv": "¥99.80",
            "orders": "1",
            "units": "2",
            "conversion": "10.0%",
        }
        assert star["title"] in page.inner_text("#on-stage") and page.inner_text("#stage-orders") == "1"
        assert star["title"] in page.inner_text("#trending") and gone["title"] in page.inner_text("#sold-out")
        n_minutes = int(page.get_attribute("#chart-viewers", "data-count"))
        assert n_minutes >= 2 and page.locator("#chart-gmv svg rect.bar").count() == n_minutes

        t_write = time.monotonic()
        later = time.time()
        more = [ev("stream_enter", sid, later - 2, user=f"w{i}") for i in range(5)]
        more += [ev("stream_leave", sid, later - 1, user="u0")]
        more += [ev("purchase", sid, later - 1, user="w1", item=star["item_id"], price=49.9)]
        more += [ev("purchase", sid, later - 1, user="w2", item=other["item_id"], price=100.0, quantity=3)]
        writer.apply_message(ndjson(more))
        _wait_tile(page, "orders", "3")
        seen_after_s = time.monotonic() - t_write
        after = {k: _tile(page, k) for k in ("viewers_now", "entries", "gmv", "orders", "units", "conversion")}
        assert after == {
            "viewers_now": "16",
            "entries": "17",
            "gmv": "¥449.70",
            "orders": "3",
            "units": "6",
            "conversion": "30.0%",
        }, after
        assert page.inner_text("#stage-orders") == "2" and page.inner_text("#stage-units") == "3"
        assert other["title"] in page.inner_text("#trending")
        assert page.get_attribute("#live-status", "data-state") == "ok"
        print(f"\nlive page showed the new orders {seen_after_s:.2f} s after the write (poll every {POLL_S} s)")
        IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMG / "dashboard-live.png"), full_page=True)

        # Bigtable "down" (the table is gone): the page says so and keeps the last numbers
        schema.drop_table(cfg)
        page.wait_for_function(
            "() => document.getElementById('live-status').dataset.state === 'unavailable'", timeout=WAIT_MS
        )
        assert page.is_visible("#live-status") and "unavailable" in page.inner_text("#live-status")
        assert {k: _tile(page, k) for k in after} == after
        assert not problems, problems
    finally:
        ctx.close()
        schema.ensure_table(cfg)


def test_live_index_and_overview_show_titles(live_served, browser):  # noqa: F811
    built, cfg, base = live_served
    writer = LiveWriter(schema.open_table(cfg), cfg)
    writer.apply_message(
        ndjson(
            [ev("stream_start", "live-s2", time.time() - 60, title="年货节 · 第二场", host_id="h8", host_name="王芳")]
        )
    )
    ctx, page, problems = open_page(browser, f"{base}/live")
    try:
        row = page.locator("table#live-streams tbody tr", has_text="live-s2")
        assert row.count() == 1 and "年货节 · 第二场" in row.inner_text() and "王芳" in row.inner_text()
        assert "Asia/Shanghai" in page.inner_text("footer")
        assert not problems, problems
    finally:
        ctx.close()
    # the big screen on a phone: no sideways scrolling, the tiles and charts fit
    ctx, page, problems = open_page(browser, f"{base}/live/live-s2", width=390, height=844)
    try:
        page.wait_for_function("() => +document.getElementById('live').dataset.polls >= 1", timeout=WAIT_MS)
        assert "年货节 · 第二场" in page.inner_text("h1")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the live page scrolls sideways on a phone by {overflow}px"
        box = page.locator("#chart-viewers svg").bounding_box()
        assert box and box["width"] <= 390, box
        assert not problems, problems
    finally:
        ctx.close()
    ctx, page, problems = open_page(browser, f"{base}/live")
    try:
        # the batch pages: every stream's title and host (from its host actions) and times in the zone
        from shared.pipeline.clean import read_analytics

        streams = read_analytics(built.store, "stream").to_pandas()
        assert streams["title"].notna().all() and streams["host_name"].notna().all()
        page.goto(f"{base}/")
        body = page.inner_text("table#streams")
        for s in streams.itertuples():
            assert s.title in body and s.host_name in body
        assert "Asia/Shanghai" in page.inner_text("table#streams thead")
        s = streams.iloc[0]
        page.goto(f"{base}/streams/{s.stream_id}")
        assert s.title in page.inner_text("h1") and s.host_name in page.inner_text("#stream-meta")
        start = s.start.tz_convert("Asia/Shanghai").strftime("%Y-%m-%d %H:%M")
        assert start in page.inner_text("#stream-meta")
        assert not problems, problems
    finally:
        ctx.close()
