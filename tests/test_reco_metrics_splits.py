"""Metrics vs hand-computed values; splits vs the reference algorithm."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shared.reco.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)
from shared.reco.splits import stratified_split, temporal_leave_last_out

# user 0: recs [1, 2, 3], relevant {1, 3} -> hits [1, 0, 1]
# user 1: recs [4, 5, 6], relevant {0}    -> no hits
# user 2: recs [7, 8, 9], relevant {}     -> skipped (no relevant items)
REC = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
REL = [np.array([1, 3]), np.array([0]), np.array([], dtype=int)]


def test_metrics_by_hand():
    k = 3
    assert precision_at_k(REC, REL, k) == pytest.approx((2 / 3 + 0) / 2)
    assert recall_at_k(REC, REL, k) == pytest.approx((1 + 0) / 2)
    dcg = 1 / np.log2(2) + 1 / np.log2(4)  # ranks 1 and 3
    idcg = 1 / np.log2(2) + 1 / np.log2(3)  # min(2, 3) = 2 relevant
    assert ndcg_at_k(REC, REL, k) == pytest.approx((dcg / idcg) / 2)
    assert map_at_k(REC, REL, k) == pytest.approx(((1 / 1 + 2 / 3) / 2) / 2)
    assert hit_rate_at_k(REC, REL, k) == pytest.approx(0.5)
    assert catalog_coverage(REC, 20, k) == pytest.approx(9 / 20)
    allm = ranking_metrics(REC, REL, k, n_items=20)
    assert allm["users"] == 2 and allm["ndcg@3"] == pytest.approx(0.4598604, abs=1e-6)


def test_map_divides_by_all_relevant_items():
    # 4 relevant, only 2 can be in the top-3: MS Recommenders divides by 4, not min(4, 3)
    rec = np.array([[1, 2, 3]])
    rel = [np.array([1, 3, 7, 8])]
    assert map_at_k(rec, rel, 3) == pytest.approx((1 + 2 / 3) / 4)
    assert recall_at_k(rec, rel, 3) == pytest.approx(2 / 4)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert ndcg_at_k(rec, rel, 3) == pytest.approx((1 + 1 / np.log2(4)) / idcg)


def test_metrics_accept_sparse_and_padding():
    R = sp.csr_matrix(([1, 1, 1], ([0, 0, 1], [1, 3, 0])), shape=(3, 10))
    assert precision_at_k(REC, R, 3) == pytest.approx(precision_at_k(REC, REL, 3))
    padded = np.array([[1, -1, -1], [0, -1, -1], [-1, -1, -1]])
    assert precision_at_k(padded, R, 3) == pytest.approx((1 / 3 + 1 / 3) / 2)  # divides by k
    assert hit_rate_at_k(padded, R, 3) == 1.0


def _reference_stratified(df, ratio, col, seed):
    """The group-wise MS Recommenders algorithm, literally (slow, for tests)."""
    train = []
    for _, g in df.groupby(col, sort=False):
        g = g.sample(frac=1, random_state=seed)
        train.append(g.iloc[: round(ratio * len(g))])
    return pd.concat(train)


@pytest.mark.parametrize("filter_by", ["item", "user"])
def test_stratified_split_matches_reference(filter_by):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user_id": rng.integers(0, 30, 400), "item_id": rng.integers(0, 25, 400)})
    tr, te = stratified_split(df, 0.75, filter_by=filter_by, seed=42)
    col = "item_id" if filter_by == "item" else "user_id"
    ref = _reference_stratified(df, 0.75, col, 42)
    assert set(tr.index) == set(ref.index)
    assert len(tr) + len(te) == len(df) and not set(tr.index) & set(te.index)
    # every group keeps round(0.75 n) rows in train
    n = df.groupby(col).size()
    assert (tr.groupby(col).size().reindex(n.index, fill_value=0) == [round(0.75 * x) for x in n]).all()


def test_temporal_leave_last_out():
    df = pd.DataFrame(
        {"user_id": ["a", "a", "a", "b", "c", "c"], "item_id": [1, 2, 3, 1, 5, 6], "ts": [3, 1, 2, 5, 1, 1]}
    )
    tr, te = temporal_leave_last_out(df)
    assert sorted(te[["user_id", "item_id"]].itertuples(index=False, name=None)) == [("a", 1), ("c", 6)]
    assert "b" in set(tr.user_id) and "b" not in set(te.user_id)  # single interaction stays in train
