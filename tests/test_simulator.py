"""Tests of the traffic simulator (shared/simulator.py): determinism, contract validity, fault
bookkeeping, session invariants, taste ground truth, outputs. Small worlds: the file runs in seconds."""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict

import numpy as np
import orjson
import pytest

from shared.contract import validate_record
from shared.signing import verify
from shared.simulator import (INVALID_KINDS, FaultRates, SimConfig, main, parse_ts_ms, send, simulate,
                              write_files)

SMALL = SimConfig(seed=11, n_streams=4, n_users=1200, n_items=300, mean_viewers_per_stream=150)
FAULTY = FaultRates(duplicate=0.02, malformed_json=0.004, wrong_type=0.004, missing_field=0.004,
                    negative_quantity=0.004, unknown_item=0.003, unknown_type=0.004, late=0.01, skew=0.01)


@pytest.fixture(scope="module")
def clean_sim():
    return simulate(SMALL)


@pytest.fixture(scope="module")
def faulty_sim():
    sim = simulate(SMALL, faults=FAULTY)
    sim.events  # materialise once
    return sim


def _key(row, line: int, log) -> str | None:
    """The fault_log key of a sent row, or None if the row is not a fault."""
    if isinstance(row, dict) and isinstance(row.get("event_id"), str):
        m = log.get(row["event_id"])
        if m is not None and (m["line"] == line or any(a["line"] == line for a in m.get("also", []))):
            return row["event_id"]
    return f"line:{line}" if f"line:{line}" in log else None


# --- determinism -------------------------------------------------------------------------------

def test_same_seed_same_output_and_streaming_equals_materialised():
    a, b = simulate(SMALL, faults=FAULTY), simulate(SMALL, faults=FAULTY)
    assert a.catalog == b.catalog
    assert a.events == b.events
    assert list(b.iter_events()) == a.events  # streaming path, same rows
    assert a.truth.fault_log == b.truth.fault_log


def test_different_seed_differs(clean_sim):
    other = simulate(SMALL, seed=12)
    assert other.catalog != clean_sim.catalog
    assert other.events[:50] != clean_sim.events[:50]


# --- contract validity -------------------------------------------------------------------------

def test_clean_feed_all_valid_and_no_faults(clean_sim):
    assert clean_sim.truth.fault_log == {}
    for r in clean_sim.catalog + clean_sim.events:
        rec, why = validate_record(r)
        assert why is None, (r, why)
    types = Counter(r["type"] for r in clean_sim.events)
    for t in ("stream_enter", "stream_leave", "like", "comment", "product_impression", "product_click",
              "add_to_cart", "purchase", "gift"):
        assert types[t] > 0, t
    ids = [r["event_id"] for r in clean_sim.events]
    assert len(ids) == len(set(ids))
    offsets = Counter("Z" if r["ts"].endswith("Z") else r["ts"][-6:] for r in clean_sim.events)
    assert offsets["Z"] > 0 and offsets["+08:00"] > 0
    assert all(re.match(r".*\.\d{3}(Z|\+08:00)$", r["ts"]) for r in clean_sim.events[:500])


def test_every_fault_row_logged_and_invalid_ones_fail_naming_the_field(faulty_sim):
    log = faulty_sim.truth.fault_log
    catalog_ids = {c["item_id"] for c in faulty_sim.catalog}
    seen: Counter = Counter()
    kinds_seen: Counter = Counter()
    for line, row in enumerate(faulty_sim.events):
        key = _key(row, line, log)
        if key is None:  # a real event, sent as is
            assert isinstance(row, dict)
            rec, why = validate_record(row)
            assert why is None, (row, why)
            assert row.get("item_id") is None or row["item_id"] in catalog_ids
            continue
        m = log[key]
        m = m if m["line"] == line else next(a for a in m["also"] if a["line"] == line)
        kinds_seen[m["kind"]] += 1
        seen[key] += 1
        if m["kind"] == "malformed_json":
            assert isinstance(row, str)
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(row)
        elif m["kind"] == "unknown_item":
            assert validate_record(row)[1] is None and row["type"] == "purchase"
            assert row["item_id"] not in catalog_ids
        elif m["kind"] in INVALID_KINDS:
            rec, why = validate_record(row)
            assert why is not None and any(w.startswith(m["field"] + ":") for w in why), (m, why)
        elif m["kind"] == "skew":
            assert validate_record(row)[1] is None
            assert abs(parse_ts_ms(row["ts"]) - parse_ts_ms(m["true_ts"])) == round(abs(m["skew_s"]) * 1000) >= 600_000
        elif m["kind"] in ("duplicate", "late"):
            assert validate_record(row)[1] is None
    assert set(kinds_seen) == set(FAULTY.__dataclass_fields__)  # every kind occurred
    n_entries = sum(1 + len(v.get("also", [])) for v in log.values())
    assert sum(seen.values()) == n_entries  # every log entry points at exactly one sent row
    # duplicates: the event_id is sent exactly twice, identical rows
    sent_ids = Counter(r["event_id"] for r in faulty_sim.events if isinstance(r, dict) and "event_id" in r)
    for k, v in log.items():
        if v["kind"] == "duplicate":
            assert sent_ids[k] == 2
    # late rows come after all on-time rows
    n_late = sum(1 for v in log.values() if v["kind"] == "late")
    late_lines = sorted(v["line"] for v in log.values() if v["kind"] == "late")
    assert late_lines == list(range(len(faulty_sim.events) - n_late, len(faulty_sim.events)))


def test_expected_clean(faulty_sim):
    t = faulty_sim.truth
    df = t.expected_clean()
    log = t.fault_log
    assert df["event_id"].is_unique
    assert len(df) == t.summary()["true_events"]
    invalid = {k for k, v in log.items() if v["kind"] in INVALID_KINDS}
    assert invalid and not invalid & set(df["event_id"])
    skewed = {k: v for k, v in log.items() if v["kind"] == "skew"}
    sub = df.set_index("event_id").loc[list(skewed)]
    assert sub["skewed"].all()
    assert all(sub.loc[k, "ts"] == v["true_ts"] for k, v in skewed.items())
    assert df["late"].sum() == sum(1 for v in log.values() if v["kind"] == "late")
    # the clean table is what the faulty feed minus faults gives back
    assert list(df["event_id"]) == [r["event_id"] for r in simulate(SMALL).events]


# --- session invariants ------------------------------------------------------------------------

def test_session_invariants(clean_sim):
    df = clean_sim.truth.expected_clean()
    showcase = {s: set(clean_sim.truth.showcase(s)) for s in df["stream_id"].unique()}
    orders = {}
    for (stream, user), g in df.groupby(["stream_id", "user_id"], sort=False):
        sess = g[g["type"] != "refund"]
        assert sess["ts_utc"].is_monotonic_increasing  # monotone within the session
        assert sess["type"].iloc[0] == "stream_enter"
        assert (sess["type"] == "stream_enter").sum() == 1
        if (sess["type"] == "stream_leave").any():
            assert sess["type"].iloc[-1] == "stream_leave"
        carts = Counter()
        for r in sess.itertuples():
            if r.type in ("product_impression", "product_click", "add_to_cart", "purchase"):
                assert r.item_id in showcase[stream]
            if r.type == "add_to_cart":
                carts[r.item_id] += r.quantity
            if r.type == "purchase":
                assert carts[r.item_id] >= r.quantity  # bought only what was carted
                carts[r.item_id] -= r.quantity
                orders[r.order_id] = (r.item_id, r.quantity, r.ts_utc, user)
        for r in g[g["type"] == "refund"].itertuples():
            item, qty, bought_at, u = orders[r.order_id]
            assert (r.item_id, r.quantity, u) == (item, qty, user) and r.ts_utc > bought_at
    # repeat users: some users watch several streams
    assert (df[df["type"] == "stream_enter"].groupby("user_id").size() > 1).any()


def test_purchases_follow_latent_taste(clean_sim):
    t = clean_sim.truth
    df = t.expected_clean()
    buys = df[df["type"] == "purchase"]
    assert len(buys) > 30
    rng = np.random.default_rng(0)
    bought, rand = [], []
    for r in buys.itertuples():
        bought.append(t.affinity(r.user_id, [r.item_id])[0])
        show = t.showcase(r.stream_id)
        rand.append(t.affinity(r.user_id, [show[rng.integers(len(show))]])[0])
    assert np.mean(bought) > np.mean(rand) + 0.5
    p = t.purchase_prob(buys.iloc[0]["user_id"])
    assert p.shape == (len(t.item_ids),) and ((0 < p) & (p < 1)).all()


def test_catalog_text_and_prices(clean_sim):
    cat = clean_sim.catalog
    assert len(cat) == SMALL.n_items
    assert all(re.search(r"[\u4e00-\u9fff]", c["title"]) for c in cat)
    assert all("/" in c["category"] and c["price"] > 0 and c["currency"] == "CNY" for c in cat)
    streams = clean_sim.truth.streams
    assert streams["showcase"].map(len).between(10, 40).all()
    first_event = min(parse_ts_ms(e["ts"]) for e in clean_sim.events[:100])
    assert max(parse_ts_ms(c["ts"]) for c in cat) < first_event


# --- outputs -----------------------------------------------------------------------------------

def test_write_files(tmp_path):
    sim = simulate(SimConfig(seed=3, n_streams=2, n_users=300, n_items=80, mean_viewers_per_stream=40,
                             faults="default"))
    paths = write_files(sim, tmp_path, gzip_output=True)
    with gzip.open(paths["events"], "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == len(sim.events)
    truth = json.loads(open(paths["truth"], encoding="utf-8").read())
    assert truth["fault_log"] == json.loads(orjson.dumps(sim.truth.fault_log))
    import pandas as pd
    assert len(pd.read_parquet(paths["expected_clean"])) == sim.truth.summary()["true_events"]


def test_send_signs_batches_and_retries_503():
    responses = pytest.importorskip("responses")
    sim = simulate(SimConfig(seed=5, n_streams=2, n_users=200, n_items=60, mean_viewers_per_stream=20))
    secrets = {"douyin": "s3cret-d", "kuaishou": "s3cret-k"}
    env = {"DAIHUO_SECRET_DOUYIN": "s3cret-d", "DAIHUO_SECRET_KUAISHOU": "s3cret-k"}
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            return 503, {"Retry-After": "0"}, json.dumps({"error": "busy", "accepted": 0})
        platform = verify(request.headers, request.body, environ=env)
        rows = [json.loads(x) for x in request.body.decode().splitlines() if x]
        assert all(r["platform"] == platform for r in rows)
        body = {"accepted": len(rows), "rejected": 0,
                "results": [{"index": i, "event_id": r["event_id"], "status": "accepted"} for i, r in enumerate(rows)]}
        return 200, {}, json.dumps(body)

    with responses.RequestsMock() as rm:
        rm.add_callback(responses.POST, "http://ingest.test/", callback=handler)
        res = send(sim, "http://ingest.test/", secrets, batch_size=100, concurrency=2, progress=False)
    total = len(sim.catalog) + len(sim.events)
    assert res.accepted == res.rows_sent == total and res.rejected == 0
    assert res.failed_batches == 0 and res.requests == res.batches + 1


def test_cli(tmp_path, capsys):
    assert main(["--seed", "2", "--streams", "2", "--users", "200", "--items", "50", "--viewers", "20",
                 "--faults", "default", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["events_by_type"]["stream_enter"] > 0
    assert (tmp_path / "events.ndjson").exists() and (tmp_path / "truth.json").exists()
