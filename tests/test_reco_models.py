"""Known-answer tests for the item-based models (tiny hand-computed matrices)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shared.reco import (
    EASE,
    ContentModel,
    ItemItemCF,
    build_user_items,
    cooccurrence,
    ease_weights,
    similarity_from_cooccurrence,
)

# users x items (binary):  u0: {0, 1}   u1: {0, 1, 2}   u2: {1, 2}
X = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=np.float32))
# C = [[2, 2, 1], [2, 3, 2], [1, 2, 2]]


def test_cooccurrence_by_hand():
    assert np.array_equal(cooccurrence(X).toarray(), [[2, 2, 1], [2, 3, 2], [1, 2, 2]])


@pytest.mark.parametrize(
    "kind, s01, s02, s12",
    [
        ("cosine", 2 / np.sqrt(6), 1 / 2, 2 / np.sqrt(6)),  # C_ij / sqrt(C_ii C_jj)
        ("jaccard", 2 / 3, 1 / 3, 2 / 3),  # C_ij / (C_ii + C_jj - C_ij)
        ("lift", 1 / 3, 1 / 4, 1 / 3),  # C_ij / (C_ii C_jj)
    ],
)
def test_similarities_by_hand(kind, s01, s02, s12):
    S = similarity_from_cooccurrence(cooccurrence(X), kind).toarray()
    assert S[0, 1] == pytest.approx(s01) and S[1, 0] == pytest.approx(s01)
    assert S[0, 2] == pytest.approx(s02)
    assert S[1, 2] == pytest.approx(s12)
    m = ItemItemCF(kind, neighbours=None).fit(X)
    W = m.W_.toarray()
    assert np.allclose(np.diag(W), 0)  # diagonal dropped
    assert W[0, 1] == pytest.approx(s01, rel=1e-6) and W[0, 2] == pytest.approx(s02, rel=1e-6)
    # R(u, i) = sum_j a(u, j) S[j, i]: user with only item 0 (weight 2)
    cand, sc = m.score_one(np.array([0]), np.array([2.0]))
    got = dict(zip(cand.tolist(), sc.tolist()))
    assert got[1] == pytest.approx(2 * s01, rel=1e-6) and got[2] == pytest.approx(2 * s02, rel=1e-6)


def test_top_n_neighbours_keeps_largest():
    m = ItemItemCF("cosine", neighbours=1).fit(X)
    W = m.W_.toarray()
    assert (m.W_.getnnz(axis=1) == 1).all()
    assert W[0, 1] > 0 and W[0, 2] == 0  # item 0: best neighbour is 1 (0.816 > 0.5)


def test_blockwise_similarity_equals_full():
    rng = np.random.default_rng(1)
    R = sp.random(60, 40, density=0.15, random_state=2, format="csr")
    R.data[:] = 1
    from shared.reco.itemknn import item_similarity

    small_blocks = item_similarity(R, "jaccard", None, max_block_nnz=30).toarray()
    full = similarity_from_cooccurrence(cooccurrence(R), "jaccard").toarray()
    np.fill_diagonal(full, 0)
    assert np.allclose(small_blocks, full, atol=1e-6)
    assert rng is not None


def test_ease_matches_direct_formula():
    rng = np.random.default_rng(0)
    Xd = (rng.random((30, 8)) < 0.4).astype(np.float64)
    lam = 3.0
    P = np.linalg.inv(Xd.T @ Xd + lam * np.eye(8))
    B = np.eye(8) - P @ np.diag(1 / np.diag(P))
    assert np.allclose(ease_weights(sp.csr_matrix(Xd), lam), B, atol=1e-10)
    m = EASE(lam=lam).fit(sp.csr_matrix(Xd))
    assert m.is_dense and np.allclose(m.B_, B, atol=1e-5)
    # score = user row . B
    assert np.allclose(m.score_batch(sp.csr_matrix(Xd[:3])), Xd[:3] @ B, atol=1e-5)
    ids, _ = m.recommend(sp.csr_matrix(Xd[:1]), N=3)
    seen = set(np.flatnonzero(Xd[0]))
    assert not seen & set(ids.tolist())


def test_ease_falls_back_to_sparse_above_limit():
    m = EASE(lam=1.0, max_dense_items=2).fit(X)
    assert not m.is_dense and m.fit_info_["mode"] == "fallback_cosine"
    assert m.W_[0, 1] == pytest.approx(2 / np.sqrt(6), rel=1e-6)


def test_fast_path_equals_batch_and_filters():
    rng = np.random.default_rng(3)
    R = sp.random(50, 30, density=0.2, random_state=4, format="csr", dtype=np.float32)
    m = ItemItemCF("cosine", neighbours=10).fit(R)
    full = m.score_batch(R)
    for u in range(10):
        row = R[u]
        ids, sc = m.recommend_indices(row.indices, row.data, N=5)
        expect = full[u].copy()
        expect[row.indices] = -np.inf
        expect[expect == 0] = -np.inf
        order = np.lexsort((np.arange(30), -expect))[: ids.size]
        assert np.array_equal(ids, order)
        assert np.allclose(sc, expect[ids], rtol=1e-5)
        assert not set(ids) & set(row.indices)
    ids, _ = m.recommend(0, N=5, items=np.array([1, 2, 3]))
    assert set(ids) <= {1, 2, 3}
    bids, _ = m.recommend(np.array([0, 1]), N=5)
    assert bids.shape == (2, 5)
    assert rng is not None


def test_content_chinese_near_duplicate_ranks_first():
    titles = [
        "纯棉T恤 男 夏季 短袖",
        "冬季 羊毛 大衣 女",
        "夏季 连衣裙 女 雪纺",
        "男士 运动鞋 跑步",
        "夏季 纯棉 T恤 男",
        "纯棉 袜子 男",
        "夏季 短裤 男 沙滩",
    ]
    m = ContentModel(neighbours=5).fit(titles)
    ids, scores = m.similar_items(4, N=3)
    assert ids[0] == 0
    assert scores[0] > scores[1]
    ids, _ = m.similar_items(0, N=1)
    assert ids[0] == 4


def test_build_user_items_weights_decay_refund():
    ref = pd.Timestamp("2026-03-01", tz="UTC")
    ev = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "b", "b"],
            "item_id": ["x", "x", "y", "y", "x", None, "z"],
            "ts": [ref, ref, ref, ref - pd.Timedelta(days=1), ref - pd.Timedelta(days=1), ref, ref],
            "type": ["product_click", "add_to_cart", "purchase", "refund", "purchase", "like", "product_impression"],
        }
    )
    inter = build_user_items(ev, half_life_days=1.0, reference_time=ref)
    M = pd.DataFrame(inter.matrix.toarray(), index=inter.user_ids, columns=inter.item_ids)
    assert M.loc["a", "x"] == pytest.approx(4.0)  # click 1 + cart 3
    assert M.loc["a", "y"] == pytest.approx(2.5)  # purchase 5 - refund 5 * 0.5 (1 day old)
    assert M.loc["b", "x"] == pytest.approx(2.5)  # purchase 5 halved
    assert M.loc["b", "z"] == 0 and inter.matrix.nnz == 3  # impression weight 0 -> no entry
    # strongest action per (user, item)
    A = pd.DataFrame(inter.actions.toarray(), index=inter.user_ids, columns=inter.item_ids)
    assert inter.action_names[A.loc["a", "x"] - 1] == "add_to_cart"
    assert inter.action_names[A.loc["a", "y"] - 1] == "purchase"
    assert inter.user_ids.dtype.kind == "U" and inter.item_ids.dtype.kind == "U"


def test_refund_clips_total_at_zero():
    ev = pd.DataFrame(
        {
            "user_id": ["a", "a"],
            "item_id": ["x", "x"],
            "ts": pd.Timestamp("2026-01-01", tz="UTC"),
            "type": ["purchase", "refund"],
        }
    )
    ev.loc[1, "type"] = "refund"
    inter = build_user_items(pd.concat([ev, ev.iloc[[1]]]), half_life_days=None)
    assert inter.matrix.nnz == 0  # 5 - 10 -> clipped to 0


def test_serialisation_round_trip_without_pickle(tmp_path):
    import json

    for model in (EASE(lam=2.0), EASE(lam=2.0, neighbours=2), ItemItemCF("jaccard", 2)):
        model.fit(X)
        path = tmp_path / "m.npz"
        np.savez(path, **model.to_arrays())
        meta = json.loads(json.dumps(model.meta))
        with np.load(path, allow_pickle=False) as z:
            loaded = type(model).from_arrays({k: z[k] for k in z.files}, meta)
        assert np.allclose(loaded.score_batch(X), model.score_batch(X))


def test_determinism():
    R = sp.random(40, 25, density=0.2, random_state=7, format="csr", dtype=np.float32)
    for make in (lambda: ItemItemCF("cosine", 5), lambda: EASE(lam=5.0), lambda: EASE(lam=5.0, neighbours=3)):
        a, b = make().fit(R).to_arrays(), make().fit(R).to_arrays()
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["cosine", "jaccard", "lift", "cooccurrence"])
@pytest.mark.parametrize("binary", [True, False])
def test_engines_agree_with_brute_force_top_n(kind, binary):
    """numba kernel (when installed) and scipy blocks both keep, per row, the
    n largest similarities > 0; the numba kernel breaks ties by lower column."""
    from shared.reco._kernels import HAVE_NUMBA
    from shared.reco.itemknn import item_similarity

    R = sp.random(300, 80, density=0.08, random_state=3, format="csr", dtype=np.float64)
    R.data = np.ceil(R.data * 3)
    Xb = R.copy()
    if binary:
        Xb.data[:] = 1
    full = similarity_from_cooccurrence(cooccurrence(Xb, binary=False), kind).toarray()
    np.fill_diagonal(full, 0)
    n = 5
    engines = ["scipy"] + (["numba"] if HAVE_NUMBA else [])
    for engine in engines:
        W = item_similarity(R, kind, n, binary=binary, engine=engine, max_block_nnz=500).toarray()
        for i in range(full.shape[0]):
            row = full[i]
            expect = np.sort(row[row > 0])[::-1][:n]
            got = np.sort(W[i][W[i] > 0])[::-1]
            assert np.allclose(got, expect, rtol=1e-5), (engine, i)
            if engine == "numba":
                order = np.lexsort((np.arange(row.size), -row))[: expect.size]
                assert set(np.flatnonzero(W[i])) == set(order.tolist())
        W2 = item_similarity(R, kind, n, binary=binary, engine=engine, max_block_nnz=500).toarray()
        assert np.array_equal(W, W2)  # deterministic


@pytest.mark.parametrize("use_numba", [False, True])
def test_score_one_sources_matches_aggregate_and_top_sources(monkeypatch, use_numba):
    from shared.reco import _kernels, base
    from shared.reco._core import aggregate, gather_rows

    if use_numba and not _kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    monkeypatch.setattr(base, "HAVE_NUMBA", use_numba)
    R = sp.random(200, 60, density=0.1, random_state=5, format="csr")
    R.data[:] = 1
    m = ItemItemCF("cosine", neighbours=8).fit(R)
    rng = np.random.default_rng(0)
    for _ in range(30):
        idx = rng.choice(60, rng.integers(1, 6), replace=False).astype(np.int64)
        w = rng.random(idx.size) * 3
        cand, sc, src, contrib = m.score_one_sources(idx, w)
        c0, s0 = aggregate(*gather_rows(m.W_, idx, w)[:2])
        assert np.array_equal(cand, c0) and np.allclose(sc, s0, rtol=1e-12)
        s1, k1 = m.top_sources(idx, w, cand)
        assert np.array_equal(src, s1) and np.allclose(contrib, k1)
        c2, s2 = m.score_one(idx, w)
        assert np.array_equal(c2, c0) and np.allclose(s2, s0, rtol=1e-12)


def test_pair_scores_matches_user_scores():
    import scipy.sparse as sp_

    from shared.reco._kernels import HAVE_NUMBA, pair_scores, user_scores

    if not HAVE_NUMBA:
        return
    rng = np.random.default_rng(3)
    W1 = sp_.random(300, 300, density=0.05, random_state=1, format="csr", dtype=np.float32)
    W2 = sp_.random(300, 300, density=0.03, random_state=2, format="csr", dtype=np.float32)
    for n_src in (0, 3, 40, 250):
        idx = rng.choice(300, n_src, replace=False).astype(np.int64)
        w = rng.random(n_src)
        c, v1, s1, v2, s2 = pair_scores(W1, W2, idx, w)
        a, b = user_scores(W1, idx, w), user_scores(W2, idx, w)
        assert np.array_equal(c, np.union1d(a[0], b[0]))
        p = np.searchsorted(c, a[0])
        assert np.array_equal(v1[p], a[1]) and np.array_equal(s1[p], a[2])
        p = np.searchsorted(c, b[0])
        assert np.array_equal(v2[p], b[1]) and np.array_equal(s2[p], b[2])
        one = pair_scores(W1, None, idx, w)
        assert np.array_equal(one[0], a[0]) and np.array_equal(one[1], a[1]) and np.array_equal(one[2], a[2])
