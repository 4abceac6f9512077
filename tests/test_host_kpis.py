"""Host and audience KPIs (shared/pipeline/host_kpis.py) against the simulator's ground truth.

A multi-day host world (hosts streaming on several days, host events on) goes through the real clean
pipeline in two runs (the second recomputes the affected streams and merges with the committed rest);
the tables must equal what the generator drew: the retention curve and median watch time of every
stream (``sim.audience_truth``), new vs returning viewers to the host and the platform, followers
gained, the day / week cohorts, per-host totals, and every slot's sales (``live_truth().slots``).
Hand-made cases pin the edge rules (slot ended by the next slot_start, an open slot, a viewer
without a session, re-entry, a stream without a host). With the default faults (duplicates, skew,
late and malformed rows, unsent leaves) the numbers stay close to the truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from shared import layout
from shared.adapters.storage import open_store
from shared.layout import load_manifest
from shared.pipeline import host_kpis
from shared.pipeline.analytics import compute_analytics
from shared.pipeline.clean import read_analytics, read_clean, run_clean
from tests.data_fixtures import build_pipeline_store, clean_config, raw_objects

WORLD = dict(
    seed=3,
    n_streams=12,
    n_users=1500,
    n_items=120,
    days=6,
    n_hosts=3,
    host_events=True,
    mean_viewers_per_stream=120,
)
TZ = "Asia/Shanghai"


def _tables(store) -> dict[str, pd.DataFrame]:
    out = {}
    for name in layout.ANALYTICS_TABLES:
        t = read_analytics(store, name)
        cols = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in t.columns]
        out[name] = pa.table(cols, names=t.column_names).to_pandas()
    return out


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """No faults and every leave sent: the batch tables must equal the generator's truth exactly."""
    built = build_pipeline_store(tmp_path_factory.mktemp("host-exact"), faults=None, no_leave_rate=0.0, **WORLD)
    return built, _tables(built.store)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    built = build_pipeline_store(tmp_path_factory.mktemp("host-faults"), faults="default", **WORLD)
    return built, _tables(built.store)


def test_world_has_returning_viewers_and_several_streams_per_host(exact):
    built, t = exact
    truth = built.sim.audience_truth.audience()
    assert (truth.groupby("host_id").size() >= 3).all()
    assert truth["returning_host_viewers"].sum() > 100 and truth["new_host_viewers"].sum() > 100
    assert (t["stream_audience"]["returning_host_viewers"] > 0).sum() >= 6


def test_retention_curve_and_median_watch_equal_truth(exact):
    built, t = exact
    at = built.sim.audience_truth
    ret = t["stream_retention"]
    for sid, curve in ret.groupby("stream_id"):
        minutes = curve["minute"].tolist()
        assert minutes == list(range(len(minutes)))
        np.testing.assert_allclose(curve["share"].to_numpy(), at.retention(sid, minutes), atol=1e-12, err_msg=sid)
        assert curve["share"].iloc[0] == 1.0 and curve["viewers"].iloc[-1] == 0
        assert (np.diff(curve["viewers"].to_numpy()) <= 0).all()
        assert curve["dropped"].sum() == curve["viewers"].iloc[0]
    aud = t["stream_audience"].set_index("stream_id")
    for sid in aud.index:
        assert aud.loc[sid, "median_watch_s"] == pytest.approx(at.median_watch_s(sid), abs=1e-3)
        r = at.retention(sid, host_kpis.RETENTION_POINTS)
        got = [aud.loc[sid, f"retention_{m}m"] for m in host_kpis.RETENTION_POINTS]
        np.testing.assert_allclose(got, r, atol=1e-12)


def test_new_vs_returning_and_followers_equal_truth(exact):
    built, t = exact
    truth = built.sim.audience_truth.audience().set_index("stream_id")
    aud = t["stream_audience"].set_index("stream_id").loc[truth.index]
    for col in ("viewers", "new_host_viewers", "returning_host_viewers", "new_platform_viewers"):
        assert aud[col].astype(int).tolist() == truth[col].astype(int).tolist(), col
    assert aud["returning_platform_viewers"].tolist() == truth["returning_platform_viewers"].tolist()
    assert aud["followers_gained"].tolist() == truth["followers"].astype(int).tolist()
    assert aud["host_id"].tolist() == truth["host_id"].tolist()
    st = t["stream"].set_index("stream_id").loc[truth.index]
    assert (aud["viewers"] == st["unique_viewers"]).all()
    assert (aud["followers_gained"] <= st["follows"]).all()


@pytest.mark.parametrize("grain", host_kpis.COHORT_GRAINS)
def test_cohorts_equal_truth(exact, grain):
    built, t = exact
    want = built.sim.audience_truth.cohorts(grain, TZ)
    got = t["host_cohort"][t["host_cohort"]["grain"] == grain]
    got = got.assign(cohort=pd.to_datetime(got["cohort"]).dt.date)
    key = ["host_id", "cohort", "period"]
    merged = want.merge(got, on=key, how="outer", suffixes=("_truth", ""), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    assert (merged["viewers"] == merged["viewers_truth"]).all()
    size = got[got["period"] == 0].set_index(["host_id", "cohort"])["viewers"]
    assert (
        got.set_index(["host_id", "cohort"])["cohort_size"] == size.reindex(got.set_index(["host_id", "cohort"]).index)
    ).all()
    assert ((got["share"] > 0) & (got["share"] <= 1)).all()
    if grain == "day":
        assert (got["period"] > 0).any()  # somebody came back on a later day


def test_host_totals_equal_truth(exact):
    built, t = exact
    s = built.sim.audience_truth.sessions
    host = t["host"].set_index("host_id")
    ev = built.sim.truth.expected_clean()
    buys = ev[ev["type"] == "purchase"]
    hs = built.sim.host_truth.streams.set_index("stream_id")["host_id"]
    gmv = (buys["price"] * buys["quantity"].fillna(1)).groupby(buys["stream_id"].map(hs)).sum()
    for h, g in s.groupby("host_id"):
        row = host.loc[h]
        assert row["streams"] == g["stream_id"].nunique()
        assert row["unique_viewers"] == g["user_id"].nunique()
        assert row["viewer_visits"] == len(g)
        assert row["repeat_viewers"] == int((g.groupby("user_id").size() >= 2).sum())
        assert row["followers_gained"] == g.loc[g["followed"], "user_id"].nunique()
        assert row["gmv"] == pytest.approx(gmv[h], rel=1e-9)
        assert row["host_name"] == built.sim.host_truth.streams.set_index("host_id").loc[[h], "host_name"].iloc[0]


def test_slot_sales_equal_truth(exact):
    built, t = exact
    truth = built.sim.live_truth(include_late=True, drop_unknown_items=True).slots.set_index("slot_id")
    got = t["stream_slot"].set_index("slot_id")
    assert sorted(got.index) == sorted(truth.index)
    got = got.loc[truth.index]
    for col in ("impressions", "clicks", "add_to_carts", "orders", "units"):
        assert got[col].astype(int).tolist() == truth[col].astype(int).tolist(), col
    np.testing.assert_allclose(got["gmv"].to_numpy(), truth["gmv"].to_numpy(), rtol=1e-9)
    epoch = pd.Timestamp(0, tz="UTC")
    start_ms = ((pd.to_datetime(got["start"], utc=True) - epoch) // pd.Timedelta(milliseconds=1)).to_numpy()
    end_ms = ((pd.to_datetime(got["end"], utc=True) - epoch) // pd.Timedelta(milliseconds=1)).to_numpy()
    assert (start_ms == truth["start_ms"].to_numpy()).all() and (end_ms == truth["end_ms"].to_numpy()).all()
    assert not got["open_ended"].any()
    assert got["orders"].sum() > 50  # slots sell
    assert (got["stream_gmv"] >= got["gmv"] - 1e-9).all() and (got["viewers"] >= got["buyers"]).all()


def test_incremental_runs_equal_one_pass(exact):
    """Two clean runs (the second merges the affected streams with the committed rest and recomputes
    the cross-stream tables) give the tables one pass over all the clean data gives."""
    built, t = exact
    m, _ = load_manifest(built.store)
    import io

    import pyarrow.parquet as pq

    host = pa.concat_tables([pq.read_table(io.BytesIO(built.store.get(f.key))) for f in m.host_files or []])
    once = compute_analytics(read_clean(built.store), host=host)
    for name in host_kpis.STREAM_TABLES + host_kpis.DERIVED_TABLES:
        b = once[name].to_pandas()
        b = b.astype({c: str for c in b.columns if b[c].dtype.name == "category"})
        b = b.sort_values(list(b.columns)).reset_index(drop=True)
        a = t[name][b.columns].sort_values(list(b.columns)).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=name)


def test_with_faults_close_to_truth(faulty):
    """Duplicates, skewed and late rows are handled by clean; malformed rows and unsent leaves move the
    numbers a little: retention, new/returning within 3 % of the viewers (+ 1 viewer)."""
    built, t = faulty
    at = built.sim.audience_truth
    aud = t["stream_audience"].set_index("stream_id")
    truth = at.audience().set_index("stream_id")
    worst = 0.0
    for sid in truth.index:
        n = truth.loc[sid, "viewers"]
        got = np.array([aud.loc[sid, f"retention_{m}m"] for m in host_kpis.RETENTION_POINTS])
        off = np.abs(got - at.retention(sid, host_kpis.RETENTION_POINTS)) * n  # in viewers
        assert (off <= 0.03 * n + 1).all(), (sid, off)
        worst = max(worst, float(off.max() / n))
        assert abs(aud.loc[sid, "returning_host_viewers"] - truth.loc[sid, "returning_host_viewers"]) <= 0.03 * n + 1
        assert abs(aud.loc[sid, "viewers"] - n) <= 0.03 * n + 1
    print(f"worst retention error with faults: {worst:.3f} of the viewers")


def test_backfill_of_tables_new_to_a_store(tmp_path):
    """A store cleaned before these tables existed gets them for every stream at its next run."""
    from devtools.simulator import simulate

    sim = simulate(seed=4, n_streams=3, n_users=200, n_items=40, host_events=True)
    objs = raw_objects(sim, n_parts=2)
    store = open_store(str(tmp_path))
    store.put(*objs[0], content_type="application/gzip")
    run_clean(store, None, clean_config())
    m, gen = load_manifest(store)
    old = dict(m.analytics)
    for name in host_kpis.STREAM_TABLES + host_kpis.DERIVED_TABLES:  # what an older version wrote
        old.pop(name)
    m.analytics = old
    layout.commit_manifest(store, m, gen)
    # the next run brings only a catalog-free tail of one stream: every stream is backfilled anyway
    store.put(*objs[1], content_type="application/gzip")
    run_clean(store, None, clean_config())
    t = _tables(store)
    assert sorted(t["stream_audience"]["stream_id"]) == sorted(t["stream"]["stream_id"])
    assert sorted(t["viewer_stream"]["stream_id"].unique()) == sorted(t["stream"]["stream_id"])


# ------------------------------------------------------------------------------ hand-made cases
T0 = pd.Timestamp("2026-11-27T12:00:00Z")


def _ev(i, typ, sec, user=None, item=None, price=None, stream="s1", **kw):
    return {
        "event_id": f"e{i}",
        "type": typ,
        "ts": T0 + pd.Timedelta(seconds=sec),
        "platform": "douyin",
        "stream_id": stream,
        "user_id": user,
        "item_id": item,
        "price": price,
        "quantity": 1 if typ in ("purchase", "add_to_cart") else None,
        "count": None,
        "gift_value": None,
        "currency": "CNY" if price is not None else None,
        "late": False,
        **kw,
    }


def _host(i, typ, sec, stream="s1", **kw):
    base = {"event_id": f"h{i}", "type": typ, "ts": T0 + pd.Timedelta(seconds=sec), "stream_id": stream}
    base.update({k: kw.get(k) for k in ("slot_id", "item_id", "host_id", "host_name", "title", "price", "currency")})
    return base


def _run(events, host):
    ev = pa.Table.from_pandas(pd.DataFrame(events), preserve_index=False)
    h = pa.Table.from_pandas(pd.DataFrame(host), preserve_index=False)
    return {k: v.to_pandas() for k, v in compute_analytics(ev, host=h).items()}


def test_edge_rules():
    host = [
        _host(1, "stream_start", 0, host_id="h1", host_name="主播"),
        _host(2, "slot_start", 10, slot_id="A", item_id="i1", price=9.9, currency="CNY"),
        _host(3, "slot_start", 100, slot_id="B", item_id="i2"),  # ends A (no slot_end of A)
        _host(4, "slot_end", 200, slot_id="B", item_id="i2"),
        _host(5, "slot_start", 300, slot_id="C", item_id="i1"),  # never ended: open to the end
        _host(6, "stream_start", 0, stream="s2"),  # a stream whose host nobody named
    ]
    events = [
        _ev(1, "stream_enter", 0, "u1"),
        _ev(2, "purchase", 50, "u1", "i1", 10.0),  # in A
        _ev(3, "purchase", 150, "u1", "i1", 10.0),  # i1 but during B: not A's, not B's
        _ev(4, "purchase", 150, "u1", "i2", 5.0),  # B
        _ev(5, "stream_leave", 130, "u1"),
        _ev(6, "stream_enter", 140, "u1"),  # re-entry: watch time 130 + 260 = 390 s
        _ev(7, "purchase", 399, "u1", "i1", 10.0),  # C (open)
        _ev(8, "stream_leave", 400, "u1"),
        _ev(9, "like", 20, "u2"),  # a viewer without a session: a viewer, not a watcher
        _ev(10, "follow", 25, "u2"),
        _ev(11, "stream_enter", 0, "u3"),
        _ev(12, "stream_leave", 61, "u3"),
        _ev(13, "stream_enter", 5, "u9", stream="s2"),
        _ev(14, "stream_leave", 65, "u9", stream="s2"),
    ]
    t = _run(events, host)
    sl = t["stream_slot"].set_index("slot_id")
    assert sl.loc["A", "duration_s"] == 90 and sl.loc["A", "orders"] == 1 and sl.loc["A", "gmv"] == 10.0
    assert sl.loc["A", "price"] == 9.9 and sl.loc["A", "stream_orders"] == 1
    assert sl.loc["B", "orders"] == 1 and sl.loc["B", "gmv"] == 5.0 and sl.loc["B", "stream_orders"] == 2
    assert sl.loc["C", "open_ended"] and sl.loc["C", "orders"] == 1
    assert sl.loc["C", "end"] == T0 + pd.Timedelta(seconds=400)  # the stream's last event
    ret = t["stream_retention"].query("stream_id == 's1'").set_index("minute")
    assert ret["viewers"].tolist() == [2, 2, 1, 1, 1, 1, 1, 0]  # u3 61 s, u1 390 s
    aud = t["stream_audience"].set_index("stream_id")
    assert aud.loc["s1", "viewers"] == 3 and aud.loc["s1", "watchers"] == 2
    assert aud.loc["s1", "median_watch_s"] == pytest.approx((61 + 390) / 2)
    assert aud.loc["s1", "followers_gained"] == 1 and aud.loc["s1", "follow_rate"] == pytest.approx(1 / 3)
    assert pd.isna(aud.loc["s2", "new_host_viewers"]) and aud.loc["s2", "new_platform_viewers"] == 1
    assert list(t["host"]["host_id"]) == ["h1"] and t["host"]["host_name"].iloc[0] == "主播"
    assert set(t["host_cohort"]["host_id"]) == {"h1"}


def test_returning_means_an_earlier_stream_of_the_same_host():
    host = [
        _host(1, "stream_start", 0, stream="a", host_id="h1"),
        _host(2, "stream_start", 86400, stream="b", host_id="h1"),
        _host(3, "stream_start", 3600, stream="c", host_id="h2"),
    ]
    events = [
        _ev(1, "stream_enter", 1, "u1", stream="a"),
        _ev(2, "stream_enter", 86401, "u1", stream="b"),  # back to h1 the next day
        _ev(3, "stream_enter", 86402, "u2", stream="b"),  # new to h1 ...
        _ev(4, "stream_enter", 3601, "u2", stream="c"),  # ... though seen on the platform (h2) before
        _ev(5, "stream_enter", 3602, "u1", stream="c"),  # u1 new to h2, returning to the platform
    ]
    aud = _run(events, host)["stream_audience"].set_index("stream_id")
    assert aud.loc["b", ["new_host_viewers", "returning_host_viewers"]].tolist() == [1, 1]
    assert aud.loc["b", "returning_platform_viewers"] == 2
    assert aud.loc["c", ["new_host_viewers", "returning_host_viewers", "returning_platform_viewers"]].tolist() == [
        2,
        0,
        1,
    ]
    coh = _run(events, host)["host_cohort"]
    day = coh[(coh["host_id"] == "h1") & (coh["grain"] == "day")]
    assert day[["period", "viewers", "cohort_size"]].values.tolist() == [[0, 1, 1], [1, 1, 1], [0, 1, 1]]


def test_erasure_removes_a_viewer_from_the_viewer_table(tmp_path):
    """viewer_stream holds viewer ids: the erasure job rewrites it; every other host / audience table
    is an aggregate without ids, and recomputing them from the erased table forgets the viewer."""
    import duckdb

    from shared.pipeline.erase import run_erase

    built = build_pipeline_store(tmp_path / "s", seed=6, n_streams=3, n_users=150, runs=1, host_events=True)
    before = _tables(built.store)
    vs = before["viewer_stream"]
    victim = str(vs["user_id"].value_counts().index[0])  # in several streams
    assert (vs["user_id"] == victim).sum() >= 2
    for name in set(layout.ANALYTICS_TABLES) - set(layout.VIEWER_TABLES):
        df = before[name]
        assert "user_id" not in df.columns, name
        assert not df.astype(str).eq(victim).any().any(), name  # (ids are whole values: "sku-…" ⊃ "u-…")
    run_erase(built.store, users=[victim], train=False)
    after = _tables(built.store)
    assert victim not in set(after["viewer_stream"]["user_id"])
    assert len(after["viewer_stream"]) == len(vs) - (vs["user_id"] == victim).sum()
    con = duckdb.connect()
    con.register("st", pa.Table.from_pandas(after["stream"]))
    con.register("vs", pa.Table.from_pandas(after["viewer_stream"]))
    host_kpis.derived_sql(con, "st", "vs")
    hosts_of_victim = set(
        before["stream"].set_index("stream_id").loc[vs[vs["user_id"] == victim]["stream_id"], "host_id"]
    )
    h = con.sql("SELECT host_id, unique_viewers FROM a_host").df().set_index("host_id")["unique_viewers"]
    for hid in hosts_of_victim:
        assert h[hid] == before["host"].set_index("host_id").loc[hid, "unique_viewers"] - 1
