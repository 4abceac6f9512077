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
  split);
* a blend ``(w_cf, w_content, w_pop)`` ranks ``w_cf·cf + w_content·content + w_pop·pop`` (ties: lower
  item index, as ``recommend``) — so one pass over the parts scores any blend (``tune_blend``), and
  the baselines are blends too: **stream bestsellers** = ``(0, 0, 1)`` (``recommend`` without a user:
  stream popularity, then damped global), **showcase popularity** = global popularity restricted to
  the showcase (``pop_kind="global"``).

``tests/test_reco_instream.py`` checks the ranking against ``HybridRecommender.recommend`` itself.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["StreamPairs", "stream_pairs", "InStreamParts", "instream_parts", "ndcg_fast", "tune_blend",
           "POSITIVE_TYPES"]

POSITIVE_TYPES = ("product_click", "add_to_cart", "purchase")


@dataclass
class StreamPairs:
    users: list[str]
    streams: list[str]
    relevant: list[list[str]]

    def __len__(self) -> int:
        return len(self.users)


def stream_pairs(model, hold: pd.DataFrame, showcases: Mapping[str, Sequence[str]], max_pairs: int | None = 5000,
                 positive_types: Iterable[str] = POSITIVE_TYPES) -> StreamPairs:
    """(user, stream) pairs of the held-out events: users the ``model`` knows (history > 0), positive
    items acted on in a stream with a known showcase, minus the user's history.  At most ``max_pairs``
    (deterministic md5 sample of ``user|stream``)."""
    need = hold["type"].isin(list(positive_types)) & hold["item_id"].notna() & hold["user_id"].notna()
    if "stream_id" not in hold:
        return StreamPairs([], [], [])
    need &= hold["stream_id"].notna()
    pos = hold.loc[need, ["user_id", "stream_id", "item_id"]].astype(str).drop_duplicates()
    if pos.empty:
        return StreamPairs([], [], [])
    rows = model._user_index.get_indexer(pos["user_id"].to_numpy())
    X = model.user_items_
    npos = np.add.reduceat(np.r_[(X.data > 0).astype(np.int64), 0], X.indptr[:-1]) if X.shape[0] else np.zeros(0)
    npos[np.diff(X.indptr) == 0] = 0  # reduceat quirk on empty rows
    ok = rows >= 0
    ok[ok] = npos[rows[ok]] > 0
    pos = pos[ok].assign(_row=rows[ok])
    pos = pos[pos["stream_id"].isin(list(showcases.keys()))]
    if pos.empty:
        return StreamPairs([], [], [])
    keys = (pos["user_id"] + "|" + pos["stream_id"]).to_numpy()
    uniq = pd.unique(keys)
    if max_pairs is not None and len(uniq) > max_pairs:
        uniq = np.array(sorted(uniq, key=lambda s: hashlib.md5(s.encode()).hexdigest())[:max_pairs])
    pos = pos[np.isin(keys, uniq)]
    users, streams, relevant = [], [], []
    items = model.item_ids_
    for (u, s), grp in pos.groupby(["user_id", "stream_id"], sort=True):
        r = int(grp["_row"].iloc[0])
        a, b = X.indptr[r], X.indptr[r + 1]
        hist = set(items[X.indices[a:b][X.data[a:b] > 0]].tolist())
        rel = [i for i in pd.unique(grp["item_id"]).tolist() if i not in hist]
        if rel:
            users.append(u)
            streams.append(s)
            relevant.append(rel)
    return StreamPairs(users, streams, relevant)


@dataclass
class InStreamParts:
    """Flat candidate arrays for all pairs: pair p owns ``[ptr[p], ptr[p+1])``."""
    ptr: np.ndarray
    item: np.ndarray      # model item index
    cf: np.ndarray
    content: np.ndarray
    pop: np.ndarray       # stream popularity / 0.1·global (what recommend uses with stream_id)
    gpop: np.ndarray      # global popularity (showcase-popularity baseline)
    rel: np.ndarray       # bool: candidate is a relevant item of its pair
    n_rel: np.ndarray     # relevant items per pair (incl. ones not among the candidates)
    item_ids: np.ndarray  # model.item_ids_

    def rank(self, w_cf: float, w_content: float, w_pop: float, k: int, pop_kind: str = "stream"):
        """Top-k per pair for a blend: ``(flat order, position within pair)`` of the kept entries."""
        pop = self.pop if pop_kind == "stream" else self.gpop
        total = w_cf * self.cf + w_content * self.content + w_pop * pop
        pair = np.repeat(np.arange(len(self.ptr) - 1), np.diff(self.ptr))
        order = np.lexsort((self.item, -total, pair))
        posn = np.arange(order.size) - self.ptr[pair[order]]
        keep = posn < k
        return order[keep], posn[keep], pair[order[keep]]

    def top_ids(self, w_cf: float, w_content: float, w_pop: float, k: int, pop_kind: str = "stream") -> list[list[str]]:
        order, _, pair = self.rank(w_cf, w_content, w_pop, k, pop_kind)
        ids = self.item_ids[self.item[order]]
        bounds = np.searchsorted(pair, np.arange(len(self.ptr)))
        return [ids[bounds[p]:bounds[p + 1]].tolist() for p in range(len(self.ptr) - 1)]


def instream_parts(model, pairs: StreamPairs, showcases: Mapping[str, Sequence[str]], chunk: int = 256) -> InStreamParts:
    """Score parts of every showcase candidate of every pair (see the module docstring)."""
    n = model.n_items_
    X = model.user_items_
    g = np.asarray(model.popularity_.global_, dtype=np.float64)
    sc_idx: dict[str, np.ndarray] = {}
    for s in set(pairs.streams):
        pos = model._item_index.get_indexer(np.asarray(list(showcases[s]), dtype=str))
        sc_idx[s] = np.unique(pos[pos >= 0]).astype(np.int64)
    purchase = model._purchase_code
    acts = model.actions_
    ptr = [0]
    it_l, cf_l, ct_l, pop_l, g_l, rel_l, nrel = [], [], [], [], [], [], []
    has_ct = model.content_model_ is not None

    def rownorm(a):
        m = a.max(axis=1, keepdims=True)
        return np.divide(a, m, out=np.zeros_like(a), where=m > 0)

    for c0 in range(0, len(pairs), chunk):
        us = pairs.users[c0:c0 + chunk]
        rows = model._user_index.get_indexer(np.asarray(us, dtype=str))
        Xc = X[np.maximum(rows, 0)].astype(np.float32).tolil() if (rows < 0).any() else X[rows].astype(np.float32)
        if (rows < 0).any():  # a user this model does not know: empty history
            for r in np.flatnonzero(rows < 0):
                Xc.rows[r], Xc.data[r] = [], []
        Xc = sp.csr_matrix(Xc)
        Xc.data[Xc.data < 0] = 0
        Xc.eliminate_zeros()
        cf = rownorm(np.asarray(model.cf_model_.score_batch(Xc), dtype=np.float64))
        ct = rownorm(np.asarray(model.content_model_.score_batch(Xc), dtype=np.float64)) if has_ct else None
        for r, (u, s, rel) in enumerate(zip(us, pairs.streams[c0:c0 + chunk], pairs.relevant[c0:c0 + chunk])):
            row = rows[r]
            cand = sc_idx[s]
            bad = Xc.indices[Xc.indptr[r]:Xc.indptr[r + 1]]
            if acts is not None and row >= 0:
                a0, a1 = acts.indptr[row], acts.indptr[row + 1]
                bad = np.concatenate([bad, acts.indices[a0:a1][acts.data[a0:a1] == purchase]])
            cand = cand[~np.isin(cand, bad)]
            sp_row = model.popularity_.stream_scores(s)
            if sp_row is None:
                pop = g[cand]
            else:
                sv = np.asarray(sp_row, dtype=np.float64)[cand]
                pop = np.where(sv > 0, sv, 0.1 * g[cand])
            it_l.append(cand)
            cf_l.append(cf[r, cand])
            ct_l.append(ct[r, cand] if ct is not None else np.zeros(cand.size))
            pop_l.append(pop)
            g_l.append(g[cand])
            relset = model._item_index.get_indexer(np.asarray(rel, dtype=str))
            rel_l.append(np.isin(cand, relset[relset >= 0]))
            nrel.append(len(rel))
            ptr.append(ptr[-1] + cand.size)
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.empty(0, dtype=dt))
    return InStreamParts(np.asarray(ptr, dtype=np.int64), cat(it_l, np.int64), cat(cf_l, np.float64),
                         cat(ct_l, np.float64), cat(pop_l, np.float64), cat(g_l, np.float64), cat(rel_l, bool),
                         np.asarray(nrel, dtype=np.int64), model.item_ids_)


def ndcg_fast(parts: InStreamParts, w_cf: float, w_content: float, w_pop: float, k: int = 10,
              pop_kind: str = "stream") -> float:
    """Mean NDCG@k over the pairs (binary gains, IDCG over min(|rel|, k)) for one blend."""
    npairs = len(parts.ptr) - 1
    if npairs == 0:
        return 0.0
    order, posn, pair = parts.rank(w_cf, w_content, w_pop, k, pop_kind)
    gain = parts.rel[order] / np.log2(posn + 2.0)
    dcg = np.bincount(pair, weights=gain, minlength=npairs)
    disc = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    idcg = disc[np.minimum(parts.n_rel, k)]
    return float(np.mean(np.divide(dcg, idcg, out=np.zeros(npairs), where=idcg > 0)))


def tune_blend(parts: InStreamParts, content_weights: Sequence[float], popularity_weights: Sequence[float],
               k: int = 10, cf_weight: float = 1.0) -> tuple[dict, list[dict]]:
    """Grid search of (content_weight, popularity_weight) at fixed ``cf_weight`` by in-stream NDCG@k.
    Ties keep the first grid point.  Returns ``(best, table)``."""
    table, best = [], None
    for cw in content_weights:
        for pw in popularity_weights:
            v = ndcg_fast(parts, cf_weight, cw, pw, k)
            table.append({"content_weight": cw, "popularity_weight": pw, f"ndcg@{k}": round(v, 6)})
            if best is None or v > best[f"ndcg@{k}"] + 1e-12:
                best = table[-1]
    return dict(best or {}), table
