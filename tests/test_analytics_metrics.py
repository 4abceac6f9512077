"""Hand-made edge cases for every metric family (definitions: docs/metrics.md)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from shared.pipeline.analytics import compute_analytics

T0 = pd.Timestamp("2026-11-27T20:00:00Z")


def ev(t_min, typ, user, stream="s1", item=None, price=None, qty=None, count=None):
    return {
        "stream_id": stream,
        "platform": "douyin",
        "user_id": user,
        "item_id": item,
        "type": typ,
        "ts": T0 + pd.Timedelta(minutes=t_min),
        "price": price,
        "currency": "CNY" if price else None,
        "quantity": qty,
        "count": count,
        "gift_value": None,
    }


def run(rows, **kw):
    df = pd.DataFrame(rows)
    t = pa.Table.from_pandas(df, preserve_index=False)
    return {k: v.to_pandas() for k, v in compute_analytics(t, **kw).items()}


def test_sessions_reentry_never_leaves_and_concurrency():
    rows = [
        ev(0, "stream_enter", "a"),
        ev(10, "stream_leave", "a"),
        ev(20, "stream_enter", "a"),
        ev(30, "stream_leave", "a"),  # re-entering viewer
        ev(5, "stream_enter", "b"),
        ev(6, "stream_enter", "b"),  # double enter: one session
        ev(25, "stream_leave", "b"),
        ev(15, "stream_enter", "c"),  # never leaves
        ev(60, "like", "d", count=3),
    ]  # last event: stream end
    a = run(rows, max_session_s=3600)["stream"].iloc[0]
    assert a["duration_s"] == 3600 and a["unique_viewers"] == 4 and a["sessions"] == 4
    # a: 10+10 min, b: 20 min, c: 15 -> 60 (capped at the stream's last event) = 45 min
    assert a["total_watch_s"] == pytest.approx((20 + 20 + 45) * 60)
    assert a["avg_watch_s"] == pytest.approx((20 + 20 + 45) * 60 / 3)  # per viewer with a session
    assert a["avg_concurrent"] == pytest.approx(85 / 60)
    assert a["peak_concurrent"] == 3  # a(20-30), b, c overlap
    assert a["likes"] == 3 and a["likes_per_min"] == pytest.approx(3 / 60)
    capped = run(rows, max_session_s=600)["stream"].iloc[0]  # max session length 10 min
    assert capped["total_watch_s"] == pytest.approx((20 + 20 + 10) * 60)


def test_touching_sessions_are_not_concurrent():
    rows = [
        ev(0, "stream_enter", "a"),
        ev(10, "stream_leave", "a"),
        ev(10, "stream_enter", "b"),
        ev(20, "stream_leave", "b"),
    ]
    assert run(rows)["stream"].iloc[0]["peak_concurrent"] == 1


def test_funnel_gmv_refund_after_stream_and_gpm():
    rows = [
        ev(0, "stream_enter", "a"),
        ev(1, "product_impression", "a", item="i1"),
        ev(1, "product_impression", "b", item="i1"),
        ev(2, "product_click", "a", item="i1"),
        ev(3, "add_to_cart", "a", item="i1", qty=2),
        ev(4, "purchase", "a", item="i1", price=50.0, qty=2),
        ev(30, "stream_leave", "a"),
        ev(60 * 26, "refund", "a", item="i1", price=50.0, qty=1),
    ]  # the next day
    out = run(rows)
    s = out["stream"].iloc[0]
    assert s["end"] == T0 + pd.Timedelta(minutes=30)  # the refund does not stretch the stream
    assert (s["impressions"], s["clicks"], s["add_to_carts"], s["orders"], s["units"]) == (2, 1, 1, 1, 2)
    assert s["ctr"] == 0.5 and s["cart_rate"] == 1.0 and s["order_rate"] == 1.0 and s["conversion_rate"] == 0.5
    assert s["gmv"] == 100.0 and s["refunds"] == 1 and s["refund_amount"] == 50.0
    assert s["unique_viewers"] == 2 and s["gpm"] == pytest.approx(100.0 / 2 * 1000)
    h = out["stream_hour"]
    ref_hour = h[h.hour == (T0 + pd.Timedelta(minutes=60 * 26)).floor("h")].iloc[0]
    assert ref_hour["refunds"] == 1 and ref_hour["active_s"] == 0 and pd.isna(ref_hour["likes_per_min"])
    item = out["stream_item"].set_index("item_id").loc["i1"]
    assert (item["impressions"], item["clicks"], item["orders"], item["gmv"], item["refunds"]) == (2, 1, 1, 100.0, 1)
    assert item["ctr"] == 0.5


def test_stream_without_purchases_and_without_viewers():
    rows = [
        ev(0, "stream_enter", "a", stream="s1"),
        ev(5, "stream_leave", "a", stream="s1"),
        ev(0, "comment", "x", stream="s2"),
    ]  # s2: no enter at all, one event
    st = run(rows)["stream"].set_index("stream_id")
    s1, s2 = st.loc["s1"], st.loc["s2"]
    assert s1["orders"] == 0 and s1["gmv"] == 0 and pd.isna(s1["ctr"]) and s1["gpm"] == 0
    assert s2["sessions"] == 0 and s2["peak_concurrent"] == 0 and s2["total_watch_s"] == 0
    assert s2["duration_s"] == 0 and pd.isna(s2["avg_concurrent"]) and pd.isna(s2["comments_per_min"])
    assert pd.isna(s2["avg_watch_s"])


def test_stream_hour_split():
    rows = [ev(30, "stream_enter", "a"), ev(90, "stream_leave", "a")]  # 20:30 -> 21:30
    h = run(rows)["stream_hour"].set_index("hour")
    assert list(h["total_watch_s"]) == [1800, 1800] and list(h["unique_viewers"]) == [1, 1]
    assert list(h["avg_concurrent"]) == [1.0, 1.0] and list(h["peak_concurrent"]) == [1, 1]


def test_span_ignores_late_events_before_the_start_but_totals_keep_them():
    # a device whose clock is 3 h behind: its events look 3 h old (flagged late by clean); the stream
    # really starts at 20:00. Its like and its session still count; only the span ignores them.
    late = lambda r: dict(r, late=True)
    rows = [
        dict(r, late=False)
        for r in (ev(0, "stream_enter", "a"), ev(60, "stream_leave", "a"), ev(30, "like", "b", count=2))
    ]
    rows += [
        late(ev(-180, "stream_enter", "x")),
        late(ev(-170, "like", "x", count=5)),
        late(ev(-160, "stream_leave", "x")),
        late(ev(70, "comment", "y")),
    ]  # a late event after the others: the end
    out = run(rows)
    s = out["stream"].iloc[0]
    assert s["start"] == T0 and s["end"] == T0 + pd.Timedelta(minutes=70) and s["duration_s"] == 70 * 60
    assert s["likes"] == 7 and s["comments"] == 1 and s["unique_viewers"] == 4  # totals keep late events
    assert s["sessions"] == 2 and s["total_watch_s"] == (60 + 20) * 60
    assert s["avg_concurrent"] == pytest.approx(80 / 70) and s["likes_per_min"] == pytest.approx(7 / 70)
    h = out["stream_hour"].set_index("hour")
    # no empty lead-in: 18:00 and 19:00 hold no event and are outside the span; 17:00 holds the late
    # events (a row like a late refund's, active_s = 0)
    assert list(h.index) == [T0 - pd.Timedelta(hours=3), T0, T0 + pd.Timedelta(hours=1)]
    assert list(h["active_s"]) == [0, 3600, 600] and h["likes"].sum() == 7
    # only late events (e.g. the whole stream uploaded hours later): the span falls back to all of them
    only = run([late(ev(0, "stream_enter", "a")), late(ev(45, "stream_leave", "a"))])["stream"].iloc[0]
    assert only["start"] == T0 and only["duration_s"] == 45 * 60


def test_refunds_and_late_flag_missing_keep_the_old_span():
    rows = [ev(-60, "refund", "a", item="i1", price=5.0, qty=1), ev(0, "like", "a"), ev(10, "like", "b")]
    s = run(rows)["stream"].iloc[0]  # no `late` column: nothing is late
    assert s["start"] == T0 and s["duration_s"] == 600


def _host(t_min, typ, stream="s1", eid=None, **kw):
    return {
        "event_id": eid or f"h-{typ}-{stream}-{t_min}",
        "type": typ,
        "ts": T0 + pd.Timedelta(minutes=t_min),
        "stream_id": stream,
        "host_id": kw.get("host_id"),
        "host_name": kw.get("host_name"),
        "title": kw.get("title"),
    }


def test_stream_info_from_host_actions_and_kpis_unchanged():
    rows = [
        ev(0, "stream_enter", "a"),
        ev(1, "product_impression", "a", item="i1"),
        ev(2, "purchase", "a", item="i1", price=10.0, qty=2),
        ev(30, "stream_leave", "a"),
        ev(5, "stream_enter", "b", stream="s2"),
        ev(9, "stream_enter", "c", stream="s3"),
    ]
    host = [
        _host(-5, "stream_start", host_id="h-1", host_name="主播 A", title="早场"),
        _host(-1, "stream_start", host_id="h-1", host_name="主播 A", title="早场 · 上新"),  # a restart: the latest
        _host(15, "slot_start", host_id="h-9"),
        _host(40, "stream_end"),
        _host(45, "stream_end"),  # the last end counts
        _host(3, "slot_start", stream="s2", host_id="h-2"),  # no stream_start: the host id of its actions
    ]
    plain = run(rows)["stream"].set_index("stream_id")
    t = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    h = pa.Table.from_pandas(pd.DataFrame(host), preserve_index=False)
    got = {k: v.to_pandas() for k, v in compute_analytics(t, host=h).items()}
    s = got["stream"].set_index("stream_id")
    info = ["title", "host_id", "host_name", "started_at", "ended_at"]
    # the span is the host's where it has a stream_start / stream_end (s1: first start -5 min, last end
    # +45 min); every other KPI of the viewer events is the same with or without the host actions
    span = ["start", "end", "duration_s", "avg_concurrent"] + [c for c in s.columns if c.endswith("_per_min")]
    assert s.loc["s1", "start"] == T0 + pd.Timedelta(minutes=-5) and s.loc["s1", "end"] == T0 + pd.Timedelta(minutes=45)
    assert s.loc["s1", "duration_s"] == 50 * 60 and plain.loc["s1", "duration_s"] == 30 * 60
    pd.testing.assert_frame_equal(s.drop(columns=info + span), plain.drop(columns=info + span))
    pd.testing.assert_frame_equal(s.loc[["s2", "s3"], span], plain.loc[["s2", "s3"], span])
    assert plain[info].isna().all().all()  # no host actions: all null
    assert s.loc["s1", "title"] == "早场 · 上新" and s.loc["s1", "host_name"] == "主播 A"
    assert s.loc["s1", "host_id"] == "h-1"
    assert s.loc["s1", "started_at"] == T0 + pd.Timedelta(minutes=-5)
    assert s.loc["s1", "ended_at"] == T0 + pd.Timedelta(minutes=45)
    assert s.loc["s2", "host_id"] == "h-2" and pd.isna(s.loc["s2", "title"]) and pd.isna(s.loc["s2", "started_at"])
    assert s.loc["s3", info].isna().all()
    # the per-item table does not change; the per-hour rows of s1 cover its host span (19:55-20:45)
    pd.testing.assert_frame_equal(got["stream_item"], run(rows)["stream_item"])
    hr, hr_plain = got["stream_hour"], run(rows)["stream_hour"]
    pd.testing.assert_frame_equal(
        hr[hr["stream_id"] != "s1"].reset_index(drop=True),
        hr_plain[hr_plain["stream_id"] != "s1"].reset_index(drop=True),
    )
    assert hr[hr["stream_id"] == "s1"]["active_s"].sum() == 50 * 60
