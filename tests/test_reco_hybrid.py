"""Hybrid recommender: fallbacks, reasons vs score parts, filters, round trip."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from shared.reco import HybridRecommender
from tests.reco_oracle import recommend_reference

T0 = pd.Timestamp("2026-02-01", tz="UTC")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    n = 3000
    users = rng.integers(0, 120, n)
    # two taste clusters: even users like items 0-19, odd users 20-39
    items = np.where(users % 2 == 0, rng.integers(0, 20, n), rng.integers(20, 40, n))
    ev = pd.DataFrame(
        {
            "user_id": "u" + pd.Series(users).astype(str),
            "item_id": "p" + pd.Series(items).astype(str),
            "ts": T0 + pd.to_timedelta(rng.integers(0, 20 * 86400, n), unit="s"),
            "type": rng.choice(
                ["product_click", "add_to_cart", "purchase", "product_impression", "like"],
                n,
                p=[0.5, 0.2, 0.1, 0.15, 0.05],
            ),
            "stream_id": rng.choice(["s1", "s2"], n),
        }
    )
    cats = ["上衣", "裤子", "鞋"]
    catalog = pd.DataFrame(
        {
            "item_id": [f"p{i}" for i in range(45)],  # p40-p44 are cold (no events)
            "title": [f"夏季 纯棉 款式{i % 7} {cats[i % 3]}" for i in range(45)],
            "description": ["" for _ in range(45)],
            "category": [cats[i % 3] for i in range(45)],
            "price": np.arange(45, dtype=float) * 10,
        }
    )
    return ev, catalog


@pytest.fixture(scope="module")
def fitted():
    ev, cat = _data()
    return HybridRecommender(cf="ease", cf_params={"lam": 10.0}).fit_events(
        ev, cat, reference_time=T0 + pd.Timedelta(days=21)
    ), ev


def _check_parts(res):
    for it in res["items"]:
        p = it["parts"]
        assert it["score"] == pytest.approx(p["cf"] + p["content"] + p["popularity"])


def test_known_user_personal_reasons_match_parts(fitted):
    h, ev = fitted
    res = h.recommend("u2", 8)
    assert res["strategy"] == "personal" and len(res["items"]) == 8
    _check_parts(res)
    row = h._user_index.get_loc("u2")
    hist = h.user_items_[row]
    idx, w = hist.indices, hist.data.astype(float)
    W = h.cf_model_.B_ if h.cf_model_.is_dense else h.cf_model_.W_.toarray()
    mine = ev[ev.user_id == "u2"]
    n_because = 0
    for it in res["items"]:
        r, p = it["reason"], it["parts"]
        top_part = max(p, key=p.get)
        i = h._item_index.get_loc(it["item_id"])
        assert it["item_id"] not in set(h.item_ids_[idx])  # seen filtered
        if r["kind"] == "because_you":
            n_because += 1
            assert r["via"] == top_part
            if r["via"] == "cf":
                contrib = w * W[idx, i]
                assert r["item"] == h.item_ids_[idx[np.argmax(contrib)]]
            # the named action is the strongest one the user took on that item
            acts = set(mine[mine.item_id == r["item"]].type)
            order = ["purchase", "add_to_cart", "product_click", "like", "comment", "share"]
            assert r["action"] == next(a for a in order if a in acts)
        else:
            assert top_part == "popularity"
    assert n_because > 0


def test_cluster_taste_is_learned(fitted):
    h, _ = fitted
    res = h.recommend("u3", 10)  # odd user -> items p20..p39
    ids = [int(it["item_id"][1:]) for it in res["items"][:5]]
    assert all(20 <= i < 40 for i in ids)


def test_context_fallback_similar_to_and_cold_item(fitted):
    h, _ = fitted
    res = h.recommend("nobody", 5, context_items=["p21"])
    assert res["strategy"] == "context"
    _check_parts(res)
    assert all(
        it["reason"]["kind"] == "similar_to" and it["reason"]["item"] == "p21"
        for it in res["items"]
        if it["parts"]["popularity"] < max(it["parts"].values())
    )
    assert "p21" not in [it["item_id"] for it in res["items"]]
    # cold context item (no events): content neighbours still produce similar_to
    res = h.recommend(None, 5, context_items=["p41"])
    assert res["strategy"] == "context"
    assert any(it["reason"]["kind"] == "similar_to" and it["reason"]["via"] == "content" for it in res["items"])


def test_stream_and_global_fallbacks(fitted):
    h, ev = fitted
    res = h.recommend(None, 5, stream_id="s1")
    assert res["strategy"] == "stream"
    assert all(it["reason"] == {"kind": "popular_in_stream", "stream": "s1"} for it in res["items"])
    res = h.recommend(None, 5, stream_id="unknown-stream")
    assert res["strategy"] == "global"
    res = h.recommend("nobody", 5)
    assert res["strategy"] == "global"
    assert all(it["reason"] == {"kind": "popular"} for it in res["items"])
    scores = [it["score"] for it in res["items"]]
    assert scores == sorted(scores, reverse=True)


def test_filters(fitted):
    h, ev = fitted
    allowed = ["p1", "p5", "p22", "p30"]
    res = h.recommend("u2", 10, allowed_items=allowed)
    assert {it["item_id"] for it in res["items"]} <= set(allowed)
    res = h.recommend("u2", 10, category="鞋")
    assert res["items"] and all(h.category_[h._item_index.get_loc(it["item_id"])] == "鞋" for it in res["items"])
    res = h.recommend("u2", 10, price_range=(50, 150))
    assert res["items"] and all(50 <= h.price_[h._item_index.get_loc(it["item_id"])] <= 150 for it in res["items"])
    bought = set(ev[(ev.user_id == "u2") & (ev.type == "purchase")].item_id)
    assert bought
    res = h.recommend("u2", 45, filter_seen=False)
    assert not bought & {it["item_id"] for it in res["items"]}
    res = h.recommend("u2", 45, filter_seen=False, exclude_purchased=False)
    assert bought & {it["item_id"] for it in res["items"]}
    res = h.recommend("u2", 45, exclude_items=["p0", "p2"])
    assert not {"p0", "p2"} & {it["item_id"] for it in res["items"]}


def test_round_trip_allow_pickle_false_and_determinism(fitted):
    h, ev = fitted
    arrays = h.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    assert arrays["item_ids"].dtype.kind == "U" and arrays["user_ids"].dtype.kind == "U"
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    meta = json.loads(json.dumps(h.meta))
    with np.load(buf, allow_pickle=False) as z:
        h2 = HybridRecommender.from_arrays({k: z[k] for k in z.files}, meta)
    for kw in ({"user_id": "u2"}, {"context_items": ["p3"]}, {"stream_id": "s2"}, {"user_id": "u5", "category": "鞋"}):
        assert h2.recommend(N=6, **kw) == h.recommend(N=6, **kw)
    _, cat = _data()
    h3 = HybridRecommender(cf="ease", cf_params={"lam": 10.0}).fit_events(
        ev, cat, reference_time=T0 + pd.Timedelta(days=21)
    )
    a3 = h3.to_arrays()
    assert all(np.array_equal(arrays[k], a3[k]) for k in arrays)


def test_itemknn_backend_and_history_argument():
    ev, cat = _data(1)
    h = HybridRecommender(cf="itemknn", cf_params={"similarity": "jaccard", "neighbours": 10}).fit_events(ev, cat)
    res = h.recommend(None, 5, history={"p1": 3.0, "p2": 1.0})
    assert res["strategy"] == "personal"
    assert {"p1", "p2"}.isdisjoint(it["item_id"] for it in res["items"])
    assert any(it["reason"]["kind"] == "because_you" for it in res["items"])


def _equivalence_calls(h, ev, rng, n_calls=150):
    users = list(ev.user_id.unique()[:40]) + ["nobody", None]
    items = list(h.item_ids_)
    cats = sorted(set(h.category_.tolist())) if h.category_ is not None else []
    for _ in range(n_calls):
        kw = {"user_id": users[rng.integers(len(users))], "N": int(rng.choice([1, 5, 10, 45, 60]))}
        if rng.random() < 0.3:
            kw["context_items"] = list(rng.choice(items, rng.integers(1, 3)))
        if rng.random() < 0.4:
            kw["stream_id"] = str(rng.choice(["s1", "s2", "nope"]))
        if rng.random() < 0.15:
            kw["history"] = {str(k): float(rng.random() * 3) for k in rng.choice(items, 3)}
        if rng.random() < 0.2:
            kw["allowed_items"] = list(rng.choice(items, rng.integers(1, 15)))
        if rng.random() < 0.2:
            kw["exclude_items"] = list(rng.choice(items, 4))
        if rng.random() < 0.2:
            kw["exclude_purchased"] = False
        if rng.random() < 0.2:
            kw["filter_seen"] = False
        if rng.random() < 0.2 and cats:
            kw["category"] = str(rng.choice(cats)) if rng.random() < 0.7 else list(rng.choice(cats, 2))
        if rng.random() < 0.2:
            kw["price_range"] = (
                float(rng.choice([0, 50])) if rng.random() < 0.8 else None,
                float(rng.choice([100, 300])),
            )
        yield kw


@pytest.mark.parametrize(
    "cf, params, mix",
    [
        ("ease", {"lam": 10.0}, 0.0),
        ("itemknn", {"similarity": "cosine", "neighbours": 5}, 0.0),
        ("ease", {"lam": 10.0, "neighbours": 4}, 0.0),
        ("itemknn", {"similarity": "cosine", "neighbours": 5}, 0.5),
        ("ease", {"lam": 10.0, "neighbours": 4}, 1.0),
    ],
)
def test_candidate_scoring_equals_dense_reference(fitted, cf, params, mix):
    """The candidate-only recommend returns exactly what the dense
    full-catalogue formula returns (items, order, scores, parts, reasons),
    also with global popularity blended into the stream popularity (``stream_pop_mix``)."""
    _, ev = fitted
    _, cat = _data()
    h = HybridRecommender(
        cf=cf, cf_params=params, stream_pop_mix=mix, popularity_weight=0.3 if mix else 0.02
    ).fit_events(ev, cat, reference_time=T0 + pd.Timedelta(days=21))
    rng = np.random.default_rng(7)
    for kw in _equivalence_calls(h, ev, rng):
        got, ref = h.recommend(**kw), recommend_reference(h, **kw)
        assert got["strategy"] == ref["strategy"], kw
        assert [it["item_id"] for it in got["items"]] == [it["item_id"] for it in ref["items"]], kw
        for a, b in zip(got["items"], ref["items"]):
            assert a["score"] == pytest.approx(b["score"], rel=1e-12, abs=1e-15), kw
            assert a["parts"] == pytest.approx(b["parts"], rel=1e-12, abs=1e-15), kw
            assert a["reason"] == b["reason"], kw
