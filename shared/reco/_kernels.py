"""Optional numba kernels (fused co-occurrence + similarity + top-N).

``numba`` is an optional accelerator: when it is importable, ``HAVE_NUMBA``
is True and :func:`topn_similarity` computes the pruned item x item
similarity matrix in one pass, row by row, without ever materialising the
co-occurrence matrix ``C``:

    for every item i (rows split in work-balanced chunks, run in parallel):
        acc[j] += x_ui * x_uj   for u in users(i), j in items(u)     (row i of C)
        s_ij = sim(acc[j], d_i, d_j)   for every touched j != i
        keep the n largest s_ij > 0 with a size-n min-heap
        (ties: lower column wins, so the result does not depend on thread
        count or visiting order -> deterministic)

This is the same algorithm as implicit's C++ ``all_pairs_knn`` (dense row
accumulator + heap); the cost is ``sum_u |I_u|^2`` multiply-adds plus
``nnz(C) log n`` heap work, and memory is ``n_items x n`` for the output plus
one dense accumulator per chunk.  Without numba the caller falls back to the
blockwise scipy implementation in ``itemknn.py`` (same results up to ties).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from shared.runtime import numba_cache_dir

# numba writes its cache beside this file: to the temp directory when that is read-only (shared.runtime)
numba_cache_dir(os.path.dirname(os.path.abspath(__file__)))

try:  # pragma: no cover - exercised when numba is installed
    import numba as _nb

    HAVE_NUMBA = True
except Exception:  # pragma: no cover
    _nb = None  # type: ignore[assignment]  # no numba: HAVE_NUMBA is False and guards every use of _nb
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "topn_similarity", "KIND_CODES", "user_scores", "pair_scores"]

KIND_CODES = {"cosine": 0, "jaccard": 1, "lift": 2, "cooccurrence": 3}

# numba's default "workqueue" threading layer must not be entered from two
# Python threads at once: serialise the (parallel) fit kernel.
_PARALLEL_LOCK = threading.Lock()


if HAVE_NUMBA:

    @_nb.njit(cache=True, inline="always")
    def _worse(v1, c1, v2, c2):
        # is (v1, c1) ranked below (v2, c2)?  value desc, then column asc
        return v1 < v2 or (v1 == v2 and c1 > c2)

    @_nb.njit(cache=True)
    def _sift_down(hv, hc, k, size):
        # min-heap on "rank": the root is the worst kept entry
        while True:
            l = 2 * k + 1  # noqa: E741 (left child, as in the heap literature)
            if l >= size:
                return
            m = l
            r = l + 1
            if r < size and _worse(hv[r], hc[r], hv[l], hc[l]):
                m = r
            if _worse(hv[m], hc[m], hv[k], hc[k]):
                tv = hv[k]
                tc = hc[k]
                hv[k] = hv[m]
                hc[k] = hc[m]
                hv[m] = tv
                hc[m] = tc
                k = m
            else:
                return

    @_nb.njit(cache=True)
    def _sift_up(hv, hc, k):
        while k > 0:
            p = (k - 1) // 2
            if _worse(hv[k], hc[k], hv[p], hc[p]):
                tv = hv[k]
                tc = hc[k]
                hv[k] = hv[p]
                hc[k] = hc[p]
                hv[p] = tv
                hc[p] = tc
                k = p
            else:
                return

    @_nb.njit(cache=True, parallel=True)
    def _topn_kernel(
        x_indptr,
        x_indices,
        x_data,
        t_indptr,
        t_indices,
        t_data,
        d,
        chunk_bounds,
        n,
        kind,
        min_cooc,
        out_cols,
        out_vals,
        out_cnt,
    ):
        n_items = d.shape[0]
        n_chunks = chunk_bounds.shape[0] - 1
        for c in _nb.prange(n_chunks):
            acc = np.zeros(n_items, dtype=np.float64)
            touched = np.empty(n_items, dtype=np.int64)
            hv = np.empty(n, dtype=np.float64)
            hc = np.empty(n, dtype=np.int64)
            for i in range(chunk_bounds[c], chunk_bounds[c + 1]):
                nt = 0
                for p in range(t_indptr[i], t_indptr[i + 1]):
                    u = t_indices[p]
                    xu = t_data[p]
                    for q in range(x_indptr[u], x_indptr[u + 1]):
                        j = x_indices[q]
                        if acc[j] == 0.0:
                            touched[nt] = j
                            nt += 1
                        acc[j] += xu * x_data[q]
                size = 0
                di = d[i]
                for t in range(nt):
                    j = touched[t]
                    v = acc[j]
                    acc[j] = 0.0
                    if j == i or v < min_cooc:
                        continue
                    dj = d[j]
                    if kind == 0:
                        s = v / np.sqrt(di * dj)
                    elif kind == 1:
                        s = v / (di + dj - v)
                    elif kind == 2:
                        s = v / (di * dj)
                    else:
                        s = v
                    if not (s > 0.0):
                        continue
                    if size < n:
                        hv[size] = s
                        hc[size] = j
                        _sift_up(hv, hc, size)
                        size += 1
                    elif _worse(hv[0], hc[0], s, j):
                        hv[0] = s
                        hc[0] = j
                        _sift_down(hv, hc, 0, size)
                # emit sorted by column (canonical CSR)
                order = np.argsort(hc[:size])
                base = i * n
                for k in range(size):
                    out_cols[base + k] = hc[order[k]]
                    out_vals[base + k] = hv[order[k]]
                out_cnt[i] = size


if HAVE_NUMBA:

    @_nb.njit(cache=True)
    def _user_scores_kernel(indptr, indices, data, idx, w, acc, bval, bsrc):
        # R(u, i) = sum_k w[k] * W[idx[k], i] over the gathered rows, plus the
        # source position with the largest term (strict > : earliest wins ties)
        total = 0
        for k in range(idx.shape[0]):
            j = idx[k]
            total += indptr[j + 1] - indptr[j]
        touched = np.empty(total, dtype=np.int64)
        nt = 0
        for k in range(idx.shape[0]):
            j = idx[k]
            wk = w[k]
            for p in range(indptr[j], indptr[j + 1]):
                c = indices[p]
                t = data[p] * wk
                if bsrc[c] < 0:  # first touch (bsrc is -1 between calls)
                    touched[nt] = c
                    nt += 1
                    acc[c] = t
                    bval[c] = t
                    bsrc[c] = k
                else:
                    acc[c] += t
                    if t > bval[c]:
                        bval[c] = t
                        bsrc[c] = k
        cand = np.sort(touched[:nt])
        scores = np.empty(nt, dtype=np.float64)
        src = np.empty(nt, dtype=np.int64)
        contrib = np.empty(nt, dtype=np.float64)
        for q in range(nt):
            c = cand[q]
            scores[q] = acc[c]
            if bval[c] > 0:
                src[q] = idx[bsrc[c]]
                contrib[q] = bval[c]
            else:
                src[q] = -1
                contrib[q] = 0.0
            bsrc[c] = -1
        return cand, scores, src, contrib


_scratch = None


def user_scores(W, idx: np.ndarray, w: np.ndarray):
    """Single-user sparse scoring with sources (numba): ``(cand sorted,
    scores, src item or -1, contrib)``.  Uses per-thread scratch arrays of
    catalogue size (reset after each call), so it is thread-safe."""
    global _scratch
    if _scratch is None:
        _scratch = threading.local()
    n = W.shape[1]
    if idx.size and (idx.min() < 0 or idx.max() >= W.shape[0]):  # the kernel does no bounds checks
        raise IndexError("item index out of range")
    sc = getattr(_scratch, "arrays", None)
    if sc is None or sc[0].shape[0] < n:
        sc = (np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.float64), np.full(n, -1, dtype=np.int32))
        _scratch.arrays = sc
    return _user_scores_kernel(W.indptr, W.indices, W.data, idx, w, sc[0], sc[1], sc[2])


def topn_similarity(X, XT, d, kind: str, n: int, min_cooc: float, work: np.ndarray, dtype=np.float32):
    """Fused top-``n`` similarity (numba).  ``X`` user x item CSR (float64,
    zeros eliminated), ``XT`` its item x user transpose, ``d`` the diagonal of
    ``C``, ``work`` a per-item cost estimate used to balance the chunks.
    Returns ``(indptr, indices, data)`` of the CSR result."""
    n_items = X.shape[1]
    n = int(max(min(n, max(n_items - 1, 1)), 1))
    n_chunks = int(min(n_items, 256)) or 1
    cum = np.cumsum(work + 1.0)
    targets = cum[-1] * np.arange(1, n_chunks) / n_chunks if n_items else np.empty(0)
    inner = np.searchsorted(cum, targets, side="left")
    bounds = np.unique(np.concatenate(([0], inner, [n_items]))).astype(np.int64)
    out_cols = np.empty(n_items * n, dtype=np.int32)
    out_vals = np.empty(n_items * n, dtype=np.float64)
    out_cnt = np.zeros(n_items, dtype=np.int64)
    with _PARALLEL_LOCK:
        _topn_kernel(
            X.indptr.astype(np.int64),
            X.indices.astype(np.int32),
            X.data.astype(np.float64),
            XT.indptr.astype(np.int64),
            XT.indices.astype(np.int32),
            XT.data.astype(np.float64),
            np.asarray(d, dtype=np.float64),
            bounds,
            n,
            KIND_CODES[kind],
            float(min_cooc),
            out_cols,
            out_vals,
            out_cnt,
        )
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(out_cnt, out=indptr[1:])
    keep = (np.arange(n)[None, :] < out_cnt[:, None]).ravel()
    return indptr, out_cols[keep], out_vals[keep].astype(dtype)


if HAVE_NUMBA:

    @_nb.njit(cache=True, inline="always")
    def _gather(indptr, indices, data, idx, w, acc, bval, bsrc, mark, touched, nt):
        for k in range(idx.shape[0]):
            j = idx[k]
            wk = w[k]
            for p in range(indptr[j], indptr[j + 1]):
                c = indices[p]
                t = data[p] * wk
                if bsrc[c] < 0:  # first touch by this matrix
                    acc[c] = t
                    bval[c] = t
                    bsrc[c] = k
                    if mark[c] == 0:  # first touch by either matrix
                        mark[c] = 1
                        touched[nt] = c
                        nt += 1
                else:
                    acc[c] += t
                    if t > bval[c]:
                        bval[c] = t
                        bsrc[c] = k
        return nt

    @_nb.njit(cache=True)
    def _pair_scores_kernel(ip1, ix1, d1, ip2, ix2, d2, two, idx, w, acc1, bval1, bsrc1, acc2, bval2, bsrc2, mark):
        n = mark.shape[0]
        total = 0
        for k in range(idx.shape[0]):
            j = idx[k]
            total += ip1[j + 1] - ip1[j]
            if two:
                total += ip2[j + 1] - ip2[j]
        touched = np.empty(min(total, n), dtype=np.int64)
        nt = _gather(ip1, ix1, d1, idx, w, acc1, bval1, bsrc1, mark, touched, 0)
        if two:
            nt = _gather(ip2, ix2, d2, idx, w, acc2, bval2, bsrc2, mark, touched, nt)
        # sorted candidates: sort the touched list, or scan the marks when that is cheaper
        lg = 1
        while (1 << lg) < nt:
            lg += 1
        if nt * lg * 4 > n:
            cand = np.empty(nt, dtype=np.int64)
            q = 0
            for c in range(n):
                if mark[c]:
                    cand[q] = c
                    q += 1
        else:
            cand = np.sort(touched[:nt])
        v1 = np.zeros(nt, dtype=np.float64)
        s1 = np.full(nt, -1, dtype=np.int64)
        v2 = np.zeros(nt, dtype=np.float64)
        s2 = np.full(nt, -1, dtype=np.int64)
        for q in range(nt):
            c = cand[q]
            mark[c] = 0
            b = bsrc1[c]
            if b >= 0:
                v1[q] = acc1[c]
                if bval1[c] > 0:
                    s1[q] = idx[b]
                bsrc1[c] = -1
            if two:
                b = bsrc2[c]
                if b >= 0:
                    v2[q] = acc2[c]
                    if bval2[c] > 0:
                        s2[q] = idx[b]
                    bsrc2[c] = -1
        return cand, v1, s1, v2, s2


_pair_scratch = None


def pair_scores(W1, W2, idx: np.ndarray, w: np.ndarray):
    """Single-user sparse scoring of one or two neighbour matrices in one pass
    (numba): ``(cand, v1, s1, v2, s2)`` with ``cand`` the sorted union of the
    items reached through ``W1`` / ``W2`` from ``idx``, ``v*`` the scores
    ``sum_k w[k] W[idx[k], c]`` (0 where not reached) and ``s*`` the source item
    with the largest positive term (-1 if none; ties: earlier source) — per
    matrix the same values as :func:`user_scores`, aligned on one candidate
    array (no union / searchsorted afterwards).  ``W2`` may be None.
    Per-thread catalogue-size scratch, reset after each call; the sorted union
    comes from a sort of the touched items or, when cheaper, a scan of the marks."""
    global _pair_scratch
    if _pair_scratch is None:
        _pair_scratch = threading.local()
    n = W1.shape[1]
    if idx.size and (idx.min() < 0 or idx.max() >= W1.shape[0]):
        raise IndexError("item index out of range")
    sc = getattr(_pair_scratch, "arrays", None)
    if sc is None or sc[0].shape[0] != n:
        z = lambda: np.zeros(n, dtype=np.float64)
        sc = (
            z(),
            z(),
            np.full(n, -1, dtype=np.int32),
            z(),
            z(),
            np.full(n, -1, dtype=np.int32),
            np.zeros(n, dtype=np.int8),
        )
        _pair_scratch.arrays = sc
    two = W2 is not None
    W2_ = W2 if two else W1
    return _pair_scores_kernel(
        W1.indptr,
        W1.indices,
        W1.data,
        W2_.indptr,
        W2_.indices,
        W2_.data,
        two,
        idx,
        np.asarray(w, dtype=np.float64),
        *sc,
    )
