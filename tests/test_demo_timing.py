"""``make demo`` dated now (devtools/demo.py ``--start now``, the default): its evening ended before the
send, every row is on time when ingest receives it, and the pipeline's stream spans and viewer charts
are the simulator's truth (no stretched streams, no empty lead-in, no viewers after the end).

The send is modelled as the demo does it: every row received at one instant, shortly after ``until``
(the demo sends the whole evening in a minute or two)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from devtools import simulator
from devtools.demo import demo_faults, demo_timing
from shared.adapters.storage import open_store
from shared.dashboard.data import load_snapshot
from shared.pipeline.clean import read_analytics, read_clean, run_clean
from tests.data_fixtures import RULES, clean_config, raw_objects

NOW = datetime(2026, 12, 2, 19, 7, 31, tzinfo=UTC).timestamp()
SEND_S = 150  # the demo's send takes a minute or two: the last rows arrive this long after "now"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    timing = demo_timing("now", now=NOW)
    sim = simulator.simulate(
        seed=7,
        n_streams=4,
        n_users=1500,
        n_items=200,
        mean_viewers_per_stream=250.0,
        faults=demo_faults("default", timing),
        host_events=True,
        **timing,
    )
    store = open_store(str(tmp_path_factory.mktemp("demo-store")))
    for key, data in raw_objects(sim, n_parts=3, received_at=_iso(NOW + SEND_S)):
        store.put(key, data, content_type="application/gzip")
    summary = run_clean(store, None, clean_config())
    return sim, store, summary


def test_timing_now_and_fixed_start():
    t = demo_timing("now", now=NOW)
    assert t["until"] == "2026-12-02T19:07:31Z" and t["start"] == "2026-12-02T18:17:00Z"
    assert demo_timing("2026-11-27T12:00:00Z") == {"start": "2026-11-27T12:00:00Z"}  # a replay: the default evening
    assert demo_faults("default", t).late == 0 and demo_faults("default", t).skew > 0
    assert demo_faults("default", {"start": "x"}) == "default" and demo_faults("none", t) is None


def test_every_row_happened_before_now_and_within_the_late_threshold(demo_world):
    sim, _, _ = demo_world
    log = sim.truth.fault_log
    lo, hi = (NOW + SEND_S - RULES.late_after_s) * 1000, NOW * 1000
    for r in sim.events:
        if not isinstance(r, dict) or not isinstance(r.get("ts"), str):
            continue
        try:
            ms = simulator.parse_ts_ms(log.get(r.get("event_id"), {}).get("true_ts") or r["ts"])
        except ValueError:
            continue  # a corrupted row (the contract rejects it)
        assert lo < ms <= hi, r
    truth = sim.truth.streams
    assert (truth["end"] <= pd.Timestamp(NOW, unit="s", tz="UTC")).all()
    assert ((truth["end"] - truth["start"]).dt.total_seconds().between(0.25 * 3600 - 1, 0.6 * 3600 + 1)).all()


def test_demo_dated_events_are_not_late(demo_world):
    """Only the injected clock faults look skewed: a device clock hours behind is flagged late (its ts is
    kept), one ahead is corrected to the receipt; every other row is on time."""
    sim, store, summary = demo_world
    log = sim.truth.fault_log
    skewed = {eid for eid, m in log.items() if m["kind"] == "skew"}
    assert not any(m["kind"] == "late" for m in log.values())
    clean = read_clean(store).to_pandas()
    late, corrected = set(clean.loc[clean["late"], "event_id"]), set(clean.loc[clean["ts_corrected"], "event_id"])
    assert late <= skewed and corrected <= skewed
    assert all(log[e]["skew_s"] < 0 for e in late) and all(log[e]["skew_s"] > 0 for e in corrected)
    assert summary["late"] == len(late) < 0.005 * summary["rows_out"]
    assert summary["rows_out"] > 10_000


def test_stream_durations_are_the_simulators_truth(demo_world):
    sim, store, _ = demo_world
    got = read_analytics(store, "stream").to_pandas().set_index("stream_id")
    truth = sim.truth.streams.set_index("stream_id")
    assert set(got.index) == set(truth.index)
    for sid, t in truth.iterrows():
        true_s = (t["end"] - t["start"]).total_seconds()
        assert got.loc[sid, "duration_s"] == pytest.approx(true_s, abs=1.0), sid
        assert abs((got.loc[sid, "start"] - t["start"]).total_seconds()) <= 1.0


def test_viewer_chart_has_no_lead_in_and_no_viewers_after_the_end(demo_world):
    _, store, _ = demo_world
    snap = load_snapshot(store, "g", None)
    for _, row in snap.stream.iterrows():
        df = snap.fine_series(row["stream_id"], 60)
        assert df["t"].min() == row["start"].floor("min") and df["t"].max() <= row["end"]
        assert df["viewers"].iloc[:3].sum() > 0  # viewers from the first minutes on
        # every event counts in a bucket of the stream's span: the buckets sum to the totals
        for col in ("orders", "likes", "impressions"):
            assert df[col].sum() == row[col], (row["stream_id"], col)
        assert df["watch_s"].sum() <= row["total_watch_s"] + 1e-6
