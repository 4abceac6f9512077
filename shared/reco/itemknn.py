"""Item-item collaborative filtering on co-occurrence (SAR-style).

Math
----
Let ``X`` be the user x item affinity matrix and ``X̄`` its binarised version
(``X̄[u, i] = 1`` iff ``X[u, i] > 0``).  The item co-occurrence matrix is

    C = X̄ᵀ X̄,     C[i, j] = #users who interacted with both i and j,
                  C[i, i] = #users who interacted with i   (item "occurrence").

SAR-style similarities derived from ``C`` (all symmetric):

* cosine   ``S[i, j] = C[i, j] / sqrt(C[i, i] * C[j, j])``
* jaccard  ``S[i, j] = C[i, j] / (C[i, i] + C[j, j] - C[i, j])``
* lift     ``S[i, j] = C[i, j] / (C[i, i] * C[j, j])``
* cooccurrence ``S[i, j] = C[i, j]``

With ``binary=False`` the weighted ``X`` is used instead: ``C = XᵀX`` and
cosine becomes the usual cosine of the item columns of ``X``
(``C[i, i] = ||X[:, i]||²``).  Pairs with ``C[i, j] < min_cooc`` (binary
counts only) are dropped, the diagonal is dropped, and only the ``neighbours``
largest entries of every row are kept, so ``W`` stays sparse.

Score (the seed's formula, with ``alpha_j = 1``):

    R(u, i) = sum_{j in I_u} a(u, j) * S[j, i]      i.e.  R = X @ W

``C`` is computed in row blocks ``C[b, :] = X̄[:, b]ᵀ X̄`` whose size is chosen
from an upper bound of their non-zeros, so memory stays bounded on big
catalogues; each block is converted to similarities and pruned to top-N
before the next one is computed.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from ._core import as_csr, prune_top_n
from ._kernels import HAVE_NUMBA, topn_similarity
from .base import ItemBasedRecommender

__all__ = ["ItemItemCF", "cooccurrence", "similarity_from_cooccurrence", "item_similarity", "SIMILARITIES"]

SIMILARITIES = ("cosine", "jaccard", "lift", "cooccurrence")


def cooccurrence(user_items: sp.spmatrix, binary: bool = True) -> sp.csr_matrix:
    """Full item x item co-occurrence ``C = X̄ᵀX̄`` (for small matrices / tests)."""
    X = as_csr(user_items, dtype=np.float64)
    if binary:
        X.data = (X.data > 0).astype(np.float64)
        X.eliminate_zeros()
    return as_csr(X.T @ X, dtype=np.float64)


def _sim_values(kind: str, v: np.ndarray, di: np.ndarray, dj: np.ndarray) -> np.ndarray:
    if kind == "cosine":
        return v / np.sqrt(di * dj)
    if kind == "jaccard":
        return v / (di + dj - v)
    if kind == "lift":
        return v / (di * dj)
    if kind == "cooccurrence":
        return v.astype(np.float64, copy=True)
    raise ValueError(f"unknown similarity {kind!r}; expected one of {SIMILARITIES}")


def similarity_from_cooccurrence(C: sp.spmatrix | np.ndarray, kind: str = "cosine") -> sp.csr_matrix:
    """Apply a SAR similarity to a full co-occurrence matrix (diagonal kept)."""
    C = sp.coo_matrix(C, dtype=np.float64)
    d = np.asarray(C.diagonal(), dtype=np.float64)
    vals = _sim_values(kind, C.data, d[C.row], d[C.col])
    return as_csr(sp.csr_matrix((vals, (C.row, C.col)), shape=C.shape), dtype=np.float64)


def item_similarity(
    user_items: sp.spmatrix,
    kind: str = "cosine",
    neighbours: int | None = 100,
    *,
    binary: bool = True,
    min_cooc: float = 1.0,
    max_block_nnz: int = 20_000_000,
    dtype=np.float32,
    engine: str = "auto",
) -> sp.csr_matrix:
    """Top-N item x item similarity matrix (diagonal removed).

    ``engine="numba"`` (the default ``"auto"`` when numba is installed and
    ``neighbours`` is set) runs the fused parallel kernel of
    ``_kernels.topn_similarity``; ``engine="scipy"`` computes ``C`` blockwise
    with scipy and prunes each block (also used for ``neighbours=None``).
    Both keep, per row, the ``neighbours`` largest similarities > 0 (ties:
    lower column first in the numba kernel).
    """
    if kind not in SIMILARITIES:
        raise ValueError(f"unknown similarity {kind!r}; expected one of {SIMILARITIES}")
    X = as_csr(user_items, dtype=np.float64)
    if binary:
        X.data = (X.data > 0).astype(np.float64)
    X.eliminate_zeros()
    n_items = X.shape[1]
    XT = as_csr(X.T, dtype=np.float64)  # item x user
    d = np.asarray(X.multiply(X).sum(axis=0)).ravel()  # C[i, i]
    # upper bound of nnz of row i of C: sum over i's users of their #items
    user_len = np.diff(X.indptr).astype(np.float64)
    work = np.minimum(XT @ user_len, n_items)
    use_numba = engine == "numba" or (engine == "auto" and HAVE_NUMBA)
    if use_numba and neighbours is not None and n_items and (X.data.size == 0 or X.data.min() > 0):
        if not HAVE_NUMBA:
            raise RuntimeError("engine='numba' needs the numba package")
        cooc_min = float(min_cooc) if binary else -np.inf
        indptr, indices, data = topn_similarity(X, XT, d, kind, int(neighbours), cooc_min, work, dtype)
        return sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items))
    blocks = []
    start = 0
    cum = np.cumsum(work)
    while start < n_items:
        base = cum[start - 1] if start else 0.0
        end = int(np.searchsorted(cum, base + max_block_nnz, side="right"))
        end = min(max(end, start + 1), n_items)
        Cb = sp.csr_matrix(XT[start:end] @ X)
        coo = Cb.tocoo()
        r, c, v = coo.row, coo.col, coo.data
        keep = (r + start) != c
        if binary and min_cooc > 1:
            keep &= v >= min_cooc
        r, c, v = r[keep], c[keep], v[keep]
        s = _sim_values(kind, v, d[r + start], d[c])
        block = sp.csr_matrix((s.astype(dtype), (r, c)), shape=(end - start, n_items))
        blocks.append(prune_top_n(block, neighbours, drop_diagonal=False, min_value=0.0))
        start = end
    W = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_items), dtype=dtype)
    return as_csr(W, dtype=dtype)


class ItemItemCF(ItemBasedRecommender):
    """Item-item collaborative filtering with SAR similarities.

    Parameters
    ----------
    similarity : "cosine" | "jaccard" | "lift" | "cooccurrence"
    neighbours : keep this many most similar items per item (None = all).
    binary : compute co-occurrence on the binarised matrix (SAR) or on weights.
    min_cooc : drop pairs co-occurring fewer times (binary only).
    """

    def __init__(
        self,
        similarity: str = "cosine",
        neighbours: int | None = 100,
        binary: bool = True,
        min_cooc: float = 1.0,
    ):
        self.similarity = similarity
        self.neighbours = neighbours
        self.binary = binary
        self.min_cooc = min_cooc

    def fit(self, user_items: sp.spmatrix):
        t0 = time.perf_counter()
        X = as_csr(user_items)
        self.n_items_ = X.shape[1]
        self.W_ = item_similarity(X, self.similarity, self.neighbours, binary=self.binary, min_cooc=self.min_cooc)
        self.B_ = None
        self.user_items_ = X
        self.fit_info_ = {"fit_seconds": time.perf_counter() - t0, "nnz": int(self.W_.nnz)}
        return self

    def use_neighbours(self, user_items: sp.spmatrix, W: sp.spmatrix):
        """``fit`` with the top-N similarity matrix computed elsewhere (the Beam job's lists mapped into
        this item index, ``shared.neighbour_lists.select``) instead of by ``item_similarity``."""
        X = as_csr(user_items)
        if W.shape != (X.shape[1], X.shape[1]):
            raise ValueError(f"neighbours of shape {W.shape} for {X.shape[1]} items")
        self.n_items_ = X.shape[1]
        self.W_ = W.tocsr()
        self.B_ = None
        self.user_items_ = X
        self.fit_info_ = {"fit_seconds": 0.0, "nnz": int(self.W_.nnz), "neighbours": "precomputed"}
        return self
