"""In-stream evaluation: rank a live room's showcase for a viewer, as ``recommend`` does in a stream.

A live room recommends *within the stream*: ``recommend(user, stream_id=s, allowed_items=showcase(s))``.
Ranking the whole catalogue for a purchase that happens in a later stream (with its own showcase)
mostly measures "which items will hosts show next", where popularity wins.  This module evaluates
per (user, stream) pair instead:

* pairs: held-out positive events (click / cart / purchase) carrying a ``stream_id``; relevant =
  the items the user acted on in that stream that are not already in the user's history (what
  ``filter_seen`` would hide anyway);
* candidates: the stream's showcase minus the user's history and purchased items (the filters of
  ``HybridRecommender.recommend``);
* score parts per candidate, exactly as the personal strategy of ``recommend`` computes them with unit
  weights: ``cf = R_cf / max R_cf`` and ``content = R_cnt / max R_cnt`` (maxima over the whole
  catalogue), ``pop`` = the stream's popularity for items the model has seen sold in the stream, else
  ``0.1 · global`` (a stream the model has never seen -> global popularity: what it knows at the
  split), ``gpop`` = global popularity;
* a blend ``(w_cf, w_content, w_pop, mix)`` ranks
  ``w_cf·cf + w_content·content + w_pop·((1 - mix)·pop + mix·gpop)`` (``mix`` =
  ``HybridRecommender.stream_pop_mix``; ties: lower item index, as ``recommend``) — so one pass over
  the parts scores any blend (``tune_blend``), and the baselines are blends too: **stream
  bestsellers** = ``(0, 0, 1, 0)`` (``recommend`` without a user: stream popularity, then damped
  global), **showcase popularity** = ``(0, 0, 1, 1)`` (global popularity restricted to the showcase).

Cost: the CF / content parts of a chunk of pairs are one sparse product ``X_chunk @ W`` (only the
neighbour entries, never a dense ``chunk x catalogue`` block for sparse ``W``), of which only the
showcase columns are gathered; popularity is computed once per stream on its showcase.  Ranking a
blend is one compiled top-k pass over the flat candidate arrays (numba; numpy lexsort without it).

``tests/test_reco_instream.py`` checks the ranking against ``HybridRecommender.recommend`` itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.reco.arrays import unique

from ._kernels import HAVE_NUMBA
from .event_types import POSITIVE_TYPES

__all__ = [
    "StreamPairs",
    "stream_pairs",
    "InStreamParts",
    "instream_parts",
    "ndcg_fast",
    "tune_blend",
    "POSITIVE_TYPES",
]

#: the in-stream positives: shared.reco.event_types.POSITIVE_TYPES (re-exported here)


@dataclass
class StreamPairs:
    users: list[str]
    streams: list[str]
    relevant: list[list[str]]
    n_available: int = 0  # evaluable (user, stream) pairs before the sample

    def __len__(self) -> int:
        return len(self.users)


def _md5_order(keys: np.ndarray) -> np.ndarray:
    return np.argsort(np.array([hashlib.md5(k.encode()).hexdigest() for k in keys.tolist()]), kind="stable")


def stream_pairs(
    model,
    hold: pd.DataFrame,
    showcases: Mapping[str, Sequence[str]],
    max_pairs: int | None = 5000,
    positive_types: Iterable[str] = POSITIVE_TYPES,
) -> StreamPairs:
    """(user, stream) pairs of the held-out events: users the ``model`` knows (history > 0), positive
    items acted on in a stream with a known showcase, minus the user's history.  At most ``max_pairs``
    (deterministic sample: the first ``max_pairs`` keys ``user|stream`` in md5 order; the number of
    evaluable pairs before the sample is ``n_available``)."""
    if "stream_id" not in hold or hold.empty:
        return StreamPairs([], [], [])
    need = (
        hold["type"].isin(list(positive_types))
        & hold["item_id"].notna()
        & hold["user_id"].notna()
        & hold["stream_id"].notna()
    )
    pos = hold.loc[need, ["user_id", "stream_id", "item_id"]]
    if pos.empty:
        return StreamPairs([], [], [])
    pos = pd.DataFrame({c: _as_str(pos[c]) for c in ("user_id", "stream_id", "item_id")})
    pos = pos[pos["stream_id"].isin(list(showcases.keys()))]
    X = model.user_items_
    npos = (
        np.bincount(np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), weights=(X.data > 0), minlength=X.shape[0])
        if X.shape[0]
        else np.zeros(0)
    )
    up = pos[["user_id", "stream_id"]].drop_duplicates()
    rows = model._user_index.get_indexer(up["user_id"].to_numpy())
    ok = rows >= 0
    ok[ok] = npos[rows[ok]] > 0
    up = up[ok]
    if up.empty:
        return StreamPairs([], [], [])
    keys = (up["user_id"] + "|" + up["stream_id"]).to_numpy().astype(str)
    if max_pairs is not None and len(keys) > max_pairs:
        up = up.iloc[np.sort(_md5_order(keys)[:max_pairs])]
    pos = pos.merge(up, on=["user_id", "stream_id"], how="inner")
    pos = pos.drop_duplicates()
    users: list[str] = []
    streams: list[str] = []
    relevant: list[list[str]] = []
    if pos.empty:
        return StreamPairs(users, streams, relevant, n_available=int(len(keys)))
    # plain arrays sorted by (user, stream), item order of first appearance kept inside a pair
    u_arr = pos["user_id"].to_numpy().astype(str)
    s_arr = pos["stream_id"].to_numpy().astype(str)
    i_arr = pos["item_id"].to_numpy().astype(str)
    o = np.lexsort((np.arange(u_arr.size), s_arr, u_arr))
    u_arr, s_arr, i_arr = u_arr[o], s_arr[o], i_arr[o]
    head = np.ones(u_arr.size, dtype=bool)
    head[1:] = (u_arr[1:] != u_arr[:-1]) | (s_arr[1:] != s_arr[:-1])
    starts = np.flatnonzero(head).tolist() + [u_arr.size]
    rows = model._user_index.get_indexer(u_arr[starts[:-1]])
    items = model.item_ids_
    i_list = i_arr.tolist()
    for g_, (a0, a1) in enumerate(zip(starts[:-1], starts[1:])):
        r = int(rows[g_])
        a, b = X.indptr[r], X.indptr[r + 1]
        hist = set(items[X.indices[a:b][X.data[a:b] > 0]].tolist())
        rel = [i for i in dict.fromkeys(i_list[a0:a1]) if i not in hist]
        if rel:
            users.append(str(u_arr[a0]))
            streams.append(str(s_arr[a0]))
            relevant.append(rel)
    return StreamPairs(users, streams, relevant, n_available=int(len(keys)))


def _as_str(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.rename_categories(s.cat.categories.astype(str)).astype(object) if len(s) else s.astype(object)
    return s.astype(str)


@dataclass
class InStreamParts:
    """Flat candidate arrays for all pairs: pair p owns ``[ptr[p], ptr[p+1])``."""

    ptr: np.ndarray
    item: np.ndarray  # model item index
    cf: np.ndarray
    content: np.ndarray
    pop: np.ndarray  # stream popularity / 0.1·global (what recommend uses with stream_id)
    gpop: np.ndarray  # global popularity (showcase-popularity baseline)
    rel: np.ndarray  # bool: candidate is a relevant item of its pair
    n_rel: np.ndarray  # relevant items per pair (incl. ones not among the candidates)
    item_ids: np.ndarray  # model.item_ids_

    def _pop(self, pop_kind: str, mix: float):
        if pop_kind == "global":
            mix = 1.0
        return float(mix)

    def topk(
        self, w_cf: float, w_content: float, w_pop: float, k: int, pop_kind: str = "stream", mix: float = 0.0
    ) -> np.ndarray:
        """``(pairs, k)`` flat positions of each pair's top-k for a blend (-1 padded); ties: lower item."""
        mix = self._pop(pop_kind, mix)
        npairs = len(self.ptr) - 1
        if HAVE_NUMBA:
            return _blend_topk(
                self.ptr,
                self.item,
                self.cf,
                self.content,
                self.pop,
                self.gpop,
                float(w_cf),
                float(w_content),
                float(w_pop),
                mix,
                int(k),
            )
        pop = self.pop if mix == 0.0 else (self.gpop if mix == 1.0 else (1 - mix) * self.pop + mix * self.gpop)
        total = w_cf * self.cf + w_content * self.content + w_pop * pop
        pair = np.repeat(np.arange(npairs), np.diff(self.ptr))
        order = np.lexsort((self.item, -total, pair))
        posn = np.arange(order.size) - self.ptr[pair[order]]
        keep = posn < k
        out = np.full((npairs, k), -1, dtype=np.int64)
        out[pair[order[keep]], posn[keep]] = order[keep]
        return out

    def top_ids(
        self, w_cf: float, w_content: float, w_pop: float, k: int, pop_kind: str = "stream", mix: float = 0.0
    ) -> list[list[str]]:
        top = self.topk(w_cf, w_content, w_pop, k, pop_kind, mix)
        ids = self.item_ids
        return [ids[self.item[r[r >= 0]]].tolist() for r in top]


if HAVE_NUMBA:
    import numba as _nb

    @_nb.njit(cache=True)
    def _blend_topk(ptr, item, cf, ct, pop, gpop, w_cf, w_ct, w_pop, mix, k):  # pragma: no cover - numba
        npairs = ptr.size - 1
        out = np.full((npairs, k), -1, dtype=np.int64)
        tv = np.empty(k, dtype=np.float64)
        for p in range(npairs):
            m = 0
            for e in range(ptr[p], ptr[p + 1]):
                t = w_cf * cf[e] + w_ct * ct[e] + w_pop * ((1.0 - mix) * pop[e] + mix * gpop[e])
                # insert (t, item[e]) if it ranks above the worst kept entry (value desc, item asc)
                if m == k:
                    last = out[p, k - 1]
                    if t < tv[k - 1] or (t == tv[k - 1] and item[e] > item[last]):
                        continue
                    j = k - 1
                else:
                    j = m
                    m += 1
                while j > 0:
                    q = out[p, j - 1]
                    if tv[j - 1] > t or (tv[j - 1] == t and item[q] < item[e]):
                        break
                    tv[j] = tv[j - 1]
                    out[p, j] = q
                    j -= 1
                tv[j] = t
                out[p, j] = e
        return out


def _row_normalised(part, Xc: sp.csr_matrix, n: int):
    """``X_chunk @ W`` of one item model, each row divided by its maximum over the whole catalogue
    (as ``recommend`` normalises; items outside the neighbours score 0).  Sparse ``W`` -> CSR with
    sorted indices (only the neighbour entries); dense ``B`` -> dense rows."""
    if getattr(part, "B_", None) is not None:
        S = np.asarray(Xc @ part.B_, dtype=np.float64)
        m = S.max(axis=1, keepdims=True) if S.shape[1] else np.zeros((S.shape[0], 1))
        return np.divide(S, m, out=np.zeros_like(S), where=m > 0)
    S = sp.csr_matrix(Xc @ part.W_, dtype=np.float64)  # csr_matmat: no duplicates (indices unsorted)
    nnz = np.diff(S.indptr)
    m = np.zeros(S.shape[0])
    ne = nnz > 0
    if ne.any():
        m[ne] = np.maximum.reduceat(S.data, S.indptr[:-1][ne])
    m[nnz < n] = np.maximum(m[nnz < n], 0.0)
    scale = np.divide(1.0, m, out=np.zeros_like(m), where=m > 0)
    S.data *= np.repeat(scale, nnz)
    return S


def _gather(S, r: int, cols: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """Row ``r`` of a dense array or a CSR at ``cols`` (0 where absent); ``scratch``: a zero
    catalogue-sized float array (scattered into and reset, so CSR indices need not be sorted)."""
    if isinstance(S, np.ndarray):
        return S[r, cols]
    a, b = S.indptr[r], S.indptr[r + 1]
    if b == a or cols.size == 0:
        return np.zeros(cols.size)
    if scratch is None:
        scratch = np.zeros(S.shape[1])
    ix = S.indices[a:b]
    scratch[ix] = S.data[a:b]
    out = scratch[cols]
    scratch[ix] = 0.0
    return out


def instream_parts(
    model, pairs: StreamPairs, showcases: Mapping[str, Sequence[str]], chunk: int = 512
) -> InStreamParts:
    """Score parts of every showcase candidate of every pair (see the module docstring)."""
    n = model.n_items_
    X = model.user_items_
    g = np.asarray(model.popularity_.global_, dtype=np.float64)
    # per stream, once: showcase item positions (sorted) and their popularity parts
    sc_idx: dict[str, np.ndarray] = {}
    sc_pop: dict[str, np.ndarray] = {}
    pstream = model.popularity_
    for s in set(pairs.streams):
        pos = model._item_index.get_indexer(np.asarray(list(showcases[s]), dtype=str))
        idx = unique(pos[pos >= 0]).astype(np.int64)
        sc_idx[s] = idx
        k = pstream._stream_index.get(str(s))
        if k is None:
            sc_pop[s] = g[idx]
        else:
            row = pstream.stream_[k]
            sv = np.zeros(idx.size)
            if row.nnz:
                o = np.argsort(row.indices)
                ri, rd = row.indices[o], np.asarray(row.data, dtype=np.float64)[o]
                p = np.minimum(np.searchsorted(ri, idx), ri.size - 1)
                hit = ri[p] == idx
                sv[hit] = rd[p[hit]]
            sc_pop[s] = np.where(sv > 0, sv, 0.1 * g[idx])
    purchase = model._purchase_code
    acts = model.actions_
    ipos = model._item_pos
    scratch = np.zeros(n)
    ptr = [0]
    it_l, cf_l, ct_l, pop_l, g_l, rel_l, nrel = [], [], [], [], [], [], []
    has_ct = model.content_model_ is not None
    uidx = model._user_index.get_indexer(np.asarray(pairs.users, dtype=str)) if len(pairs) else np.empty(0, np.int64)
    for c0 in range(0, len(pairs), chunk):
        rows = uidx[c0 : c0 + chunk]
        Xc = X[np.maximum(rows, 0)].astype(np.float32)
        if (rows < 0).any():  # a user this model does not know: empty history
            Xc = sp.diags((rows >= 0).astype(np.float32)) @ Xc
        Xc = sp.csr_matrix(Xc)
        Xc.data[Xc.data < 0] = 0
        Xc.eliminate_zeros()
        Xc.sort_indices()
        cf = _row_normalised(model.cf_model_, Xc, n)
        ct = _row_normalised(model.content_model_, Xc, n) if has_ct else None
        for r in range(len(rows)):
            p_ = c0 + r
            s, rel = pairs.streams[p_], pairs.relevant[p_]
            row = rows[r]
            cand = sc_idx[s]
            bad = Xc.indices[Xc.indptr[r] : Xc.indptr[r + 1]]
            if acts is not None and row >= 0:
                a0, a1 = acts.indptr[row], acts.indptr[row + 1]
                bad = np.concatenate([bad, acts.indices[a0:a1][acts.data[a0:a1] == purchase]])
            keep = ~np.isin(cand, bad) if bad.size else np.ones(cand.size, dtype=bool)
            cand = cand[keep]
            it_l.append(cand)
            cf_l.append(_gather(cf, r, cand, scratch))
            ct_l.append(_gather(ct, r, cand, scratch) if ct is not None else np.zeros(cand.size))
            pop_l.append(sc_pop[s][keep])
            g_l.append(g[cand])
            relset = [j for j in (ipos.get(x, -1) for x in rel) if j >= 0]
            rel_l.append(np.isin(cand, relset) if relset else np.zeros(cand.size, dtype=bool))
            nrel.append(len(rel))
            ptr.append(ptr[-1] + cand.size)
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.empty(0, dtype=dt)
    return InStreamParts(
        np.asarray(ptr, dtype=np.int64),
        cat(it_l, np.int64),
        cat(cf_l, np.float64),
        cat(ct_l, np.float64),
        cat(pop_l, np.float64),
        cat(g_l, np.float64),
        cat(rel_l, bool),
        np.asarray(nrel, dtype=np.int64),
        model.item_ids_,
    )


def ndcg_fast(
    parts: InStreamParts,
    w_cf: float,
    w_content: float,
    w_pop: float,
    k: int = 10,
    pop_kind: str = "stream",
    mix: float = 0.0,
) -> float:
    """Mean NDCG@k over the pairs (binary gains, IDCG over min(|rel|, k)) for one blend."""
    npairs = len(parts.ptr) - 1
    if npairs == 0:
        return 0.0
    top = parts.topk(w_cf, w_content, w_pop, k, pop_kind, mix)
    disc = 1.0 / np.log2(np.arange(k) + 2.0)
    hit = np.where(top >= 0, parts.rel[np.maximum(top, 0)], False) if parts.rel.size else np.zeros(top.shape, bool)
    dcg = (hit * disc[None, :]).sum(axis=1)
    cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = cum[np.minimum(parts.n_rel, k)]
    return float(np.mean(np.divide(dcg, idcg, out=np.zeros(npairs), where=idcg > 0)))


def tune_blend(
    parts: InStreamParts,
    content_weights: Sequence[float],
    popularity_weights: Sequence[float],
    k: int = 10,
    cf_weight: float = 1.0,
    stream_pop_mixes: Sequence[float] = (0.0,),
) -> tuple[dict, list[dict]]:
    """Grid search of (content_weight, popularity_weight, stream_pop_mix) at fixed ``cf_weight`` by
    in-stream NDCG@k.  Ties keep the first grid point.  Returns ``(best, table)``."""
    table, best = [], None
    for cw in content_weights:
        for pw in popularity_weights:
            for mx in stream_pop_mixes:
                v = ndcg_fast(parts, cf_weight, cw, pw, k, mix=mx)
                table.append(
                    {"content_weight": cw, "popularity_weight": pw, "stream_pop_mix": mx, f"ndcg@{k}": round(v, 6)}
                )
                if best is None or v > best[f"ndcg@{k}"] + 1e-12:
                    best = table[-1]
    return dict(best or {}), table


def catalogue_topk(model, Xc: sp.csr_matrix, k: int) -> list[np.ndarray]:
    """Whole-catalogue top-k item indices per row of ``Xc`` (user histories in the model's item
    space), the personal formula of ``score_batch`` (``cf + content + popularity·global``), history
    items excluded; ties: lower item index.  Sparse ``W``: only the neighbour entries of each row
    plus the first ``k + |history|`` items of the global popularity order are scored (an item outside
    the neighbours scores its popularity only) — never a dense ``rows x catalogue`` block."""
    n = model.n_items_
    Xc = sp.csr_matrix(Xc, dtype=np.float32)
    Xc.data[Xc.data < 0] = 0
    Xc.eliminate_zeros()
    Xc.sort_indices()
    g = np.asarray(model.popularity_.global_, dtype=np.float64)
    gorder = np.lexsort((np.arange(n), -g))
    cf = _row_normalised(model.cf_model_, Xc, n)
    use_ct = model.content_model_ is not None and model.content_weight > 0
    ct = _row_normalised(model.content_model_, Xc, n) if use_ct else None
    wcf, wct, wp = float(model.cf_weight), float(model.content_weight), float(model.popularity_weight)
    scratch = np.zeros(n)
    out = []
    for r in range(Xc.shape[0]):
        hist = Xc.indices[Xc.indptr[r] : Xc.indptr[r + 1]]
        if isinstance(cf, np.ndarray) or isinstance(ct, np.ndarray):
            total = wp * g
            total = total + wcf * (cf[r] if isinstance(cf, np.ndarray) else _gather(cf, r, np.arange(n)))
            if ct is not None:
                total = total + wct * (ct[r] if isinstance(ct, np.ndarray) else _gather(ct, r, np.arange(n)))
            cand = np.arange(n)
        else:
            sup = [cf.indices[cf.indptr[r] : cf.indptr[r + 1]]]
            if ct is not None:
                sup.append(ct.indices[ct.indptr[r] : ct.indptr[r + 1]])
            sup.append(gorder[: k + hist.size])
            cand = unique(np.concatenate(sup))
            total = wp * g[cand] + wcf * _gather(cf, r, cand, scratch)
            if ct is not None:
                total += wct * _gather(ct, r, cand, scratch)
        if hist.size:
            keep = ~np.isin(cand, hist)
            cand, total = cand[keep], total[keep]
        kk = min(k, cand.size)
        if kk == 0:
            out.append(np.empty(0, dtype=np.int64))
            continue
        part = np.argpartition(-total, kk - 1)[:kk] if kk < cand.size else np.arange(cand.size)
        # exact ties at the boundary: take every entry tied with the k-th value, then order
        thr = total[part].min()
        part = np.flatnonzero(total >= thr)
        best = part[np.lexsort((cand[part], -total[part]))][:kk]
        out.append(cand[best].astype(np.int64))
    return out
