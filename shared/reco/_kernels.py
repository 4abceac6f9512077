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
from typing import Any

import numpy as np

from shared.reco.arrays import unique
from shared.runtime import numba_cache_dir

# numba writes its cache beside this file: to the temp directory when that is read-only (shared.runtime)
numba_cache_dir(os.path.dirname(os.path.abspath(__file__)))

try:  # pragma: no cover - exercised when numba is installed
    import numba as _nb

    # the parallel kernel's threads from numba's own work queue, not GNU OpenMP (numba's first choice when
    # libgomp is present): OpenMP's threads do not survive fork(), and train fits the served model in a
    # forked child beside the gate (shared.serving.train._ServedFit). Read at the first parallel launch; a
    # NUMBA_THREADING_LAYER set in the environment still wins.
    _config: Any = _nb.config
    if _config.THREADING_LAYER == "default":
        _config.THREADING_LAYER = "workqueue"
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
    bounds = unique(np.concatenate(([0], inner, [n_items]))).astype(np.int64)
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


# ------------------------------------------------------------------ the served ranker's request kernel
#: the served ranker's features (``shared.reco.ranker.FEATURES``) in the order the request kernel writes them
RANK_FEATURES = (
    "bought",
    "buy_count",
    "buy_freq",
    "buy_recency",
    "user_repeat",
    "rebuy_due",
    "bought_durable",
    "bought_fresh",
    "cart",
    "click",
    "touch_recent",
    "cf",
    "content",
    "context",
    "pop",
    "pop_log",
    "pop_recent",
    "room_buy",
    "room_share",
    "room_click",
    "room_buy_now",
    "room_click_now",
    "room_shown_now",
    "category",
    "price",
)
#: columns of the per-item float array the kernel reads (``RoomRanker._build``)
ITEM_COLS = ("pop", "pop_log", "pop_recent", "rebuy_rate", "rebuy_interval", "log_price", "price")

if HAVE_NUMBA:

    @_nb.njit(cache=True)
    def _gather_rows(indptr, indices, data, idx, w, S, o, touched, nt, slot):
        # accumulate rows idx of a neighbour matrix into S[s, o] (sum), S[s, o + 1] (largest term),
        # S[s, o + 2] (its source position; -1 untouched), s = slot[c]: the item's row in S, given in
        # first-touch order (touched[s] = c). The per-item map is 4 bytes an item (L2-resident at 50k
        # items) and the rows the request uses are S's first ones, not 64-byte rows scattered over the
        # catalogue: the gather was bound by cache misses
        for k in range(idx.shape[0]):
            j = idx[k]
            wk = w[k]
            for p in range(indptr[j], indptr[j + 1]):
                c = indices[p]
                t = data[p] * wk
                s = slot[c]
                if s < 0:
                    s = nt
                    slot[c] = s
                    touched[nt] = c
                    nt += 1
                    S[s, 2] = -1.0
                    S[s, 5] = -1.0
                    S[s, 7] = -1.0
                if S[s, o + 2] < 0:
                    S[s, o] = t
                    S[s, o + 1] = t
                    S[s, o + 2] = k
                else:
                    S[s, o] += t
                    if t > S[s, o + 1]:
                        S[s, o + 1] = t
                        S[s, o + 2] = k
        return nt

    @_nb.njit(cache=True)
    def _scatter(idx, val, U, col, shift):
        # U[idx[k], col] = val[k] + shift
        for k in range(idx.shape[0]):
            U[idx[k], col] = val[k] + shift

    @_nb.njit(cache=True)
    def _clear(idx, U, col):
        for k in range(idx.shape[0]):
            U[idx[k], col] = 0.0

    @_nb.njit(cache=True)
    def _heap_top(vals, items, n, top, hv, hc):
        # the `top` best (value desc, item asc) of vals[:n] / items[:n] into the heap; returns its size
        size = 0
        if top <= 0:
            return 0
        for q in range(n):
            v = vals[q]
            c = items[q]
            if size < top:
                hv[size] = v
                hc[size] = c
                _sift_up(hv, hc, size)
                size += 1
            elif _worse(hv[0], hc[0], v, c):
                hv[0] = v
                hc[0] = c
                _sift_down(hv, hc, 0, size)
        return size

    @_nb.njit(cache=True)
    def _part_tops(S, touched, nt, two, cf_top, content_top, h1v, h1c, h2v, h2c):
        # over the reached items: each part's max (0 for an item the other matrix reached) and its best
        # items, value desc then item asc, in the heaps h1 / h2 (written out: no call per item)
        m1 = 0.0
        m2 = 0.0
        n1 = 0
        n2 = 0
        for q in range(nt):  # touched[q]'s row is q
            c = touched[q]
            v = S[q, 0] if S[q, 2] >= 0 else 0.0
            if q == 0 or v > m1:
                m1 = v
            if cf_top > 0:
                if n1 < cf_top:
                    h1v[n1] = v
                    h1c[n1] = c
                    _sift_up(h1v, h1c, n1)
                    n1 += 1
                elif v > h1v[0] or (v == h1v[0] and c < h1c[0]):
                    h1v[0] = v
                    h1c[0] = c
                    _sift_down(h1v, h1c, 0, n1)
            if two:
                v2 = S[q, 3] if S[q, 5] >= 0 else 0.0
                if q == 0 or v2 > m2:
                    m2 = v2
                if content_top > 0:
                    if n2 < content_top:
                        h2v[n2] = v2
                        h2c[n2] = c
                        _sift_up(h2v, h2c, n2)
                        n2 += 1
                    elif v2 > h2v[0] or (v2 == h2v[0] and c < h2c[0]):
                        h2v[0] = v2
                        h2c[0] = c
                        _sift_down(h2v, h2c, 0, n2)
        return m1, m2, n1, n2

    @_nb.njit(cache=True)
    def _rank_kernel(
        ip1,
        ix1,
        d1,
        ip2,
        ix2,
        d2,
        two,
        hf_idx,
        hf_w,
        cap_h,
        c_idx,
        x_c,
        x_v,
        x_s,
        x_has,
        t_c,
        t_v,
        t_s,
        t_has,
        item_f,
        cat_code,
        n_cat,
        has_cat,
        has_logprice,
        gpop_order,
        pop_top,
        cf_top,
        content_top,
        room_top,
        has_row,
        row,
        now_d,
        user_repeat,
        u_ip,
        u_ix,
        bc_ip,
        bc_ix,
        bc_d,
        bl_ip,
        bl_ix,
        bl_d,
        ca_ip,
        ca_ix,
        ca_d,
        cl_ip,
        cl_ix,
        cl_d,
        tl_ip,
        tl_ix,
        tl_d,
        has_room,
        rb_i,
        rb_v,
        rc_i,
        rc_v,
        room_tops,
        room_tot,
        bn_i,
        bn_v,
        cn_i,
        cn_v,
        sn_i,
        sn_v,
        allowed,
        allowed_mode,
        excl,
        filter_seen,
        excl_purchased,
        cat_ok,
        use_cat,
        lo,
        hi,
        use_lo,
        use_hi,
        scale,
        intercept,
        N,
        S,
        U,
        slot,
        touched,
    ):
        # S: one row per item the request reaches (slot[item], first-touch order; touched[row] = item):
        # cf sum, cf best term, its source, content sum, best term, source, (unused), candidate
        # position. U: the request's sparse inputs scattered per item (see rank_scratch). slot and U
        # are reset before returning (S's rows are set when given); no helper taking arrays is called
        # per item (numba's reference counting would cost more than the work).
        # 0. the history: the viewer's strongest cap_h items (weight desc, earlier position on ties), in
        # their row order, positive weights only (the reference's RoomRanker._history)
        nfull = hf_idx.shape[0]
        if nfull > cap_h:
            hv_ = np.empty(max(cap_h, 1), dtype=np.float64)
            hp_ = np.empty(max(cap_h, 1), dtype=np.int64)
            size = 0
            for p in range(nfull):
                v = float(hf_w[p])
                if size < cap_h:
                    hv_[size] = v
                    hp_[size] = p
                    _sift_up(hv_, hp_, size)
                    size += 1
                elif v > hv_[0] or (v == hv_[0] and p < hp_[0]):
                    hv_[0] = v
                    hp_[0] = p
                    _sift_down(hv_, hp_, 0, size)
            keep_pos = np.sort(hp_[:size])
        else:
            keep_pos = np.arange(nfull)
        nh = 0
        for q in range(keep_pos.shape[0]):
            if hf_w[keep_pos[q]] > 0:
                nh += 1
        h_idx = np.empty(nh, dtype=np.int64)
        h_w = np.empty(nh, dtype=np.float64)
        k_ = 0
        for q in range(keep_pos.shape[0]):
            p = keep_pos[q]
            if hf_w[p] > 0:
                h_idx[k_] = hf_idx[p]
                h_w[k_] = float(hf_w[p])
                k_ += 1
        # 1. the history's neighbours (cf and content rows of every source)
        total = 0  # neighbour entries gathered (the work counter)
        for k in range(nh):
            j = h_idx[k]
            total += ip1[j + 1] - ip1[j]
            if two:
                total += ip2[j + 1] - ip2[j]
        nt = _gather_rows(ip1, ix1, d1, h_idx, h_w, S, 0, touched, 0, slot)
        if two:
            nt = _gather_rows(ip2, ix2, d2, h_idx, h_w, S, 3, touched, nt, slot)
        h1v = np.empty(max(cf_top, 1), dtype=np.float64)
        h1c = np.empty(max(cf_top, 1), dtype=np.int64)
        h2v = np.empty(max(content_top, 1), dtype=np.float64)
        h2c = np.empty(max(content_top, 1), dtype=np.int64)
        m1, m2, n1, n2 = _part_tops(S, touched, nt, two, cf_top, content_top, h1v, h1c, h2v, h2c)
        mx = 0.0
        for q in range(x_v.shape[0]):
            if q == 0 or x_v[q] > mx:
                mx = x_v[q]
        mt = 0.0
        for q in range(t_v.shape[0]):
            if q == 0 or t_v[q] > mt:
                mt = t_v[q]
        # 2. the request's sparse inputs, scattered into U
        # (the viewer's own rows are binary-searched per candidate below: a heavy viewer's rows are long)
        ones = np.ones(max(excl.shape[0], 1), dtype=np.float64)
        _scatter(excl, ones, U, 7, 0.0)
        if has_room:  # (the room's purchases and clicks so far: binary searches, a stream's rows are long)
            _scatter(bn_i, bn_v, U, 9, 0.0)
            _scatter(cn_i, cn_v, U, 10, 0.0)
            _scatter(sn_i, sn_v, U, 11, 0.0)
        if x_has:
            _scatter(x_c, x_v, U, 12, 0.0)
            _scatter(x_c, x_s.astype(np.float64), U, 13, 2.0)  # source + 2: 0 = not reached
        if t_has:
            _scatter(t_c, t_v, U, 14, 0.0)
            _scatter(t_c, t_s.astype(np.float64), U, 15, 2.0)
        # 3. the candidates: the allowed items, else the pool of every source's best
        only = allowed_mode == 2
        if allowed_mode == 1:
            pool = allowed
        else:
            cap = nh + c_idx.shape[0] + min(pop_top, gpop_order.shape[0]) + n1 + n2
            cap += (x_c.shape[0] if x_has else 0) + (t_c.shape[0] if t_has else 0) + room_tops.shape[0]
            if only:
                cap += max(pop_top, 0)
            pool = np.empty(cap, dtype=np.int64)
            np_ = 0
            for q in range(nh):
                pool[np_] = h_idx[q]
                np_ += 1
            for q in range(c_idx.shape[0]):
                pool[np_] = c_idx[q]
                np_ += 1
            for q in range(min(pop_top, gpop_order.shape[0])):
                pool[np_] = gpop_order[q]
                np_ += 1
            for q in range(n1):
                pool[np_] = h1c[q]
                np_ += 1
            for q in range(n2):
                pool[np_] = h2c[q]
                np_ += 1
            hv = np.empty(max(cf_top, content_top, room_top, pop_top, 1), dtype=np.float64)
            hc = np.empty(hv.shape[0], dtype=np.int64)
            if x_has:
                s_ = _heap_top(x_v, x_c, x_c.shape[0], cf_top, hv, hc)
                pool[np_ : np_ + s_] = hc[:s_]
                np_ += s_
            if t_has:
                s_ = _heap_top(t_v, t_c, t_c.shape[0], content_top, hv, hc)
                pool[np_ : np_ + s_] = hc[:s_]
                np_ += s_
            if has_room:  # the room's best room_top purchases and clicks, selected by the caller
                for q in range(room_tops.shape[0]):
                    pool[np_] = room_tops[q]
                    np_ += 1
            if only:  # a large showcase: the pool inside it, + its pop_top bestsellers
                w_ = 0
                for q in range(np_):
                    c = pool[q]
                    a_lo = 0
                    a_hi = allowed.shape[0]
                    while a_lo < a_hi:
                        mid = (a_lo + a_hi) >> 1
                        if allowed[mid] < c:
                            a_lo = mid + 1
                        else:
                            a_hi = mid
                    if a_lo < allowed.shape[0] and allowed[a_lo] == c:
                        pool[w_] = c
                        w_ += 1
                np_ = w_
                gv = np.empty(allowed.shape[0], dtype=np.float64)
                for q in range(allowed.shape[0]):
                    gv[q] = item_f[allowed[q], 0]
                s_ = _heap_top(gv, allowed, allowed.shape[0], pop_top, hv, hc)
                pool[np_ : np_ + s_] = hc[:s_]
                np_ += s_
            pool = pool[:np_]
        cand = np.empty(pool.shape[0], dtype=np.int64)
        nc = 0
        # rows given: the reached items, then the candidates no neighbour reached. (Written out as in
        # _gather_rows, not a shared helper: an inline="always" helper returning (row, count) measured
        # 546 vs 298 µs per heavy request, bench_recommend_serve --model-dir, same world.)
        ns = nt
        for q in range(pool.shape[0]):
            c = pool[q]
            s = slot[c]
            if s < 0:
                s = ns
                slot[c] = s
                touched[ns] = c
                ns += 1
                S[s, 2] = -1.0
                S[s, 5] = -1.0
                S[s, 7] = -1.0
            if S[s, 7] < 0:
                S[s, 7] = nc
                cand[nc] = c
                nc += 1
        # the viewer's rows: scattered into U when short (<= 4 x the candidates), else binary-searched
        # per candidate; either way bounded by the candidates, not by the viewer's history
        lim = 4 * nc
        sc_bc = has_row and bc_ip[row + 1] - bc_ip[row] <= lim
        sc_bl = has_row and bl_ip[row + 1] - bl_ip[row] <= lim
        sc_ca = has_row and ca_ip[row + 1] - ca_ip[row] <= lim
        sc_cl = has_row and cl_ip[row + 1] - cl_ip[row] <= lim
        sc_tl = has_row and tl_ip[row + 1] - tl_ip[row] <= lim
        sc_u = has_row and filter_seen and u_ip[row + 1] - u_ip[row] <= lim
        if sc_bc:
            for p in range(bc_ip[row], bc_ip[row + 1]):
                U[bc_ix[p], 0] = bc_d[p]
        if sc_bl:
            for p in range(bl_ip[row], bl_ip[row + 1]):
                U[bl_ix[p], 1] = bl_d[p]
        if sc_ca:
            for p in range(ca_ip[row], ca_ip[row + 1]):
                U[ca_ix[p], 2] = ca_d[p]
        if sc_cl:
            for p in range(cl_ip[row], cl_ip[row + 1]):
                U[cl_ix[p], 3] = cl_d[p]
        if sc_tl:
            for p in range(tl_ip[row], tl_ip[row + 1]):
                U[tl_ix[p], 4] = tl_d[p]
                U[tl_ix[p], 5] = 1.0
        if sc_u:
            for p in range(u_ip[row], u_ip[row + 1]):
                U[u_ix[p], 6] = 1.0
        # 4. taste of the history: category shares, mean log price
        share = np.zeros(max(n_cat, 1), dtype=np.float64)
        do_cat = has_row and has_cat and nh > 0
        if do_cat:
            for k in range(nh):
                share[cat_code[h_idx[k]]] += h_w[k]
            s_sum = share.sum()
            if s_sum > 0:
                for k in range(n_cat):
                    share[k] = share[k] / s_sum
        mu = 0.0
        do_price = False
        if has_row and has_logprice and nh > 0:
            sw = 0.0
            sx = 0.0
            for k in range(nh):
                lp = item_f[h_idx[k], 5]
                if np.isfinite(lp):
                    sw += h_w[k]
                    sx += lp * h_w[k]
                    do_price = True
            if do_price:
                mu = sx / sw
        shown_tot = 0.0
        for q in range(sn_v.shape[0]):
            shown_tot += sn_v[q]
        shown_tot = max(shown_tot, 1.0)
        # 5. features, score and filters per candidate; the N best passing ones in a heap
        nf = scale.shape[0]
        nb8 = 8 * (nf // 8)
        F = np.zeros((nc, nf), dtype=np.float64)
        tv = np.empty(max(N, 1), dtype=np.float64)
        tc = np.empty(max(N, 1), dtype=np.int64)
        ntop = 0
        n_keep = 0
        acc8 = np.zeros(8, dtype=np.float64)
        cnt_a = np.zeros(nc, dtype=np.float64)
        last_a = np.zeros(nc, dtype=np.float64)
        for q in range(nc):
            c = cand[q]
            keep = True
            if has_row:
                # the viewer's rows at c (sorted indices; written out: no helper call per item)
                if sc_bc:
                    cnt = U[c, 0]
                else:
                    lo_ = bc_ip[row]
                    hi_ = bc_ip[row + 1]
                    end_ = hi_
                    while lo_ < hi_:
                        mid = (lo_ + hi_) >> 1
                        if bc_ix[mid] < c:
                            lo_ = mid + 1
                        else:
                            hi_ = mid
                    cnt = float(bc_d[lo_]) if lo_ < end_ and bc_ix[lo_] == c else 0.0
                if sc_bl:
                    last = U[c, 1]
                else:
                    lo_ = bl_ip[row]
                    hi_ = bl_ip[row + 1]
                    end_ = hi_
                    while lo_ < hi_:
                        mid = (lo_ + hi_) >> 1
                        if bl_ix[mid] < c:
                            lo_ = mid + 1
                        else:
                            hi_ = mid
                    last = float(bl_d[lo_]) if lo_ < end_ and bl_ix[lo_] == c else 0.0
                if sc_ca:
                    cart = U[c, 2]
                else:
                    lo_ = ca_ip[row]
                    hi_ = ca_ip[row + 1]
                    end_ = hi_
                    while lo_ < hi_:
                        mid = (lo_ + hi_) >> 1
                        if ca_ix[mid] < c:
                            lo_ = mid + 1
                        else:
                            hi_ = mid
                    cart = float(ca_d[lo_]) if lo_ < end_ and ca_ix[lo_] == c else 0.0
                if sc_cl:
                    click = U[c, 3]
                else:
                    lo_ = cl_ip[row]
                    hi_ = cl_ip[row + 1]
                    end_ = hi_
                    while lo_ < hi_:
                        mid = (lo_ + hi_) >> 1
                        if cl_ix[mid] < c:
                            lo_ = mid + 1
                        else:
                            hi_ = mid
                    click = float(cl_d[lo_]) if lo_ < end_ and cl_ix[lo_] == c else 0.0
                if sc_tl:
                    touched_c = U[c, 5] > 0
                    tlast = U[c, 4]
                else:
                    lo_ = tl_ip[row]
                    hi_ = tl_ip[row + 1]
                    end_ = hi_
                    while lo_ < hi_:
                        mid = (lo_ + hi_) >> 1
                        if tl_ix[mid] < c:
                            lo_ = mid + 1
                        else:
                            hi_ = mid
                    touched_c = lo_ < end_ and tl_ix[lo_] == c
                    tlast = float(tl_d[lo_]) if touched_c else 0.0
                seen = touched_c
                if filter_seen and not seen:
                    if sc_u:
                        seen = U[c, 6] > 0
                    else:
                        lo_ = u_ip[row]
                        hi_ = u_ip[row + 1]
                        end_ = hi_
                        while lo_ < hi_:
                            mid = (lo_ + hi_) >> 1
                            if u_ix[mid] < c:
                                lo_ = mid + 1
                            else:
                                hi_ = mid
                        seen = lo_ < end_ and u_ix[lo_] == c
                cnt_a[q] = cnt
                last_a[q] = last
                gap = max(now_d - last, 0.0)
                # (log1p / exp only where the value is not 0: log1p(0) = 0 is F's initial value; most
                # candidates have no purchase, cart or click of this viewer, and a call costs ~10 ns)
                if cnt != 0:
                    F[q, 2] = np.log1p(cnt)
                if cnt > 0:
                    rate = item_f[c, 3]
                    tau = max(item_f[c, 4], 0.5)
                    x = max(gap, 0.25) / tau
                    F[q, 0] = 1.0
                    F[q, 1] = rate * F[q, 2]
                    F[q, 5] = rate * np.exp(-(np.log(x) ** 2) / (2 * 0.36))
                    F[q, 6] = 1.0 - rate
                    fr = max(0.0, 1.0 - x)
                    F[q, 7] = fr * fr
                    F[q, 3] = np.exp(-gap / 30.0)
                    F[q, 4] = user_repeat
                    if excl_purchased:
                        keep = False
                if cart != 0:
                    F[q, 8] = np.log1p(cart)
                if click != 0:
                    F[q, 9] = np.log1p(click)
                if tlast > 0:
                    F[q, 10] = np.exp(-max(now_d - tlast, 0.0) / 2.0)
                if do_cat:
                    F[q, 23] = share[cat_code[c]]
                if do_price:
                    lc = item_f[c, 5]
                    if np.isfinite(lc):
                        F[q, 24] = np.exp(-abs(lc - mu))
                if filter_seen and seen:
                    keep = False
            if nh > 0:
                s = slot[c]
                b = int(S[s, 2])
                if b >= 0 and m1 > 0:
                    F[q, 11] = max(S[s, 0] / m1, 0.0)
                if two:
                    b = int(S[s, 5])
                    if b >= 0 and m2 > 0:
                        F[q, 12] = max(S[s, 3] / m2, 0.0)
            if x_has or t_has:
                xc = 0.0
                xt = 0.0
                if x_has and U[c, 13] > 0 and mx > 0:
                    xc = max(U[c, 12] / mx, 0.0)
                if t_has and U[c, 15] > 0 and mt > 0:
                    xt = max(U[c, 14] / mt, 0.0)
                F[q, 13] = 0.5 * (xc + xt)
            F[q, 14] = item_f[c, 0]
            F[q, 15] = item_f[c, 1]
            F[q, 16] = item_f[c, 2]
            if has_room:
                if bn_i.shape[0] and U[c, 9] != 0:
                    F[q, 20] = np.log1p(U[c, 9])
                if cn_i.shape[0] and U[c, 10] != 0:
                    F[q, 21] = np.log1p(U[c, 10])
                if sn_i.shape[0]:
                    F[q, 22] = U[c, 11] / shown_tot
                if rb_i.shape[0]:
                    lo_ = 0
                    hi_ = rb_i.shape[0]
                    while lo_ < hi_:
                        mid = (lo_ + hi_) >> 1
                        if rb_i[mid] < c:
                            lo_ = mid + 1
                        else:
                            hi_ = mid
                    rb = rb_v[lo_] if lo_ < rb_i.shape[0] and rb_i[lo_] == c else 0.0
                    if rb != 0:
                        F[q, 17] = np.log1p(rb)
                        F[q, 18] = rb / max(room_tot, 1.0)
                if rc_i.shape[0]:
                    lo_ = 0
                    hi_ = rc_i.shape[0]
                    while lo_ < hi_:
                        mid = (lo_ + hi_) >> 1
                        if rc_i[mid] < c:
                            lo_ = mid + 1
                        else:
                            hi_ = mid
                    rc = rc_v[lo_] if lo_ < rc_i.shape[0] and rc_i[lo_] == c else 0.0
                    if rc != 0:
                        F[q, 19] = np.log1p(rc)
            if keep and U[c, 7] > 0:
                keep = False
            if keep and use_cat and not cat_ok[cat_code[c]]:
                keep = False
            if keep and use_lo and not (item_f[c, 6] >= lo):
                keep = False
            if keep and use_hi and not (item_f[c, 6] <= hi):
                keep = False
            if not keep:
                continue
            n_keep += 1
            # score = intercept + sum_f scale_f x_f (summed in numpy's pairwise order)
            acc8[:] = 0.0
            for k in range(nb8):
                acc8[k % 8] += F[q, k] * scale[k]
            s = ((acc8[0] + acc8[1]) + (acc8[2] + acc8[3])) + ((acc8[4] + acc8[5]) + (acc8[6] + acc8[7]))
            for k in range(nb8, nf):
                s += F[q, k] * scale[k]
            s = intercept + s
            if N > 0:
                if ntop < N:
                    tv[ntop] = s
                    tc[ntop] = c
                    _sift_up(tv, tc, ntop)
                    ntop += 1
                elif s > tv[0] or (s == tv[0] and c < tc[0]):
                    tv[0] = s
                    tc[0] = c
                    _sift_down(tv, tc, 0, ntop)
        # 6. the N best: item, features, purchase count / last day, the parts' sources
        top_F = np.empty((ntop, nf), dtype=np.float64)
        top_meta = np.empty((ntop, 2), dtype=np.float64)
        top_src = np.full((ntop, 4), -1, dtype=np.int64)
        for k in range(ntop):
            c = tc[k]
            s = slot[c]
            q = int(S[s, 7])
            top_F[k] = F[q]
            top_meta[k, 0] = cnt_a[q]
            top_meta[k, 1] = last_a[q]
            if nh > 0:
                b = int(S[s, 2])
                if b >= 0 and S[s, 1] > 0:
                    top_src[k, 0] = h_idx[b]
                b = int(S[s, 5])
                if two and b >= 0 and S[s, 4] > 0:
                    top_src[k, 1] = h_idx[b]
            if x_has and U[c, 13] > 0:
                top_src[k, 2] = int(U[c, 13]) - 2
            if t_has and U[c, 15] > 0:
                top_src[k, 3] = int(U[c, 15]) - 2
        top_items = tc[:ntop].copy()
        # 7. reset the scratch for the next request
        for q in range(ns):
            slot[touched[q]] = -1
        _clear(excl, U, 7)
        if sc_bc:
            for p in range(bc_ip[row], bc_ip[row + 1]):
                U[bc_ix[p], 0] = 0.0
        if sc_bl:
            for p in range(bl_ip[row], bl_ip[row + 1]):
                U[bl_ix[p], 1] = 0.0
        if sc_ca:
            for p in range(ca_ip[row], ca_ip[row + 1]):
                U[ca_ix[p], 2] = 0.0
        if sc_cl:
            for p in range(cl_ip[row], cl_ip[row + 1]):
                U[cl_ix[p], 3] = 0.0
        if sc_tl:
            for p in range(tl_ip[row], tl_ip[row + 1]):
                U[tl_ix[p], 4] = 0.0
                U[tl_ix[p], 5] = 0.0
        if sc_u:
            for p in range(u_ip[row], u_ip[row + 1]):
                U[u_ix[p], 6] = 0.0
        if has_room:
            _clear(bn_i, U, 9)
            _clear(cn_i, U, 10)
            _clear(sn_i, U, 11)
        if x_has:
            _clear(x_c, U, 12)
            _clear(x_c, U, 13)
        if t_has:
            _clear(t_c, U, 14)
            _clear(t_c, U, 15)
        work = np.empty(4, dtype=np.int64)
        work[0] = total
        work[1] = nt
        work[2] = nc
        work[3] = nh
        return top_items, top_F, top_meta, top_src, n_keep, work, h_idx, h_w


_free_scratch: dict[int, list] = {}  # catalogue size -> released scratch sets, most recently used last
MAX_FREE_SCRATCH = 64


def rank_scratch(n: int):
    """A catalogue-size scratch set of :func:`_rank_kernel` (reset by the kernel after each call):
    ``S`` (n x 8: the history parts, one row per item the request reaches, in first-touch order),
    ``U`` (n x 16: the viewer's rows, the room, the context parts, exclusions scattered by item), the
    item -> row map ``slot`` (int32, -1: not reached) and its inverse ``touched``: 204 bytes per item.

    Taken from a LIFO free list, not one per thread: the kernel holds the GIL, so a worker needs about
    one set however many request threads it runs (one per thread was 8 x 10 MB at 50k items in a
    functions-framework worker with 8 threads), and the set used last is the one most likely still in
    the caches. Give it back with :func:`release_scratch` after a call that returned (a call that
    raised leaves it dirty: it is dropped). ``list.pop`` / ``append`` are atomic: no lock."""
    free = _free_scratch.get(n)
    if free:
        try:
            return free.pop()
        except IndexError:  # another thread took the last one meanwhile
            pass
    return (_aligned(n, 8), _aligned(n, 16), np.full(n, -1, dtype=np.int32), np.empty(n, dtype=np.int64))


def release_scratch(sc) -> None:
    free = _free_scratch.setdefault(sc[0].shape[0], [])
    if len(free) < MAX_FREE_SCRATCH:
        free.append(sc)


def _aligned(n: int, cols: int) -> np.ndarray:
    """Zeros of shape (n, cols) float64 whose rows start on 64-byte (cache-line) boundaries."""
    buf = np.zeros(n * cols + 8, dtype=np.float64)
    off = (-buf.ctypes.data % 64) // 8
    return buf[off : off + n * cols].reshape(n, cols)


def rank_kernel(*args, n: int):
    """The served ranker's request in one compiled pass (``shared.reco.ranker.RoomRanker.recommend``):
    the capped history's neighbours, the candidate pool, the 25 features, the head's linear score, the
    request's filters and a top-N heap. Returns ``(items, F, meta, src, n_keep, work)`` of the N best
    passing candidates (unordered), ``work`` = (neighbour entries gathered, items reached, candidates,
    history items scored) and the scored history (the viewer's strongest ``cap_h``, positive weights):
    its item positions and their weights."""
    sc = rank_scratch(n)
    out = _rank_kernel(*args, *sc)
    release_scratch(sc)
    return out


# ------------------------------------------------------------------ the answer's top (score, order, parts)
# ``RoomRanker._top`` on the few candidates a request keeps, in two compiled calls that hold the GIL.
# The numpy formulation it replaces made ~8 calls that release the GIL (a reduction, lexsort, fancy
# indexing, argsort): in a worker with several busy request threads, each release handed the GIL to another
# thread and its return waited for it, ~11 context switches a request that doubled its CPU
# (bench/bench_recommend_serve.py; docs/serving.md §4). Contributions, scores and order are numpy's bit for
# bit (the row sums repeat numpy's pairwise summation); the group parts are summed in feature order, where
# BLAS's product had an order of its own (the last bit may differ; tests/test_reco_kernels_top.py).

if HAVE_NUMBA:

    @_nb.njit(cache=True, inline="always")
    def _pairwise_row(C, i, f):
        # numpy's pairwise sum of C[i, :f] (DOUBLE_pairwise_sum, f <= 128): 8 accumulators, then the rest
        if f < 8:
            res = 0.0
            for k in range(f):
                res += C[i, k]
            return res
        r0 = C[i, 0]
        r1 = C[i, 1]
        r2 = C[i, 2]
        r3 = C[i, 3]
        r4 = C[i, 4]
        r5 = C[i, 5]
        r6 = C[i, 6]
        r7 = C[i, 7]
        k = 8
        while k < f - (f % 8):
            r0 += C[i, k]
            r1 += C[i, k + 1]
            r2 += C[i, k + 2]
            r3 += C[i, k + 3]
            r4 += C[i, k + 4]
            r5 += C[i, k + 5]
            r6 += C[i, k + 6]
            r7 += C[i, k + 7]
            k += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while k < f:
            res += C[i, k]
            k += 1
        return res

    @_nb.njit(cache=True, inline="always")
    def _ranked_before(p, q, s, u, v, u_desc):
        # is entry p ranked before q?  s desc (NaN last), then u (desc if u_desc, else asc), then v asc
        sp, sq = s[p], s[q]
        if sp != sp:
            if sq == sq:
                return False
        elif sq != sq:
            return True
        elif sp != sq:
            return sp > sq
        up, uq = u[p], u[q]
        if up != uq:
            return (up > uq) if u_desc else (up < uq)
        return v[p] < v[q]

    @_nb.njit(cache=True)
    def _merge_sorted(a, s, u, v, u_desc):
        # the entries a in _ranked_before's order: a bottom-up merge sort (a total order when v is unique);
        # a's buffer is used as scratch
        m = a.shape[0]
        tmp = np.empty(m, dtype=np.int64)
        width = 1
        while width < m:
            lo = 0
            while lo < m:
                mid = min(lo + width, m)
                hi = min(lo + 2 * width, m)
                x, y, o = lo, mid, lo
                while x < mid and y < hi:
                    if _ranked_before(a[y], a[x], s, u, v, u_desc):
                        tmp[o] = a[y]
                        y += 1
                    else:
                        tmp[o] = a[x]
                        x += 1
                    o += 1
                while x < mid:
                    tmp[o] = a[x]
                    x += 1
                    o += 1
                while y < hi:
                    tmp[o] = a[y]
                    y += 1
                    o += 1
                lo += 2 * width
            a, tmp = tmp, a
            width *= 2
        return a

    @_nb.njit(cache=True)
    def _score_rank(F, w, b, cand, keep):
        n, f = F.shape
        C = np.empty((n, f))
        score = np.empty(n)
        for i in range(n):
            for k in range(f):
                C[i, k] = F[i, k] * w[k]
            score[i] = b + (0.0 + _pairwise_row(C, i, f))
        # the kept positions by score desc (NaN last), item asc, position asc (a total order: numpy's lexsort's)
        a = np.flatnonzero(keep).astype(np.int64)
        return C, score, _merge_sorted(a, score, cand, np.arange(n), False)

    @_nb.njit(cache=True)
    def _top_rows(C, F, score, cand, order, grp, G):
        N = order.shape[0]
        f = C.shape[1]
        Co = np.empty((N, f))
        Fo = np.empty((N, f))
        P = np.zeros((N, G))
        g_order = np.empty((N, G), dtype=np.int64)
        s_o = np.empty(N)
        c_o = np.empty(N, dtype=np.int64)
        for j in range(N):
            r = order[j]
            s_o[j] = score[r]
            c_o[j] = cand[r]
            for k in range(f):
                Co[j, k] = C[r, k]
                Fo[j, k] = F[r, k]
                P[j, grp[k]] += C[r, k]
            # the groups by part desc (NaN last), group asc: numpy's stable argsort of -P
            for g in range(G):
                x = g
                v = P[j, g]
                t = g - 1
                while t >= 0:
                    u = P[j, g_order[j, t]]
                    if v == v and (u != u or v > u):
                        g_order[j, t + 1] = g_order[j, t]
                        t -= 1
                    else:
                        break
                g_order[j, t + 1] = x
        return Co, Fo, P, g_order, s_o, c_o


def score_rank(F: np.ndarray, w: np.ndarray, b: float, cand: np.ndarray, keep: np.ndarray):
    """``(C, score, ranked)``: the contributions ``F * w``, ``score = b + C.sum(axis=1)`` and the kept rows
    ranked by score desc (NaN last), item asc, position asc, i.e. ``sel[np.lexsort((cand[sel],
    -score[sel]))]`` with ``sel = np.flatnonzero(keep)``."""
    F = np.ascontiguousarray(F, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    keep = np.ascontiguousarray(keep, dtype=np.bool_)
    if HAVE_NUMBA and F.shape[1] <= 128:
        return _score_rank(F, w, float(b), cand, keep)
    C = F * w
    score = b + C.sum(axis=1)
    sel = np.flatnonzero(keep)
    return C, score, sel[np.lexsort((sel, cand[sel], np.where(np.isnan(score[sel]), np.inf, -score[sel])))]


def top_rows(C, F, score, cand, order, grp: np.ndarray, G: int):
    """The listed rows' parts: ``(C[order], F[order], P, g_order, score[order], cand[order])`` with ``P`` the
    contributions summed per group (``grp[f]`` = feature f's group) in feature order, and ``g_order`` each
    row's groups by part desc (NaN last), group asc."""
    order = np.ascontiguousarray(order, dtype=np.int64)
    if HAVE_NUMBA:
        return _top_rows(C, F, score, np.ascontiguousarray(cand, dtype=np.int64), order, grp, G)
    Co = C[order]
    P = np.zeros((order.size, G))
    for k in range(C.shape[1]):
        P[:, grp[k]] += Co[:, k]
    key = np.where(np.isnan(P), np.inf, -P)
    return Co, F[order], P, np.argsort(key, axis=1, kind="stable"), score[order], cand[order]


if HAVE_NUMBA:

    @_nb.njit(cache=True)
    def _segments_sorted(ptr, a, b, c):
        o = np.arange(c.size)
        for r in range(ptr.size - 1):
            s0, s1 = ptr[r], ptr[r + 1]
            if s1 - s0 <= 1:
                continue
            if s1 - s0 <= 24:  # insertion sort
                for x in range(s0 + 1, s1):
                    v = o[x]
                    y = x - 1
                    while y >= s0 and _ranked_before(v, o[y], a, b, c, True):
                        o[y + 1] = o[y]
                        y -= 1
                    o[y + 1] = v
            else:
                o[s0:s1] = _merge_sorted(o[s0:s1], a, b, c, True)
        return o


def segments_sorted(ptr: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The permutation sorting each segment ``[ptr[r], ptr[r+1])`` by ``a`` desc, ``b`` desc, ``c`` asc (the
    segments in place, in their order): ``np.lexsort((c, -b, -a, row))`` with ``row`` each entry's segment,
    for ``c`` unique within a segment (a total order, so any correct sort gives this one)."""
    ptr = np.ascontiguousarray(ptr, dtype=np.int64)
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.int64)
    if HAVE_NUMBA:
        return _segments_sorted(ptr, a, b, c)
    row = np.repeat(np.arange(ptr.size - 1), np.diff(ptr))
    return np.lexsort((c, -b, -a, row))


if HAVE_NUMBA:

    @_nb.njit(cache=True)
    def _counting_order(key, n_keys):
        # a stable counting sort: (ptr, order), the rows of key k being order[ptr[k]:ptr[k + 1]] in input order
        n = key.size
        ptr = np.zeros(n_keys + 1, dtype=np.int64)
        for r in range(n):
            ptr[key[r] + 1] += 1
        for k in range(n_keys):
            ptr[k + 1] += ptr[k]
        at = ptr[:-1].copy()
        order = np.empty(n, dtype=np.int64)
        for r in range(n):
            j = at[key[r]]
            order[j] = r
            at[key[r]] = j + 1
        return ptr, order

    @_nb.njit(cache=True)
    def _room_log_build(stream, ts, item, typ, n_streams, runs, lo, span):
        n = stream.size
        present = np.zeros(n_streams * span, dtype=np.bool_)
        for r in range(n):
            present[stream[r] * span + (item[r] - lo)] = True
        # rows in input (time) order by run (type, stream)
        ptr, order = _counting_order(typ * n_streams + stream, runs)
        rank = np.empty(n_streams * span, dtype=np.int32)
        n_pairs = 0
        for p in range(n_streams * span):
            rank[p] = n_pairs
            if present[p]:
                n_pairs += 1
        pair_item = np.empty(n_pairs, dtype=np.int64)
        pair_ptr = np.zeros(n_streams + 1, dtype=np.int64)
        k = 0
        for p in range(n_streams * span):
            if present[p]:
                pair_item[k] = p % span + lo
                pair_ptr[p // span + 1] += 1
                k += 1
        for s in range(n_streams):
            pair_ptr[s + 1] += pair_ptr[s]
        ts_o = ts[order]
        local_o = np.empty(n, dtype=np.int32)
        for j in range(n):
            r = order[j]
            local_o[j] = rank[stream[r] * span + (item[r] - lo)] - pair_ptr[stream[r]]
        return ts_o, ptr, pair_item, pair_ptr, local_o


def room_log_build(stream, ts, item, typ, n_streams: int, runs: int, lo: int, span: int):
    """``RoomLog``'s arrays for rows already in time order, in one compiled pass: ``(ts by run, run
    pointers, each stream's items ascending, their pointers, each row's local item code by run)``; None
    without numba (``RoomLog`` then computes the same arrays with numpy)."""
    if not HAVE_NUMBA:
        return None
    return _room_log_build(
        np.ascontiguousarray(stream, dtype=np.int64),
        np.ascontiguousarray(ts, dtype=np.int64),
        np.ascontiguousarray(item, dtype=np.int64),
        np.ascontiguousarray(typ, dtype=np.int64),
        int(n_streams),
        int(runs),
        int(lo),
        int(span),
    )


# ------------------------------------------------------------------ each (viewer, item) pair's last day
# ``RoomRanker.touch_last_`` at fit time (called by every fit of the state: 4M touches at 10M events): a
# stable counting sort by viewer, the distinct items of each viewer through a catalogue-size slot map,
# then each viewer's few items sorted. The numpy formulation (a sort of 4M packed keys, a gather and a
# maximum per run) took ~0.8 s of it; the maximum is exact, so both give the same matrix bit for bit.

if HAVE_NUMBA:

    @_nb.njit(cache=True)
    def _last_touch_build(u, i, d, n_users, n_items):
        n = u.size
        ptr, order = _counting_order(u, n_users)  # each viewer's touches together
        it = i[order]
        dd = d[order]
        slot = np.full(n_items, -1, dtype=np.int64)
        out_ptr = np.zeros(n_users + 1, dtype=np.int64)
        out_i = np.empty(n, dtype=np.int32)
        out_d = np.empty(n, dtype=np.float64)
        m = 0
        for k in range(n_users):
            start = m
            for p in range(ptr[k], ptr[k + 1]):
                j = it[p]
                s = slot[j]
                if s < 0:
                    slot[j] = m
                    out_i[m] = j
                    out_d[m] = dd[p]
                    m += 1
                else:  # np.maximum: a NaN on either side is the result
                    x, y = out_d[s], dd[p]
                    if np.isnan(x) or np.isnan(y):
                        out_d[s] = np.nan
                    elif y > x:
                        out_d[s] = y
            if m - start > 1:  # the row's items ascending, their days with them
                o = np.argsort(out_i[start:m])
                ti = out_i[start:m][o]
                td = out_d[start:m][o]
                out_i[start:m] = ti
                out_d[start:m] = td
            for p in range(start, m):
                slot[out_i[p]] = -1
            out_ptr[k + 1] = m
        return out_ptr, out_i[:m].copy(), out_d[:m].copy()


def last_touch_build(u, i, d, n_users: int, n_items: int):
    """CSR arrays ``(indptr, indices, data)`` of each (viewer ``u``, item ``i``) pair's largest day ``d``
    (NaN if any of its days is NaN), rows' items ascending; the codes are valid (``>= 0``)."""
    u = np.ascontiguousarray(u, dtype=np.int64)
    i = np.ascontiguousarray(i, dtype=np.int64)
    d = np.ascontiguousarray(d, dtype=np.float64)
    if HAVE_NUMBA:
        return _last_touch_build(u, i, d, int(n_users), int(n_items))
    ni = max(int(n_items), 1)
    key = u * ni + i
    o = np.argsort(key)
    ks = key[o]
    start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]) if ks.size else np.empty(0, dtype=np.int64)
    last = np.maximum.reduceat(d[o], start) if ks.size else np.empty(0)
    pu, pi = np.divmod(ks[start], ni)
    indptr = np.concatenate(([0], np.cumsum(np.bincount(pu, minlength=int(n_users))))).astype(np.int64)
    return indptr, pi.astype(np.int32), last
