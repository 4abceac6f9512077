"""Vectorised top-k ranking metrics (Microsoft Recommenders definitions).

Inputs
------
``recommended`` : int array ``(n_users, >=k)`` of item indices, best first,
    padded with -1 when a user has fewer recommendations.
``relevant`` : user x item sparse matrix (non-zero = relevant, e.g. the test
    interactions) with the SAME row order, or a list of item-index arrays.

Users with no relevant item are skipped (MS Recommenders evaluates users that
appear in both the test set and the predictions).  With ``hit[u, r] = 1`` if
the item at rank ``r`` (1-based) is relevant and ``n_u`` = #relevant items:

* Precision@k = mean_u  sum_r hit / k          (divides by k even if fewer recs)
* Recall@k    = mean_u  sum_r hit / n_u
* NDCG@k      = mean_u  DCG / IDCG,  DCG = sum_r hit / log2(r + 1),
                IDCG = sum_{r=1}^{min(n_u, k)} 1 / log2(r + 1)   (binary gains)
* MAP@k       = mean_u  (1 / n_u) sum_r hit[r] · (sum_{s<=r} hit[s]) / r
                (MS Recommenders ``map``: divided by ALL the user's relevant
                items, not by min(n_u, k))
* HitRate@k   = mean_u  1[sum_r hit > 0]
* coverage    = |distinct recommended items in the top-k| / n_items
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shared.reco.arrays import unique

__all__ = [
    "hit_matrix",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "map_at_k",
    "hit_rate_at_k",
    "catalog_coverage",
    "ranking_metrics",
]


def _relevant_csr(relevant, n_users: int, n_items: int | None = None) -> sp.csr_matrix:
    if sp.issparse(relevant):
        R = sp.csr_matrix(relevant)
    else:
        lens = np.array([len(r) for r in relevant], dtype=np.int64)
        cols = (
            np.concatenate([np.asarray(r, dtype=np.int64) for r in relevant])
            if len(relevant)
            else np.empty(0, np.int64)
        )
        n_cols = n_items if n_items is not None else (int(cols.max()) + 1 if cols.size else 1)
        R = sp.csr_matrix(
            (np.ones(cols.size), cols, np.concatenate(([0], np.cumsum(lens)))), shape=(len(relevant), n_cols)
        )
    R = R.copy()
    R.data = np.ones_like(R.data, dtype=np.float64)
    R.sum_duplicates()
    R.data[:] = 1.0
    R.sort_indices()
    if R.shape[0] != n_users:
        raise ValueError(f"relevant has {R.shape[0]} rows, recommended has {n_users}")
    return R


def hit_matrix(recommended: np.ndarray, relevant, k: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (hits bool (n_users, k), n_relevant per user)."""
    rec = np.asarray(recommended, dtype=np.int64)
    if rec.ndim != 2:
        raise ValueError("recommended must be 2-d (n_users, k)")
    rec = rec[:, :k]
    if rec.shape[1] < k:  # pad
        rec = np.hstack([rec, np.full((rec.shape[0], k - rec.shape[1]), -1, dtype=np.int64)])
    R = _relevant_csr(relevant, rec.shape[0])
    n_items = R.shape[1]
    n_rel = np.diff(R.indptr)
    # sorted composite keys of the relevant pairs; look recommended pairs up
    rows = np.repeat(np.arange(R.shape[0], dtype=np.int64), n_rel)
    keys = rows * n_items + R.indices.astype(np.int64)
    valid = (rec >= 0) & (rec < n_items)
    q = np.arange(rec.shape[0], dtype=np.int64)[:, None] * n_items + np.where(valid, rec, 0)
    if keys.size == 0:
        return np.zeros(rec.shape, dtype=bool), n_rel
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    hits = valid & (keys[pos] == q)
    return hits, n_rel


def _per_user(recommended, relevant, k):
    hits, n_rel = hit_matrix(recommended, relevant, k)
    mask = n_rel > 0
    return hits[mask].astype(np.float64), n_rel[mask].astype(np.float64)


def precision_at_k(recommended, relevant, k: int = 10) -> float:
    h, n = _per_user(recommended, relevant, k)
    return float(np.mean(h.sum(1) / k)) if n.size else 0.0


def recall_at_k(recommended, relevant, k: int = 10) -> float:
    h, n = _per_user(recommended, relevant, k)
    return float(np.mean(h.sum(1) / n)) if n.size else 0.0


def ndcg_at_k(recommended, relevant, k: int = 10) -> float:
    h, n = _per_user(recommended, relevant, k)
    if not n.size:
        return 0.0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = h @ disc
    cdisc = np.concatenate(([0.0], np.cumsum(disc)))
    idcg = cdisc[np.minimum(n, k).astype(np.int64)]
    return float(np.mean(dcg / idcg))


def map_at_k(recommended, relevant, k: int = 10) -> float:
    h, n = _per_user(recommended, relevant, k)
    if not n.size:
        return 0.0
    prec_at_r = np.cumsum(h, axis=1) / np.arange(1, k + 1)
    return float(np.mean((prec_at_r * h).sum(1) / n))


def hit_rate_at_k(recommended, relevant, k: int = 10) -> float:
    h, n = _per_user(recommended, relevant, k)
    return float(np.mean(h.any(1))) if n.size else 0.0


def catalog_coverage(recommended, n_items: int, k: int = 10) -> float:
    rec = np.asarray(recommended)[:, :k].ravel()
    rec = rec[(rec >= 0) & (rec < n_items)]
    return float(unique(rec).size / n_items) if n_items else 0.0


def ranking_metrics(recommended, relevant, k: int = 10, n_items: int | None = None) -> dict[str, float]:
    """All metrics at once (one hit-matrix computation)."""
    h, n = _per_user(recommended, relevant, k)
    out: dict[str, float] = {}
    if n.size:
        disc = 1.0 / np.log2(np.arange(2, k + 2))
        cdisc = np.concatenate(([0.0], np.cumsum(disc)))
        nh = h.sum(1)
        out[f"precision@{k}"] = float(np.mean(nh / k))
        out[f"recall@{k}"] = float(np.mean(nh / n))
        out[f"ndcg@{k}"] = float(np.mean((h @ disc) / cdisc[np.minimum(n, k).astype(np.int64)]))
        out[f"map@{k}"] = float(np.mean(((np.cumsum(h, 1) / np.arange(1, k + 1)) * h).sum(1) / n))
        out[f"hitrate@{k}"] = float(np.mean(nh > 0))
    else:
        for m in ("precision", "recall", "ndcg", "map", "hitrate"):
            out[f"{m}@{k}"] = 0.0
    out["users"] = int(n.size)
    if n_items is not None:
        out["coverage"] = catalog_coverage(recommended, n_items, k)
    return out
