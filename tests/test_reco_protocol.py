"""The issue-9 evaluation harness: loading, splits, baselines, scoring, bootstrap, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from devtools.evaluate import main as evaluate_main
from shared.reco import protocol as P

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _ev(rows, cols=("user_id", "item_id", "ts", "type", "stream_id")):
    width = max(len(r) for r in rows)
    defaults = (None, None, None, "purchase", None)
    rows = [tuple(r) + defaults[len(r) : width] for r in rows]
    df = pd.DataFrame(rows, columns=list(cols)[:width])
    df["ts"] = T0 + pd.to_timedelta(df["ts"], unit="h")
    if "type" not in df:
        df["type"] = "purchase"
    return df


def _live_csv(path: Path, n_users=60, n_streams=6, n_items=40, seed=0) -> Path:
    """A small live-commerce log with renamed columns (viewer, sku, when, action, room)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_streams):
        start = s * 24.0
        showcase = rng.choice(n_items, 12, replace=False)
        for u in rng.choice(n_users, 25, replace=False):
            t = start + rng.uniform(0, 2)
            for _ in range(rng.integers(1, 5)):
                it = int(rng.choice(showcase[:6] if rng.random() < 0.6 else showcase))
                t += rng.uniform(0, 0.3)
                rows.append((f"v{u}", f"sku{it}", T0 + pd.Timedelta(hours=t), "product_click", f"room{s}"))
                if rng.random() < 0.5:
                    rows.append((f"v{u}", f"sku{it}", T0 + pd.Timedelta(hours=t + 0.05), "add_to_cart", f"room{s}"))
                    if rng.random() < 0.6:
                        rows.append((f"v{u}", f"sku{it}", T0 + pd.Timedelta(hours=t + 0.1), "purchase", f"room{s}"))
    df = pd.DataFrame(rows, columns=["viewer", "sku", "when", "action", "room"])
    df["when"] = df["when"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    df.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------ loading / CLI
def test_cli_renamed_columns_in_stream(tmp_path, capsys):
    f = _live_csv(tmp_path / "live.csv")
    out = tmp_path / "r.json"
    rc = evaluate_main(
        [
            "--data",
            str(f),
            "--user-col",
            "viewer",
            "--item-col",
            "sku",
            "--time-col",
            "when",
            "--type-col",
            "action",
            "--stream-col",
            "room",
            "--target",
            "cart",
            "--variant",
            "all,new",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "in-stream/cart/all" in text and "in-stream/cart/new" in text and "stream_bestsellers" in text
    blocks = json.loads(out.read_text())["blocks"]
    assert [b["name"] for b in blocks] == ["in-stream/cart/all", "in-stream/cart/new"]
    rk = blocks[0]["report"]["rankers"]
    assert {"showcase_popularity", "stream_bestsellers", "own_history", "own_then_stream", "itemknn"} <= set(rk)
    assert blocks[0]["report"]["best_baseline"] in rk
    assert blocks[0]["report"]["n_queries"] > 0


def test_cli_catalogue_protocols_on_renamed_file(tmp_path, capsys):
    f = _live_csv(tmp_path / "live.csv")
    rc = evaluate_main(
        [
            "--data",
            str(f),
            "--user-col",
            "viewer",
            "--item-col",
            "sku",
            "--time-col",
            "when",
            "--type-col",
            "action",
            "--stream-col",
            "room",
            "--no-in-stream",
            "--target",
            "any",
            "--split",
            "leave-last,global-time",
            "--variant",
            "all",
            "--max-queries",
            "30",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "leave-last/any/all" in text and "global-time/any/all" in text and "most_popular" in text


def test_streamer_file_with_mapping(tmp_path, capsys):
    rng = np.random.default_rng(1)
    n = 600
    df = pd.DataFrame(
        {
            "user_id": rng.integers(0, 50, n).astype(str),
            "streamer_name": [f"s{x}" for x in rng.integers(0, 15, n)],
            "start_time": (
                pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 86400 * 20, n), unit="s")
            ).strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    f = tmp_path / "streamers.csv"
    df.to_csv(f, index=False)
    assert evaluate_main(["--data", str(f)]) == 2  # no item column: a clear error, not a traceback
    err = capsys.readouterr().err
    assert "item" in err and "streamer_name" in err and "--item-col" in err
    assert (
        evaluate_main(["--data", str(f), "--item-col", "streamer_name", "--time-col", "start_time", "--variant", "all"])
        == 0
    )
    assert "leave-last/purchase/all" in capsys.readouterr().out
    ev, _ = P.load_interactions(f, item_col="streamer_name", time_col="start_time")
    assert set(ev.columns) >= {"user_id", "item_id", "ts", "type"} and (ev["type"] == "purchase").all()
    assert str(ev["ts"].dtype) == "datetime64[ns, UTC]"


def test_missing_column_error_names_it(tmp_path):
    f = tmp_path / "x.csv"
    pd.DataFrame({"viewer": ["a"], "sku": ["1"], "when": ["2024-01-01"]}).to_csv(f, index=False)
    with pytest.raises(P.ColumnError) as e:
        P.load_interactions(f, user_col="viewer", item_col="product")
    msg = str(e.value)
    assert "'product'" in msg and "viewer" in msg and "sku" in msg and "when" in msg
    g = tmp_path / "y.csv"
    pd.DataFrame({"who": ["a"], "sku": ["1"]}).to_csv(g, index=False)
    with pytest.raises(P.ColumnError, match="no user column.*'who'"):
        P.load_interactions(g, item_col="sku")


def test_ids_keep_leading_zeros_and_default_type(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("user_id,item_id,ts\n007,0042,1700000000\n008,0042,1700000100\n")
    ev, _ = P.load_interactions(f)
    assert ev["user_id"].tolist() == ["007", "008"] and ev["item_id"].tolist() == ["0042", "0042"]
    assert ev["ts"].iloc[0] == pd.Timestamp(1700000000, unit="s", tz="UTC")
    assert (ev["type"] == "purchase").all()


TAFENG = Path(__file__).resolve().parents[2] / "shared" / "data" / "tafeng" / "ta_feng_all_months_merged.csv.gz"


@pytest.mark.skipif(not TAFENG.exists(), reason="Ta Feng copy not present")
def test_tafeng_loader(tmp_path):
    # the first 2000 lines of the real file (BOM, quoted) through the tafeng reader
    import gzip

    with gzip.open(TAFENG, "rt", encoding="utf-8") as fh:
        head = [next(fh) for _ in range(2000)]
    f = tmp_path / "ta_feng_head.csv"
    f.write_text("".join(head), encoding="utf-8")
    ev, items = P.load_interactions(f)
    assert len(ev) == 1999 and (ev["type"] == "purchase").all()
    assert ev["user_id"].str.len().eq(8).all()  # leading zeros kept
    assert ev["ts"].min() == pd.Timestamp("2000-11-01", tz="UTC")
    assert {"item_id", "title", "description", "category", "price"} <= set(items.columns)
    assert items["category"].str.len().gt(0).all() and items["price"].notna().any()


# ------------------------------------------------------------------ splits
def test_leave_last_takes_last_basket():
    ev = _ev(
        [
            ("a", "x", 0),
            ("a", "y", 10),
            ("a", "z", 20),
            ("a", "w", 20),
            ("a", "c1", 30, "product_click"),
            ("b", "x", 5),
            ("b", "z", 25),
            ("b", "y", 40),
        ]
    )
    s = P.make_split(ev, split="leave-last")
    q = {q.user_id: q for q in s.queries}
    assert sorted(q["a"].relevant) == ["w", "z"] and q["a"].ts == T0 + pd.Timedelta(hours=20)
    assert q["b"].relevant == ["y"]
    tr = s.train
    a = tr[tr["user_id"] == "a"]
    assert (a["ts"] < q["a"].ts).all() and set(a["item_id"]) == {"x", "y"}  # the later click is gone too
    # other users' events are kept (b's purchase at 25 h is after a's basket)
    assert ((tr["user_id"] == "b") & (tr["item_id"] == "z")).any()
    assert all(q_.repeats for q_ in s.queries)


def test_global_time_cut():
    rows = [(f"u{i % 5}", f"i{i % 7}", i) for i in range(100)]
    ev = _ev(rows)
    s = P.make_split(ev, split="global-time", test_frac=0.2)
    cut = pd.Timestamp(s.info["cut"])
    assert (s.train["ts"] < cut).all() and len(s.train) == (ev["ts"] < cut).sum()
    assert all(q.ts == cut for q in s.queries)
    after = ev[ev["ts"] >= cut]
    for q in s.queries:
        assert set(q.relevant) == set(after.loc[after["user_id"] == q.user_id, "item_id"])
    assert 18 <= (ev["ts"] >= cut).sum() <= 22
    # horizon limits the test window
    s2 = P.make_split(ev, split="global-time", test_frac=0.2, horizon="5h")
    assert sum(len(q.relevant) for q in s2.queries) <= 5


def test_variant_new_drops_repeats_and_excludes_history():
    ev = _ev(
        [
            ("a", "x", 0),
            ("a", "y", 1),
            ("a", "x", 10),
            ("a", "n", 10),  # a: basket {x (repeat), n}
            ("b", "x", 0),
            ("b", "x", 10),  # b: only a repeat -> dropped
            ("c", "y", 0),
            ("c", "n", 2),
            ("c", "x", 3),
            ("c", "q", 4),
        ]
    )
    s = P.make_split(ev, split="leave-last", variant="new")
    q = {q.user_id: q for q in s.queries}
    assert "b" not in q and q["a"].relevant == ["n"] and not q["a"].repeats
    hist = set(s.train.loc[s.train["user_id"] == "a", "item_id"])
    for r in P.baseline_rankers("purchase"):
        r.fit(s.train, None, s.reference_time)
        for qq, ranked in zip(s.queries, r.rank(s.queries, 5)):
            h = set(s.train.loc[s.train["user_id"] == qq.user_id, "item_id"])
            assert not (set(ranked) & h), (r.name, qq.user_id, ranked)
    assert hist == {"x", "y"}


def test_in_stream_room_counts_only_before_entry():
    rows = [
        # stream s1: earlier viewers (before the cut) and after the cut
        ("p", "a", 0, "purchase", "s1"),
        ("p", "b", 1, "product_click", "s1"),
        ("q", "a", 2, "purchase", "s1"),
        ("q", "c", 3, "add_to_cart", "s1"),
        ("z", "d", 50, "purchase", "s2"),
        ("z", "e", 51, "purchase", "s2"),
        ("r", "b", 60, "purchase", "s1"),  # after the cut, before u enters
        ("u", "b", 70, "product_click", "s1"),  # u's entry into s1
        ("v", "a", 75, "purchase", "s1"),  # after u's entry: not in u's room
        ("u", "b", 80, "purchase", "s1"),
        ("u", "e", 81, "purchase", "s2"),
    ]
    ev = _ev(rows)
    s = P.make_split(ev, in_stream=True, test_frac=0.5, target="purchase")
    cut = pd.Timestamp(s.info["cut"])
    assert s.info["split"] == "in-stream"
    q = {(q_.user_id, q_.stream_id): q_ for q_ in s.queries}
    qu = q[("u", "s1")]
    assert qu.ts == T0 + pd.Timedelta(hours=70) and qu.relevant == ["b"]
    assert qu.room["purchase"] == {"a": 2, "b": 1}  # p, q before the cut + r after it; not v
    assert qu.room["product_click"] == {"b": 1} and qu.room["add_to_cart"] == {"c": 1}
    assert sorted(qu.allowed.tolist()) == ["a", "b", "c"]
    assert sorted(q[("u", "s2")].allowed.tolist()) == ["d", "e"]
    assert (s.train["ts"] < cut).all()
    sb = P.StreamBestsellers().fit(s.train, None, s.reference_time)
    assert sb.rank([qu], 3)[0] == ["a", "b", "c"]


def test_own_history_known_answer():
    # every user always buys the same item: "buy it again" is perfect
    rows = []
    for u in range(30):
        for d in range(4):
            rows.append((f"u{u}", f"i{u % 11}", d * 24 + u * 0.1))
    ev = _ev(rows)
    for split in ("leave-last", "global-time"):
        s = P.make_split(ev, split=split)
        rep = P.evaluate(
            s.train, s.queries, None, [P.OwnHistory(), P.MostPopular()], 10, reference_time=s.reference_time
        )
        assert rep["rankers"]["own_history"]["ndcg@10"] == pytest.approx(1.0)
        assert rep["rankers"]["own_history"]["hitrate@10"] == 1.0
        assert rep["best_baseline"] == "own_history"
        assert rep["rankers"]["most_popular"]["ndcg@10"] < 1.0
    json.dumps(rep)


def test_baselines_respect_allowed():
    ev = _ev([("a", "x", 0), ("a", "y", 1), ("b", "x", 2), ("b", "z", 3), ("c", "w", 4), ("c", "x", 5)])
    allowed = np.array(["w", "z", "new"], dtype=object)
    qs = [
        P.Query("a", T0 + pd.Timedelta(hours=9), "s", allowed, ["w"], {"purchase": {"z": 3, "x": 9}}, True),
        P.Query("b", T0 + pd.Timedelta(hours=9), "s", allowed, ["w"], None, False),
        P.Query("zz", T0 + pd.Timedelta(hours=9), None, allowed, ["w"], None, True),
    ]
    for r in P.baseline_rankers("purchase", in_stream=True) + [P.MostPopular()]:
        r.fit(ev, None, T0 + pd.Timedelta(hours=9))
        for q, ranked in zip(qs, r.rank(qs, 10)):
            assert set(ranked) <= set(allowed), (r.name, ranked)
            assert len(ranked) == len(set(ranked))
            if not q.repeats:
                assert "z" not in ranked  # b's history
    sb = P.StreamBestsellers().fit(ev, None, None)
    assert sb.rank(qs[:1], 2)[0] == ["z", "w"]  # room counts (x is not in the showcase), then popularity


def test_query_metrics_match_metrics_module():
    from shared.reco.metrics import ranking_metrics

    qs = [P.Query("a", T0, relevant=["1", "2", "3"]), P.Query("b", T0, relevant=["9"])]
    ranked = [["1", "5", "3"], ["4", "9"]]
    m = P.query_metrics(ranked, qs, 3)
    ref = ranking_metrics(np.array([[1, 5, 3], [4, 9, -1]]), [np.array([1, 2, 3]), np.array([9])], 3, 10)
    assert m["ndcg@3"].mean() == pytest.approx(ref["ndcg@3"])
    assert m["recall@3"].mean() == pytest.approx(ref["recall@3"])
    assert m["hitrate@3"].mean() == pytest.approx(ref["hitrate@3"])


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.random(500)
    b = P.paired_bootstrap(a, a.copy(), n_boot=300)
    assert b["ratio"] == 1.0 and b["ratio_lo"] == pytest.approx(1.0) and b["ratio_hi"] == pytest.approx(1.0)
    assert b["diff"] == 0.0 and b["diff_lo"] == 0.0 and b["diff_hi"] == 0.0
    better = np.clip(a + 0.2 + 0.05 * rng.standard_normal(500), 0, None)
    c = P.paired_bootstrap(better, a, n_boot=300)
    assert c["diff_lo"] > 0 and c["ratio_lo"] > 1.0 and c["ratio"] > 1.2
    assert c == P.paired_bootstrap(better, a, n_boot=300)  # deterministic with the seed


def test_recommend_ranker_gets_the_service_call():
    calls = []

    class M:
        def recommend(self, user_id, N, *, stream_id=None, allowed_items=None, room=None, now=None, repeats=True):
            calls.append(
                dict(
                    user_id=user_id,
                    N=N,
                    stream_id=stream_id,
                    allowed=allowed_items,
                    room=room,
                    now=now,
                    repeats=repeats,
                )
            )
            return {"items": [{"item_id": "x"}, {"item_id": "y"}]}

    ev = _ev([("a", "x", 0), ("b", "y", 1), ("a", "y", 5), ("b", "x", 6)])
    s = P.make_split(ev, split="leave-last")
    r = P.RecommendRanker(lambda tr, it, ref: M(), "m")
    rep = P.evaluate(s.train, s.queries, None, [P.MostPopular(), r], 2, reference_time=s.reference_time, n_boot=50)
    assert rep["rankers"]["m"]["kind"] == "model" and rep["rankers"]["m"]["hitrate@2"] == 1.0
    assert "m" in rep["vs_best_baseline"] and calls[0]["N"] == 2 and calls[0]["now"] == s.queries[0].ts
    assert calls[0]["repeats"] is True


def test_max_queries_sample_is_deterministic():
    rows = [(f"u{i}", f"i{i % 13}", j * 10 + i * 0.01) for i in range(200) for j in range(3)]
    ev = _ev(rows)
    s1 = P.make_split(ev, split="leave-last", max_queries=50)
    s2 = P.make_split(ev.sample(frac=1, random_state=3), split="leave-last", max_queries=50)
    assert len(s1.queries) == 50
    assert [q.user_id for q in s1.queries] and sorted(q.user_id for q in s1.queries) == sorted(
        q.user_id for q in s2.queries
    )


def test_served_model_unavailable_exits_2(tmp_path, monkeypatch, capsys):
    import sys

    f = tmp_path / "x.csv"
    pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["1", "2", "1"], "ts": [1, 2, 3]}).to_csv(f, index=False)
    monkeypatch.setitem(sys.modules, "shared.reco.recipe", None)  # import fails
    assert evaluate_main(["--data", str(f), "--model", "served"]) == 2
    assert "shared.reco.recipe" in capsys.readouterr().err
    assert evaluate_main(["--data", str(f), "--model", "nope"]) == 2


def test_event_type_sets_are_defined_once_from_the_contract():
    """Every type set the models read comes from shared/reco/event_types.py, built from the contract's
    names: touch / non-touch partition the contract, the protocol's targets and room keys use the sets."""
    from shared.contract import ALL_TYPES, VIEWER_ACTIONS
    from shared.reco import event_types as ET
    from shared.reco import instream

    assert set(ET.POSITIVE_TYPES) | ET.NON_TOUCH_TYPES == set(ALL_TYPES)
    assert not set(ET.POSITIVE_TYPES) & ET.NON_TOUCH_TYPES
    # what never touched an item before the sets were shared still does not
    assert {"product_impression", "refund", "stream_enter", "stream_leave", "like", "comment", "share"} <= (
        ET.NON_TOUCH_TYPES
    )
    assert {"follow", "gift", "catalog_item"} <= ET.NON_TOUCH_TYPES
    for s in (ET.POSITIVE_TYPES, ET.CART_OR_BUY_TYPES, ET.QUERY_ROOM_TYPES, ET.RANKER_ROOM_TYPES):
        assert set(s) <= set(VIEWER_ACTIONS)
    assert P.TARGETS == {"purchase": ("purchase",), "cart": ET.CART_OR_BUY_TYPES, "any": ET.POSITIVE_TYPES}
    assert instream.POSITIVE_TYPES is ET.POSITIVE_TYPES
    assert ET.ROOM_RECENT_KEYS == ("purchase@10m", "product_click@5m", "product_impression@5m")
    assert ET.ROOM_WINDOWS == (
        ("purchase", None),
        ("product_click", None),
        ("purchase", 10),
        ("product_click", 5),
        ("product_impression", 5),
    )


def test_room_from_codes_is_the_room_from_dicts(tmp_path):
    """RecommendRanker hands a RoomRanker each query's room built from the split's codes (ids mapped once
    per split): the same rankings as from the id -> n dicts, and the same arrays the model builds."""
    import dataclasses

    from shared.reco.recipe import fit_recipe

    f = _live_csv(tmp_path / "live.csv", n_users=80, n_streams=8)
    ev, _ = P.load_interactions(f, user_col="viewer", item_col="sku", time_col="when", type_col="action")
    ev.loc[ev.index % 7 == 0, "item_id"] = "sku-unseen"  # an item the model may not know
    s = P.make_split(ev, in_stream=True, test_frac=0.4, target="purchase")
    assert s.queries and all(q.room_codes is not None for q in s.queries)
    model = fit_recipe(s.train, None, s.reference_time)
    plain = [dataclasses.replace(q, room_codes=None) for q in s.queries]
    r = P.RecommendRanker(lambda tr, it, ref: model, "m").fit(s.train, None, s.reference_time)
    assert r.rank(s.queries, 10) == r.rank(plain, 10)
    ids, codes = s.queries[-1].room_codes
    got = P._room_positions(model.item_positions(ids), codes, model.room_keys)
    for key in model.room_keys:
        want = model._room_vectors(None, {key: s.queries[-1].room[key]})
        idx = (list(model.room_keys).index(key) - 2) if key not in ("purchase", "product_click") else None
        w = want[0] if key == "purchase" else want[1] if key == "product_click" else want[3][idx]
        assert got[key][1].tolist() == w[0].tolist() and got[key][2].tolist() == w[1].tolist()
        assert got[key][1].dtype == w[0].dtype and got[key][2].dtype == w[1].dtype


def _plain(x):
    """A query's fields with arrays as lists (comparable with ==)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _same_queries(a, b) -> bool:
    import dataclasses

    return [_plain(dataclasses.astuple(q)) for q in a] == [_plain(dataclasses.astuple(q)) for q in b]


def test_shared_split_events_give_the_same_splits(tmp_path):
    """make_split(..., shared=SplitEvents(ev)) answers what make_split(ev, ...) answers, for every
    protocol the gate asks at one cut (and leave-last, which is not memoised by cut); the blocks of one
    cut share one training frame, so the baselines' index and item-kNN are built once per target."""
    f = _live_csv(tmp_path / "live.csv", n_users=80, n_streams=8)
    ev, _ = P.load_interactions(f, user_col="viewer", item_col="sku", time_col="when", type_col="action")
    shared = P.SplitEvents(ev)
    cut = None
    trains = []
    for ins, target, variant in [
        (True, "purchase", "all"),
        (True, "purchase", "new"),
        (False, "purchase", "all"),
        (True, "cart", "all"),
    ]:
        kw = dict(split="global-time", in_stream=ins, target=target, variant=variant, test_frac=0.3, cut_at=cut)
        a, b = P.make_split(ev, **kw), P.make_split(ev, shared=shared, **kw)
        cut = cut or a.reference_time
        assert a.queries and _same_queries(a.queries, b.queries)
        assert a.info == b.info and a.reference_time == b.reference_time
        pd.testing.assert_frame_equal(a.train, b.train)
        trains.append(b.train)
    assert all(t is trains[0] for t in trains)
    a, b = P.make_split(ev, split="leave-last"), P.make_split(ev, split="leave-last", shared=shared)
    assert a.queries and _same_queries(a.queries, b.queries)
    pd.testing.assert_frame_equal(a.train, b.train)
    with pytest.raises(ValueError, match="another frame"):
        P.make_split(ev.copy(), split="global-time", shared=shared)
    # the room baselines order a room from its codes as from its dicts
    import dataclasses

    s = P.make_split(ev, in_stream=True, test_frac=0.3, shared=shared)
    plain = [dataclasses.replace(q, room_codes=None) for q in s.queries]
    assert any(q.room_codes[1]["purchase"][0].size for q in s.queries)
    for r in (P.StreamBestsellers(), P.OwnThenStream()):
        r.fit(s.train, None, s.reference_time)
        assert r.rank(s.queries, 10) == r.rank(plain, 10)
    # item-kNN is fitted once per training index and ranks as a fresh fit does
    s = P.make_split(ev, split="global-time", test_frac=0.3, shared=shared)
    one = P.ItemKNNRanker().fit(s.train, None, s.reference_time)
    two = P.ItemKNNRanker().fit(s.train, None, s.reference_time)
    assert two.W is one.W
    P._TrainIndex._cache.clear()
    fresh = P.ItemKNNRanker().fit(s.train.copy(), None, s.reference_time)
    assert fresh.W is not one.W and fresh.rank(s.queries, 10) == one.rank(s.queries, 10)
