"""In-stream evaluation parity with HybridRecommender.recommend, content reuse, content fit engines."""

from __future__ import annotations

import numpy as np
import pytest

from devtools.simulator import SimConfig, simulate
from shared.reco import HybridRecommender
from shared.reco.content import ContentModel
from shared.reco.instream import instream_parts, ndcg_fast, stream_pairs, tune_blend
from shared.reco.protocol import Query, query_metrics
from shared.serving.train import build_showcases, catalog_items


def time_split(events, frac: float):
    """The (1 - frac) quantile of the item events' ts (the v1 train job's holdout cut)."""
    item_ts = events.loc[events["item_id"].notna(), "ts"]
    return item_ts.quantile(1.0 - frac)


@pytest.fixture(scope="module")
def world():
    sim = simulate(SimConfig(seed=5, n_streams=8, n_users=1500, n_items=300, mean_viewers_per_stream=250))
    ev = sim.truth.expected_clean()
    ev["ts"] = ev["ts_utc"]
    cat = sim.truth.catalog_frame()
    split = time_split(ev, 0.3)
    ids = HybridRecommender.catalogue_ids(ev, catalog_items(cat))
    h = HybridRecommender(
        cf="ease", cf_params={"lam": 200.0, "neighbours": 50}, content_weight=0.3, popularity_weight=0.2
    )
    content = h.fit_content(ids, catalog_items(cat))
    h.fit_events(ev[ev["ts"] <= split], catalog_items(cat), reference_time=split, item_ids=ids, content=content)
    return {
        "ev": ev,
        "cat": cat,
        "split": split,
        "model": h,
        "content": content,
        "ids": ids,
        "showcases": build_showcases(ev, cat),
    }


def test_instream_ranking_equals_recommend(world):
    m, sc = world["model"], world["showcases"]
    pairs = stream_pairs(m, world["ev"][world["ev"]["ts"] > world["split"]], sc, max_pairs=150)
    assert len(pairs) >= 30
    parts = instream_parts(m, pairs, sc)
    ours = parts.top_ids(m.cf_weight, m.content_weight, m.popularity_weight, 10)
    best = parts.top_ids(0.0, 0.0, 1.0, 10)
    for p, (u, s) in enumerate(zip(pairs.users, pairs.streams)):
        rec = m.recommend(u, 10, stream_id=s, allowed_items=sc[s])
        assert rec["strategy"] == "personal"
        assert [i["item_id"] for i in rec["items"]] == ours[p], (u, s)
        base = m.recommend(
            None,
            10,
            stream_id=s,
            allowed_items=sc[s],
            exclude_items=list(m.item_ids_[m.user_items_[m._user_index.get_loc(u)].indices]),
        )
        assert [i["item_id"] for i in base["items"]][: len(best[p])] == best[p]
    # the fast NDCG equals the shared metric definitions
    qs = [Query(u, None, relevant=list(r)) for u, r in zip(pairs.users, pairs.relevant)]
    assert (
        abs(
            ndcg_fast(parts, m.cf_weight, m.content_weight, m.popularity_weight)
            - query_metrics(ours, qs, 10)["ndcg@10"].mean()
        )
        < 1e-6
    )
    best_w, table = tune_blend(parts, [0.0, 0.3], [0.0, 0.2], 10, stream_pop_mixes=[0.0, 1.0])
    assert len(table) == 8 and best_w["ndcg@10"] == max(r["ndcg@10"] for r in table)
    # the compiled top-k equals the numpy lexsort ranking
    import shared.reco.instream as ins

    for args in [
        (1.0, 0.3, 0.2, 10, "stream", 0.5),
        (0.0, 0.0, 1.0, 10, "global", 0.0),
        (1.0, 0.0, 0.0, 3, "stream", 0.0),
    ]:
        a = parts.topk(*args)
        old, ins.HAVE_NUMBA = ins.HAVE_NUMBA, False
        try:
            b = parts.topk(*args)
        finally:
            ins.HAVE_NUMBA = old
        assert (a == b).all(), args


def test_instream_with_global_popularity_mix_equals_recommend(world):
    """stream_pop_mix blends global popularity into the popularity part; the in-stream ranking of the
    parts equals recommend, and popularity reasons follow the larger share (stream vs global)."""
    m, sc = world["model"], world["showcases"]
    h = HybridRecommender(**{**m.get_params(), "stream_pop_mix": 0.6})
    ev, split = world["ev"], world["split"]
    h.fit_events(
        ev[ev["ts"] <= split],
        catalog_items(world["cat"]),
        reference_time=split,
        item_ids=world["ids"],
        content=world["content"],
    )
    pairs = stream_pairs(h, ev[ev["ts"] > split], sc, max_pairs=60)
    parts = instream_parts(h, pairs, sc)
    ours = parts.top_ids(h.cf_weight, h.content_weight, h.popularity_weight, 10, mix=h.stream_pop_mix)
    g = h.popularity_.global_
    for p, (u, s) in enumerate(zip(pairs.users, pairs.streams)):
        rec = h.recommend(u, 10, stream_id=s, allowed_items=sc[s])
        assert [i["item_id"] for i in rec["items"]] == ours[p], (u, s)
        sp_ = h.popularity_.stream_scores(s)
        for it in rec["items"]:
            if it["reason"]["kind"] == "popular_in_stream":
                j = h._item_pos[it["item_id"]]
                assert 0.4 * sp_[j] >= 0.6 * g[j] - 1e-6


def test_reasons_match_the_largest_part(world):
    m, sc = world["model"], world["showcases"]
    users = [str(u) for u in m.user_ids_[np.diff(m.user_items_.indptr) >= 2][:40]]
    for u in users:
        s = next(iter(sc))
        for it in m.recommend(u, 10, stream_id=s, allowed_items=sc[s])["items"]:
            part = max(it["parts"], key=lambda k: it["parts"][k])
            if part in ("cf", "content") and it["parts"][part] > 0:
                assert it["reason"]["kind"] in ("because_you", "similar_to") and it["reason"]["via"] == part
            elif part == "popularity":
                assert it["reason"]["kind"] in ("popular_in_stream", "popular")


def test_prefit_content_is_reused_and_equal(world):
    ev, cat, split, ids = world["ev"], world["cat"], world["split"], world["ids"]
    h2 = HybridRecommender(**world["model"].get_params()).fit_events(
        ev[ev["ts"] <= split], catalog_items(cat), reference_time=split, item_ids=ids
    )
    a, b = h2.content_model_.W_, world["content"].W_
    assert (a != b).nnz == 0
    assert world["model"].content_model_ is world["content"]
    with pytest.raises(ValueError):
        HybridRecommender().fit_events(ev[ev["ts"] <= split], catalog_items(cat), content=ContentModel().fit(["a b"]))


def test_content_numba_equals_scipy_and_common_features_are_capped():
    rng = np.random.default_rng(0)
    words = ["纯棉", "T恤", "男", "夏季", "短袖", "连衣裙", "运动鞋", "防滑", "red", "shirt", "cotton"]
    texts = [" ".join(rng.choice(words, rng.integers(1, 5))) + f" {k % 13}" for k in range(600)]
    a = ContentModel(neighbours=15, engine="numba", max_df_items=None).fit(texts)
    b = ContentModel(neighbours=15, engine="scipy", max_df_items=None).fit(texts)
    for i in range(600):
        assert np.allclose(np.sort(a.W_[i].data), np.sort(b.W_[i].data), atol=1e-5)
    c = ContentModel(neighbours=15, max_df_items=100).fit(texts)
    assert c.fit_info_["dropped_common_features"] > 0 and c.W_.shape == (600, 600)
    assert ContentModel().fit(["同 款"] * 5).W_.shape == (5, 5)


@pytest.mark.parametrize("cf_params", [{"lam": 200.0, "neighbours": 50}, {"lam": 200.0}])
def test_catalogue_topk_equals_dense_scores(world, cf_params):
    """The whole-catalogue ranking of the train job (neighbours + popularity head only) equals the
    dense score_batch ranking (history excluded, ties: lower item index), sparse and dense B."""
    from shared.reco.instream import catalogue_topk

    ev, split = world["ev"], world["split"]
    h = HybridRecommender(**{**world["model"].get_params(), "cf_params": cf_params})
    h.fit_events(
        ev[ev["ts"] <= split],
        catalog_items(world["cat"]),
        reference_time=split,
        item_ids=world["ids"],
        content=world["content"],
    )
    X = h.user_items_[:200]
    got = catalogue_topk(h, X, 10)
    S = h.score_batch(X)
    S[X.nonzero()] = -np.inf
    for r in range(X.shape[0]):
        order = np.lexsort((np.arange(S.shape[1]), -S[r]))[:10]
        assert got[r].tolist() == order[np.isfinite(S[r, order])].tolist(), r
