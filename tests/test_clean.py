"""clean in-process over the local store: exact outcome per simulated row, dedupe across runs,
crash + rerun, two concurrent runs, skew rules."""

from __future__ import annotations

import gzip
import threading
from collections import Counter

import orjson
import pandas as pd
import pytest

from devtools.simulator import INVALID_KINDS, simulate
from shared.adapters.storage import open_store
from shared.pipeline.clean import CleanConfig, clean_tables, load_manifest, read_clean, run_clean
from shared.pipeline.config import TimeRules
from shared.runtime import InjectedCrash, faults

# the simulated evening is 2026-11-27; received 2 days later: nothing in the future, nothing implausible
REC = "2026-11-29T00:00:00.000Z"
RULES = TimeRules(max_future_s=300, max_past_s=30 * 86400, late_after_s=3600)


@pytest.fixture(scope="module")
def sim():
    return simulate(seed=3, n_streams=3, n_users=400, n_items=120, faults="default")


def raw_objects(sim, n_parts=3, rec=REC):
    rows = []
    for r in list(sim.catalog) + list(sim.events):
        rows.append(orjson.dumps(dict(r, received_at=rec)) if isinstance(r, dict) else r.encode())
    size = len(rows) // n_parts + 1
    return [
        (
            f"raw/date=2026-11-27/hour=00/part{i}.ndjson.gz",
            gzip.compress(b"\n".join(rows[i * size : (i + 1) * size]) + b"\n"),
        )
        for i in range(n_parts)
    ]


def cfg(**kw):
    # the simulator's truth quarantines purchases of unknown items (the old rule): the exact tests use it;
    # the default ("keep": nothing lost to a late catalog) is tested on its own below
    return CleanConfig(rules=RULES, tmp_dir=None, threads=2, **{"unknown_items": "quarantine", **kw})


def expected_quarantine(sim):
    return {k: v for k, v in sim.truth.fault_log.items() if v["kind"] in INVALID_KINDS}


def check_exact(sim, clean: pd.DataFrame, quarantine: list[dict]):
    exp = sim.truth.expected_clean()
    assert clean["event_id"].is_unique
    assert set(clean["event_id"]) == set(exp["event_id"])
    bad = expected_quarantine(sim)
    assert len(quarantine) == len(bad)
    want_field = {"malformed_json": "record", "negative_quantity": "quantity", "unknown_item": "item_id"}
    got = Counter()
    for key, f in bad.items():
        if key.startswith("line:"):
            continue
        rows = [q for q in quarantine if q["event_id"] == key]
        assert len(rows) == 1, (key, f)
        if f["kind"] in want_field:
            assert rows[0]["field"] == want_field[f["kind"]], (key, f, rows[0])
        elif f["kind"] in ("wrong_type", "missing_field", "unknown_type"):
            assert rows[0]["field"] == f["field"], (key, f, rows[0])
        got[rows[0]["reason"]] += 1
    assert all(q["reason"] for q in quarantine)
    reason_of = {
        "unknown_item": "unknown_item",
        "negative_quantity": "impossible_value",
        "malformed_json": "unparseable",
    }
    for key, f in bad.items():
        if key.startswith("line:") and f["kind"] == "malformed_json":
            assert any(q["reason"] == "unparseable" and q["raw"].rstrip("\n") == f["raw"] for q in quarantine)
        elif not key.startswith("line:") and f["kind"] in reason_of:
            assert [q for q in quarantine if q["event_id"] == key][0]["reason"] == reason_of[f["kind"]]


def quarantine_rows(store, manifest=None):
    out = []
    for k in store.list("quarantine/date="):
        out += [orjson.loads(x) for x in gzip.decompress(store.get(k)).splitlines() if x]
    return out


def test_clean_tables_exact(sim):
    out = clean_tables(raw_objects(sim), cfg(), run_id="r-test")
    q = out["quarantine"].to_pylist()
    check_exact(sim, out["clean"].to_pandas(), q)
    rep = out["report"]
    assert rep["duplicates"] == sum(1 for f in sim.truth.fault_log.values() if f["kind"] == "duplicate") + sum(
        1 for f in sim.truth.fault_log.values() for a in f.get("also", []) if a["kind"] == "duplicate"
    )
    assert rep["rows_in"] == len(sim.events) + len(sim.catalog)
    assert rep["rows_in"] == rep["rows_out"] + rep["dropped"] + rep["duplicates"] + rep["catalog_rows"]
    exp = sim.truth.expected_clean()
    # honest clocks here (skew only shifts ts within hours of the past): nothing corrected; "late" =
    # received more than an hour after ts, computed from the simulator's sent ts
    sent_ts = exp["event_id"].map(lambda e: sim.truth.fault_log.get(e, {}).get("sent_ts")).fillna(exp["ts"])
    lag = pd.Timestamp(REC) - pd.to_datetime(sent_ts, format="ISO8601", utc=True)
    assert rep["ts_corrected"] == 0
    assert rep["late"] == int((lag > pd.Timedelta(hours=1)).sum())


def test_run_twice_replay_crash_and_concurrency(sim, tmp_path):
    store = open_store(tmp_path / "store")
    objs = raw_objects(sim)
    for k, b in objs[:2]:
        store.put(k, b)
    # a crash after clean/ was written: nothing committed, the rerun writes the same names
    with faults.installed("clean:write_clean"), pytest.raises(InjectedCrash):
        run_clean(store, None, cfg())
    assert load_manifest(store)[1] is None
    s1 = run_clean(store, None, cfg())
    assert s1["status"] == "committed"
    assert run_clean(store, None, cfg())["status"] == "noop"
    # the rest, plus a replay of the first object under a new name (a re-archived batch)
    store.put(objs[2][0], objs[2][1])
    store.put("raw/date=2026-11-28/hour=01/replay.ndjson.gz", objs[0][1])
    results = []
    barrier = threading.Barrier(2)

    def worker():
        barrier.wait()
        results.append(run_clean(store, None, cfg()))

    ts = [threading.Thread(target=worker) for _ in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    statuses = sorted(r["status"] for r in results)
    assert statuses in (["committed", "conflict"], ["committed", "noop"]), statuses
    assert run_clean(store, None, cfg())["status"] == "noop"
    manifest, _ = load_manifest(store)
    clean = read_clean(store, manifest).to_pandas()
    # quarantine is not deduplicated: the replayed object's bad rows are quarantined again (same rows)
    q, seen = [], set()
    for row in quarantine_rows(store):
        k = (row["event_id"], row["raw"], row["reason"])
        if k not in seen:
            seen.add(k)
            q.append(row)
    check_exact(sim, clean, q)
    # clean/ listing (not only the manifest) holds each event once: reruns reuse the run's names
    import io

    import pyarrow.parquet as pq

    ids = []
    for k in store.list("clean/"):
        ids += pq.read_table(io.BytesIO(store.get(k)), columns=["event_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == len(sim.truth.expected_clean())
    committed = [r for r in results if r["status"] == "committed"][0]
    assert committed["duplicates_seen_before"] > 0  # the replayed object's events were all seen before


def test_skew_and_late_rules(tmp_path):
    base = {"type": "like", "platform": "douyin", "stream_id": "s-1", "user_id": "u-1", "count": 2}
    rows = [
        dict(base, event_id="ok", ts="2026-11-27T20:00:00.000Z", received_at="2026-11-27T20:00:01.000Z"),
        dict(base, event_id="future", ts="2026-11-27T23:00:00+08:00", received_at="2026-11-27T14:00:00.000Z"),
        dict(base, event_id="late", ts="2026-11-27T10:00:00.000Z", received_at="2026-11-27T14:00:00.000Z"),
        dict(base, event_id="ancient", ts="2020-01-01T00:00:00.000Z", received_at="2026-11-27T14:00:00.000Z"),
        dict(base, event_id="plus8", ts="2026-11-28T04:00:00.000+08:00", received_at="2026-11-27T20:00:02.000Z"),
    ]
    data = b"\n".join(orjson.dumps(r) for r in rows)
    out = clean_tables([("raw/x.ndjson.gz", data)], cfg()).get("clean").to_pandas().set_index("event_id")
    ts = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    assert ts["ok"] == "2026-11-27T20:00:00" and not out.loc["ok", "ts_corrected"] and not out.loc["ok", "late"]
    assert ts["future"] == "2026-11-27T14:00:00" and out.loc["future", "ts_corrected"]
    assert ts["late"] == "2026-11-27T10:00:00" and out.loc["late", "late"] and not out.loc["late", "ts_corrected"]
    assert ts["ancient"] == "2026-11-27T14:00:00" and out.loc["ancient", "ts_corrected"]
    assert ts["plus8"] == "2026-11-27T20:00:00"  # +08:00 normalised to UTC
    assert out.loc["ancient", "ts_sent"] == "2020-01-01T00:00:00.000Z"  # the sent value is kept for audit


def test_fills_defaults():
    rows = [
        {
            "event_id": "c1",
            "type": "add_to_cart",
            "ts": "2026-11-27T20:00:00Z",
            "platform": "p",
            "stream_id": "s",
            "user_id": "u",
            "item_id": "i",
        },
        {
            "event_id": "l1",
            "type": "like",
            "ts": "2026-11-27T20:00:00Z",
            "platform": "p",
            "stream_id": "s",
            "user_id": "u",
        },
    ]
    out = clean_tables([("raw/x.ndjson.gz", b"\n".join(orjson.dumps(r) for r in rows))], cfg())["clean"]
    df = out.to_pandas().set_index("event_id")
    assert df.loc["c1", "quantity"] == 1 and df.loc["c1", "currency"] == "CNY"
    assert df.loc["l1", "count"] == 1 and pd.isna(df.loc["l1", "currency"])


def test_parquet_outputs_keep_the_arrow_schema(sim, tmp_path):
    """clean/, catalog/ and the dedupe index are written by DuckDB COPY: pyarrow must read exactly the
    declared schemas (dictionary ids, int32, UTC timestamps, nullable columns), as readers expect."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from shared.pipeline.clean import CATALOG_SCHEMA, CLEAN_SCHEMA

    store = open_store(tmp_path / "store")
    for k, b in raw_objects(sim):
        store.put(k, b)
    s = run_clean(store, None, cfg())
    assert s["status"] == "committed" and s["clean"] and s["catalog"]
    for k in s["clean"]:
        t = pq.read_table(io.BytesIO(store.get(k)))
        assert t.schema.equals(CLEAN_SCHEMA), t.schema
        assert t.num_rows > 0
    assert pq.read_table(io.BytesIO(store.get(s["catalog"]))).schema.equals(CATALOG_SCHEMA)
    assert pq.read_table(io.BytesIO(store.get(s["dedupe"]))).schema.equals(pa.schema([("event_id", pa.string())]))
    # and the content matches the pure core's
    out = clean_tables(raw_objects(sim), cfg(), run_id=s["run_id"])
    got = read_clean(store).sort_by("event_id").to_pylist()  # (dictionaries differ per file: compare values)
    assert got == out["clean"].sort_by("event_id").to_pylist()


# ------------------------------------------------------------------ late catalog, raw rows, replay
def _ev(eid, type_="purchase", item="sku-late", **kw):
    return {
        "event_id": eid,
        "type": type_,
        "ts": "2026-11-28T20:00:00.000Z",
        "platform": "douyin",
        "stream_id": "s-1",
        "user_id": "u-1",
        "item_id": item,
        "price": 100.0,
        "quantity": 1,
        "received_at": "2026-11-28T20:00:01.000Z",
        **kw,
    }


def _put_raw(store, name, rows):
    store.put(
        f"raw/date=2026-11-28/hour=20/{name}.ndjson.gz",
        gzip.compress(b"\n".join(orjson.dumps(r) for r in rows) + b"\n"),
    )


def test_purchases_before_the_catalog_are_kept_and_counted(tmp_path):
    """Default (unknown_items=keep): a purchase/click of an item no catalog named yet is clean, counted
    in GMV; the catalog arriving in a later run changes nothing that was counted."""
    from shared.pipeline.clean import read_analytics

    store = open_store(tmp_path / "store")
    click = {k: v for k, v in _ev("c-1", "product_click").items() if k not in ("price", "quantity")}
    _put_raw(store, "a", [_ev("p-1"), click])
    s = run_clean(store, None, CleanConfig(rules=RULES, tmp_dir=None, threads=2))
    assert s["status"] == "committed" and s["dropped"] == 0 and s["uncatalogued_purchases"] == 1
    assert set(read_clean(store).to_pandas()["event_id"]) == {"p-1", "c-1"}
    assert read_analytics(store, "stream").to_pandas()["gmv"].sum() == 100.0
    _put_raw(
        store,
        "b",
        [
            {
                "event_id": "cat-1",
                "type": "catalog_item",
                "ts": "2026-11-28T21:00:00.000Z",
                "platform": "douyin",
                "item_id": "sku-late",
                "title": "迟到的商品",
                "price": 100.0,
                "received_at": "2026-11-28T21:00:01.000Z",
            }
        ],
    )
    s = run_clean(store, None, CleanConfig(rules=RULES, tmp_dir=None, threads=2))
    assert s["catalog_items"] == 1 and read_analytics(store, "stream").to_pandas()["gmv"].sum() == 100.0


def test_quarantined_rows_carry_raw_and_replay_exactly_once(tmp_path):
    from shared.pipeline.replay import replay

    store = open_store(tmp_path / "store")
    _put_raw(
        store, "a", [_ev("ok-1", "add_to_cart"), _ev("bad-1", "add_to_cart", quantity=-2), _ev("unk-1")]
    )  # unknown item, in the old "quarantine" mode
    s = run_clean(store, None, cfg())
    assert s["dropped"] == 2
    q = quarantine_rows(store)
    assert {r["event_id"] for r in q} == {"bad-1", "unk-1"} and all(r["raw"] for r in q)  # never raw: null
    # the operator fixes the rows (quantity; the item's catalog arrived) and replays them
    fixed = []
    for r in q:
        raw = orjson.loads(r["raw"])
        if raw["event_id"] == "bad-1":
            raw["quantity"] = 2
        fixed.append({**r, "raw": orjson.dumps(raw).decode()})
    still_bad = {
        **q[0],
        "raw": orjson.dumps({**orjson.loads(q[0]["raw"]), "event_id": "bad-2", "quantity": -1}).decode(),
    }
    out = replay(store, fixed + [still_bad])
    assert len(out["objects"]) == 1 and not out["refused"]
    again = replay(store, fixed + [still_bad])  # the same fix replayed twice: a no-op
    assert again["objects"] == [] and again["already_replayed"] == out["objects"]
    s = run_clean(store, None, cfg(unknown_items="keep"))
    assert s["rows_out"] == 2 and s["dropped"] == 1  # bad-2 is quarantined again, through the same rules
    ids = read_clean(store).to_pandas()["event_id"].tolist()
    assert sorted(ids) == ["bad-1", "ok-1", "unk-1"]
    # a replay under another grouping still cannot double an event: clean's dedupe index drops it
    replay(store, fixed[:1])
    s = run_clean(store, None, cfg(unknown_items="keep"))
    assert s["rows_out"] == 0 and s["duplicates_seen_before"] == 1
    assert sorted(read_clean(store).to_pandas()["event_id"].tolist()) == ["bad-1", "ok-1", "unk-1"]
    assert replay(store, [{"raw": None}])["refused"]


# ------------------------------------------------------------------------------ host actions
def _line(r: dict, rec: str) -> bytes:
    return orjson.dumps(dict(r, received_at=rec))


def test_host_actions_are_cleaned_deduplicated_and_timed_like_viewer_events(tmp_path):
    from shared.pipeline.clean import HOST_SCHEMA, read_analytics
    from tests import factories

    start = factories.host_event(
        "stream_start", stream_id="s-h", host_id="h-1", host_name="主播 A", title="今晚 上新",
        scheduled_start="2026-11-27T20:00:00+08:00", ts="2026-11-27T12:00:00.000Z",
    )  # fmt: skip
    slot = factories.host_event("slot_start", stream_id="s-h", slot_id="k1", item_id="sku-1", price=9.9,
                                ts="2026-11-27T12:05:00.000Z")  # fmt: skip
    # the console clock 2 h ahead of the receiver: corrected to received_at, like a viewer event
    ahead = factories.host_event("showcase_update", stream_id="s-h", item_id="sku-1", change="stock", stock=0,
                                 ts="2026-11-27T14:10:00.000Z")  # fmt: skip
    # sent 3 h before it was received: kept, flagged late
    late = factories.host_event("slot_end", stream_id="s-h", slot_id="k0", item_id="sku-0", ts="2026-11-27T09:00:00Z")
    viewer = [
        factories.event("stream_enter", stream_id="s-h", user_id="u-1", ts="2026-11-27T12:01:00.000Z"),
        factories.event("purchase", stream_id="s-h", user_id="u-1", price=20.0, ts="2026-11-27T12:06:00.000Z"),
    ]
    rec = "2026-11-27T12:10:00.000Z"
    lines = [_line(r, rec) for r in [start, slot, ahead, late, *viewer]]
    lines.append(_line(slot, "2026-11-27T12:09:00.000Z"))  # a redelivered copy, received earlier: it wins
    bad = factories.host_event("showcase_update", stream_id="s-h", change="price")  # no price: quarantined
    lines.append(_line(bad, rec))
    store = open_store(tmp_path / "store")
    store.put("raw/date=2026-11-27/hour=12/a.ndjson.gz", gzip.compress(b"\n".join(lines) + b"\n"))
    s1 = run_clean(store, None, cfg(unknown_items="keep"), now=pd.Timestamp("2026-11-27T13:00:00Z").timestamp())
    assert s1["status"] == "committed"
    assert (s1["rows_out"], s1["host_rows"], s1["duplicates_in_run"], s1["dropped"]) == (2, 4, 1, 1)
    assert s1["rows_in"] == s1["rows_out"] + s1["host_rows"] + s1["dropped"] + s1["duplicates"] + s1["catalog_rows"]
    m = load_manifest(store)[0]
    assert [f["streams"] for f in m["host_files"]] == [["s-h"]]
    import io

    import pyarrow.parquet as pq

    host = pq.read_table(io.BytesIO(store.get(m["host_files"][0]["key"])))
    assert host.schema == HOST_SCHEMA
    h = host.to_pandas().set_index("event_id")
    assert set(h.index) == {start["event_id"], slot["event_id"], ahead["event_id"], late["event_id"]}
    assert "user_id" not in h.columns
    assert h.loc[slot["event_id"], "received_at"] == pd.Timestamp("2026-11-27T12:09:00Z")  # the earliest copy
    assert h.loc[slot["event_id"], "price"] == 9.9 and h.loc[slot["event_id"], "currency"] == "CNY"
    assert h.loc[ahead["event_id"], "ts_corrected"] and h.loc[ahead["event_id"], "ts"] == pd.Timestamp(rec)
    assert h.loc[ahead["event_id"], "ts_sent"] == "2026-11-27T14:10:00.000Z" and h.loc[ahead["event_id"], "stock"] == 0
    assert h.loc[late["event_id"], "late"] and not h.loc[late["event_id"], "ts_corrected"]
    assert h.loc[start["event_id"], "scheduled_start"] == pd.Timestamp("2026-11-27T12:00:00Z")
    assert h.loc[start["event_id"], "title"] == "今晚 上新" and h.loc[start["event_id"], "host_name"] == "主播 A"
    q = quarantine_rows(store)
    assert [r["reasons"] for r in q] == [["price: Field required when change is 'price'"]]
    assert set(read_clean(store)["event_id"].to_pylist()) == {v["event_id"] for v in viewer}
    a = read_analytics(store, "stream").to_pandas().set_index("stream_id")
    assert a.loc["s-h", "title"] == "今晚 上新" and a.loc["s-h", "host_id"] == "h-1"
    assert a.loc["s-h", "started_at"] == pd.Timestamp("2026-11-27T12:00:00Z") and pd.isna(a.loc["s-h", "ended_at"])
    kpis = a.loc["s-h"].drop(["title", "host_id", "host_name", "started_at", "ended_at"])

    # a later run: the same stream_start again (seen before: a duplicate) and the stream_end alone
    end = factories.host_event("stream_end", stream_id="s-h", ts="2026-11-27T15:00:00.000Z")
    store.put(
        "raw/date=2026-11-27/hour=15/b.ndjson.gz",
        gzip.compress(_line(start, "2026-11-27T15:00:01Z") + b"\n" + _line(end, "2026-11-27T15:00:01Z") + b"\n"),
    )
    s2 = run_clean(store, None, cfg(unknown_items="keep"), now=pd.Timestamp("2026-11-27T16:00:00Z").timestamp())
    assert (s2["rows_out"], s2["host_rows"], s2["duplicates_seen_before"]) == (0, 1, 1)
    a2 = read_analytics(store, "stream").to_pandas().set_index("stream_id")
    assert a2.loc["s-h", "ended_at"] == pd.Timestamp("2026-11-27T15:00:00Z")
    assert a2.loc["s-h", "title"] == "今晚 上新"
    # the span is now the host's (stream_start 12:00 -> stream_end 15:00): the open session of u-1 (no
    # stream_leave) lasts to the end; every count and sum is the same
    assert (a2.loc["s-h", "start"], a2.loc["s-h", "end"]) == (
        pd.Timestamp("2026-11-27T12:00Z"),
        end_ts := pd.Timestamp("2026-11-27T15:00Z"),
    )
    assert (
        a2.loc["s-h", "duration_s"] == 3 * 3600
        and a2.loc["s-h", "total_watch_s"] == (end_ts - pd.Timestamp("2026-11-27T12:01Z")).total_seconds()
    )
    span = ["start", "end", "duration_s", "total_watch_s", "avg_watch_s", "avg_concurrent"] + [
        c for c in kpis.index if c.endswith("_per_min")
    ]
    pd.testing.assert_series_equal(
        a2.loc["s-h"].drop(["title", "host_id", "host_name", "started_at", "ended_at", *span]), kpis.drop(span)
    )
