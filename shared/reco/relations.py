"""What a neighbour pair really is: bought together, viewed together, or only related by the model.

The served CF part scores ``R(u, i) = Σ_j a(u, j) W[j, i]`` with ``W`` from EASE (or item-kNN): a
positive ``W[j, i]`` says the model predicts ``i`` from ``j``, not why. A reason that names the anchor
``j`` must say the relation the data shows, so each stored pair ``(j, i)`` of ``W`` gets a code:

* ``BOUGHT`` (2): at least one viewer bought both ``j`` and ``i`` (in the model's window);
* ``VIEWED`` (1): not bought together, but at least one viewer touched both (click, cart or purchase);
* ``RELATED`` (0): neither — EASE links items through others (``W = I - P·diag(1/diag P)``), so a
  pair may carry weight with nobody having touched both.

``pair_relations`` computes the codes aligned with ``W.data`` at fit time (row blocks of the
co-occurrence ``X̄ᵀX̄`` restricted to ``W``'s pattern, memory bounded as ``itemknn.item_similarity``),
``relation_of`` reads them (or, for a dense ``W`` / an artefact without codes, counts the pair's
viewers from the user x item matrices on demand). The content part's neighbours are text
similarities (``SIMILAR``: a reason kind of its own, never a CF code).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["RELATED", "VIEWED", "BOUGHT", "RELATION_KIND", "pair_relations", "relation_of", "pair_counts"]

RELATED, VIEWED, BOUGHT = 0, 1, 2
#: the reason kind of a CF relation code (the content part is always ``similar_to``)
RELATION_KIND = {BOUGHT: "bought_together", VIEWED: "viewed_together", RELATED: "related_to"}


def _binary(X: sp.spmatrix) -> sp.csr_matrix:
    B = sp.csr_matrix(X, dtype=np.float32, copy=True)
    B.data = (B.data != 0).astype(np.float32)
    B.eliminate_zeros()
    return B


def _pattern_counts(W: sp.csr_matrix, X: sp.csr_matrix, max_block_nnz: int) -> np.ndarray:
    """``(X̄ᵀX̄)[j, i]`` at every stored entry of ``W`` (aligned with ``W.data``)."""
    n = W.shape[0]
    out = np.zeros(W.nnz, dtype=np.float32)
    if W.nnz == 0 or X.nnz == 0:
        return out
    XT = sp.csr_matrix(X.T)  # item x user
    user_len = np.diff(X.indptr).astype(np.float64)
    work = np.minimum(XT @ user_len, n)  # bound on the non-zeros of row j of X̄ᵀX̄
    cum = np.cumsum(work)
    rows_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(W.indptr))
    keys = rows_of * n + W.indices.astype(np.int64)  # W's entries, as row * n + col (row-major order)
    start = 0
    while start < n:
        base = cum[start - 1] if start else 0.0
        end = min(max(int(np.searchsorted(cum, base + max_block_nnz, side="right")), start + 1), n)
        a, b = int(W.indptr[start]), int(W.indptr[end])
        if b > a:
            C = (XT[start:end] @ X).tocoo()
            ck = (C.row.astype(np.int64) + start) * n + C.col.astype(np.int64)
            o = np.argsort(ck, kind="stable")
            ck, cv = ck[o], C.data[o]
            k = keys[a:b]
            p = np.minimum(np.searchsorted(ck, k), max(ck.size - 1, 0))
            hit = (ck[p] == k) if ck.size else np.zeros(k.size, dtype=bool)
            out[a:b][hit] = cv[p[hit]]
        start = end
    return out


def pair_relations(
    W: sp.csr_matrix, bought: sp.spmatrix, touched: sp.spmatrix, max_block_nnz: int = 20_000_000
) -> np.ndarray:
    """Relation codes (uint8, aligned with ``W.data``) of the pairs stored in ``W`` from the user x item
    matrices of purchases (``bought``) and of touches (``touched``: click, cart or purchase; it must
    include the purchases)."""
    W = sp.csr_matrix(W)
    nb = _pattern_counts(W, _binary(bought), max_block_nnz)
    nt = _pattern_counts(W, _binary(touched), max_block_nnz)
    code = np.full(W.nnz, RELATED, dtype=np.uint8)
    code[nt > 0] = VIEWED
    code[nb > 0] = BOUGHT
    return code


def pair_counts(j: int, i: int, bought_csc: sp.csc_matrix, touched_csc: sp.csc_matrix) -> tuple[int, int]:
    """Viewers who bought both ``j`` and ``i``, and who touched both (columns of CSC matrices)."""

    def both(M):
        a = M.indices[M.indptr[j] : M.indptr[j + 1]]
        b = M.indices[M.indptr[i] : M.indptr[i + 1]]
        return int(np.intersect1d(a, b, assume_unique=True).size)

    return both(bought_csc), both(touched_csc)


def relation_of(
    j: int,
    i: int,
    W: sp.csr_matrix | None,
    codes: np.ndarray | None,
    on_demand=None,
) -> int:
    """The relation code of the pair ``(j, i)``: from ``codes`` (aligned with ``W.data``) when the pair is
    stored there, else ``on_demand(j, i)`` (``pair_counts``: bought both, touched both) if given, else
    ``RELATED`` (claim nothing)."""
    if W is not None and codes is not None and codes.size == W.nnz:
        a, b = int(W.indptr[j]), int(W.indptr[j + 1])
        hit = np.flatnonzero(W.indices[a:b] == i)
        if hit.size:
            return int(codes[a + int(hit[0])])
    if on_demand is not None:
        nb, nt = on_demand(j, i)
        return BOUGHT if nb > 0 else VIEWED if nt > 0 else RELATED
    return RELATED
