"""Shared low-level helpers for the recommendation models.

Everything here is a pure function on numpy / scipy arrays: no I/O, no
globals, no randomness.  The models in this package are thin wrappers that
hold a *neighbour matrix* (item x item) and use these helpers to score.

Conventions
-----------
* ``X``  - user x item ``scipy.sparse.csr_matrix`` of (implicit) affinities.
* ``S``  - item x item neighbour matrix, row ``j`` holds the items ``i`` that
  are similar to ``j`` with weight ``S[j, i]``.  The score of item ``i`` for a
  user with affinities ``a(u, j)`` is ``R(u, i) = sum_j a(u, j) * S[j, i]``,
  i.e. ``R = X @ S``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "as_csr",
    "prune_top_n",
    "top_k",
    "top_k_rows",
    "gather_rows",
    "aggregate",
    "csr_to_arrays",
    "csr_from_arrays",
]


def as_csr(x: Any, dtype=np.float32) -> sp.csr_matrix:
    """Return ``x`` as a canonical CSR matrix (sorted indices, summed duplicates)."""
    m = sp.csr_matrix(x, dtype=dtype)
    m.sum_duplicates()
    m.sort_indices()
    return m


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of a 1-d array, best first.

    Uses ``argpartition`` (O(n)) then sorts only the k winners.  Ties are broken
    by the lower index so results are deterministic.
    """
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(n)
    # stable ordering: score desc, index asc
    order = np.lexsort((part, -scores[part]))
    return part[order]


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a dense 2-d score array -> (indices, values), best first."""
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0:
        return (np.empty((n_rows, 0), dtype=np.int64), np.empty((n_rows, 0), dtype=scores.dtype))
    if k < n_cols:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(n_cols), (n_rows, 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(vals, order, axis=1)


def prune_top_n(
    m: sp.spmatrix | np.ndarray,
    n: int | None,
    *,
    drop_diagonal: bool = True,
    row_offset: int = 0,
    min_value: float | None = None,
) -> sp.csr_matrix:
    """Keep the ``n`` largest entries of every row of ``m`` (sparse or dense).

    ``row_offset`` tells which global row index the first row of ``m`` has, so
    that the diagonal can be dropped when ``m`` is a row block of a square
    matrix.  ``min_value`` drops entries ``<= min_value`` (e.g. 0 for
    similarities).  Fully vectorised: only rows with more than ``n`` entries
    are sorted (by row, then value descending, then column ascending for
    deterministic ties) and ranked within their row.
    """
    m = sp.csr_matrix(m)
    m.sum_duplicates()
    n_rows = m.shape[0]
    counts = np.diff(m.indptr)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), counts)
    cols = m.indices.astype(np.int64, copy=False)
    vals = m.data
    keep = np.ones(vals.shape[0], dtype=bool)
    if drop_diagonal:
        keep &= rows + row_offset != cols
    if min_value is not None:
        keep &= vals > min_value
    if not keep.all():
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    if n is not None and vals.size:
        counts = np.bincount(rows, minlength=n_rows)
        big_row = counts > n
        if big_row.any():
            in_big = big_row[rows]
            b_idx = np.flatnonzero(in_big)
            br, bc, bv = rows[b_idx], cols[b_idx], vals[b_idx]
            if bv.size and bv.min() >= 0:
                # one float64 sort instead of a 3-key lexsort: key = 2·row + 1/(1+v)
                # (row ascending, value descending; argsort is deterministic)
                key = br.astype(np.float64) * 2.0 + 1.0 / (1.0 + bv.astype(np.float64))
                order = np.argsort(key)
            else:
                order = np.lexsort((bc, -bv, br))
            br_sorted = br[order]
            bcounts = np.bincount(br_sorted, minlength=n_rows)
            bstarts = np.cumsum(bcounts) - bcounts
            rank = np.arange(br_sorted.size) - bstarts[br_sorted]
            winners = b_idx[order[rank < n]]
            sel = ~in_big
            sel[winners] = True
            rows, cols, vals = rows[sel], cols[sel], vals[sel]
    out = sp.csr_matrix((vals, (rows, cols)), shape=m.shape)
    out.sort_indices()
    return out


def gather_rows(S: sp.csr_matrix, idx: np.ndarray, w: np.ndarray):
    """Concatenate rows ``idx`` of CSR ``S``, each scaled by ``w``.

    Returns ``(cols, vals, src)`` where ``src`` is the position in ``idx`` each
    entry came from.  This is the inner loop of single-user scoring: the cost
    is proportional to the number of gathered neighbours, not to the catalogue.
    """
    indptr = S.indptr
    starts = indptr[idx]
    lens = indptr[idx + 1] - starts
    total = int(lens.sum())
    if total == 0:
        e = np.empty(0, dtype=np.int64)
        return e, np.empty(0, dtype=np.float64), e
    src = np.repeat(np.arange(idx.size), lens)
    offs = np.cumsum(lens) - lens
    pos = np.arange(total) + (starts - offs)[src]
    cols = S.indices[pos]
    vals = S.data[pos] * w[src]
    return cols, vals, src


def aggregate(cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``vals`` per distinct ``cols`` -> (sorted unique cols, sums)."""
    if cols.size == 0:
        return cols.astype(np.int64), vals.astype(np.float64)
    uc, inv = np.unique(cols, return_inverse=True)
    return uc, np.bincount(inv, weights=vals, minlength=uc.size)


def csr_to_arrays(m: sp.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    """Flatten a CSR matrix into plain numeric arrays (no pickle needed)."""
    m = as_csr(m, dtype=m.dtype)
    return {
        f"{prefix}.indptr": np.asarray(m.indptr, dtype=np.int64),
        f"{prefix}.indices": np.asarray(m.indices, dtype=np.int32),
        f"{prefix}.data": np.asarray(m.data),
        f"{prefix}.shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_arrays(arrays: Mapping[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{prefix}.shape"])
    m = sp.csr_matrix(
        (arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"]),
        shape=shape,
    )
    return m


def str_array(values) -> np.ndarray:
    """Ids as a fixed-width unicode array (``<U``), never ``object`` dtype."""
    arr = np.asarray([str(v) for v in values]) if not isinstance(values, np.ndarray) else values
    if arr.dtype.kind != "U":
        arr = arr.astype(str)
    if arr.size == 0:
        arr = arr.astype("<U1")
    return arr
