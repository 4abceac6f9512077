"""EASE: closed-form regularised item-item model (Steck, WWW 2019).

Math
----
EASE learns an item x item weight matrix ``B`` with a zero diagonal by ridge
regression of every item column on all the other columns:

    min_B ||X - X B||²_F + λ ||B||²_F     s.t.  diag(B) = 0

whose closed-form solution is

    G = XᵀX + λI,   P = G⁻¹,   B = I - P · diag(1 / diag(P))
    (i.e. B[i, j] = -P[i, j] / P[j, j] for i != j, B[j, j] = 0)

and scores keep the seed's item-item form ``R(u, ·) = X[u, ·] · B``, i.e.
``R(u, i) = sum_j a(u, j) B[j, i]`` — so "because you ... X" explanations work
the same way as for item-item CF.

The dense / sparse line
-----------------------
``G`` and ``B`` are dense ``n_items x n_items``: memory ``8·n²`` bytes for
float64 during the inversion (``n = 10 000`` -> 0.8 GB, ``20 000`` -> 3.2 GB)
and ``O(n³)`` time (≈1e12 flops at 10k items: tens of seconds on 2 cores, vs
~0.3 s at 1.7k items).  The default ``max_dense_items = 10_000`` keeps a fit
under ~1 GB / ~1 minute and a float32 artefact under 400 MB.  Above the line
EASE falls back to sparse top-N item-item cosine (``ItemItemCF``), which is
linear in the number of co-occurring pairs.  ``neighbours=N`` additionally
prunes ``B`` to its N largest entries per row after fitting, giving the same
sparse fast path and a small artefact.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from ._core import as_csr, prune_top_n
from .base import ItemBasedRecommender
from .itemknn import item_similarity

__all__ = ["EASE", "ease_weights"]


def ease_weights(user_items: sp.spmatrix | np.ndarray, lam: float) -> np.ndarray:
    """Dense EASE weight matrix ``B`` (float64) for the given user x item matrix."""
    X = sp.csr_matrix(user_items, dtype=np.float64)
    G = (X.T @ X).toarray()
    G[np.diag_indices_from(G)] += lam
    # G is symmetric positive definite (λ > 0): invert through Cholesky.
    c, low = scipy.linalg.cho_factor(G, overwrite_a=True, check_finite=False)
    P = scipy.linalg.cho_solve((c, low), np.eye(G.shape[0]), overwrite_b=True, check_finite=False)
    B = P / (-np.diag(P))
    B[np.diag_indices_from(B)] = 0.0
    return B


class EASE(ItemBasedRecommender):
    """Embarrassingly Shallow AutoEncoder.

    Parameters
    ----------
    lam : L2 regularisation λ (tune on a validation split; ~100-1000 for
        binary data with a few hundred thousand interactions).
    binary : fit on the binarised matrix (usual for EASE) or the weights.
    max_dense_items : above this many items, fall back to sparse item-item
        cosine with ``fallback_neighbours`` neighbours.
    neighbours : if set, prune ``B`` to the top-N per row and store it sparse.
    """

    def __init__(
        self,
        lam: float = 500.0,
        binary: bool = True,
        max_dense_items: int = 10_000,
        neighbours: int | None = None,
        fallback_neighbours: int = 100,
    ):
        self.lam = lam
        self.binary = binary
        self.max_dense_items = max_dense_items
        self.neighbours = neighbours
        self.fallback_neighbours = fallback_neighbours

    def fit(self, user_items: sp.spmatrix):
        t0 = time.perf_counter()
        X = as_csr(user_items, dtype=np.float64)
        if self.binary:
            X.data = (X.data > 0).astype(np.float64)
            X.eliminate_zeros()
        self.n_items_ = X.shape[1]
        self.user_items_ = as_csr(user_items)
        if self.n_items_ > self.max_dense_items:
            self.W_ = item_similarity(X, "cosine", self.fallback_neighbours, binary=True)
            self.B_ = None
            mode = "fallback_cosine"
        else:
            B = ease_weights(X, self.lam)
            if self.neighbours is not None:
                self.W_ = prune_top_n(B.astype(np.float32), self.neighbours, drop_diagonal=True, min_value=0.0)
                self.B_ = None
                mode = "ease_sparse"
            else:
                self.B_ = B.astype(np.float32)
                self.W_ = None
                mode = "ease_dense"
        self.fit_info_ = {"fit_seconds": time.perf_counter() - t0, "mode": mode}
        return self

    def use_neighbours(self, user_items: sp.spmatrix, W: sp.spmatrix):
        """``fit`` above ``max_dense_items`` (the sparse cosine fallback) with its top-N cosine matrix
        computed elsewhere (``shared.neighbour_lists``); below the line EASE is not a cosine model."""
        n = user_items.shape[1]
        if n <= self.max_dense_items:
            raise ValueError(f"EASE on {n} <= max_dense_items={self.max_dense_items} items is not item-item cosine")
        if W.shape != (n, n):
            raise ValueError(f"neighbours of shape {W.shape} for {n} items")
        self.n_items_ = n
        self.user_items_ = as_csr(user_items)
        self.W_ = W.tocsr()
        self.B_ = None
        self.fit_info_ = {"fit_seconds": 0.0, "mode": "fallback_cosine", "neighbours": "precomputed"}
        return self
