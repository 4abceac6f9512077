"""Reasons that say the true relation (shared.reco.relations, RoomRanker ``_list_reasons``), no sentence
twice in an answer (shared.serving.recommend ``group_repeats``) and the diversity control
(``max_per_category``, ``near_duplicate``) on small worlds with known answers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shared.reco.ranker import RoomRanker
from shared.reco.recipe import DEFAULT_RECIPE
from shared.reco.relations import BOUGHT, RELATED, VIEWED, pair_relations
from shared.serving.recommend import explain, group_repeats

T0 = pd.Timestamp("2026-11-01", tz="UTC")


def test_pair_relations_known_answers():
    # users x items: u0 bought 0 and 1; u1 clicked 2 and 3 (bought nothing); nobody touched 0 and 3
    bought = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    touched = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32))
    W = sp.csr_matrix(np.array([[0, 0.5, 0, 0.2], [0.5, 0, 0, 0], [0, 0, 0, 0.3], [0.1, 0, 0.3, 0]]))
    codes = pair_relations(W, bought, touched, max_block_nnz=1)  # one row per block
    got = {}
    for r in range(4):
        for p in range(W.indptr[r], W.indptr[r + 1]):
            got[(r, int(W.indices[p]))] = int(codes[p])
    assert got == {(0, 1): BOUGHT, (0, 3): RELATED, (1, 0): BOUGHT, (2, 3): VIEWED, (3, 0): RELATED, (3, 2): VIEWED}


def _world(n=60):
    """Earphones and a toner bought together by many viewers (unlike texts); two dresses clicked
    together by others (never bought); two near-identical power banks; filler items in 6 categories."""
    rows = []
    for u in range(n):
        t = T0 + pd.Timedelta(hours=u)
        rows += [(f"a{u}", "ear", t, "purchase"), (f"a{u}", "toner", t + pd.Timedelta(minutes=5), "purchase")]
        rows += [
            (f"b{u}", "dress1", t, "product_click"),
            (f"b{u}", "dress2", t + pd.Timedelta(minutes=1), "product_click"),
        ]
        rows += [(f"c{u}", f"f{u % 12}", t, "purchase"), (f"c{u}", "pb1" if u % 2 else "pb2", t, "purchase")]
    rows.append(("solo", "ear", T0 + pd.Timedelta(days=3), "purchase"))  # a viewer with earphones only
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "type"]).sort_values("ts").reset_index(drop=True)
    items = pd.DataFrame(
        [
            ("ear", "蓝牙耳机 降噪 入耳式", "数码/耳机"),
            ("toner", "玫瑰 爽肤水 补水", "美妆/护肤"),
            ("dress1", "法式 复古 连衣裙", "女装/连衣裙"),
            ("dress2", "碎花 雪纺 长裙", "女装/连衣裙"),
            ("pb1", "超薄 充电宝 20000毫安 快充", "数码/充电宝"),
            ("pb2", "超薄 充电宝 20000毫安 快充 白色", "数码/充电宝"),
        ]
        + [(f"f{k}", f"商品{k} 款式{k}", f"类目{k % 6}") for k in range(12)],
        columns=["item_id", "title", "category"],
    )
    items["description"] = ""
    items["price"] = 10.0
    m = RoomRanker.fit_state(ev, items, ev["ts"].max(), base_params=DEFAULT_RECIPE["base"])  # prior weights
    return ev, items, m


@pytest.fixture(scope="module")
def world():
    return _world()


def _explained(m, items, out):
    titles = dict(zip(items["item_id"], items["title"]))
    answer = [{"item_id": it["item_id"], "reason": explain(it["reason"], lambda i: titles.get(i, i))} for it in out]
    group_repeats(answer)
    return answer


def test_a_co_purchase_neighbour_is_bought_together_never_similar(world):
    ev, items, m = world
    for kw in ({"context_items": ["ear"]}, {"user_id": "solo"}):
        out = m.recommend(kw.pop("user_id", None), 5, **kw)["items"]
        toner = next(it for it in out if it["item_id"] == "toner")
        r = toner["reason"]
        assert r["kind"] == "bought_together" and r["item"] == "ear" and r["via"] == "cf", r
        text = _explained(m, items, [toner])[0]["reason"]
        assert "一起买" in text["text_zh"] and "bought with" in text["text_en"]
        assert "相似" not in text["text_zh"] and "similar" not in text["text_en"]
    # clicked together, never bought together: viewed together
    out = m.recommend(None, 5, context_items=["dress1"])["items"]
    d2 = next(it for it in out if it["item_id"] == "dress2")
    assert d2["reason"]["kind"] == "viewed_together" and d2["reason"]["item"] == "dress1", d2
    # the content part's neighbour is the text similarity (the other power bank)
    out = m.recommend(None, 5, context_items=["pb1"])["items"]
    kinds = {it["item_id"]: it["reason"]["kind"] for it in out}
    assert kinds.get("pb2") in ("similar_to", "bought_together", "viewed_together", "related_to")
    for it in out:
        if it["reason"].get("via") == "content":
            assert it["reason"]["kind"] == "similar_to"
        elif it["reason"].get("via") == "cf":
            assert it["reason"]["kind"] != "similar_to"


def test_relations_survive_the_artefact_round_trip_and_are_counted_without_codes(world):
    ev, items, m = world
    arrays = m.to_arrays()
    assert "rr.cf_relation" in arrays and arrays["rr.cf_relation"].dtype == np.uint8
    back = RoomRanker.from_arrays(arrays, m.meta)
    m.use_kernel = back.use_kernel = False  # one path for exact equality (the kernel's is float-close)
    q = {"context_items": ["ear"]}
    assert back.recommend(None, 5, **q) == m.recommend(None, 5, **q)
    arrays.pop("rr.cf_relation")  # an artefact from before the codes: the pairs are counted on demand
    old = RoomRanker.from_arrays(arrays, m.meta)
    old.use_kernel = False
    assert old.cf_relation_ is None and old.recommend(None, 5, **q) == m.recommend(None, 5, **q)
    m.use_kernel = True


def test_no_sentence_twice_in_an_answer(world):
    """Five items from one anchor do not all say it: the anchor varies or another true reason is given;
    what still repeats is grouped (``same_as``, pointing at the previous item of its group)."""
    ev, items, m = world
    for who, kw in (("solo", {}), (None, {"context_items": ["ear", "dress1", "pb1"]}), ("a3", {}), (None, {})):
        answer = _explained(m, items, m.recommend(who, 10, **kw)["items"])
        texts = [a["reason"]["text_zh"] for a in answer]
        assert len(set(texts)) == len(texts), texts
        assert len({a["reason"]["text_en"] for a in answer}) == len(answer)
        anchors = Counter(a["reason"].get("item") for a in answer if a["reason"].get("anchor"))
        assert all(n == 1 for n in anchors.values()) or any("same_as" in a["reason"] for a in answer), anchors


def test_group_repeats_points_at_the_previous_item_of_its_group():
    items = [
        {
            "item_id": f"i{k}",
            "reason": {"kind": "just_viewed", "text_zh": "你刚看过", "text_en": "you just looked at it"},
        }
        for k in range(3)
    ]
    items.insert(
        1, {"item_id": "x", "reason": {"kind": "popular", "text_zh": "大家都在买", "text_en": "popular right now"}}
    )
    group_repeats(items)
    assert [it["reason"]["text_zh"] for it in items] == [
        "你刚看过",
        "大家都在买",
        "同第 1 件：你刚看过",
        "同第 3 件：你刚看过",
    ]
    assert (
        items[2]["reason"]["same_as"] == items[3]["reason"]["same_as"] == "i0" and "same_as" not in items[0]["reason"]
    )


def test_at_most_n_per_category_and_near_duplicates_collapsed(world):
    ev, items, m = world
    cat = dict(zip(items["item_id"], items["category"]))
    plain = m.recommend(None, 12)["items"]
    assert max(Counter(cat[it["item_id"]] for it in plain).values()) == 2  # the world has room to cap
    for n in (1,):
        out = m.recommend(None, 8, max_per_category=n)["items"]
        per = Counter(cat[it["item_id"]] for it in out)
        assert len(out) == 8 and max(per.values()) <= n, per
        scores = [it["score"] for it in out]
        assert scores == sorted(scores, reverse=True)  # within the cap, still by score
    # a one-category request still fills the list (the cap is soft when nothing else is left)
    assert len(m.recommend(None, 4, category="类目0", max_per_category=1)["items"]) == 2  # f0, f6: all it has
    both = [it["item_id"] for it in m.recommend(None, 18, allowed_items=["pb1", "pb2", "ear"])["items"]]
    assert {"pb1", "pb2"} <= set(both)
    one = [
        it["item_id"] for it in m.recommend(None, 2, allowed_items=["pb1", "pb2", "ear"], near_duplicate=0.8)["items"]
    ]
    assert len({"pb1", "pb2"} & set(one)) == 1 and "ear" in one, one  # the near-identical power bank collapsed


def test_the_compiled_path_gives_the_same_items_and_reasons(world):
    """Diversity and reasons on the request kernel's path (a longer heap, the context halves rebuilt)
    equal the reference path's (scores and parts equal up to float rounding)."""
    ev, items, m = world
    if not m.warm_kernel():
        pytest.skip("no numba: the kernel path does not apply")
    asks = [
        ("solo", {}),
        (None, {"context_items": ["ear", "dress1", "pb1"]}),
        ("a3", {"max_per_category": 1}),
        (None, {"max_per_category": 1, "near_duplicate": 0.8}),
        (None, {"allowed_items": ["pb1", "pb2", "ear"], "near_duplicate": 0.8}),
    ]
    try:
        for who, kw in asks:
            m.use_kernel = True
            a = m.recommend(who, 8, **kw)["items"]
            m.use_kernel = False
            b = m.recommend(who, 8, **kw)["items"]
            assert [(x["item_id"], x["reason"]) for x in a] == [(y["item_id"], y["reason"]) for y in b], (who, kw)
            assert all(abs(x["score"] - y["score"]) < 1e-9 for x, y in zip(a, b))
    finally:
        m.use_kernel = True
