"""Bounded state and retention (shared/pipeline/retention.py) over the local store with the real clean
run: the manifest's done list and the dedupe index forget what is older than the look-back (a
duplicate beyond it is accepted and counted as ``beyond_lookback``, one inside it is dropped), the
compacted dedupe parts are deleted, old runs leave the manifest, and the retention job deletes
objects past their prefix's period with the manifest naming only objects that exist."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from shared.adapters.storage import open_store
from shared.pipeline import retention
from shared.pipeline.clean import CleanConfig, load_manifest, read_clean, run_clean
from shared.pipeline.config import TimeRules

D1 = datetime(2026, 10, 1, 20, tzinfo=UTC)
DAY = 86400


def _ev(eid, t, rec):
    return {
        "event_id": eid,
        "type": "like",
        "ts": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": "douyin",
        "stream_id": "s-1",
        "user_id": "u-1",
        "received_at": rec.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }


def _put(store, when, name, rows):
    key = f"raw/date={when:%Y-%m-%d}/hour={when:%H}/{name}.ndjson.gz"
    store.put(key, gzip.compress(b"\n".join(orjson.dumps(r) for r in rows) + b"\n", mtime=0))
    return key


def cfg():
    return CleanConfig(
        rules=TimeRules(max_future_s=300, max_past_s=30 * DAY, late_after_s=3600), threads=2, lookback_days=35
    )


def test_lookback_compacts_done_and_dedupe(tmp_path):
    store = open_store(str(tmp_path))
    k1 = _put(store, D1, "a", [_ev(f"e{i}", D1, D1) for i in range(3)])
    s1 = run_clean(store, None, cfg(), now=D1.timestamp() + 3600)
    assert s1["status"] == "committed" and s1["beyond_lookback"] == 0
    # a day later: a duplicate inside the look-back is dropped (seen before)
    d2 = D1 + timedelta(days=1)
    _put(store, d2, "b", [_ev("e0", D1, d2), _ev("n1", d2, d2)])
    s2 = run_clean(store, None, cfg(), now=d2.timestamp() + 3600)
    assert s2["duplicates_seen_before"] == 1 and s2["rows_out"] == 1
    m, _ = load_manifest(store)
    assert k1 in m["done"] and len(m["dedupe"]) == 2 and all("at" in r for r in m["runs"])
    # 40 days later: the first runs' dedupe parts and D1's done keys are forgotten; a re-sent copy of e1
    # (sent ts D1, received now) is accepted -- and counted as beyond the look-back
    d3 = D1 + timedelta(days=40)
    _put(store, d3, "c", [_ev("e1", D1, d3), _ev("n2", d3, d3)])
    s3 = run_clean(store, None, cfg(), now=d3.timestamp() + 3600)
    assert s3["status"] == "committed" and s3["duplicates_seen_before"] == 0 and s3["rows_out"] == 2
    assert s3["beyond_lookback"] == 1
    assert s3["compaction"]["dedupe_dropped"] == 2 and s3["compaction"]["done_forgotten"] == 2
    m, _ = load_manifest(store)
    assert len(m["dedupe"]) == 1 and m["done"] == [k for k in m["done"] if "date=2026-11-10" in k]
    assert [k for k in store.list("state/dedupe/")] == m["dedupe"]  # the dropped parts are deleted
    # old runs leave the manifest once published (bus=None here: unpublished runs stay, to be republished)
    assert len(m["runs"]) == 3
    pub = dict(m, runs=[dict(r, published=True) for r in m["runs"]])
    assert [r["run_id"] for r in retention.compact(pub, d3.timestamp() + 3600, 35)[0]["runs"]] == [s3["run_id"]]
    # the forgotten raw partitions are not pending again
    assert run_clean(store, None, cfg(), now=d3.timestamp() + 7200)["status"] == "noop"
    ids = read_clean(store).column("event_id").to_pylist()
    assert sorted(ids) == ["e0", "e1", "e1", "e2", "n1", "n2"]  # e1 twice: the documented cost


def test_retention_config_and_job(tmp_path, monkeypatch):
    assert retention.retention_days({}) == {"raw": 365, "clean": 400, "quarantine": 90}
    assert retention.retention_days({"DAIHUO_RETENTION_DAYS": "raw=30, quarantine=7"})["raw"] == 30
    with pytest.raises(ValueError):
        retention.retention_days({"DAIHUO_RETENTION_DAYS": "models=3"})
    store = open_store(str(tmp_path))
    _put(
        store,
        D1,
        "a",
        [_ev("e0", D1, D1), {"event_id": "bad", "type": "like", "received_at": "2026-10-01T20:00:00.000Z"}],
    )
    run_clean(store, None, cfg(), now=D1.timestamp() + 3600)
    assert list(store.list("quarantine/")) and list(store.list("clean/"))
    env = {"DAIHUO_RETENTION_DAYS": "raw=10,clean=20,quarantine=5"}
    out = retention.apply_retention(store, now=(D1 + timedelta(days=15)).timestamp(), environ=env)
    assert {k.split("/")[0] for k in out["deleted"]} == {"raw", "quarantine"}  # clean/ is kept 20 days
    assert not list(store.list("raw/")) and not list(store.list("quarantine/")) and list(store.list("clean/"))
    out = retention.apply_retention(store, now=(D1 + timedelta(days=25)).timestamp(), environ=env)
    assert not list(store.list("clean/")) and list(store.list("state/dedupe/"))  # the index: its own look-back
    m, _ = load_manifest(store)
    named = m["done"] + [f["key"] for f in m["clean_files"]] + m["dedupe"]
    assert all(store.exists(k) for k in named) and not m["clean_files"]
