"""Tests of the traffic simulator (devtools/simulator.py): determinism, contract validity, fault
bookkeeping, session invariants, taste ground truth, outputs. Small worlds: the file runs in seconds."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict

import numpy as np
import orjson
import pytest

from devtools.simulator import INVALID_KINDS, FaultRates, SimConfig, main, parse_ts_ms, send, simulate, write_files
from shared.contract import validate_record
from shared.signing import verify
from tests.logdir import LOGS

SMALL = SimConfig(seed=11, n_streams=4, n_users=1200, n_items=300, mean_viewers_per_stream=150)
FAULTY = FaultRates(
    duplicate=0.02,
    malformed_json=0.004,
    wrong_type=0.004,
    missing_field=0.004,
    negative_quantity=0.004,
    unknown_item=0.003,
    unknown_type=0.004,
    late=0.01,
    skew=0.01,
)


@pytest.fixture(scope="module")
def clean_sim():
    return simulate(SMALL)


@pytest.fixture(scope="module")
def faulty_sim():
    sim = simulate(SMALL, faults=FAULTY)
    _ = sim.events  # materialise once
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
    for t in (
        "stream_enter",
        "stream_leave",
        "like",
        "comment",
        "product_impression",
        "product_click",
        "add_to_cart",
        "purchase",
        "gift",
    ):
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
    sim = simulate(
        SimConfig(seed=3, n_streams=2, n_users=300, n_items=80, mean_viewers_per_stream=40, faults="default")
    )
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
        body = {
            "accepted": len(rows),
            "rejected": 0,
            "results": [{"index": i, "event_id": r["event_id"], "status": "accepted"} for i, r in enumerate(rows)],
        }
        return 200, {}, json.dumps(body)

    with responses.RequestsMock() as rm:
        rm.add_callback(responses.POST, "http://ingest.test/", callback=handler)
        res = send(sim, "http://ingest.test/", secrets, batch_size=100, concurrency=2, progress=False)
    total = len(sim.catalog) + len(sim.events)
    assert res.accepted == res.rows_sent == total and res.rejected == 0
    assert res.failed_batches == 0 and res.requests == res.batches + 1


def test_cli(tmp_path, capsys):
    assert (
        main(
            [
                "--seed",
                "2",
                "--streams",
                "2",
                "--users",
                "200",
                "--items",
                "50",
                "--viewers",
                "20",
                "--faults",
                "default",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["events_by_type"]["stream_enter"] > 0
    assert (tmp_path / "events.ndjson").exists() and (tmp_path / "truth.json").exists()


# --- repeat world (multi-day, consumable rebuys, live-room dynamics) ------------------------------

from devtools.simulator import CATEGORY_CYCLE_DAYS, REPEAT_WORLD, repeat_profile  # noqa: E402

REPEAT = SimConfig.repeat_preset(seed=1, scale=0.3)  # 45 streams over 28 days, 720 users, 135 items


@pytest.fixture(scope="module")
def repeat_sim():
    sim = simulate(REPEAT)
    _ = sim.events
    return sim


@pytest.fixture(scope="module")
def repeat_buys(repeat_sim):
    import pandas as pd

    b = pd.DataFrame([r for r in repeat_sim.events if r["type"] == "purchase"])
    b["ms"] = b["ts"].map(parse_ts_ms)
    b = b.sort_values(["ms", "event_id"]).reset_index(drop=True)
    b["repeat"] = b.duplicated(["user_id", "item_id"])
    b["category"] = b["item_id"].map(dict(zip(repeat_sim.truth.item_ids, repeat_sim.truth.item_category)))
    b["gap_days"] = b.groupby(["user_id", "item_id"])["ms"].diff() / 86_400_000
    return b


def test_default_config_output_unchanged():
    """The repeat-world knobs default to no-ops: the single evening is byte-identical to before."""
    import hashlib

    sim = simulate(SMALL, faults="default")
    h = hashlib.sha256(b"".join((r.encode() if isinstance(r, str) else orjson.dumps(r)) + b"\n" for r in sim.events))
    assert h.hexdigest() == "dba3a5dc8e090d47ae194daff91c954cd962f83e02bae2159acad22c5a184f6d"
    cfg = sim.truth.to_json()["config"]
    assert "days" not in cfg and "repeat_purchases" not in cfg and "repeat" not in sim.truth.summary()
    assert "presentation" not in sim.world.streams[0]


def test_repeat_world_valid_and_deterministic(repeat_sim):
    again = simulate(REPEAT)
    assert again.events == repeat_sim.events and again.catalog == repeat_sim.catalog
    for r in repeat_sim.catalog + repeat_sim.events:
        assert validate_record(r)[1] is None, r
    ids = [r["event_id"] for r in repeat_sim.events]
    assert len(ids) == len(set(ids))
    buys = [r for r in repeat_sim.events if r["type"] == "purchase"]
    assert all(r["price"] > 0 and r["quantity"] >= 1 and r["order_id"] and r["currency"] == "CNY" for r in buys)
    assert len({r["order_id"] for r in buys}) == len(buys)
    # many days, hosts returning with overlapping showcases, viewers returning to them
    st = repeat_sim.truth.streams
    assert (st["end"].max() - st["start"].min()).days >= 25
    per_host = st.groupby("host_id").size()
    assert per_host.max() >= 3 and len(per_host) < len(st) / 2
    h = per_host.idxmax()
    shows = [set(s) for s in st[st["host_id"] == h]["showcase"]]
    assert np.mean([len(a & b) / len(a | b) for a, b in zip(shows, shows[1:])]) > 0.2
    enters = [(r["user_id"], r["stream_id"]) for r in repeat_sim.events if r["type"] == "stream_enter"]
    host_of = dict(zip(st["stream_id"], st["host_id"]))
    visits = Counter((u, host_of[s]) for u, s in enters)
    assert sum(v for v in visits.values() if v > 1) > 0.5 * len(enters)
    assert simulate(REPEAT, seed=2).events[:50] != repeat_sim.events[:50]


def test_repeat_share_in_range(repeat_sim, repeat_buys):
    share = repeat_buys["repeat"].mean()
    assert 0.35 <= share <= 0.55, share
    assert len(repeat_buys) > 1000
    s = repeat_sim.truth.summary()["repeat"]
    assert s["purchases"] == len(repeat_buys) and abs(s["repeat_share"] - share) < 0.02


def test_consumables_rebought_around_their_cycle_durables_rarely(repeat_buys, repeat_sim):
    assert repeat_sim.truth.repeat_profile() == repeat_profile()
    checked = 0
    for cat, g in repeat_buys.groupby("category"):
        cyc = CATEGORY_CYCLE_DAYS[cat]
        gaps = g["gap_days"].dropna()
        if cyc is None:
            assert g["repeat"].mean() < 0.01, (cat, g["repeat"].mean())
        elif len(gaps) >= 20:
            assert 0.5 * cyc <= gaps.median() <= 1.5 * cyc, (cat, cyc, gaps.median())
            checked += 1
    assert checked >= 3
    cons = repeat_buys["category"].map(CATEGORY_CYCLE_DAYS).notna()
    assert repeat_buys.loc[cons, "repeat"].mean() > 10 * max(repeat_buys.loc[~cons, "repeat"].mean(), 1e-3)


def test_presented_item_sells_more(repeat_sim):
    """Per impression of an item the viewer never bought, the item the host presents at that moment
    converts several times better than another showcase item seen in the cart list."""
    t = repeat_sim.truth
    rows = [r for r in t.clean_events() if r["type"] in ("product_impression", "purchase")]
    bought: dict = {}
    for r in sorted((r for r in rows if r["type"] == "purchase"), key=lambda r: parse_ts_ms(r["ts"])):
        bought.setdefault((r["user_id"], r["item_id"]), parse_ts_ms(r["ts"]))
    pres = {s: t.presentation(s) for s in {r["stream_id"] for r in rows}}
    buy_in = {(r["stream_id"], r["user_id"], r["item_id"]) for r in rows if r["type"] == "purchase"}
    n = Counter()
    for r in rows:
        if r["type"] != "product_impression":
            continue
        ms = parse_ts_ms(r["ts"])
        if bought.get((r["user_id"], r["item_id"]), np.inf) < ms:
            continue  # a rebuy candidate
        p = pres[r["stream_id"]]
        k = min(int(np.searchsorted(p["end_ms"].to_numpy(), ms, side="right")), len(p) - 1)
        key = "pres" if p["item_id"].iat[k] == r["item_id"] else "other"
        n[key] += 1
        n[key + "_buy"] += (r["stream_id"], r["user_id"], r["item_id"]) in buy_in
    rate_p, rate_o = n["pres_buy"] / n["pres"], n["other_buy"] / n["other"]
    assert n["pres"] > 1000 and n["other"] > 1000
    assert rate_p > 3 * rate_o, (rate_p, rate_o)


def test_social_proof_clusters_sales_in_the_room(repeat_sim):
    def clustered(sim):
        by = defaultdict(list)
        for r in sim.truth.clean_events():
            if r["type"] == "purchase":
                by[(r["stream_id"], r["item_id"])].append(parse_ts_ms(r["ts"]))
        n = hit = 0
        for ts in by.values():
            ts.sort()
            for a, b in zip(ts, ts[1:]):
                n += 1
                hit += b - a < 600_000
        return hit / max(n + len(by), 1)

    flat = simulate(REPEAT, social_proof=0.0)
    assert clustered(repeat_sim) > clustered(flat)
    assert len([r for r in repeat_sim.events if r["type"] == "purchase"]) > len(
        [r for r in flat.events if r["type"] == "purchase"]
    )


def test_repeat_preset_and_cli(tmp_path, capsys):
    full = SimConfig.repeat_preset(seed=3)
    assert full.days == REPEAT_WORLD["days"] == 28 and 1500 <= full.n_users <= 3000
    assert 300 <= full.n_items <= 600 and 100 <= full.n_streams <= 200
    assert main(["--repeat-world", "--scale", "0.1", "--seed", "4", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["repeat"]["purchases"] > 0 and out["summary"]["hosts"] >= 2
    truth = json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))
    assert truth["config"]["days"] == 28 and truth["repeat_profile"]["食品/零食"]["cycle_days"] == 7
    assert "presentation" in truth["streams"][0]


# --- host-side events (stream start/end, presentation slots, showcase, stock, flash sales) ----------

from devtools.simulator import HOST_TYPES  # noqa: E402

HOST = SimConfig(seed=11, n_streams=4, n_users=1200, n_items=300, mean_viewers_per_stream=250, host_events=True)


@pytest.fixture(scope="module")
def host_sim():
    sim = simulate(HOST)
    _ = sim.events
    return sim


@pytest.fixture(scope="module")
def host_faulty():
    sim = simulate(HOST, faults=FAULTY)
    _ = sim.events
    return sim


def _ms(r) -> int:
    return parse_ts_ms(r["ts"])


def test_host_events_off_by_default_and_valid_when_on(host_sim):
    plain = simulate(SMALL)
    assert not {r["type"] for r in plain.events} & set(HOST_TYPES)
    assert "host_events" not in plain.truth.to_json()["config"]
    with pytest.raises(ValueError):
        plain.host_truth.slots()
    from shared.contract import HOST_ACTIONS

    assert HOST_TYPES == HOST_ACTIONS
    types = Counter(r["type"] for r in host_sim.events)
    assert all(types[t] >= 4 for t in HOST_TYPES), types
    changes = Counter(r["change"] for r in host_sim.events if r["type"] == "showcase_update")
    assert {"add", "remove", "price", "stock", "sold_out"} <= set(changes), changes
    for r in host_sim.catalog + host_sim.events:
        assert validate_record(r)[1] is None, (r, validate_record(r)[1])
    ids = [r["event_id"] for r in host_sim.events]
    assert len(ids) == len(set(ids))
    for r in host_sim.events:
        if r["type"] in HOST_TYPES:
            assert "user_id" not in r and r["stream_id"]
    meta = host_sim.host_truth.streams.set_index("stream_id")
    for r in host_sim.events:
        if r["type"] == "stream_start":
            m = meta.loc[r["stream_id"]]
            assert (r["host_id"], r["host_name"], r["title"]) == (m["host_id"], m["host_name"], m["title"])
            assert re.search(r"[\u4e00-\u9fff]", r["title"]) and _ms(r) == m["start_ms"]
            assert abs(parse_ts_ms(r["scheduled_start"]) - m["start_ms"]) <= 8 * 60_000
            assert parse_ts_ms(r["scheduled_end"]) > parse_ts_ms(r["scheduled_start"])
    # one name per host id
    assert (meta.groupby("host_id")["host_name"].nunique() == 1).all()


def test_slots_cover_the_stream(host_sim):
    ht = host_sim.host_truth
    slots, items = ht.slots(), ht.items()
    by_stream = defaultdict(list)
    for r in host_sim.events:
        by_stream[r["stream_id"]].append(r)
    for st in ht.streams.itertuples():
        rows = by_stream[st.stream_id]
        assert rows[0]["type"] == "stream_start" and _ms(rows[0]) == st.start_ms
        end = next(r for r in rows if r["type"] == "stream_end")
        assert _ms(end) == st.end_ms
        # every viewer action but refunds happens while the room is open
        for r in rows:
            if r["type"] not in HOST_TYPES and r["type"] != "refund":
                assert st.start_ms <= _ms(r) < st.end_ms, r
        sl = slots[slots["stream_id"] == st.stream_id].sort_values("start_ms")
        s, e = sl["start_ms"].to_numpy(), sl["end_ms"].to_numpy()
        assert (e > s).all() and (s[1:] >= e[:-1]).all()  # one item at a time
        assert s[0] - st.start_ms <= 180_000 and st.end_ms - e[-1] <= 700_000
        assert (s[1:] - e[:-1]).max() <= 30_000  # short chats between slots
        assert (e - s).sum() > 0.75 * (st.end_ms - st.start_ms)
        # the slot events say exactly the truth, each slot_start closed by its slot_end
        ev = [r for r in rows if r["type"] in ("slot_start", "slot_end")]
        assert [(r["slot_id"], r["item_id"], _ms(r)) for r in ev[0::2]] == list(zip(sl["slot_id"], sl["item_id"], s))
        assert [(r["slot_id"], _ms(r)) for r in ev[1::2]] == list(zip(sl["slot_id"], e))
        assert all(a["type"] == "slot_start" and b["type"] == "slot_end" for a, b in zip(ev[0::2], ev[1::2]))
        # the item on stage is on the shelf for the whole slot; flash = below the list price
        it = items[items["stream_id"] == st.stream_id].set_index("item_id")
        for x in sl.itertuples():
            assert it.loc[x.item_id, "added_ms"] <= x.start_ms
            assert pd_none(it.loc[x.item_id, "removed_ms"]) or x.end_ms <= it.loc[x.item_id, "removed_ms"]
            assert (x.price < x.list_price) if x.flash else (x.price == x.list_price)
        assert ht.on_stage(st.stream_id, int(s[0]))["slot_id"] == sl["slot_id"].iloc[0]
        assert ht.on_stage(st.stream_id, int(e[0])) is None or e[0] == s[1]
    assert 0.05 < slots["flash"].mean() < 0.3


def pd_none(v) -> bool:
    return v is None or bool(pd.isna(v))


def test_showcase_and_sold_out_respected(host_sim):
    ht = host_sim.host_truth
    items, so = ht.items(), ht.sold_out()
    assert len(so) >= 3 and so["restock_ms"].notna().any()
    buys = defaultdict(list)
    shelf = {(x.stream_id, x.item_id): (x.added_ms, x.removed_ms) for x in items.itertuples()}
    for r in host_sim.events:
        if r["type"] == "purchase":
            buys[(r["stream_id"], r["item_id"])].append((_ms(r), r["quantity"]))
        if r["type"] in ("product_impression", "product_click", "add_to_cart", "purchase"):
            added, removed = shelf[(r["stream_id"], r["item_id"])]
            assert added <= _ms(r) and (pd_none(removed) or _ms(r) < removed), r  # on the shelf
            assert r["price"] == ht.price_at(r["stream_id"], r["item_id"], _ms(r))
    # stock: the units sold up to each sell-out equal the stock set before it; nothing sold while out
    upd = defaultdict(list)
    for r in host_sim.events:
        if r["type"] == "showcase_update" and r["change"] in ("stock", "sold_out"):
            upd[(r["stream_id"], r["item_id"])].append((_ms(r), r["change"], r.get("stock")))
    n_out = 0
    for key, us in upd.items():
        timeline = sorted([(t, 1, c, s) for t, c, s in us] + [(t, 0, "buy", q) for t, q in buys[key]])
        left, out = None, False
        for t, _, c, v in timeline:
            if c == "stock":
                left, out = v, v == 0
            elif c == "sold_out":
                assert left == 0 and not out
                out, n_out = True, n_out + 1
            else:
                assert not out and left is not None and 0 < v <= left, (key, t)
                left -= v
        for t, c, _s in us:
            assert ht.is_sold_out(key[0], key[1], t) == (c == "sold_out")
    assert n_out == len(so)
    # unlimited items never sell out; the stock events match the truth
    lim = items[items["stock"].notna()]
    assert {(a, b) for a, b in zip(so["stream_id"], so["item_id"])} <= set(zip(lim["stream_id"], lim["item_id"]))
    # a sold-out item's last buyer may get fewer units than carted, never more; refunds match orders
    df = pd.DataFrame([r for r in host_sim.events if r["type"] in ("add_to_cart", "purchase", "refund")])
    q = df.pivot_table(index=["stream_id", "user_id", "item_id"], columns="type", values="quantity", aggfunc="sum")
    assert (q["purchase"].dropna() <= q["add_to_cart"].reindex(q["purchase"].dropna().index)).all()
    o = df[df["type"] == "purchase"].set_index("order_id")
    for r in df[df["type"] == "refund"].itertuples():
        assert (o.loc[r.order_id, "quantity"], o.loc[r.order_id, "price"]) == (r.quantity, r.price)


def test_on_stage_uplift_measurable():
    """Per impression, the item on stage converts several times better than an item seen in the
    cart list, and a flash sale better still; with the uplift off the same slots (the host side has
    its own RNG) convert far less."""

    def rates(sim):
        ht = sim.host_truth
        n, last = Counter(), {}
        for r in sim.events:  # a purchase is credited to the viewer's last impression of the item
            key = (r["stream_id"], r.get("user_id"), r.get("item_id"))
            if r["type"] == "product_impression":
                sl = ht.on_stage(r["stream_id"], _ms(r))
                k = "off" if sl is None or sl["item_id"] != r["item_id"] else ("flash" if sl["flash"] else "on")
                n[k] += 1
                last[key] = k
            elif r["type"] == "purchase":
                n[last[key] + "_buy"] += 1
        return {k: n[k + "_buy"] / n[k] for k in ("off", "on", "flash")}, n

    cfg = dataclasses.replace(HOST, n_streams=8)
    with_up, n = rates(simulate(cfg))
    assert n["on"] > 1500 and n["flash"] > 200 and n["off"] > 1500, n
    assert with_up["on"] > 2 * with_up["off"] and with_up["flash"] > 1.5 * with_up["on"], with_up
    flat_sim = simulate(cfg, slot_uplift=0.0, flash_uplift=0.0)
    flat, _ = rates(flat_sim)
    assert flat["on"] < 0.6 * with_up["on"] and flat["flash"] < 0.5 * with_up["flash"], (flat, with_up)
    up_sim = simulate(cfg)
    pd.testing.assert_frame_equal(flat_sim.host_truth.slots(), up_sim.host_truth.slots())
    enters = lambda s: [(r["user_id"], r["ts"]) for r in s.events if r["type"] == "stream_enter"]
    assert enters(flat_sim) == enters(up_sim)  # same viewers: only the uplift differs


import dataclasses  # noqa: E402

import pandas as pd  # noqa: E402


def _recount(rows):
    """An independent recount of what a live layer sees: first copy of each valid event_id."""
    seen, out = set(), defaultdict(Counter)
    lvl, peak = Counter(), Counter()
    for r in rows:
        if isinstance(r, str) or validate_record(r)[1] is not None or r["event_id"] in seen:
            continue
        seen.add(r["event_id"])
        c, t = out[r["stream_id"]], r["type"]
        c[t] += 1
        if t == "purchase":
            c["units"] += r.get("quantity") or 1
            c["gmv"] += r["price"] * (r.get("quantity") or 1)
        if t in ("stream_enter", "stream_leave"):
            lvl[r["stream_id"]] += 1 if t == "stream_enter" else -1
            peak[r["stream_id"]] = max(peak[r["stream_id"]], lvl[r["stream_id"]])
        c["current"], c["peak"] = lvl[r["stream_id"]], peak[r["stream_id"]]
    return out


def _check(lt, rc):
    assert set(lt.streams) == set(rc)
    for sid, d in lt.streams.items():
        c = rc[sid]
        assert d["entries"] == c["stream_enter"] and d["leaves"] == c["stream_leave"]
        assert d["impressions"] == c["product_impression"] and d["clicks"] == c["product_click"]
        assert d["add_to_carts"] == c["add_to_cart"] and d["orders"] == c["purchase"]
        assert d["units"] == c["units"] and d["gmv"] == pytest.approx(c["gmv"], abs=0.01)
        assert d["refunds"] == c["refund"] and d["current_viewers"] == c["current"]
        assert d["peak_viewers"] == c["peak"]


def test_live_truth_equals_recount_of_sent_unique_events(host_faulty):
    sim = host_faulty
    log = sim.truth.fault_log
    on_time = sim.live_truth()
    late_ids = {k for k, v in log.items() if v["kind"] == "late"}
    assert set(on_time.late_event_ids) == late_ids and late_ids
    assert {k for k, v in log.items() if v["kind"] == "duplicate"} <= set(on_time.duplicates)
    sent = [r for r in sim.events if not (isinstance(r, dict) and r.get("event_id") in late_ids)]
    _check(on_time, _recount(sent))
    with_late = sim.live_truth(include_late=True)
    _check(with_late, _recount(sim.events))
    # late events are the only difference, and they are counted
    late_rows = [r for r in sim.events if isinstance(r, dict) and r.get("event_id") in late_ids]
    late_n = Counter((r["stream_id"], r["type"]) for r in {r["event_id"]: r for r in late_rows}.values())
    for sid in with_late.streams:
        a, b = with_late.stream(sid), on_time.streams.get(sid, {})
        assert a["orders"] - b.get("orders", 0) == late_n[(sid, "purchase")]
        assert a["entries"] - b.get("entries", 0) == late_n[(sid, "stream_enter")]
    # "so far": the first k rows
    k = len(sim.events) // 3
    _check(
        sim.live_truth(upto=k),
        _recount([r for r in sim.events[:k] if not (isinstance(r, dict) and r.get("event_id") in late_ids)]),
    )
    # per minute and per slot add up to the totals
    pm = on_time.per_minute.groupby("stream_id")[["orders", "gmv", "entries"]].sum()
    for sid, d in on_time.streams.items():
        assert pm.loc[sid, "orders"] == d["orders"] and pm.loc[sid, "entries"] == d["entries"]
        assert pm.loc[sid, "gmv"] == pytest.approx(d["gmv"], abs=0.05)
    assert on_time.slots["orders"].sum() > 0.3 * sum(d["orders"] for d in on_time.streams.values())
    last_minute = on_time.per_minute.groupby("stream_id")["viewers"].last()
    assert all(last_minute[sid] == d["current_viewers"] for sid, d in on_time.streams.items())
    assert on_time.per_minute.groupby("stream_id")["viewers"].max().max() <= max(
        d["peak_viewers"] for d in on_time.streams.values()
    )
    # "selling fast now": orders of each item in the 5 minutes before a moment, recounted by hand
    sid = next(iter(on_time.streams))
    end = int(on_time.slots.loc[on_time.slots["stream_id"] == sid, "end_ms"].iloc[5])
    first = {}
    for r in sent:
        if isinstance(r, dict) and r.get("type") == "purchase" and validate_record(r)[1] is None:
            first.setdefault(r["event_id"], r)
    hand = Counter(r["item_id"] for r in first.values() if r["stream_id"] == sid and end - 300_000 <= _ms(r) < end)
    assert on_time.orders_in_window(sid, end) == dict(hand) and hand
    # with everything sent and the unknown items dropped, the live totals equal the batch's clean table
    full = sim.live_truth(include_late=True, drop_unknown_items=True)
    clean = sim.truth.expected_clean()
    buys = clean[clean["type"] == "purchase"]
    for sid, g in buys.groupby("stream_id"):
        d = full.stream(sid)
        assert d["orders"] == len(g) and d["units"] == g["quantity"].sum()
        assert d["gmv"] == pytest.approx(float((g["price"] * g["quantity"]).sum()), abs=0.01)
    names = {"stream_enter": "entries", "stream_leave": "leaves", "like": "like_events", "comment": "comments"}
    names.update(product_impression="impressions", product_click="clicks", add_to_cart="add_to_carts")
    names.update(share="shares", follow="follows", gift="gifts", refund="refunds")
    per = clean.groupby(["stream_id", "type"]).size()
    for (sid, typ), n in per.items():
        if typ in names:
            assert full.stream(sid)[names[typ]] == n, (sid, typ)
    viewers = clean[clean["type"] != "refund"].groupby("stream_id")["user_id"].nunique()
    assert all(full.stream(sid)["unique_viewers"] == n for sid, n in viewers.items())
    assert all(d["ended"] and d["on_stage"] is None for d in full.streams.values())


def test_live_truth_matches_the_generative_truth(host_sim):
    """Without faults the recount is the generator's own story: slots' sales, sold-out items."""
    lt = host_sim.live_truth()
    ht = host_sim.host_truth
    assert not lt.duplicates and not lt.late_event_ids and not lt.rejected_lines
    sl = lt.slots
    buys = [r for r in host_sim.events if r["type"] == "purchase"]
    for x in sl.sample(20, random_state=0).itertuples():
        mine = [
            r
            for r in buys
            if r["stream_id"] == x.stream_id and r["item_id"] == x.item_id and x.start_ms <= _ms(r) < x.end_ms
        ]
        assert x.orders == len(mine) and x.gmv == pytest.approx(sum(r["price"] * r["quantity"] for r in mine), abs=0.01)
    so = ht.sold_out()
    for sid, d in lt.streams.items():
        last = so[so["stream_id"] == sid].sort_values("sold_out_ms").groupby("item_id").tail(1)
        it = ht.items(sid)
        shelf = set(it.loc[it["removed_ms"].isna(), "item_id"])
        assert set(d["showcase"]) == shelf and set(d["sold_out"]) <= shelf
        assert set(d["sold_out"]) == set(last.loc[last["restock_ms"].isna(), "item_id"]) & shelf
    # mid-stream: the item on stage is the truth's slot
    rows = host_sim.events
    k = next(j for j, r in enumerate(rows) if r["type"] == "slot_start" and j > len(rows) // 2) + 1
    mid = host_sim.live_truth(upto=k)
    r = rows[k - 1]
    assert (
        mid.stream(r["stream_id"])["on_stage"]["slot_id"]
        == r["slot_id"]
        == ht.on_stage(r["stream_id"], _ms(r))["slot_id"]
    )


def test_host_events_deterministic_and_streamed(host_faulty, tmp_path):
    again = simulate(HOST, faults=FAULTY)
    assert again.events == host_faulty.events
    assert list(simulate(HOST, faults=FAULTY).iter_events()) == host_faulty.events
    assert again.truth.fault_log == host_faulty.truth.fault_log
    assert again.host_truth.to_json() == host_faulty.host_truth.to_json()
    assert again.live_truth().streams == host_faulty.live_truth().streams
    other = simulate(HOST, seed=12)
    assert other.host_truth.slots()["item_id"].tolist() != again.host_truth.slots()["item_id"].tolist()
    # host rows get faults like the others (duplicated, late, corrupted copies naming the field)
    log = host_faulty.truth.fault_log
    host_ids = {r["event_id"] for r in host_faulty.truth.clean_events() if r["type"] in HOST_TYPES}
    assert {v["kind"] for k, v in log.items() if k in host_ids or v.get("source_event_id") in host_ids}
    paths = write_files(host_faulty, tmp_path)
    truth = json.loads(open(paths["truth"], encoding="utf-8").read())
    assert truth["config"]["host_events"] is True and truth["host"]["by_stream"]


def test_host_events_sent_signed(host_sim):
    responses = pytest.importorskip("responses")
    env = {"DAIHUO_SECRET_DOUYIN": "s3cret-d", "DAIHUO_SECRET_KUAISHOU": "s3cret-k"}
    got = Counter()

    def handler(request):
        platform = verify(request.headers, request.body, environ=env)
        rows = [json.loads(x) for x in request.body.decode().splitlines() if x]
        assert all(r["platform"] == platform for r in rows)
        got.update(r["type"] for r in rows)
        return 200, {}, json.dumps({"accepted": len(rows), "rejected": 0})

    with responses.RequestsMock() as rm:
        rm.add_callback(responses.POST, "http://ingest.test/", callback=handler)
        res = send(host_sim, "http://ingest.test/", {"douyin": "s3cret-d", "kuaishou": "s3cret-k"}, progress=False)
    assert res.failed_batches == 0 and res.accepted == len(host_sim.catalog) + len(host_sim.events)
    assert all(got[t] == sum(r["type"] == t for r in host_sim.events) for t in HOST_TYPES)


def test_host_events_through_the_real_ingest(pubsub_emulator, tmp_path):
    """The simulator's signed webhooks with host events and faults, POSTed to the ingest function
    (functions-framework over HTTP) publishing to the Pub/Sub emulator: every row the contract accepts
    is accepted and published once per copy, host rows under their own type, the rest rejected."""
    import time

    from devtools import emulators
    from shared.adapters.bus import Bus

    sim = simulate(
        SimConfig(seed=4, n_streams=2, n_users=300, n_items=80, mean_viewers_per_stream=40, host_events=True),
        faults=FAULTY,
    )
    secrets = {"douyin": "sim-secret-d", "kuaishou": "sim-secret-k"}
    bus = Bus()
    bus.ensure_topic("viewer-events")
    bus.ensure_subscription("sim-host-test", "viewer-events", ack_deadline_s=30)
    env = {
        "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "PUBSUB_PROJECT_ID": "daihuo-local",
        "DAIHUO_STORE": str(tmp_path / "store"),
        "DAIHUO_SECRET_DOUYIN": secrets["douyin"],
        "DAIHUO_SECRET_KUAISHOU": secrets["kuaishou"],
        "DAIHUO_PUBLISH_TIMEOUT_S": "5",
    }
    fn = emulators.start_function("ingest", env=env, log_dir=LOGS)
    try:
        res = send(sim, f"http://{fn.host}/", secrets, batch_size=200, concurrency=2, progress=False)
    finally:
        fn.stop()
    valid = [r for r in sim.catalog + sim.events if not isinstance(r, str) and validate_record(r)[1] is None]
    assert res.failed_batches == 0 and res.accepted == len(valid)
    assert res.rejected == len(sim.events) + len(sim.catalog) - len(valid)
    got: Counter = Counter()
    types: dict[str, str] = {}
    deadline, empty = time.monotonic() + 60, 0
    while time.monotonic() < deadline and (sum(got.values()) < len(valid) or empty < 1):
        msgs = bus.pull("sim-host-test", 1000, timeout_s=2)
        bus.ack("sim-host-test", [m.ack_id for m in msgs])
        empty = 0 if msgs else empty + 1
        for m in msgs:
            for line in m.data.split(b"\n"):
                e = orjson.loads(line)
                got[e["event_id"]] += 1
                assert e["type"] in m.attributes["types"].split(",")
                types[e["event_id"]] = e["type"]
    bus.close()
    assert got == Counter(r["event_id"] for r in valid)
    assert {types[r["event_id"]] for r in valid if r["type"] in HOST_TYPES} == set(HOST_TYPES)


def test_empty_rooms_still_have_their_host_side_and_titles_are_chinese():
    sim = simulate(HOST, n_streams=60, mean_viewers_per_stream=0.01)
    assert all(re.search(r"[\u4e00-\u9fff]", t) for t in sim.truth.streams["title"])
    assert sim.truth.streams["title"].nunique() > 20
    types = Counter((r["stream_id"], r["type"]) for r in sim.events)
    assert sum(types[(s, "stream_enter")] for s in sim.truth.streams["stream_id"]) < 10
    for sid in sim.truth.streams["stream_id"]:
        assert types[(sid, "stream_start")] == types[(sid, "stream_end")] == 1
        assert types[(sid, "slot_start")] == types[(sid, "slot_end")] == len(sim.host_truth.slots(sid)) > 5
    items = sim.host_truth.items()
    assert items["stock"].notna().any() and not len(sim.host_truth.sold_out())
    for r in sim.events:
        assert validate_record(r)[1] is None, r
