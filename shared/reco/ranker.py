"""The served recommender: candidates from every source, one learned ranker, a reason per item.

``RoomRanker`` combines, per (viewer, item) candidate, the sources a live room has:

======================  ===========================================================  ===========
feature                 value                                                         reason kind
======================  ===========================================================  ===========
``bought``              1 if the viewer bought the item in the window                buy_again
``buy_count``           ``rate_i · log(1 + occasions)``                              buy_again
``rebuy_due``           ``rate_i · exp(-(ln(gap / τ_i))² / (2·0.6²))``: bought, due   buy_again
``bought_durable``      ``(1 - rate_i)`` if bought (learned weight < 0: held back)   buy_again
``bought_fresh``        ``max(0, 1 - gap / τ_i)²`` if bought (too soon to rebuy)      buy_again
``buy_freq``            ``log(1 + occasions)``                                       buy_again
``buy_recency``         ``exp(-gap / 30)`` if bought                                 buy_again
``user_repeat``         the viewer's share of repeat occasions (shrunk) if bought    buy_again
``cart``                ``log(1 + decayed add-to-cart count)``                       in_history
``click``               ``log(1 + decayed click count)``                             in_history
``touch_recent``        ``exp(-days since last touch / 2)`` if touched                in_history
``cf``                  ``R_cf(u, i) / max R_cf(u, ·)`` (EASE / item-kNN)             because_you
``content``             ``R_cnt(u, i) / max R_cnt(u, ·)`` (TF-IDF neighbours)        because_you
``context``             the same for the session's context items (cf + content)/2   similar_to
``pop``                 global popularity in [0, 1]                                  popular
``pop_log``             ``log(1 + buyers_i) / log(1 + max buyers)``                  popular
``pop_recent``          the same over the last 7 days of the window (trend)          popular
``room_buy``            ``log(1 + orders of i in this stream so far)``               popular_in_stream
``room_share``          orders of i / orders in this stream so far                   popular_in_stream
``room_click``          ``log(1 + clicks of i in this stream so far)``               popular_in_stream
``room_buy_now``        ``log(1 + orders of i in this stream in the last 10 min)``   popular_in_stream
``room_click_now``      ``log(1 + clicks of i in the last 5 min)``                   popular_in_stream
``room_shown_now``      share of the room's impressions in the last 5 min that were
                        of i (what the host presents now: 讲解)                       popular_in_stream
``category``            the viewer's share of interactions in i's category           taste
``price``               ``exp(-|ln price_i - mean ln price of the viewer|)``         taste
======================  ===========================================================  ===========

``gap`` = days since the viewer's last purchase of ``i``; ``rate_i`` / ``τ_i`` the item's rebuy rate
and interval (``shared.reco.rebuy``).  The ranker is a regularised logistic regression on the
standardised features, ``score = b + Σ_f w_f (x_f - μ_f) / σ_f``, learned by ``shared.reco.recipe``
on a time split of the training data; its contributions ``w_f (x_f - μ_f) / σ_f`` are the item's
``parts`` and the largest one names the ``reason``.  Arrays + JSON only (no pickle).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.reco.arrays import unique

from ._core import csr_from_arrays, csr_to_arrays, gather_rows, str_array
from ._kernels import (
    HAVE_NUMBA,
    ITEM_COLS,
    RANK_FEATURES,
    last_touch_build,
    pair_scores,
    rank_kernel,
    score_rank,
    top_rows,
    user_scores,
)
from .event_types import ADD_TO_CART, POSITIVE_TYPES, PRODUCT_CLICK, PURCHASE, RANKER_ROOM_TYPES, ROOM_RECENT_KEYS
from .hybrid import HybridRecommender
from .interactions import _category_strings, _codes, build_user_items
from .rebuy import RepeatStats, purchase_occasions, ts_days, ts_ns1
from .relations import RELATION_KIND, pair_counts, pair_relations, relation_of

__all__ = ["FEATURES", "FEATURE_GROUP", "PRIOR_WEIGHTS", "RoomRanker", "room_counts"]

#: the feature vector, in the order the request kernel writes it (defined once, beside the kernel)
FEATURES = RANK_FEATURES
FEATURE_GROUP = {
    "bought": "buy_again",
    "buy_count": "buy_again",
    "buy_freq": "buy_again",
    "buy_recency": "buy_again",
    "user_repeat": "buy_again",
    "rebuy_due": "buy_again",
    "bought_durable": "buy_again",
    "bought_fresh": "buy_again",
    "cart": "history",
    "click": "history",
    "touch_recent": "history",
    "cf": "cf",
    "content": "content",
    "context": "context",
    "pop": "popular",
    "pop_log": "popular",
    "pop_recent": "popular",
    "room_buy": "room",
    "room_share": "room",
    "room_click": "room",
    "room_buy_now": "room",
    "room_click_now": "room",
    "room_shown_now": "room",
    "category": "taste",
    "price": "taste",
}
GROUPS = ("buy_again", "history", "cf", "content", "context", "room", "popular", "taste")
#: raw-feature weights used when there is nothing to learn from (no labels): repeat, then the room
PRIOR_WEIGHTS = {
    "bought": 1.0,
    "buy_count": 1.0,
    "rebuy_due": 2.0,
    "bought_durable": -2.0,
    "bought_fresh": -1.0,
    "cart": 0.5,
    "click": 0.2,
    "cf": 1.0,
    "content": 0.2,
    "context": 1.0,
    "pop": 0.5,
    "room_buy": 0.5,
    "room_share": 2.0,
    "room_click": 0.1,
    "category": 0.3,
    "price": 0.1,
}
_F = {f: k for k, f in enumerate(FEATURES)}
_NO_FILTERS = {
    "filter_seen": False,
    "exclude_purchased": False,
    "exclude_items": None,
    "category": None,
    "price_range": None,
}
HEADS = ("room", "catalogue", "room_new", "catalogue_new")
_GROUP_MATRIX = np.zeros((len(FEATURES), len(GROUPS)))
for _f, _g in FEATURE_GROUP.items():
    _GROUP_MATRIX[_F[_f], GROUPS.index(_g)] = 1.0  # *_new: filter_seen requests (new items only)
_GROUP_OF = np.argmax(_GROUP_MATRIX, axis=1).astype(np.int64)  # each feature's group
_GROUP_FEATURES = {g: [_F[f] for f in FEATURES if FEATURE_GROUP[f] == g] for g in GROUPS}
_ROOM_BUY = _F["room_buy"]
#: reason fields that do not change its sentence (a reason's identity in a list is the rest)
_NOT_IN_TEXT = ("feature", "via")


def _reason_key(r: Mapping[str, Any]) -> frozenset:
    # a set of (field, text) pairs: equal exactly when the sorted pairs are (the fields are unique), without
    # the sort (one key per reason considered: ~10-20 per answer)
    return frozenset([(k, str(v)) for k, v in r.items() if k not in _NOT_IN_TEXT])


def _head(weights: Mapping[str, float], mu=None, sigma=None, bias: float = 0.0) -> dict:
    n = len(FEATURES)
    return {
        "weights": {f: float(weights.get(f, 0.0)) for f in FEATURES},
        "mu": np.zeros(n) if mu is None else np.asarray(mu, dtype=np.float64),
        "sigma": np.ones(n) if sigma is None else np.asarray(sigma, dtype=np.float64),
        "bias": float(bias),
    }


def _at(idx: np.ndarray, val: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Values at positions ``c`` of a sparse vector given as sorted ``idx`` and ``val`` (0 where absent)."""
    out = np.zeros(c.size, dtype=np.float64)
    if idx.size and c.size:
        p = np.minimum(np.searchsorted(idx, c), idx.size - 1)
        hit = idx[p] == c
        out[hit] = val[p[hit]]
    return out


def _best(v: np.ndarray, top: int) -> np.ndarray:
    """Positions of the ``top`` largest values of ``v`` (ties: the earlier position), ascending: the
    deterministic rule the request kernel applies (value desc, item index asc on sorted items). O(n)."""
    n = v.size
    if top <= 0:
        return np.empty(0, dtype=np.int64)
    if n <= top:
        return np.arange(n)
    kth = np.partition(v, n - top)[n - top]
    sel = v > kth
    need = top - int(np.count_nonzero(sel))
    if need > 0:
        sel[np.flatnonzero(v == kth)[:need]] = True
    return np.flatnonzero(sel)


def _lookup(ptr: np.ndarray, ind: np.ndarray, dat: np.ndarray, r: int, c: np.ndarray) -> np.ndarray:
    """Values of CSR row ``r`` (sorted indices) at columns ``c`` (0 where absent)."""
    a, b = int(ptr[r]), int(ptr[r + 1])
    return _at(ind[a:b], dat[a:b], c)


def _lookup1(ptr: np.ndarray, ind: np.ndarray, dat: np.ndarray, r: int, c: int) -> float:
    """``_lookup`` of one column (a reason's single value: no one-element arrays)."""
    a, b = int(ptr[r]), int(ptr[r + 1])
    p = a + int(ind[a:b].searchsorted(c))
    return float(dat[p]) if p < b and int(ind[p]) == c else 0.0


_DAY_TEXT: dict[float, str] = {}


def _day_text(day: float) -> str:
    """``YYYY-MM-DD`` (UTC) of epoch ``day``s, memoised (the days of a model's window are few; a
    ``datetime`` + ``strftime`` per reason cost more than the rest of the reason)."""
    text = _DAY_TEXT.get(day)
    if text is None:
        if len(_DAY_TEXT) >= 65536:
            _DAY_TEXT.clear()
        text = _DAY_TEXT[day] = datetime.fromtimestamp(day * 86400.0, tz=UTC).strftime("%Y-%m-%d")
    return text


def _now_days(now, default: float) -> float:
    if now is None:
        return default
    if isinstance(now, (int, float, np.floating, np.integer)):
        return float(now) / 86400.0
    return float(ts_ns1(now)) / 86400e9


def room_counts(
    events: pd.DataFrame, stream_ids: np.ndarray, item_ids: np.ndarray, types: Iterable[str] = RANKER_ROOM_TYPES
) -> dict[str, sp.csr_matrix]:
    """Per type: stream x item event counts (what the room has seen in the window)."""
    out = {}
    ev = events[events["item_id"].notna() & events["stream_id"].notna()] if "stream_id" in events else events.iloc[:0]
    for t in types:
        e = ev[ev["type"] == t]
        s = _codes(e["stream_id"], stream_ids)[0] if len(e) else np.empty(0, np.int64)
        i = _codes(e["item_id"], item_ids)[0] if len(e) else np.empty(0, np.int64)
        ok = (s >= 0) & (i >= 0)
        M = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (s[ok], i[ok])), shape=(len(stream_ids), len(item_ids)))
        M.sort_indices()
        out[t] = M
    return out


#: a sparse score part: (sorted item positions, scores, top source per item or None for a dense B)
_Part = tuple[np.ndarray, np.ndarray, np.ndarray | None]
_Counts = tuple[np.ndarray, np.ndarray]  # (sorted item positions, counts)
#: a room: purchases, clicks so far, total orders, the recent windows (orders, clicks, impressions)
_RoomVectors = tuple[_Counts, _Counts, float, tuple[_Counts, _Counts, _Counts]]


def _stream_ids(events: pd.DataFrame) -> np.ndarray:
    """The streams named in ``events``, sorted as strings (a categorical column: its used categories)."""
    if "stream_id" not in events:
        return np.empty(0, dtype="<U1")
    col = events["stream_id"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        names = _category_strings(col.cat.categories)[unique(codes[codes >= 0])]
    else:
        names = col.dropna().astype(str).unique()
    return np.asarray(sorted(set(names.tolist())), dtype=str)


def _on_cand(part: _Part | None, cand: np.ndarray, n_items: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A score part on the candidates, max-normalised and clipped at 0, and each candidate's source
    (-1: none; ``None`` for a dense B or a part without sources)."""
    if part is None:
        return None, None
    n = cand.size
    cc, sc, src = part[0], np.asarray(part[1], dtype=np.float64), part[2]
    m = float(sc.max()) if sc.size else 0.0
    v = np.zeros(n)
    s = np.full(n, -1, dtype=np.int64)
    if cc.size == n_items and np.array_equal(cc, np.arange(n_items)):  # dense B
        v = sc[cand]
        s_ = None
    else:
        p = np.searchsorted(cc, cand)
        p = np.minimum(p, max(cc.size - 1, 0))
        hit = (cc[p] == cand) if cc.size else np.zeros(n, bool)
        v[hit] = sc[p[hit]]
        s_ = src
        if src is not None:
            s[hit] = np.asarray(src)[p[hit]]
    v = v / m if m > 0 else np.zeros(n)
    return np.maximum(v, 0.0), (s if s_ is not None else None)


class RoomRanker:
    """Fitted by ``shared.reco.recipe.fit_recipe``; ``recommend`` is what the recommend service calls."""

    # the fitted state (``fit_state`` / ``from_arrays``); serving lookups are derived by ``_build``
    reference_day: float  # epoch days of the reference time
    buy_count_: sp.csr_matrix  # viewer x item purchase occasions
    buy_last_: sp.csr_matrix  # viewer x item day of the last purchase
    repeat_: RepeatStats
    recent_buyers_: np.ndarray  # per item: buyers in the last 7 days
    cart_: sp.csr_matrix  # viewer x item decayed carts
    click_: sp.csr_matrix  # viewer x item decayed clicks
    touch_last_: sp.csr_matrix  # viewer x item day of the last touch
    room_stream_ids_: np.ndarray
    room_: dict[str, sp.csr_matrix]  # per RANKER_ROOM_TYPES type: stream x item counts
    _cat_code: np.ndarray | None
    _logprice: np.ndarray | None

    def __init__(
        self,
        base: HybridRecommender,
        *,
        cf_top: int = 100,
        content_top: int = 50,
        pop_top: int = 100,
        room_top: int = 50,
        max_history: int = 200,
        max_allowed: int = 1000,
    ):
        self.base = base
        self.cf_top, self.content_top, self.pop_top, self.room_top = cf_top, content_top, pop_top, room_top
        self.max_history = max_history
        self.max_allowed = max_allowed  # showcases above this are ranked on (pool ∩ showcase) + its bestsellers
        self.heads: dict[str, dict] = {h: _head(PRIOR_WEIGHTS) for h in HEADS}
        self.always_filter_seen = False
        self.ranker_info: dict[str, Any] = {"kind": "prior"}

    # ------------------------------------------------------------------ state
    @classmethod
    def fit_state(
        cls,
        events: pd.DataFrame,
        items: pd.DataFrame | None,
        reference_time,
        *,
        base_params: dict,
        item_ids=None,
        content=None,
        half_life_days: float = 30.0,
        cf_neighbours=None,
        **kw,
    ) -> RoomRanker:
        """Everything but the ranker weights, from the events up to ``reference_time`` (``cf_neighbours``:
        the CF part's precomputed top-N cosine matrix, ``HybridRecommender.fit``)."""
        base = HybridRecommender(**base_params).fit_events(
            events,
            items,
            half_life_days=half_life_days,
            reference_time=reference_time,
            item_ids=item_ids,
            content=content,
            cf_neighbours=cf_neighbours,
        )
        self = cls(base, **kw)
        self.reference_day = float(ts_days(pd.Series([pd.Timestamp(reference_time)]))[0])
        uids, iids = base.user_ids_, base.item_ids_
        occ = purchase_occasions(events, uids, iids)
        self.buy_count_, self.buy_last_ = occ.pairs(len(uids), len(iids))
        self.repeat_ = RepeatStats.fit(occ, len(iids), base.category_)
        recent = occ.day >= self.reference_day - 7.0
        self.recent_buyers_ = np.bincount(occ.item[recent], minlength=len(iids)).astype(np.float32)
        # one type each: its rows only (the others weigh 0; the index space and the reference are given)
        sliced = reference_time is not None and "type" in events
        cols = [c for c in ("user_id", "item_id", "type", "ts") if c in events]  # what build_user_items reads
        typed = (lambda t: events.loc[(events["type"] == t).to_numpy(), cols]) if sliced else (lambda t: events)
        self.cart_, self.click_ = (
            build_user_items(
                typed(t),
                {t: 1.0},
                half_life_days,
                reference_time,
                user_ids=uids,
                item_ids=iids,
                dtype=np.float32,
                actions=False,
            ).matrix
            for t in (ADD_TO_CART, PRODUCT_CLICK)
        )
        self.touch_last_ = self._last_touch(events, uids, iids)
        W = base.cf_model_.W_
        # what each CF neighbour pair is in the data (bought / viewed together, or model-only): reasons
        # (computed when first read: by the reasons or by ``to_arrays``; a state fitted only for the
        # recipe's label-window features never reads it, and the pair counts cost seconds at 10M events)
        self._relation_pending = (
            (lambda: pair_relations(W, self.buy_count_, self.touch_last_)) if W is not None else None
        )
        sids = _stream_ids(events)
        self.room_stream_ids_ = str_array(sids)
        self.room_ = room_counts(events, self.room_stream_ids_, iids)
        self._build()
        return self

    #: relation code per stored CF pair (``shared.reco.relations``), aligned with the CF part's ``W_.data``
    _cf_relation: np.ndarray | None = None
    _relation_pending: Callable[[], np.ndarray] | None = None

    @property
    def cf_relation_(self) -> np.ndarray | None:
        if self._relation_pending is not None:
            self._cf_relation, self._relation_pending = self._relation_pending(), None
        return self._cf_relation

    @cf_relation_.setter
    def cf_relation_(self, value: np.ndarray | None) -> None:
        self._cf_relation, self._relation_pending = value, None

    @staticmethod
    def _last_touch(events, uids, iids) -> sp.csr_matrix:
        """Each (viewer, item) pair's latest day among the positive touches (CSR, rows' items ascending)."""
        keep = (events["type"].isin(POSITIVE_TYPES) & events["item_id"].notna() & events["user_id"].notna()).to_numpy()
        ev = events.loc[keep, ["user_id", "item_id", "ts"]]  # the three columns read, not the whole frame
        u = _codes(ev["user_id"], uids)[0]
        i = _codes(ev["item_id"], iids)[0]
        d = ts_days(ev["ts"]) if len(ev) else np.empty(0)
        ok = (u >= 0) & (i >= 0)
        d = np.asarray(d, dtype=np.float64)
        if not ok.all():
            u, i, d = u[ok], i[ok], d[ok]
        shape = (len(uids), len(iids))
        if not u.size:
            return sp.csr_matrix(shape, dtype=np.float64)
        # one compiled pass (shared.reco._kernels.last_touch_build; a 3-key lexsort took ~2 s of the gate's
        # candidate fit at 10M events, a sort of packed keys then ~0.8 s)
        indptr, indices, last = last_touch_build(u, i, d, len(uids), len(iids))
        return sp.csr_matrix((last, indices, indptr), shape=shape)

    @property
    def user_items_(self):
        """The viewer x item affinity matrix (the hybrid's): what a viewer's history is."""
        return self.base.user_items_

    def _build(self) -> None:
        b = self.base
        self.item_ids_ = b.item_ids_
        self.user_ids_ = b.user_ids_
        self.n_items_ = b.n_items_
        self._room_index = {s: k for k, s in enumerate(self.room_stream_ids_.tolist())}
        self._room_cache: dict = {}  # stream id -> its room vectors from the model's counts
        self._room_tops: dict = {}  # stream id -> its best room_top purchases + clicks (candidates)
        self._near_memo: dict = {}  # near-duplicate threshold -> {item: its near duplicates} (_diverse)
        self._gpop = np.asarray(b.popularity_.global_, dtype=np.float64)
        self._gpop_order = b._gpop_order
        self._gpop_rank = np.empty(self.n_items_, dtype=np.int64)  # 1-based rank in the popularity order
        self._gpop_rank[np.asarray(self._gpop_order, dtype=np.int64)] = np.arange(1, self.n_items_ + 1)
        self._csc: tuple[sp.csc_matrix, sp.csc_matrix] | None = None  # on-demand pair counts (lazy)
        cat = b.category_
        if cat is not None:
            _, self._cat_code = np.unique(np.asarray(cat).astype(str), return_inverse=True)
            self._cat_code = self._cat_code.astype(np.int64)
            self._n_cat = int(self._cat_code.max()) + 1 if self._cat_code.size else 0
        else:
            self._cat_code, self._n_cat = None, 0
        pr = b.price_
        self._logprice = (
            None
            if pr is None
            else np.where(np.asarray(pr) > 0, np.log(np.maximum(np.asarray(pr, float), 1e-9)), np.nan)
        )
        for m in (self.buy_count_, self.buy_last_, self.cart_, self.click_, self.touch_last_):
            m.sort_indices()
        nb = np.log1p(np.asarray(self.repeat_.buyers, dtype=np.float64))
        self._poplog = nb / nb.max() if nb.size and nb.max() > 0 else np.zeros(self.n_items_)
        nr = np.log1p(np.asarray(self.recent_buyers_, dtype=np.float64))
        self._poprecent = nr / nr.max() if nr.size and nr.max() > 0 else np.zeros(self.n_items_)
        # per viewer: share of purchase occasions that repeated an earlier one, shrunk to the global share
        C = self.buy_count_
        occ = np.asarray(C.sum(axis=1)).ravel()
        rep = occ - np.diff(C.indptr)
        g = float(rep.sum() / occ.sum()) if occ.sum() else 0.0
        self._user_repeat = (rep + 3.0 * g) / (occ + 3.0)
        # the request kernel's inputs (derived, not serialised): one float array per item, category codes
        n = self.n_items_
        nan = np.full(n, np.nan)
        cols = {
            "pop": self._gpop,
            "pop_log": self._poplog,
            "pop_recent": self._poprecent,
            "rebuy_rate": np.asarray(self.repeat_.rate, dtype=np.float64),
            "rebuy_interval": np.asarray(self.repeat_.interval, dtype=np.float64),
            "log_price": nan if self._logprice is None else np.asarray(self._logprice, dtype=np.float64),
            "price": nan if b.price_ is None else np.asarray(b.price_, dtype=np.float64),
        }
        self._item_f = np.ascontiguousarray(np.column_stack([cols[c] for c in ITEM_COLS]), dtype=np.float64)
        self._cat_of = (
            {str(c_): k for k, c_ in enumerate(np.unique(np.asarray(cat).astype(str)).tolist())}
            if cat is not None
            else {}
        )
        self._cat_code_k = self._cat_code if self._cat_code is not None else np.zeros(n, dtype=np.int64)
        self._e_i = np.empty(0, dtype=np.int64)
        self._e_f = np.empty(0, dtype=np.float64)
        self.set_heads(self.heads, self.ranker_info)

    def set_heads(self, heads: Mapping[str, Mapping], info=None):
        """``heads[name] = {"weights": {feature: w}, "mu": [...], "sigma": [...], "bias": b}`` for the
        ``room`` head (a stream or a showcase is given) and the ``catalogue`` head (neither)."""
        self.heads = {h: _head(**heads[h]) if "weights" in heads[h] else _head(heads[h]) for h in HEADS}
        self._scale = {
            h: (
                np.array([hd["weights"][f] for f in FEATURES]) / np.asarray(hd["sigma"]),
                float(
                    hd["bias"]
                    - np.sum(
                        np.array([hd["weights"][f] for f in FEATURES]) * np.asarray(hd["mu"]) / np.asarray(hd["sigma"])
                    )
                ),
            )
            for h, hd in self.heads.items()
        }
        self.ranker_info = dict(info or {})
        return self

    # --------------------------------------------------------------- features
    def seen_items(self, row: int) -> np.ndarray:
        """Item positions the viewer touched (any weighted action, click, cart or purchase)."""
        ip, ix, _ = self.base._ui
        return unique(
            np.concatenate([ix[ip[row] : ip[row + 1]].astype(np.int64), self.touch_last_[row].indices.astype(np.int64)])
        )

    def _user_row(self, user_id):
        return self.base._user_row(user_id)

    def _history(self, row):
        """(item idx, decayed weight) of the user's strongest ``max_history`` items."""
        ip, ix, dx = self.base._ui
        a0, a1 = ip[row], ip[row + 1]
        h_idx, h_w = ix[a0:a1].astype(np.int64), dx[a0:a1].astype(np.float64)
        if h_idx.size > self.max_history:
            keep = _best(h_w, self.max_history)
            h_idx, h_w = h_idx[keep], h_w[keep]
        pos = h_w > 0
        return h_idx[pos], h_w[pos]

    def _room_vectors(self, stream_id, room):
        """Room counts as sorted ``(idx, n)`` arrays for purchases and clicks so far + total orders + the
        recent windows (orders 10 min, clicks 5 min, impressions 5 min); None without a stream. ``room``
        (item id -> n dicts, keys ``purchase``, ``product_click``, ``purchase@10m``, ``product_click@5m``,
        ``product_impression@5m``) wins over the model's own counts of ``stream_id``."""
        if stream_id is None and room is None:
            return None
        if room is not None:

            def conv(d):
                if d is None or len(d) == 0:
                    return np.empty(0, np.int64), np.empty(0)
                if isinstance(d, tuple) and len(d) == 3 and d[0] == "idx":  # ("idx", sorted positions, counts)
                    return np.asarray(d[1], dtype=np.int64), np.asarray(d[2], dtype=np.float64)
                if isinstance(d, tuple):  # (item ids, counts) arrays
                    keys, v = list(d[0]), np.asarray(d[1], dtype=np.float64)
                else:
                    keys = list(d.keys())
                    v = np.fromiter((float(x) for x in d.values()), dtype=np.float64, count=len(d))
                pos = self.base._item_pos  # a dict lookup per key: ~3-25x cheaper than Index.get_indexer
                j = np.fromiter((pos.get(str(x), -1) for x in keys), dtype=np.int64, count=len(keys))
                ok = j >= 0
                u, inv = np.unique(j[ok], return_inverse=True)
                return u.astype(np.int64), np.bincount(inv, weights=v[ok], minlength=u.size)

            buy, clk = conv(room.get(PURCHASE)), conv(room.get(PRODUCT_CLICK))
            now = tuple(conv(room.get(k)) for k in ROOM_RECENT_KEYS)
        else:
            hit = self._room_cache.get(stream_id)
            if hit is not None:  # the model's own counts of a stream do not change: built once
                return hit
            k = self._room_index.get(str(stream_id))
            e = (np.empty(0, np.int64), np.empty(0))
            now = (e, e, e)  # the model's own counts have no "now" (the live layer's counters will)
            if k is None:
                return e, e, 0.0, now
            B, C = self.room_[PURCHASE], self.room_[PRODUCT_CLICK]
            buy = (
                B.indices[B.indptr[k] : B.indptr[k + 1]].astype(np.int64),
                B.data[B.indptr[k] : B.indptr[k + 1]].astype(float),
            )
            clk = (
                C.indices[C.indptr[k] : C.indptr[k + 1]].astype(np.int64),
                C.data[C.indptr[k] : C.indptr[k + 1]].astype(float),
            )
            if len(self._room_cache) < 4096:
                self._room_cache[stream_id] = (buy, clk, float(buy[1].sum()), now)
        return buy, clk, float(buy[1].sum()), now

    def candidates_and_features(
        self,
        user_id=None,
        *,
        stream_id=None,
        context_items=None,
        allowed_idx=None,
        room=None,
        now=None,
        pool: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The candidate items and their feature matrix for one request.

        Returns ``(cand, F, info)``: ``cand`` sorted unique item positions, ``F`` ``(len(cand), len(FEATURES))``,
        ``info`` the per-candidate sources named by reasons (cf / content / context source item, purchase
        count / last day, strongest history action) and the strategy.

        Steps: sources (history, context, room) -> their sparse score parts -> candidates -> features
        on the candidates (neighbours, own history, popularity, room) -> strategy."""
        now_d = max(_now_days(now, self.reference_day), 0.0)
        row = self._user_row(user_id)
        h_idx = h_w = np.empty(0, dtype=np.int64)
        if row is not None:
            h_idx, h_w = self._history(row)
        c_idx = self.base._item_idx_fast(context_items) if context_items else np.empty(0, dtype=np.int64)
        rv = self._room_vectors(stream_id, room)
        parts = self._source_parts(h_idx, h_w, c_idx)
        cand = self._candidates(parts, h_idx, c_idx, rv, allowed_idx, pool)
        F = np.zeros((cand.size, len(FEATURES)))
        head = "room" if (stream_id is not None or allowed_idx is not None or room is not None) else "catalogue"
        info: dict[str, Any] = {"now_day": now_d, "stream_id": stream_id, "head": head}
        if cand.size == 0:
            return cand, F, info
        self._neighbour_features(F, info, parts, cand, h_idx)
        info.update(hist_w=h_w, ctx_idx=c_idx)
        if row is not None:
            self._own_features(F, info, row, cand, now_d, h_idx, h_w)
        F[:, _F["pop"]] = self._gpop[cand]
        F[:, _F["pop_log"]] = self._poplog[cand]
        F[:, _F["pop_recent"]] = self._poprecent[cand]
        if rv is not None:
            self._room_features(F, rv, cand)
        info["strategy"] = (
            "personal"
            if h_idx.size
            else "context"
            if c_idx.size
            else "stream"
            if rv is not None and (rv[0][0].size or rv[1][0].size)
            else "global"
        )
        info["row"] = row
        info["head"] = head
        return cand, F, info

    def _source_parts(self, h_idx: np.ndarray, h_w: np.ndarray, c_idx: np.ndarray) -> dict[str, _Part]:
        """Sparse score parts ``(sorted items, scores, top source or None)`` of the history (``cf``,
        ``content``) and of the context items (``ctx_cf``, ``ctx_ct``)."""
        b = self.base
        parts: dict[str, _Part] = {}
        if h_idx.size:
            cm, tm = b.cf_model_, b.content_model_
            if (
                HAVE_NUMBA
                and cm.B_ is None
                and cm.W_ is not None
                and (tm is None or (tm.B_ is None and tm.W_ is not None and tm.W_.shape == cm.W_.shape))
            ):
                # one compiled pass for both neighbour matrices (aligned candidates)
                cc, v1, s1, v2, s2 = pair_scores(cm.W_, tm.W_ if tm is not None else None, h_idx, h_w)
                parts["cf"] = (cc, v1, s1)
                if tm is not None:
                    parts["content"] = (cc, v2, s2)
            else:
                parts["cf"] = cm.score_one_sources(h_idx, h_w)[:3]
                if tm is not None:
                    parts["content"] = tm.score_one_sources(h_idx, h_w)[:3]
        if c_idx.size:
            cw = np.ones(c_idx.size)
            parts["ctx_cf"] = b.cf_model_.score_one_sources(c_idx, cw)[:3]
            if b.content_model_ is not None:
                parts["ctx_ct"] = b.content_model_.score_one_sources(c_idx, cw)[:3]
        return parts

    def _candidates(
        self,
        parts: dict[str, _Part],
        h_idx: np.ndarray,
        c_idx: np.ndarray,
        rv: _RoomVectors | None,
        allowed_idx,
        pool: bool,
    ) -> np.ndarray:
        """The showcase, else the pool of every source's best (a huge showcase: pool ∩ it + its
        bestsellers); ``pool=False``: every item."""
        if allowed_idx is not None and np.asarray(allowed_idx).size <= self.max_allowed:
            return unique(np.asarray(allowed_idx, dtype=np.int64))
        if not pool:
            return np.arange(self.n_items_, dtype=np.int64)
        pieces = [h_idx, c_idx, self._gpop_order[: self.pop_top]]
        for name, top in (
            ("cf", self.cf_top),
            ("content", self.content_top),
            ("ctx_cf", self.cf_top),
            ("ctx_ct", self.content_top),
        ):
            if name in parts:
                cc, sc = parts[name][0], np.asarray(parts[name][1])
                if cc.size > top:
                    cc = cc[_best(sc, top)]
                pieces.append(np.asarray(cc, dtype=np.int64))
        if rv is not None:
            for idx, val in rv[:2]:
                pieces.append(
                    idx[_best(np.asarray(val, dtype=np.float64), self.room_top)] if idx.size > self.room_top else idx
                )
        cand = unique(np.concatenate(pieces))
        if allowed_idx is not None:  # a showcase larger than max_allowed
            al = np.asarray(allowed_idx, dtype=np.int64)  # sorted, unique (the allowed_idx contract)
            inside = cand[al[np.minimum(np.searchsorted(al, cand), al.size - 1)] == cand]
            best = _best(self._gpop[al], self.pop_top) if al.size > self.pop_top else np.arange(al.size)
            cand = np.union1d(inside, al[best])
        return cand

    def _neighbour_features(
        self, F: np.ndarray, info: dict[str, Any], parts: dict[str, _Part], cand: np.ndarray, h_idx: np.ndarray
    ) -> None:
        """``cf``, ``content``, ``context`` features (the parts on the candidates) and their sources."""
        n_items = self.n_items_
        cf, cf_src = _on_cand(parts.get("cf"), cand, n_items)
        ct, ct_src = _on_cand(parts.get("content"), cand, n_items)
        xc, xc_src = _on_cand(parts.get("ctx_cf"), cand, n_items)
        xt, xt_src = _on_cand(parts.get("ctx_ct"), cand, n_items)
        if cf is not None:
            F[:, _F["cf"]] = cf
        if ct is not None:
            F[:, _F["content"]] = ct
        if xc is not None or xt is not None:
            F[:, _F["context"]] = 0.5 * ((xc if xc is not None else 0.0) + (xt if xt is not None else 0.0))
        info.update(
            cf_src=cf_src,
            content_src=ct_src,
            ctx_src=xc_src if xc_src is not None else xt_src,
            ctx_src2=xt_src,
            ctx_cf_src=xc_src,
            ctx_cf=xc,
            ctx_ct=xt,
            hist_idx=h_idx,
        )

    def _own_features(
        self,
        F: np.ndarray,
        info: dict[str, Any],
        row: int,
        cand: np.ndarray,
        now_d: float,
        h_idx: np.ndarray,
        h_w: np.ndarray,
    ) -> None:
        """The viewer's own history on the candidates: repeat purchase, touches, taste."""
        bc = self.buy_count_
        cnt = _lookup(bc.indptr, bc.indices, bc.data, row, cand)
        bl = self.buy_last_
        last = _lookup(bl.indptr, bl.indices, bl.data, row, cand)
        bought = cnt > 0
        rate = self.repeat_.rate[cand].astype(np.float64)
        tau = np.maximum(self.repeat_.interval[cand].astype(np.float64), 0.5)
        gap = np.maximum(now_d - last, 0.0)
        x = np.maximum(gap, 0.25) / tau
        F[:, _F["bought"]] = bought
        F[:, _F["buy_count"]] = np.where(bought, rate * np.log1p(cnt), 0.0)
        F[:, _F["rebuy_due"]] = np.where(bought, rate * np.exp(-(np.log(x) ** 2) / (2 * 0.36)), 0.0)
        F[:, _F["bought_durable"]] = np.where(bought, 1.0 - rate, 0.0)
        F[:, _F["bought_fresh"]] = np.where(bought, np.maximum(0.0, 1.0 - x) ** 2, 0.0)
        F[:, _F["buy_freq"]] = np.log1p(cnt)
        F[:, _F["buy_recency"]] = np.where(bought, np.exp(-gap / 30.0), 0.0)
        F[:, _F["user_repeat"]] = np.where(bought, self._user_repeat[row], 0.0)
        ca, cl, tl = self.cart_, self.click_, self.touch_last_
        F[:, _F["cart"]] = np.log1p(_lookup(ca.indptr, ca.indices, ca.data, row, cand))
        F[:, _F["click"]] = np.log1p(_lookup(cl.indptr, cl.indices, cl.data, row, cand))
        tlast = _lookup(tl.indptr, tl.indices, tl.data, row, cand)
        F[:, _F["touch_recent"]] = np.where(tlast > 0, np.exp(-np.maximum(now_d - tlast, 0.0) / 2.0), 0.0)
        info.update(buy_count=cnt, buy_last=last)
        # taste: category share and price fit from the history
        if self._cat_code is not None and h_idx.size:
            share = np.bincount(self._cat_code[h_idx], weights=h_w, minlength=self._n_cat)
            share = share / share.sum() if share.sum() > 0 else share
            F[:, _F["category"]] = share[self._cat_code[cand]]
        if self._logprice is not None and h_idx.size:
            lp = self._logprice[h_idx]
            ok = np.isfinite(lp)
            if ok.any():
                mu = float(np.average(lp[ok], weights=h_w[ok]))
                lc = self._logprice[cand]
                F[:, _F["price"]] = np.where(np.isfinite(lc), np.exp(-np.abs(lc - mu)), 0.0)

    @staticmethod
    def _room_features(F: np.ndarray, rv: _RoomVectors, cand: np.ndarray) -> None:
        """The room's counts so far and its recent windows on the candidates."""
        buy, clk, tot, (buy_now, clk_now, shown_now) = rv
        if buy_now[0].size:
            F[:, _F["room_buy_now"]] = np.log1p(_at(*buy_now, cand))
        if clk_now[0].size:
            F[:, _F["room_click_now"]] = np.log1p(_at(*clk_now, cand))
        if shown_now[0].size:
            F[:, _F["room_shown_now"]] = _at(*shown_now, cand) / max(float(shown_now[1].sum()), 1.0)
        if buy[0].size:
            rb = _at(*buy, cand)
            F[:, _F["room_buy"]] = np.log1p(rb)
            F[:, _F["room_share"]] = rb / max(tot, 1.0)
        if clk[0].size:
            F[:, _F["room_click"]] = np.log1p(_at(*clk, cand))

    def contributions(self, F: np.ndarray, head: str = "room") -> np.ndarray:
        """Per-feature contributions ``w_f x_f / σ_f`` (0 for a feature that is 0; the ``μ`` terms are in
        ``intercept``): ``score = intercept + Σ_f contributions``."""
        return F * self._scale[head][0]

    def intercept(self, head: str = "room") -> float:
        return self._scale[head][1]

    # -------------------------------------------------------------- recommend
    def recommend(
        self,
        user_id=None,
        N: int = 10,
        *,
        stream_id=None,
        context_items=None,
        allowed_items=None,
        allowed_idx=None,
        room=None,
        now=None,
        repeats: bool | None = None,
        exclude_purchased: bool = False,
        filter_seen: bool = False,
        exclude_items=None,
        category=None,
        price_range=None,
        max_per_category: int | None = None,
        near_duplicate: float | None = None,
        reasons: bool = True,
    ) -> dict[str, Any]:
        """Top-``N`` items for a viewer (or an anonymous request with a stream / context).

        ``room``: the stream's counts so far ``{"purchase": {item: n}, "product_click": {item: n}}``
        (default: what the model saw of ``stream_id`` in its window). ``now``: the request time (epoch
        seconds or a timestamp; default the model's reference time). ``repeats=False`` is
        ``filter_seen=True``: nothing the viewer touched before. ``exclude_purchased`` drops bought items.
        Diversity (default off here; the service passes its settings): ``max_per_category`` items of one
        category at most, ``near_duplicate`` a text cosine at or above which an item is not listed after
        one it nearly duplicates (``_diverse``; too few left: the skipped ones fill the end).
        ``reasons=False``: the same items, scores and parts, each ``reason`` None (an offline ranking
        that reads only the order: the gate's, ``shared.reco.protocol.RecommendRanker``).
        Returns ``{"strategy", "items": [{"item_id", "score", "parts": {group: contribution}, "reason"}]}``."""
        if repeats is False or self.always_filter_seen:  # always_filter_seen: the v1 habit, kept as a recipe knob
            filter_seen = True
        if allowed_items is not None:
            allowed_idx = self.allowed_index(allowed_items)
        filters = dict(
            filter_seen=filter_seen,
            exclude_purchased=exclude_purchased,
            exclude_items=exclude_items,
            category=category,
            price_range=price_range,
        )
        div = (max_per_category, near_duplicate)
        if self.use_kernel and self.kernel_ready():
            out = self._recommend_kernel(
                user_id, N, stream_id, context_items, allowed_idx, room, now, filters, div, reasons=reasons
            )
            if out is not None:
                return out
        return self._recommend_reference(
            user_id, N, stream_id, context_items, allowed_idx, room, now, filters, div, reasons=reasons
        )

    #: the keys of a ``room`` dict ``recommend`` reads (the others are ignored)
    room_keys: tuple[str, ...] = (PURCHASE, PRODUCT_CLICK, *ROOM_RECENT_KEYS)

    def item_positions(self, ids) -> np.ndarray:
        """Item ids -> model positions, -1 for an unknown id (order and length kept; vectorised: for
        many ids at once, e.g. every item id of an evaluation split)."""
        return np.asarray(self.base._item_index.get_indexer(np.asarray(ids, dtype=object)), dtype=np.int64)

    def allowed_index(self, allowed_items) -> np.ndarray:
        """Allowed item ids -> the sorted unique item positions ``recommend(allowed_items=)`` ranks on
        (unknown ids dropped): ``recommend(allowed_idx=allowed_index(ids))`` is ``recommend(allowed_items=ids)``
        (the evaluation converts each showcase once, not once per query)."""
        return unique(self.base._item_idx_fast(list(allowed_items)))

    def _recommend_reference(
        self, user_id, N, stream_id, context_items, allowed_idx, room, now, filters, div=(None, None), reasons=True
    ):
        """``recommend`` in numpy over ``candidates_and_features`` (the features training reads): the
        reference the kernel path is tested against, and the path without numba / with a dense B."""
        filter_seen = filters["filter_seen"]
        cand, F, info = self.candidates_and_features(
            user_id, stream_id=stream_id, context_items=context_items, allowed_idx=allowed_idx, room=room, now=now
        )
        strategy = info.get("strategy", "global")
        if cand.size == 0 or N <= 0:
            return {"strategy": strategy, "items": []}
        keep = self._keep(cand, info, **filters)
        if allowed_idx is None and keep.sum() < N:  # a narrow filter: widen with the popularity order
            extra = self._gpop_order[~np.isin(self._gpop_order, cand)][: max(4 * N, 200)]
            if extra.size:
                head = info["head"]
                cand, F, info = self.candidates_and_features(
                    user_id,
                    stream_id=stream_id,
                    context_items=context_items,
                    allowed_idx=np.union1d(cand, extra),
                    room=room,
                    now=now,
                )
                info["head"] = head  # still the request's question (catalogue / room)
                keep = self._keep(cand, info, **filters)
        return self._top(
            cand,
            F,
            info,
            keep,
            N,
            new_only=filter_seen,
            max_per_category=div[0],
            near_duplicate=div[1],
            reasons=reasons,
        )

    # ------------------------------------------------------------ the request kernel
    use_kernel = True  # False: every request on the numpy reference path (tests, benches' anchor)
    #: ``recommend(reasons=False)`` is understood (an offline ranking skips the reasons' cost)
    ranks_without_reasons = True

    def kernel_usable(self) -> bool:
        """The compiled request path applies: numba, and sparse neighbour matrices (a dense EASE ``B``
        is scored by the reference path)."""
        b = self.base
        cm, tm = b.cf_model_, b.content_model_
        return (
            HAVE_NUMBA
            and cm.B_ is None
            and cm.W_ is not None
            and (tm is None or (tm.B_ is None and tm.W_ is not None and tm.W_.shape == cm.W_.shape))
        )

    compile_in_background = False  # the recommend service's first model: answer at once, compile aside
    _kernel_state: bool | str | None = None  # None: not tried; "compiling"; True: ready; False: not usable

    def kernel_ready(self) -> bool:
        """True once the request kernel is compiled (or loaded from numba's cache) for this model's
        array types. The first request compiles it, or with ``compile_in_background`` (a cold serving
        instance) one background thread does while requests take the reference path."""
        ready = self._kernel_state
        if ready is True:
            return True
        if ready is None and self.kernel_usable():
            if not self.compile_in_background:
                return self.warm_kernel()
            import threading

            self._kernel_state = "compiling"
            threading.Thread(target=self.warm_kernel, name="rank-kernel-compile", daemon=True).start()
        return False

    def warm_kernel(self) -> bool:
        """Compile / load the request kernel for this model's types now (a request without user: the
        same signature as every request). False when the kernel path does not apply."""
        if not self.kernel_usable():
            self._kernel_state = False
            return False
        self._recommend_kernel(None, 1, None, None, None, None, None, _NO_FILTERS)
        self._kernel_state = True
        return True

    def _recommend_kernel(
        self, user_id, N, stream_id, context_items, allowed_idx, room, now, filters, div=(None, None), reasons=True
    ):
        """``recommend`` through ``shared.reco._kernels.rank_kernel``: the same candidates, features,
        score, filters and top-N as the reference path; Python builds only the N answers' parts and
        reasons. ``None``: the reference path must answer (a narrow filter that widens the pool)."""
        b = self.base
        now_d = max(_now_days(now, self.reference_day), 0.0)
        row = self._user_row(user_id)
        e_i, e_f = self._e_i, self._e_f
        ip, ix, dx = b._ui  # the viewer's whole row: the kernel keeps the strongest max_history
        a0, a1 = (int(ip[row]), int(ip[row + 1])) if row is not None else (0, 0)
        c_idx = b._item_idx_fast(context_items) if context_items else e_i
        rv = self._room_vectors(stream_id, room)
        cm, tm = b.cf_model_, b.content_model_
        W1 = cm.W_
        n = self.n_items_
        # the context items' parts: their own normalisation (few sources: one small kernel call each)
        x_c = x_s = t_c = t_s = e_i
        x_v = t_v = e_f
        if c_idx.size:
            ones = np.ones(c_idx.size)
            x_c, x_v, x_s, _ = user_scores(W1, c_idx, ones)
            if tm is not None:
                t_c, t_v, t_s, _ = user_scores(tm.W_, c_idx, ones)
        if allowed_idx is None:
            allowed, mode = e_i, 0
        else:
            allowed = np.asarray(allowed_idx, dtype=np.int64)
            if allowed.size and (allowed.min() < 0 or allowed.max() >= n):
                raise IndexError("allowed item position out of range")
            if allowed.size <= self.max_allowed:
                mode = 1
            else:
                mode = 2
                allowed = unique(allowed)
        head = "room" if (stream_id is not None or allowed_idx is not None or room is not None) else "catalogue"
        filter_seen = bool(filters["filter_seen"])
        hd = head + ("_new" if filter_seen else "")
        scale, intercept = self._scale[hd]
        excl = e_i
        if filters["exclude_items"] is not None:
            excl = unique(b._item_idx_fast(list(filters["exclude_items"])))
        category = filters["category"]
        use_cat = category is not None and b.category_ is not None
        cat_ok = np.zeros(max(self._n_cat, 1), dtype=np.bool_)
        if use_cat:
            for c_ in [category] if isinstance(category, str) else list(category):
                k_ = self._cat_of.get(str(c_))
                if k_ is not None:
                    cat_ok[k_] = True
        pr = filters["price_range"]
        lo, hi = pr if pr is not None and b.price_ is not None else (None, None)
        has_room = rv is not None
        if has_room:
            (rb_i, rb_v), (rc_i, rc_v), tot, ((bn_i, bn_v), (cn_i, cn_v), (sn_i, sn_v)) = rv
            tops = self._room_tops.get(stream_id) if room is None else None
            if tops is None:  # the room's best room_top purchases and clicks (candidates)
                tops = np.concatenate(
                    [
                        i_[_best(np.asarray(v_, dtype=np.float64), self.room_top)] if i_.size > self.room_top else i_
                        for i_, v_ in ((rb_i, rb_v), (rc_i, rc_v))
                    ]
                ).astype(np.int64)
                if room is None and len(self._room_tops) < 4096:
                    self._room_tops[stream_id] = tops
        else:
            tops = e_i
            rb_i = rc_i = bn_i = cn_i = sn_i = e_i
            rb_v = rc_v = bn_v = cn_v = sn_v = e_f
            tot = 0.0
        r_ = -1 if row is None else int(row)
        # the diversity control skips items: the kernel hands over a longer ranked list to choose from
        active = bool(div[0]) or bool(div[1] and div[1] <= self._content_max())
        n_top = min(max(4 * int(N), int(N) + 40), n) if active else int(N)
        ui, bc, bl, ca, cl, tl = b._ui, self.buy_count_, self.buy_last_, self.cart_, self.click_, self.touch_last_
        two = tm is not None
        W2 = tm.W_ if tm is not None else W1
        assert W1 is not None and W2 is not None  # kernel_usable: sparse neighbour matrices
        items, Ft, meta, src, n_keep, work, h_idx, h_w = rank_kernel(
            W1.indptr,
            W1.indices,
            W1.data,
            W2.indptr,
            W2.indices,
            W2.data,
            two,
            ix[a0:a1],
            dx[a0:a1],
            int(self.max_history),
            np.asarray(c_idx, dtype=np.int64),
            x_c,
            x_v,
            x_s,
            bool(c_idx.size),
            t_c,
            t_v,
            t_s,
            bool(c_idx.size and two),
            self._item_f,
            self._cat_code_k,
            int(self._n_cat),
            self._cat_code is not None,
            self._logprice is not None,
            self._gpop_order,
            int(self.pop_top),
            int(self.cf_top),
            int(self.content_top),
            int(self.room_top),
            row is not None,
            r_,
            float(now_d),
            float(self._user_repeat[row]) if row is not None else 0.0,
            ui[0],
            ui[1],
            bc.indptr,
            bc.indices,
            bc.data,
            bl.indptr,
            bl.indices,
            bl.data,
            ca.indptr,
            ca.indices,
            ca.data,
            cl.indptr,
            cl.indices,
            cl.data,
            tl.indptr,
            tl.indices,
            tl.data,
            has_room,
            np.asarray(rb_i, dtype=np.int64),
            np.asarray(rb_v, dtype=np.float64),
            np.asarray(rc_i, dtype=np.int64),
            np.asarray(rc_v, dtype=np.float64),
            tops,
            float(tot),
            np.asarray(bn_i, dtype=np.int64),
            np.asarray(bn_v, dtype=np.float64),
            np.asarray(cn_i, dtype=np.int64),
            np.asarray(cn_v, dtype=np.float64),
            np.asarray(sn_i, dtype=np.int64),
            np.asarray(sn_v, dtype=np.float64),
            allowed,
            mode,
            excl,
            filter_seen,
            bool(filters["exclude_purchased"]),
            cat_ok,
            use_cat,
            float(lo) if lo is not None else 0.0,
            float(hi) if hi is not None else 0.0,
            lo is not None,
            hi is not None,
            scale,
            float(intercept),
            max(int(n_top), 0),
            n=n,  # the scratch: a catalogue-size set from the kernel's free list
        )
        self.last_work = work
        strategy = (
            "personal"
            if h_idx.size
            else "context"
            if c_idx.size
            else "stream"
            if rv is not None and (rv[0][0].size or rv[1][0].size)
            else "global"
        )
        if int(work[2]) == 0:  # no candidate (as the reference: no strategy decided)
            return {"strategy": "global", "items": []}
        if N <= 0:
            return {"strategy": strategy, "items": []}
        if allowed_idx is None and n_keep < N:  # a narrow filter: the reference widens the pool
            return None
        info: dict[str, Any] = {
            "now_day": now_d,
            "stream_id": stream_id,
            "head": head,
            "strategy": strategy,
            "row": row,
            "buy_count": meta[:, 0],
            "buy_last": meta[:, 1],
            "cf_src": src[:, 0],
            "content_src": src[:, 1] if two else None,
            "ctx_src": src[:, 2] if c_idx.size else None,
            "ctx_src2": src[:, 3] if c_idx.size and two else None,
            "hist_idx": h_idx,
        }
        if not h_idx.size:
            info["cf_src"] = info["content_src"] = None
        # what the reasons read beside the kernel's sources: the context feature's two halves, weights
        xc, xc_src = _on_cand((x_c, x_v, x_s), items, n) if c_idx.size else (None, None)
        xt, _ = _on_cand((t_c, t_v, t_s), items, n) if c_idx.size and two else (None, None)
        info.update(ctx_cf=xc, ctx_ct=xt, ctx_cf_src=xc_src, hist_w=h_w, ctx_idx=c_idx)
        # None (a diversity pass short of items inside the heap): the reference path ranks them all
        return self._top(
            items,
            Ft,
            info,
            np.ones(items.size, dtype=bool),
            N,
            new_only=filter_seen,
            max_per_category=div[0],
            near_duplicate=div[1],
            more_exist=int(n_keep) > items.size,
            reasons=reasons,
        )

    def _keep(
        self,
        cand,
        info,
        *,
        filter_seen=False,
        exclude_purchased=False,
        exclude_items=None,
        category=None,
        price_range=None,
    ) -> np.ndarray:
        """The request's filters on the candidates (True = may be recommended)."""
        keep = np.ones(cand.size, dtype=bool)
        row = info.get("row")
        if row is not None and filter_seen:
            keep &= ~np.isin(cand, self.seen_items(row))
        if row is not None and exclude_purchased:
            keep &= ~(info["buy_count"] > 0)
        if exclude_items is not None:
            keep &= ~np.isin(cand, self.base._item_idx_fast(list(exclude_items)))
        if category is not None and self.base.category_ is not None:
            cats = [category] if isinstance(category, str) else list(category)
            keep &= np.isin(self.base.category_[cand], cats)
        if price_range is not None and self.base.price_ is not None:
            lo, hi = price_range
            p = np.asarray(self.base.price_)[cand]
            if lo is not None:
                keep &= p >= lo
            if hi is not None:
                keep &= p <= hi
        return keep

    def _top(
        self,
        cand,
        F,
        info,
        keep,
        N,
        new_only: bool = False,
        max_per_category: int | None = None,
        near_duplicate: float | None = None,
        more_exist: bool = False,
        reasons: bool = True,
    ):
        """The answer's N items (score desc, item asc; the diversity control) with parts and reasons
        (``reasons=False``: ``None`` each, their cost skipped). ``more_exist``: the candidates are a prefix of a longer ranked list (the kernel's heap), so a
        diversity pass that had to fill with skipped items returns ``None`` (the caller ranks them all)."""
        head = info.get("head", "room") + ("_new" if new_only else "")
        # contributions, scores, the ranked order and the listed rows' parts in two compiled calls that
        # hold the GIL (shared.reco._kernels.score_rank / top_rows: numpy's scores and order bit for bit)
        w, b = self._scale[head]
        C, score, ranked = score_rank(F, w, b, cand, keep)
        if ranked.size == 0:
            return {"strategy": info.get("strategy", "global"), "items": []}
        cap = int(max_per_category) if max_per_category and self._cat_code is not None else 0
        dup = near_duplicate if near_duplicate and near_duplicate <= self._content_max() else None
        if cap or dup:
            order, filled = self._diverse(ranked, cand, N, cap, dup)
            if filled and more_exist:
                return None
        else:
            order = ranked[:N]
        rows = top_rows(C, F, score, cand, order, _GROUP_OF, len(GROUPS))
        Co, _, P, _, s_o, c_o = rows
        parts = P.tolist()
        ids = self.item_ids_[c_o].tolist()
        sc = s_o.tolist()
        why = self._list_reasons(order, rows, info) if reasons else [None] * order.size
        out = [
            {"item_id": ids[j], "score": sc[j], "parts": dict(zip(GROUPS, parts[j])), "reason": why[j]}
            for j in range(order.size)
        ]
        return {"strategy": info.get("strategy", "global"), "items": out}

    # ----------------------------------------------------------- diversity
    def _content_max(self) -> float:
        """The largest stored text cosine (-inf without a content model): a threshold above it cannot
        collapse anything, so the near-duplicate pass is skipped (and the kernel's heap stays k)."""
        v = getattr(self, "_cmax", None)
        if v is None:
            cm = self.base.content_model_
            M = None if cm is None else (cm.W_.data if cm.W_ is not None else cm.B_)
            v = float(np.max(M)) if M is not None and np.size(M) else float("-inf")
            self._cmax = v
        return v

    def _near_dups(self, item: int, tau: float) -> np.ndarray:
        """Items whose text (title + description + category, the content model's TF-IDF) has a cosine
        >= ``tau`` with ``item`` (its stored neighbours)."""
        W = self.base.content_model_.W_ if self.base.content_model_ is not None else None
        if W is None:
            B = self.base.content_model_.B_ if self.base.content_model_ is not None else None
            return np.flatnonzero(B[item] >= tau) if B is not None else np.empty(0, dtype=np.int64)
        a, b = W.indptr[item], W.indptr[item + 1]
        return W.indices[a:b][W.data[a:b] >= tau].astype(np.int64)

    def _diverse(
        self, ranked: np.ndarray, cand: np.ndarray, N: int, cap: int, tau: float | None
    ) -> tuple[np.ndarray, bool]:
        """The first ``N`` of ``ranked`` (candidate positions, best first) with at most ``cap`` items per
        category (0: no cap) and no item whose text is a near duplicate (cosine >= ``tau``) of one
        already taken; when fewer than ``N`` pass, the best of the skipped ones fill the end (a
        one-category showcase still gets a full list). Returns the positions and whether it filled."""
        taken: list[int] = []
        taken_items: set[int] = set()
        skipped: list[int] = []
        per_cat: dict[int, int] = {}
        blocked: set[int] = set()
        cat = self._cat_code
        cand_l = cand.tolist()
        # each item's near duplicates at this threshold, memoised (one list per item at most; the
        # threshold is a setting, so one or two thresholds are ever asked)
        if tau is not None and tau not in self._near_memo and len(self._near_memo) >= 4:
            self._near_memo.clear()
        near_of: dict[int, list[int]] = self._near_memo.setdefault(tau, {}) if tau is not None else {}
        for k in ranked.tolist():
            if len(taken) >= N:
                break
            it = cand_l[k]
            c = int(cat[it]) if cap and cat is not None else -1
            if (cap and per_cat.get(c, 0) >= cap) or it in blocked:
                skipped.append(k)
                continue
            if tau is not None:
                near = near_of.get(it)
                if near is None:
                    near = near_of[it] = self._near_dups(it, tau).tolist()
                if not taken_items.isdisjoint(near):  # stored one way only: check both rows
                    skipped.append(k)
                    continue
                blocked.update(near)
            taken.append(k)
            taken_items.add(it)
            if cap:
                per_cat[c] = per_cat.get(c, 0) + 1
        filled = len(taken) < N and bool(skipped)
        if len(taken) < N:
            taken += skipped[: N - len(taken)]
        return np.asarray(taken, dtype=np.int64), filled

    # ------------------------------------------------------------- reasons
    def _list_reasons(self, order, rows, info) -> list[dict[str, Any]]:
        """One reason per listed item, each true of its own score (a group with a positive
        contribution, named by its positive features) and none repeated in the list: an item whose
        best reason was already given (the same sentence, or the same anchor item) takes its next one —
        another anchor of the same source, then the next source by contribution; with none left it
        keeps its best (the service groups those, ``shared.serving.recommend``)."""
        used: set[frozenset] = set()
        anchors: set[str] = set()
        out = []
        # ``rows``: the listed rows (shared.reco._kernels.top_rows), as Python lists once (numpy scalar
        # indexing costs ~0.1 µs a value); g_order: each row's groups, largest part first
        Co, Fo, P, g_order_a, _, c_o = rows
        g_order = g_order_a.tolist()
        Pl = P.tolist()
        Fl = Fo.tolist()
        Col = Co.tolist()
        items = c_o.tolist()
        for j, k in enumerate(order.tolist()):
            item = items[j]
            best = best_key = None
            chosen = chosen_key = None
            pj = Pl[j]
            for gi in g_order[j]:
                if pj[gi] <= 0:
                    break
                for r in self._group_reasons(k, item, Fl[j], Col[j], GROUPS[gi], info):
                    key = _reason_key(r)
                    if best is None:
                        best, best_key = r, key
                    if key not in used and (r.get("anchor") is None or r["item"] not in anchors):
                        chosen, chosen_key = r, key
                        break
                if chosen is not None:
                    break
            if chosen is None:
                chosen, chosen_key = (best, best_key) if best is not None else (self._popular_reason(item, None), None)
            used.add(chosen_key if chosen_key is not None else _reason_key(chosen))
            if chosen.get("anchor") is not None:
                anchors.add(chosen["item"])
            out.append(chosen)
        return out

    def _popular_reason(self, item: int, feature: str | None) -> dict[str, Any]:
        if feature == "pop_recent":
            return {"kind": "trending", "feature": feature, "buyers_7d": int(round(float(self.recent_buyers_[item])))}
        return {"kind": "popular", "feature": feature, "rank": int(self._gpop_rank[item])}

    def _group_reasons(self, k: int, item: int, f: list[float], co: list[float], g: str, info):
        """The reasons group ``g`` can give the candidate ``k`` (``item``), best first: its features with a
        positive contribution ``co`` (largest first); an anchored source (cf / content / context) lists
        its top source, then the other source items by their term ``a(u, j) W[j, item]``. ``f`` / ``co``:
        the candidate's feature values and contributions as lists."""
        feats = [fi for fi in _GROUP_FEATURES[g] if co[fi] > 0]
        if not feats:
            return
        feats.sort(key=lambda fi: -co[fi])
        top = FEATURES[feats[0]]
        if g == "buy_again":
            n = int(info["buy_count"][k])
            date = _day_text(float(info["buy_last"][k]))
            yield {"kind": "buy_often" if n >= 3 else "buy_again", "feature": top, "times": n, "last_purchase": date}
        elif g == "history":
            touched = ADD_TO_CART if f[_F["cart"]] > 0 else PRODUCT_CLICK
            r: dict[str, Any] = {
                "kind": "in_history",
                "feature": top,
                "item": str(self.item_ids_[item]),
                "action": touched,
            }
            row = info.get("row")
            if row is not None:
                tl = self.touch_last_
                d = _lookup1(tl.indptr, tl.indices, tl.data, row, item)
                if d > 0:
                    r["last_touch"] = _day_text(d)
            yield r
        elif g in ("cf", "content", "context"):
            yield from self._anchored_reasons(k, item, g, top, info)
        elif g == "room":
            sid = str(info.get("stream_id") or "")
            for fi in feats:
                name = FEATURES[fi]
                r = {"kind": "popular_in_stream", "feature": name, "stream": sid}
                if name in ("room_buy", "room_share"):
                    r["orders"] = round(math.expm1(f[_ROOM_BUY]))
                elif name == "room_click":
                    r["clicks"] = round(math.expm1(f[fi]))
                elif name == "room_buy_now":
                    r.update(orders=round(math.expm1(f[fi])), minutes=10)
                elif name == "room_click_now":
                    r.update(clicks=round(math.expm1(f[fi])), minutes=5)
                elif name == "room_shown_now":
                    r["on_show"] = True
                yield r
        elif g == "taste":
            cat = str(self.base.category_[item]) if self.base.category_ is not None else None
            yield {"kind": "taste", "feature": top, "category": cat}
        else:  # popular
            seen = set()
            for fi in feats:
                r = self._popular_reason(item, FEATURES[fi])
                if r["kind"] not in seen:
                    seen.add(r["kind"])
                    yield r

    def _relation(self, j: int, i: int) -> int:
        """The relation code of the CF pair (``j`` anchor, ``i`` item): stored at fit time, else counted."""

        def on_demand(a, b):
            if self._csc is None:
                self._csc = (self.buy_count_.tocsc(), self.touch_last_.tocsc())
            return pair_counts(a, b, *self._csc)

        return relation_of(j, i, self.base.cf_model_.W_, self.cf_relation_, on_demand)

    def _anchored(self, src: int, item: int, via: str, anchor: str, feature: str, info) -> dict[str, Any]:
        """A reason naming the source item ``src``: its true relation to ``item`` — the content part's
        neighbours are text-similar (``similar_to``); a CF neighbour is ``bought_together`` /
        ``viewed_together`` when viewers did, else ``related_to`` (linked by the model only)."""
        ids = self.item_ids_
        kind = "similar_to" if via == "content" else RELATION_KIND[self._relation(src, item)]
        r: dict[str, Any] = {"kind": kind, "feature": feature, "item": str(ids[src]), "via": via, "anchor": anchor}
        if anchor == "history":
            row = info.get("row")
            action: str | None = None
            if row is not None and self.base._act is not None:
                aip, aix, adx = self.base._act
                code = int(_lookup1(aip, aix, adx, row, src))
                names = self.base.action_names_
                action = names[code - 1] if 0 < code <= len(names) else None
            r["action"] = action
        return r

    def _source_terms(self, model, idx: np.ndarray, w: np.ndarray, item: int) -> np.ndarray:
        """The sources ``idx`` ordered by their term ``w_j · W[j, item]`` (positive terms only)."""
        if model is None or idx.size == 0:
            return np.empty(0, dtype=np.int64)
        if model.B_ is not None:
            t = w * model.B_[idx, item]
        else:
            cols, vals, s = gather_rows(model.W_, idx, w)
            t = np.zeros(idx.size)
            hit = cols == item
            t[s[hit]] = vals[hit]
        o = np.argsort(-t, kind="stable")
        return idx[o[t[o] > 0]]

    def _anchored_reasons(self, k: int, item: int, g: str, top: str, info):
        """``_anchored`` reasons of a neighbour group: the stored top source, then the others."""
        b = self.base
        if g == "context":
            xc, xt = info.get("ctx_cf"), info.get("ctx_ct")
            vc = float(xc[k]) if xc is not None else 0.0
            vt = float(xt[k]) if xt is not None else 0.0
            vias: tuple[str, ...] = (
                ("cf", "content") if vc >= vt else ("content", "cf")
            )  # the larger half of the feature first
            idx = info.get("ctx_idx", np.empty(0, dtype=np.int64))
            w = np.ones(idx.size)
            anchor = "context"
        else:
            vias = (g,)
            idx, w = info.get("hist_idx"), info.get("hist_w")
            anchor = "history"
        seen: set[int] = set()
        for via in vias:
            if g == "context":
                v = info.get("ctx_cf") if via == "cf" else info.get("ctx_ct")
                if v is None or float(v[k]) <= 0:
                    continue
                src_arr = info.get("ctx_cf_src") if via == "cf" else info.get("ctx_src2")
            else:
                src_arr = info.get("cf_src" if via == "cf" else "content_src")
            first = int(src_arr[k]) if src_arr is not None else -1
            model = b.cf_model_ if via == "cf" else b.content_model_
            if first >= 0:
                seen.add(first)
                yield self._anchored(first, item, via, anchor, top, info)
            if idx is None or w is None:
                continue
            for src in self._source_terms(model, idx, w, item).tolist():
                if src not in seen:
                    seen.add(src)
                    yield self._anchored(src, item, via, anchor, top, info)

    # ---------------------------------------------------------- serialisation
    @property
    def meta(self) -> dict[str, Any]:
        m = {
            "class": "RoomRanker",
            "version": 1,
            "base": self.base.meta,
            "features": list(FEATURES),
            "heads": {
                h: {
                    "weights": hd["weights"],
                    "mu": list(map(float, hd["mu"])),
                    "sigma": list(map(float, hd["sigma"])),
                    "bias": float(hd["bias"]),
                }
                for h, hd in self.heads.items()
            },
            "ranker": self.ranker_info,
            "repeat": self.repeat_.meta,
            "reference_day": self.reference_day,
            "params": {
                "cf_top": self.cf_top,
                "content_top": self.content_top,
                "pop_top": self.pop_top,
                "room_top": self.room_top,
                "max_history": self.max_history,
                "max_allowed": self.max_allowed,
            },
            "always_filter_seen": self.always_filter_seen,
            "n_items": int(self.n_items_),
            "n_users": int(len(self.user_ids_)),
        }
        json.dumps(m)
        return m

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {f"base.{k}": v for k, v in self.base.to_arrays().items()}
        for name, M in (
            ("buy_count", self.buy_count_),
            ("buy_last", self.buy_last_),
            ("cart", self.cart_),
            ("click", self.click_),
            ("touch_last", self.touch_last_),
        ):
            out.update(csr_to_arrays(M, f"rr.{name}"))
        for k, v in self.repeat_.to_arrays().items():
            out[f"rr.repeat.{k}"] = v
        out["rr.room_stream_ids"] = str_array(self.room_stream_ids_)
        out["rr.recent_buyers"] = np.asarray(self.recent_buyers_, dtype=np.float32)
        if self.cf_relation_ is not None:
            out["rr.cf_relation"] = np.asarray(self.cf_relation_, dtype=np.uint8)
        for t, M in self.room_.items():
            out.update(csr_to_arrays(M, f"rr.room.{t}"))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> RoomRanker:
        base = HybridRecommender.from_arrays(
            {k[5:]: v for k, v in arrays.items() if k.startswith("base.")}, meta["base"]
        )
        self = cls(base, **meta.get("params", {}))
        self.reference_day = float(meta["reference_day"])
        self.buy_count_ = csr_from_arrays(arrays, "rr.buy_count")
        self.buy_last_ = csr_from_arrays(arrays, "rr.buy_last")
        self.cart_ = csr_from_arrays(arrays, "rr.cart")
        self.click_ = csr_from_arrays(arrays, "rr.click")
        self.touch_last_ = csr_from_arrays(arrays, "rr.touch_last")
        self.repeat_ = RepeatStats.from_arrays(
            {k[10:]: v for k, v in arrays.items() if k.startswith("rr.repeat.")}, meta["repeat"]
        )
        self.room_stream_ids_ = np.asarray(arrays["rr.room_stream_ids"])
        self.recent_buyers_ = np.asarray(arrays["rr.recent_buyers"])
        # an artefact from before the relation codes: pairs are counted on demand (shared.reco.relations)
        self.cf_relation_ = np.asarray(arrays["rr.cf_relation"]) if "rr.cf_relation" in arrays else None
        self.room_ = {t: csr_from_arrays(arrays, f"rr.room.{t}") for t in RANKER_ROOM_TYPES}
        self._build()
        self.set_heads(meta["heads"], meta.get("ranker"))
        self.always_filter_seen = bool(meta.get("always_filter_seen", False))
        return self
