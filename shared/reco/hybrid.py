"""Hybrid recommender: CF/EASE + content + popularity with cold-start fallbacks.

Strategy (first that applies):

1. ``personal`` — known user (or an explicit ``history``):
   ``score(i) = cf(i) + content(i) + popularity(i)`` with

   * ``cf(i)      = cf_weight      · R_cf(u, i)  / max_i R_cf(u, ·)``
   * ``content(i) = content_weight · R_cnt(u, i) / max_i R_cnt(u, ·)``
   * ``popularity(i) = popularity_weight · pop(i)`` (stream popularity when a
     known ``stream_id`` is given, else global; both in ``[0, 1]``)

   where ``R_m(u, i) = sum_j a(u, j) W_m[j, i]``.  Context items (what the
   user is looking at right now) are added to the history with weight
   ``context_weight``.
2. ``context`` — unknown user with context items: the same formula with the
   context items as the history (``content_weight_context`` for the content
   term, larger because context items may be brand new).
3. ``stream`` — nothing known but a known ``stream_id``: stream bestsellers
   (global popularity ranks after them).
4. ``global`` — global popularity.

Every item carries its score parts ``{"cf", "content", "popularity"}`` (they
sum to ``score``) and a reason derived from the LARGEST part:

* cf / content part -> the source item ``j`` with the largest term
  ``a(u, j) W[j, i]`` of that part's sum: ``{"kind": "because_you", "item":
  j, "action": "add_to_cart", "via": "cf"}`` if ``j`` is in the user's
  history, ``{"kind": "similar_to", "item": j, "via": ...}`` if it is a
  context item;
* popularity part -> ``{"kind": "popular_in_stream", "stream": s}`` or
  ``{"kind": "popular"}``.

Filters: ``allowed_items`` (stream showcase), ``exclude_items``,
``exclude_purchased``, ``filter_seen``, ``category``, ``price_range``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.reco.arrays import unique

from ._core import as_csr, csr_from_arrays, csr_to_arrays, str_array, top_k
from ._kernels import HAVE_NUMBA, pair_scores
from .content import ContentModel, item_texts
from .ease import EASE
from .event_types import PURCHASE
from .interactions import Interactions, build_stream_items, build_user_items
from .itemknn import ItemItemCF
from .popularity import Popularity

__all__ = ["HybridRecommender"]

_CF_CLASSES: dict[str, type[EASE] | type[ItemItemCF]] = {"EASE": EASE, "ItemItemCF": ItemItemCF}


# ------------------------------------------------------------- request steps' values
@dataclass(slots=True)
class _Sources:
    """A request's source items: the history (known user and/or explicit ``history``, strongest
    ``max_history``) then the context items, with a positive weight."""

    idx: np.ndarray  # item positions j
    w: np.ndarray  # a(u, j) (context items: context_weight)
    act: np.ndarray  # action code of a history item (0: none / context item)
    is_ctx: np.ndarray  # bool: a context item
    purchased: np.ndarray  # positions the known user bought (exclude_purchased)
    n_history: int  # history items before the weight filter (decides personal vs context)


@dataclass(slots=True)
class _Parts:
    """The sparse cf / content parts: sorted candidate positions ``*_c``, weighted normalised values
    ``*_v`` and each candidate's top source ``*_s`` (``None``: a dense B, sources computed on demand).
    ``joint``: both parts on one candidate array (``pair_scores``). Unset parts are ``None``."""

    cf_c: np.ndarray | None = None
    cf_v: np.ndarray | None = None
    cf_s: np.ndarray | None = None
    ct_c: np.ndarray | None = None
    ct_v: np.ndarray | None = None
    ct_s: np.ndarray | None = None
    joint: bool = False


@dataclass(slots=True)
class _Candidates:
    """The items that can make the top-N. ``fast``: not sorted, the parts' values and sources carried
    along (``cf``, ``cf_src``, ``ct``, ``ct_src``) instead of looked up again."""

    items: np.ndarray
    fast: bool = False
    cf: np.ndarray | None = None
    cf_src: np.ndarray | None = None
    ct: np.ndarray | None = None
    ct_src: np.ndarray | None = None


@dataclass(slots=True)
class _Scores:
    """Score parts on the candidates (``content`` is ``None`` without a content part) and whether the
    popularity part is the stream's (reason ``popular_in_stream``)."""

    cf: np.ndarray
    content: np.ndarray | None
    popularity: np.ndarray
    total: np.ndarray
    in_stream: np.ndarray


@dataclass(slots=True)
class _Stream:
    """A known stream: its row ``k`` and its items with positive popularity (sorted ``idx``, ``val``,
    and ``order`` = by score desc, index asc)."""

    k: int
    idx: np.ndarray
    val: np.ndarray
    order: np.ndarray


class _Filters:
    """A request's filters on item positions: exclusions (one sorted array), category codes, price."""

    __slots__ = ("bad", "cat_code", "cat_codes", "price", "lo", "hi", "n")

    def __init__(
        self,
        bad: np.ndarray,
        cat_code: np.ndarray | None,
        cat_codes: np.ndarray | None,
        price: np.ndarray | None,
        lo: float | None,
        hi: float | None,
        n: int,
    ):
        self.bad, self.cat_code, self.cat_codes = bad, cat_code, cat_codes
        self.price, self.lo, self.hi, self.n = price, lo, hi, n

    def passing(self, c: np.ndarray) -> np.ndarray:
        """Mask of the positions ``c`` that pass every filter."""
        ok = np.ones(c.size, dtype=bool)
        bad = self.bad
        if bad.size:
            p_ = np.minimum(np.searchsorted(bad, c), bad.size - 1)
            ok &= bad[p_] != c
        if self.cat_codes is not None and self.cat_code is not None:
            ok &= np.isin(self.cat_code[c], self.cat_codes)
        if self.price is not None:
            pc = self.price[c]
            if self.lo is not None:
                ok &= pc >= self.lo
            if self.hi is not None:
                ok &= pc <= self.hi
        return ok

    def first_passing(self, order: np.ndarray, *skips: np.ndarray) -> np.ndarray:
        """The first ``n`` items of ``order`` passing the filters and in none of the sorted ``skips``."""
        N = self.n
        got, total_, start, step = [], 0, 0, max(4 * N, 64)
        while start < order.size and total_ < N:
            chunk = order[start : start + step]
            ok = self.passing(chunk)
            for skip in skips:
                if skip.size:
                    p_ = np.minimum(np.searchsorted(skip, chunk), skip.size - 1)
                    ok &= skip[p_] != chunk
            sel = chunk[ok][: N - total_]
            got.append(sel)
            total_ += sel.size
            start += step
            step *= 2
        return np.concatenate(got) if got else np.empty(0, dtype=np.int64)


class _LastPosition:
    """``src_idx`` position of a source item (its last occurrence, as a dict built from the array),
    looked up on demand: long histories name only a few sources."""

    __slots__ = ("_idx", "_memo")

    def __init__(self, src_idx: np.ndarray):
        self._idx = src_idx
        self._memo: dict[int, int] = {}

    def __getitem__(self, j: int) -> int:
        if j not in self._memo:
            self._memo[j] = int(np.flatnonzero(self._idx == j)[-1])
        return self._memo[j]


def _scaled(v: np.ndarray, n_cand: int, n: int, weight: float) -> np.ndarray:
    """``weight · v / max`` over the catalogue: items outside the ``n_cand`` candidates score 0."""
    m = float(v.max()) if v.size else 0.0
    if n_cand < n:
        m = max(m, 0.0)
    return weight * (v / m if m > 0 else np.zeros_like(v))


def _lookup(cand: np.ndarray, cs: np.ndarray | None, vs: np.ndarray | None, n: int) -> np.ndarray:
    """Values of the sparse part (sorted ``cs``, ``vs``) at the sorted candidates (0 where absent)."""
    out = np.zeros(cand.size, dtype=np.float64)
    if cs is None or vs is None or cs.size == 0 or cand.size == 0:
        return out
    if cs.size == n:  # dense B: candidates are all items in order
        return vs[cand]
    p_ = np.minimum(np.searchsorted(cs, cand), cs.size - 1)
    hit = cs[p_] == cand
    out[hit] = vs[p_[hit]]
    return out


def _lookup_src(cs: np.ndarray, ss: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Top source of the sparse part (sorted ``cs``, sources ``ss``) at ``targets`` (-1 where absent)."""
    out = np.full(targets.size, -1, dtype=np.int64)
    if cs.size == 0:
        return out
    p_ = np.minimum(np.searchsorted(cs, targets), cs.size - 1)
    hit = cs[p_] == targets
    out[hit] = ss[p_[hit]]
    return out


def _not_in(sorted_: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``c`` without the items of the sorted array ``sorted_``."""
    if not (sorted_.size and c.size):
        return c
    p_ = np.minimum(np.searchsorted(sorted_, c), sorted_.size - 1)
    return c[sorted_[p_] != c]


class HybridRecommender:
    def __init__(
        self,
        cf: str = "ease",
        cf_params: dict | None = None,
        content_params: dict | None = None,
        cf_weight: float = 1.0,
        content_weight: float = 0.1,
        content_weight_context: float = 0.5,
        popularity_weight: float = 0.02,
        context_weight: float = 1.0,
        max_history: int = 200,
        stream_pop_mix: float = 0.0,
    ):
        self.cf = cf
        self.cf_params = cf_params
        self.content_params = content_params
        self.cf_weight = cf_weight
        self.content_weight = content_weight
        self.content_weight_context = content_weight_context
        self.popularity_weight = popularity_weight
        self.context_weight = context_weight
        self.max_history = max_history
        self.stream_pop_mix = float(stream_pop_mix)
        if not 0.0 <= self.stream_pop_mix <= 1.0:
            raise ValueError(f"stream_pop_mix must be in [0, 1], got {stream_pop_mix}")

    def get_params(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "cf",
                "cf_params",
                "content_params",
                "cf_weight",
                "content_weight",
                "content_weight_context",
                "popularity_weight",
                "context_weight",
                "max_history",
                "stream_pop_mix",
            )
        }

    # -------------------------------------------------------------------- fit
    def _make_cf(self):
        params = dict(self.cf_params or {})
        if self.cf == "ease":
            return EASE(**params)
        if self.cf == "itemknn":
            return ItemItemCF(**params)
        raise ValueError(f"unknown cf {self.cf!r}")

    def cosine_knn(self, n_items: int) -> dict[str, Any] | None:
        """What the CF part's fit on ``n_items`` items is when it is the binary top-N cosine of
        ``ItemItemCF`` (the lists ``pipelines/beam/itemknn.py`` computes): ``{"neighbours", "min_cooc",
        "model"}``; None when it is something else (EASE's own fit, another similarity)."""
        p = dict(self.cf_params or {})
        if self.cf == "itemknn":
            m = ItemItemCF(**p)
            if m.similarity == "cosine" and m.binary and m.neighbours is not None:
                return {"neighbours": int(m.neighbours), "min_cooc": float(m.min_cooc), "model": "ItemItemCF"}
            return None
        if self.cf == "ease":
            e = EASE(**p)
            if n_items > e.max_dense_items:  # EASE.fit's sparse fallback: item_similarity(X, "cosine", N)
                return {"neighbours": int(e.fallback_neighbours), "min_cooc": 1.0, "model": "EASE fallback_cosine"}
        return None

    def fit(
        self,
        interactions: Interactions,
        items: pd.DataFrame | None = None,
        stream_items: sp.spmatrix | None = None,
        stream_ids=None,
        *,
        item_col: str = "item_id",
        text_cols=("title", "description", "category"),
        content: ContentModel | None = None,
        cf_neighbours: sp.spmatrix | None = None,
    ):
        """Fit from an ``Interactions`` (its ``item_ids`` define the catalogue
        index) and an optional item table (``item_id`` + text columns, and
        optional ``category`` / ``price`` used by the filters).

        ``content``: an already fitted ``ContentModel`` over the SAME item
        index (``interactions.item_ids`` order, see ``fit_content``) to reuse
        instead of fitting one — the content neighbours depend only on the
        catalogue, so a train job fits them once for the holdout model and the
        served model.

        ``cf_neighbours``: the CF part's top-N cosine matrix over the same item index, computed
        elsewhere (``cosine_knn`` says when that is the CF part's fit), used instead of fitting it."""
        t0 = time.perf_counter()
        X = as_csr(interactions.matrix)
        self.item_ids_ = str_array(interactions.item_ids)
        self.user_ids_ = str_array(interactions.user_ids)
        self.n_items_ = X.shape[1]
        self.user_items_ = X
        self.actions_ = as_csr(interactions.actions, dtype=np.int16) if interactions.actions is not None else None
        self.action_names_ = list(interactions.action_names)
        if cf_neighbours is None:
            self.cf_model_ = self._make_cf().fit(X)
        else:
            if self.cosine_knn(X.shape[1]) is None:
                raise ValueError(f"cf={self.cf!r} {self.cf_params} is not a top-N cosine model: no precomputed lists")
            self.cf_model_ = self._make_cf().use_neighbours(X, cf_neighbours)
        self.category_ = None
        self.price_ = None
        self.content_model_ = None
        if items is not None and len(items):
            it = items.drop_duplicates(item_col).set_index(items.drop_duplicates(item_col)[item_col].astype(str))
            it = it.reindex(self.item_ids_)
            if content is not None:
                if content.n_items_ != self.n_items_:
                    raise ValueError(
                        f"prefit content model has {content.n_items_} items, the interactions "
                        f"{self.n_items_}: fit it on the same item index"
                    )
                self.content_model_ = content
            else:
                texts = item_texts(it, text_cols)
                if any(texts):
                    self.content_model_ = ContentModel(**(self.content_params or {})).fit(texts)
            if "category" in it:
                self.category_ = str_array(it["category"].fillna("").astype(str).to_numpy())
            if "price" in it:
                self.price_ = pd.to_numeric(it["price"], errors="coerce").to_numpy(dtype=np.float64)
        self.popularity_ = Popularity().fit(X, stream_items, stream_ids)
        self._build_indexes()
        self.fit_info_ = {"fit_seconds": time.perf_counter() - t0}
        return self

    def fit_events(
        self,
        events: pd.DataFrame,
        items: pd.DataFrame | None = None,
        *,
        action_weights: dict[str, float] | None = None,
        half_life_days: float | None = 30.0,
        stream_half_life_days: float | None = 7.0,
        reference_time=None,
        item_ids=None,
        content: ContentModel | None = None,
        cf_neighbours: sp.spmatrix | None = None,
    ):
        """Convenience: events (+ item table) -> fitted hybrid.  The catalogue
        is the union of the item table and the items seen in events, so cold
        items (no events yet) still get content neighbours.  ``item_ids``
        fixes the catalogue index instead (it must contain every event item),
        e.g. to reuse one prefit ``content`` model (``fit_content``) for
        several fits over parts of the same data."""
        if item_ids is None:
            item_ids = self.catalogue_ids(events, items)
        inter = build_user_items(
            events, action_weights, half_life_days, reference_time, item_ids=str_array(np.asarray(item_ids, dtype=str))
        )
        stream_items = stream_ids = None
        if "stream_id" in events:
            stream_items, stream_ids = build_stream_items(
                events, inter.item_ids, action_weights, stream_half_life_days, reference_time
            )
        return self.fit(inter, items, stream_items, stream_ids, content=content, cf_neighbours=cf_neighbours)

    @staticmethod
    def catalogue_ids(events: pd.DataFrame, items: pd.DataFrame | None = None) -> np.ndarray:
        """The item index ``fit_events`` uses: item table ids, then event items not in it."""
        if isinstance(events["item_id"].dtype, pd.CategoricalDtype):  # codes, not 10M strings
            from .interactions import _codes

            ev_items = pd.Series(_codes(events["item_id"], None)[1], dtype=object)
        else:
            ev_items = events["item_id"].dropna().astype(str)
        all_items = pd.unique(pd.concat([items["item_id"].astype(str), ev_items]) if items is not None else ev_items)
        return str_array(np.asarray(all_items, dtype=str))

    def fit_content(
        self,
        item_ids,
        items: pd.DataFrame | None,
        *,
        item_col: str = "item_id",
        text_cols=("title", "description", "category"),
    ) -> ContentModel | None:
        """The content model ``fit`` would build for this item index (with this
        recommender's ``content_params``), for reuse via ``fit(..., content=)``."""
        if items is None or not len(items):
            return None
        ids = str_array(np.asarray(item_ids, dtype=str))
        dd = items.drop_duplicates(item_col)
        it = dd.set_index(dd[item_col].astype(str)).reindex(ids)
        texts = item_texts(it, text_cols)
        if not any(texts):
            return None
        return ContentModel(**(self.content_params or {})).fit(texts)

    def _build_indexes(self):
        """Serving-time lookups, derived from the fitted arrays (not serialised):
        id -> position maps, popularity orders, per-stream sorted showcases,
        category codes, float64 popularity / price arrays."""
        self._user_index = pd.Index(self.user_ids_)
        self._item_index = pd.Index(self.item_ids_)
        self._item_pos = {s: k for k, s in enumerate(self.item_ids_.tolist())}
        self._purchase_code = self.action_names_.index(PURCHASE) + 1 if PURCHASE in self.action_names_ else -1
        n = self.n_items_
        self._gpop = np.asarray(self.popularity_.global_, dtype=np.float64)
        # global popularity order: score desc, index asc (the dense top_k tie rule)
        self._gpop_order = np.lexsort((np.arange(n), -self._gpop)).astype(np.int64)
        # per stream: items with positive stream popularity, by index and by (score desc, index asc)
        S = sp.csr_matrix(self.popularity_.stream_)
        S.sort_indices()
        rows = np.repeat(np.arange(S.shape[0]), np.diff(S.indptr))
        pos = S.data > 0
        r, c, v = rows[pos], S.indices[pos].astype(np.int64), S.data[pos]
        counts = np.bincount(r, minlength=S.shape[0])
        self._s_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self._s_idx = c  # sorted by (stream, index)
        self._s_val = v.astype(np.float32)
        o = np.lexsort((c, -v.astype(np.float64), r))
        self._s_ord = c[o]  # sorted by (stream, score desc, index asc)
        self._cat_code = None
        self._cat_lookup = {}
        if self.category_ is not None:
            cats, codes = np.unique(np.asarray(self.category_), return_inverse=True)
            self._cat_code = codes.astype(np.int32)
            self._cat_lookup = {c_: k for k, c_ in enumerate(cats.tolist())}
        self._price64 = None if self.price_ is None else np.asarray(self.price_, dtype=np.float64)
        self.user_items_.sort_indices()
        if self.actions_ is not None:
            self.actions_.sort_indices()
        self._ui = (self.user_items_.indptr, self.user_items_.indices, self.user_items_.data)
        self._act = None if self.actions_ is None else (self.actions_.indptr, self.actions_.indices, self.actions_.data)

    # -------------------------------------------------------------- recommend
    def _user_row(self, user_id):
        if user_id is None:
            return None
        try:
            loc = self._user_index.get_loc(str(user_id))
        except KeyError:
            return None
        return int(loc) if isinstance(loc, (int, np.integer)) else None

    def _item_idx_fast(self, ids) -> np.ndarray:
        """Ids -> item positions (unknown ids dropped, order kept) via a dict."""
        if ids is None:
            return np.empty(0, dtype=np.int64)
        if isinstance(ids, str):
            ids = [ids]
        get = self._item_pos.get
        pos = [
            get(x if isinstance(x, str) else str(x), -1) for x in (ids.tolist() if isinstance(ids, np.ndarray) else ids)
        ]
        arr = np.fromiter(pos, dtype=np.int64, count=len(pos))
        return arr[arr >= 0]

    def recommend(
        self,
        user_id=None,
        N: int = 10,
        *,
        context_items: Iterable | None = None,
        stream_id=None,
        history: Mapping[str, float] | None = None,
        allowed_items: Iterable | None = None,
        exclude_items: Iterable | None = None,
        exclude_purchased: bool = True,
        filter_seen: bool = True,
        category: str | Iterable[str] | None = None,
        price_range: tuple[float | None, float | None] | None = None,
        allowed_idx: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Recommend ``N`` items.

        ``allowed_idx``: ``allowed_items`` given as item positions (sorted,
        unique int array, e.g. a served showcase), which saves the per-request
        id -> position lookups; ignored when ``allowed_items`` is given.

        Returns ``{"strategy": "personal"|"context"|"stream"|"global",
        "items": [{"item_id", "score", "parts": {"cf", "content",
        "popularity"}, "reason": {...}}, ...]}`` best first.

        Candidate-only scoring (same result as the dense formula, see
        ``tests/reco_oracle.py``): an item outside the CF / content neighbours
        of the sources scores ``popularity`` only, so the top-N is contained in
        (neighbours passing the filters) ∪ (the first N filter-passing items of
        each popularity order); with ``allowed_items`` the candidates are just
        the allowed items.  Cost ~ |sources| x neighbours + N, not the catalogue.

        Steps: sources (history + context) and strategy -> sparse score parts
        -> filters -> candidates -> parts on the candidates -> top-k -> reasons.
        """
        N = int(N)
        src = self._sources(user_id, history, context_items)
        stream = self._stream(stream_id)
        strategy, cw = self._strategy(src, stream)
        if N <= 0:
            return {"strategy": strategy, "items": []}
        parts = self._score_parts(src, cw)
        filters = self._filters(src, N, exclude_items, filter_seen, exclude_purchased, category, price_range)
        # share of global popularity in the popularity part (personal / context with a stream only;
        # the stream strategy stays "stream bestsellers")
        mix = self.stream_pop_mix if (stream is not None and strategy in ("personal", "context")) else 0.0
        cands = self._candidates(parts, filters, stream, mix, allowed_items, allowed_idx)
        scores = self._candidate_scores(cands, parts, stream, mix, strategy)
        best = self._top_k(scores.total, cands, N)
        return {"strategy": strategy, "items": self._reasons(src, parts, cands, scores, best, stream, stream_id)}

    def _sources(self, user_id, history: Mapping[str, float] | None, context_items: Iterable | None) -> _Sources:
        """History (known user and/or explicit history, the strongest ``max_history``) + context items."""
        h_idx = np.empty(0, dtype=np.int64)
        h_w = np.empty(0, dtype=np.float64)
        h_act = np.empty(0, dtype=np.int64)
        purchased = np.empty(0, dtype=np.int64)
        row = self._user_row(user_id)
        if row is not None:
            ip, ix, dx = self._ui
            a0, a1 = ip[row], ip[row + 1]
            h_idx = ix[a0:a1].astype(np.int64)
            h_w = dx[a0:a1].astype(np.float64)
            if self._act is not None:
                aip, aix, adx = self._act
                b0, b1 = aip[row], aip[row + 1]
                ai, ad = aix[b0:b1], adx[b0:b1]
                if ai.size == h_idx.size and np.array_equal(ai, h_idx):  # same pattern (usual)
                    h_act = ad.astype(np.int64)
                else:  # both rows have sorted indices (_build_indexes)
                    h_act = np.zeros(h_idx.size, dtype=np.int64)
                    if ai.size and h_idx.size:
                        p = np.minimum(np.searchsorted(ai, h_idx), ai.size - 1)
                        hit = ai[p] == h_idx
                        h_act[hit] = ad[p[hit]]
                purchased = ai[ad == self._purchase_code].astype(np.int64)
            else:
                h_act = np.zeros(h_idx.size, dtype=np.int64)
        if history:
            keys = [k for k in history.keys() if str(k) in self._item_pos]
            hk = np.array([self._item_pos[str(k)] for k in keys], dtype=np.int64)
            hv = np.array([float(history[k]) for k in keys], dtype=np.float64)
            h_idx = np.concatenate([h_idx, hk])
            h_w = np.concatenate([h_w, hv])
            h_act = np.concatenate([h_act, np.zeros(hk.size, dtype=np.int64)])
        if h_idx.size > self.max_history:  # keep the strongest affinities
            keep = np.sort(np.argsort(-h_w, kind="stable")[: self.max_history])
            h_idx, h_w, h_act = h_idx[keep], h_w[keep], h_act[keep]
        c_idx = self._item_idx_fast(context_items) if context_items is not None else None
        if c_idx is None or c_idx.size == 0:
            src_idx, src_w, src_act = h_idx, h_w, h_act
            is_ctx = np.zeros(h_idx.size, dtype=bool)
        else:
            is_ctx = np.concatenate([np.zeros(h_idx.size, dtype=bool), np.ones(c_idx.size, dtype=bool)])
            src_idx = np.concatenate([h_idx, c_idx])
            src_w = np.concatenate([h_w, np.full(c_idx.size, float(self.context_weight))])
            src_act = np.concatenate([h_act, np.zeros(c_idx.size, dtype=np.int64)])
        pos = src_w > 0
        if src_w.size and not pos.all():
            src_idx, src_w, src_act, is_ctx = src_idx[pos], src_w[pos], src_act[pos], is_ctx[pos]
        return _Sources(src_idx, src_w, src_act, is_ctx, purchased, int(h_idx.size))

    def _stream(self, stream_id) -> _Stream | None:
        """The known stream's showcase popularity (``None``: no or an unknown ``stream_id``)."""
        sk = self.popularity_._stream_index.get(str(stream_id)) if stream_id is not None else None
        if sk is None:
            return None
        a, b = self._s_ptr[sk], self._s_ptr[sk + 1]
        return _Stream(int(sk), self._s_idx[a:b], self._s_val[a:b], self._s_ord[a:b])

    def _strategy(self, src: _Sources, stream: _Stream | None) -> tuple[str, float]:
        """The first strategy that applies, and its content weight."""
        if src.n_history:
            return "personal", self.content_weight
        if src.idx.size:
            return "context", self.content_weight_context
        if stream is not None:
            return "stream", 0.0
        return "global", 0.0

    def _score_parts(self, src: _Sources, cw: float) -> _Parts:
        """cf / content parts over the neighbours of the sources, weighted and max-normalised."""
        parts = _Parts()
        if not src.idx.size:
            return parts
        n = self.n_items_
        cfm = self.cf_model_
        ctm = self.content_model_ if cw > 0 else None  # None: no content part
        if (
            HAVE_NUMBA
            and cfm.B_ is None
            and cfm.W_ is not None
            and (ctm is None or (ctm.B_ is None and ctm.W_ is not None and ctm.W_.shape == cfm.W_.shape))
        ):
            cf_c, cf_v, cf_s, ct_v, ct_s = pair_scores(cfm.W_, ctm.W_ if ctm is not None else None, src.idx, src.w)
            parts.joint = True
            parts.cf_c, parts.cf_s = cf_c, cf_s
            parts.cf_v = _scaled(cf_v, cf_c.size, n, self.cf_weight)
            if ctm is not None:
                parts.ct_c, parts.ct_s = cf_c, ct_s
                parts.ct_v = _scaled(ct_v, cf_c.size, n, cw)
            return parts
        cf_c, cf_v, parts.cf_s, _ = cfm.score_one_sources(src.idx, src.w)
        parts.cf_c = cf_c
        parts.cf_v = _scaled(np.asarray(cf_v, dtype=np.float64), cf_c.size, n, self.cf_weight)
        if ctm is not None:
            ct_c, ct_v, parts.ct_s, _ = ctm.score_one_sources(src.idx, src.w)
            parts.ct_c = ct_c
            parts.ct_v = _scaled(np.asarray(ct_v, dtype=np.float64), ct_c.size, n, cw)
        return parts

    def _filters(
        self,
        src: _Sources,
        N: int,
        exclude_items: Iterable | None,
        filter_seen: bool,
        exclude_purchased: bool,
        category: str | Iterable[str] | None,
        price_range: tuple[float | None, float | None] | None,
    ) -> _Filters:
        bad_parts = []
        if exclude_items is not None:
            bad_parts.append(self._item_idx_fast(exclude_items))
        if filter_seen:
            bad_parts.append(src.idx)
        if exclude_purchased:
            bad_parts.append(src.purchased)
        bad = (
            np.sort(np.concatenate(bad_parts)).astype(np.int64, copy=False)
            if bad_parts
            else np.empty(0, dtype=np.int64)
        )
        cat_codes = None
        if category is not None and self._cat_code is not None:
            cats = [category] if isinstance(category, str) else list(category)
            cat_codes = np.array([self._cat_lookup[c_] for c_ in cats if c_ in self._cat_lookup], dtype=np.int32)
        price = self._price64 if price_range is not None else None
        lo = hi = None
        if price is not None and price_range is not None:
            lo, hi = price_range
        return _Filters(bad, self._cat_code, cat_codes, price, lo, hi, N)

    def _candidates(
        self,
        parts: _Parts,
        filters: _Filters,
        stream: _Stream | None,
        mix: float,
        allowed_items: Iterable | None,
        allowed_idx: np.ndarray | None,
    ) -> _Candidates:
        """The allowed items passing the filters; else the scored items (a cf / content term) passing
        them, completed by the first passing items of each popularity order (the rest score
        popularity only, so no other item can make the top-N)."""
        n = self.n_items_
        if allowed_items is not None or allowed_idx is not None:
            if allowed_items is not None:
                cand = unique(self._item_idx_fast(allowed_items))
            else:
                cand = np.asarray(allowed_idx, dtype=np.int64)
                cand = cand[(cand >= 0) & (cand < n)]
            return _Candidates(cand[filters.passing(cand)])
        cf_c, ct_c = parts.cf_c, parts.ct_c
        nonempty = [c_ for c_ in (cf_c, ct_c) if c_ is not None and c_.size]
        if parts.joint and cf_c is not None:  # already the sorted union
            scored = cf_c
        elif len(nonempty) == 2 and max(nonempty[0].size, nonempty[1].size) == n:
            scored = nonempty[0] if nonempty[0].size == n else nonempty[1]  # dense B: all items
        elif len(nonempty) == 2:
            scored = np.union1d(nonempty[0], nonempty[1])
        else:  # candidates from score_one_sources are sorted and unique
            scored = nonempty[0] if nonempty else np.empty(0, dtype=np.int64)
        # parts aligned on the candidates: carry values / sources along, no re-lookup
        fast = cf_c is not None and (parts.joint or (ct_c is None and 0 < cf_c.size < n))
        keep = filters.passing(cf_c) if fast and cf_c is not None else None
        pieces = [cf_c[keep]] if cf_c is not None and keep is not None else [scored[filters.passing(scored)]]
        if scored.size < n:
            gpop = self._gpop_order
            if stream is not None and mix >= 1.0:  # popularity part = global popularity
                pieces.append(filters.first_passing(gpop, scored))
            elif stream is not None and mix > 0.0:
                # blended order inside the stream: every stream item not scored is a candidate
                pieces.append(_not_in(scored, stream.idx[filters.passing(stream.idx)]))
                pieces.append(filters.first_passing(gpop, scored, stream.idx))
            elif stream is not None:
                pieces.append(filters.first_passing(stream.order, scored))
                pieces.append(filters.first_passing(gpop, scored, stream.idx))
            else:
                pieces.append(filters.first_passing(gpop, scored))
        # pieces are disjoint (fills skip scored items / the stream's items)
        if keep is None:
            return _Candidates(np.sort(np.concatenate(pieces)) if len(pieces) > 1 else pieces[0])
        assert parts.cf_v is not None and parts.cf_s is not None  # set with cf_c
        cand = np.concatenate(pieces)
        n_fill = cand.size - pieces[0].size
        out = _Candidates(
            cand,
            fast=True,
            cf=np.concatenate([parts.cf_v[keep], np.zeros(n_fill)]),
            cf_src=np.concatenate([parts.cf_s[keep], np.full(n_fill, -1, dtype=np.int64)]),
        )
        if ct_c is not None:
            assert parts.ct_v is not None and parts.ct_s is not None
            out.ct = np.concatenate([parts.ct_v[keep], np.zeros(n_fill)])
            out.ct_src = np.concatenate([parts.ct_s[keep], np.full(n_fill, -1, dtype=np.int64)])
        return out

    def _candidate_scores(
        self, cands: _Candidates, parts: _Parts, stream: _Stream | None, mix: float, strategy: str
    ) -> _Scores:
        """cf, content and popularity parts on the candidates, and their sum."""
        cand, n = cands.items, self.n_items_
        if cands.fast:
            assert cands.cf is not None
            cf = cands.cf
            content = cands.ct if parts.ct_c is not None else None
        else:
            cf = _lookup(cand, parts.cf_c, parts.cf_v, n)
            content = None if parts.ct_c is None else _lookup(cand, parts.ct_c, parts.ct_v, n)
        g = self._gpop[cand]
        if stream is not None and stream.idx.size and cand.size:
            s_in = stream.idx
            p_ = np.minimum(np.searchsorted(s_in, cand), s_in.size - 1)
            in_stream = s_in[p_] == cand
            pop = np.where(in_stream, stream.val[p_].astype(np.float64), 0.1 * g)
            if mix > 0.0:
                # reason "popular_in_stream" only where the stream share is the larger one
                in_stream &= (1.0 - mix) * pop >= mix * g
                pop = (1.0 - mix) * pop + mix * g
        elif stream is not None and mix > 0.0:
            in_stream = np.zeros(cand.size, dtype=bool)
            pop = (1.0 - mix) * 0.1 * g + mix * g
        elif stream is not None:
            in_stream = np.zeros(cand.size, dtype=bool)
            pop = 0.1 * g
        else:
            in_stream = np.zeros(cand.size, dtype=bool)
            pop = g
        popw = self.popularity_weight if strategy in ("personal", "context") else 1.0
        popularity = popw * pop
        total = cf + popularity if content is None else cf + content + popularity
        return _Scores(cf, content, popularity, total, in_stream)

    @staticmethod
    def _top_k(total: np.ndarray, cands: _Candidates, N: int) -> np.ndarray:
        """Positions in the candidates of the ``N`` best totals (ties: smaller item index first)."""
        if not cands.fast:  # sorted candidates: the dense rule
            return top_k(total, N)
        if N < total.size:  # everything >= the N-th largest total (all ties at the boundary)
            kth = np.partition(total, total.size - N)[total.size - N]
            part_ = np.flatnonzero(total >= kth)
        else:
            part_ = np.arange(total.size)
        return part_[np.lexsort((cands.items[part_], -total[part_]))][:N]

    def _reasons(
        self,
        src: _Sources,
        parts: _Parts,
        cands: _Candidates,
        scores: _Scores,
        best: np.ndarray,
        stream: _Stream | None,
        stream_id,
    ) -> list[dict[str, Any]]:
        """The answer's items: score, parts and the reason of the largest part (sources from that
        part's sum)."""
        items = cands.items[best]
        src_idx = src.idx
        src_cf: np.ndarray | None = None
        src_ct: np.ndarray | None = None
        if src_idx.size and best.size:
            if cands.fast:
                assert cands.cf_src is not None
                src_cf = cands.cf_src[best]
                if parts.ct_c is not None and cands.ct_src is not None:
                    src_ct = cands.ct_src[best]
            elif parts.cf_s is None:  # dense B
                src_cf, _ = self.cf_model_.top_sources(src_idx, src.w, items)
            elif parts.cf_c is not None:
                src_cf = _lookup_src(parts.cf_c, parts.cf_s, items)
            if parts.ct_c is not None and not cands.fast:
                if parts.ct_s is not None:
                    src_ct = _lookup_src(parts.ct_c, parts.ct_s, items)
                elif self.content_model_ is not None:
                    src_ct = self.content_model_.top_sources(src_idx, src.w, items)[0]
        pos_of: Mapping[int, int] | _LastPosition
        if src_idx.size <= 64:
            pos_of = {int(j): k for k, j in enumerate(src_idx.tolist())}
        else:  # long histories: look up only the few named sources
            pos_of = _LastPosition(src_idx)
        ids = self.item_ids_[items].tolist()
        tot_l, cf_l, pop_l = scores.total[best].tolist(), scores.cf[best].tolist(), scores.popularity[best].tolist()
        ct_l = scores.content[best].tolist() if scores.content is not None else [0.0] * best.size
        ins_l = scores.in_stream[best].tolist()
        is_ctx, src_act, names = src.is_ctx, src.act, self.action_names_
        out = []
        for k in range(best.size):
            # largest part (first on ties, as np.argmax)
            w_, top = 0, cf_l[k]
            if ct_l[k] > top:
                w_, top = 1, ct_l[k]
            if pop_l[k] > top:
                w_, top = 2, pop_l[k]
            reason: dict[str, Any]
            s_ = None
            if top > 0 and w_ == 0 and src_cf is not None:
                s_ = int(src_cf[k])
            elif top > 0 and w_ == 1 and src_ct is not None:
                s_ = int(src_ct[k])
            if s_ is not None and s_ >= 0:
                p = pos_of[s_]
                via = "cf" if w_ == 0 else "content"
                if is_ctx[p]:
                    reason = {"kind": "similar_to", "item": str(self.item_ids_[s_]), "via": via}
                else:
                    code = int(src_act[p])
                    action = names[code - 1] if 0 < code <= len(names) else None
                    reason = {"kind": "because_you", "item": str(self.item_ids_[s_]), "action": action, "via": via}
            elif stream is not None and ins_l[k]:
                reason = {"kind": "popular_in_stream", "stream": str(stream_id)}
            else:
                reason = {"kind": "popular"}
            out.append(
                {
                    "item_id": str(ids[k]),
                    "score": tot_l[k],
                    "parts": {"cf": cf_l[k], "content": ct_l[k], "popularity": pop_l[k]},
                    "reason": reason,
                }
            )
        return out

    def score_batch(self, user_rows: sp.spmatrix, stream_id=None) -> np.ndarray:
        """Vectorised ``personal``-strategy scores for many user rows (for
        offline evaluation): row-max-normalised CF + content terms plus the
        popularity term; empty rows therefore rank by popularity."""
        X = sp.csr_matrix(user_rows, dtype=np.float32)

        def rownorm(a):
            m = a.max(axis=1, keepdims=True)
            return np.divide(a, m, out=np.zeros_like(a), where=m > 0)

        scores = self.cf_weight * rownorm(np.asarray(self.cf_model_.score_batch(X), dtype=np.float64))
        if self.content_model_ is not None and self.content_weight > 0:
            scores += self.content_weight * rownorm(np.asarray(self.content_model_.score_batch(X), dtype=np.float64))
        pop = self.popularity_.stream_scores(stream_id) if stream_id is not None else None
        g = self.popularity_.global_.astype(np.float64)
        if pop is None:
            pop = g
        else:  # as recommend: stream popularity, else damped global; blended with global by the mix
            pop = np.where(pop > 0, pop.astype(np.float64), 0.1 * g)
            pop = (1.0 - self.stream_pop_mix) * pop + self.stream_pop_mix * g
        scores += self.popularity_weight * pop[None, :]
        return scores

    # ---------------------------------------------------------- serialisation
    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "item_ids": str_array(self.item_ids_),
            "user_ids": str_array(self.user_ids_),
        }
        out.update(csr_to_arrays(self.user_items_, "user_items"))
        if self.actions_ is not None:
            out.update(csr_to_arrays(self.actions_, "actions"))
        for k, v in self.cf_model_.to_arrays().items():
            out[f"cf.{k}"] = v
        if self.content_model_ is not None:
            for k, v in self.content_model_.to_arrays().items():
                out[f"content.{k}"] = v
        for k, v in self.popularity_.to_arrays().items():
            out[f"pop.{k}"] = v
        if self.category_ is not None:
            out["item_category"] = str_array(self.category_)
        if self.price_ is not None:
            out["item_price"] = np.asarray(self.price_, dtype=np.float64)
        return out

    @property
    def meta(self) -> dict[str, Any]:
        m = {
            "class": "HybridRecommender",
            "version": 1,
            "params": self.get_params(),
            "n_items": int(self.n_items_),
            "n_users": int(len(self.user_ids_)),
            "action_names": list(self.action_names_),
            "cf": self.cf_model_.meta,
            "content": self.content_model_.meta if self.content_model_ is not None else None,
            "popularity": self.popularity_.meta,
            "has_actions": self.actions_ is not None,
            "fit_info": getattr(self, "fit_info_", {}),
        }
        json.dumps(m)
        return m

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]):
        def sub(prefix):
            return {k[len(prefix) + 1 :]: arrays[k] for k in arrays if k.startswith(prefix + ".")}

        obj = cls(**meta["params"])
        obj.item_ids_ = np.asarray(arrays["item_ids"])
        obj.user_ids_ = np.asarray(arrays["user_ids"])
        obj.n_items_ = int(meta["n_items"])
        obj.user_items_ = csr_from_arrays(arrays, "user_items")
        obj.actions_ = csr_from_arrays(arrays, "actions") if meta.get("has_actions") else None
        obj.action_names_ = list(meta.get("action_names", []))
        cf_cls = _CF_CLASSES[meta["cf"]["class"]]
        obj.cf_model_ = cf_cls.from_arrays(sub("cf"), meta["cf"])
        obj.content_model_ = ContentModel.from_arrays(sub("content"), meta["content"]) if meta.get("content") else None
        obj.popularity_ = Popularity.from_arrays(sub("pop"), meta["popularity"])
        obj.category_ = np.asarray(arrays["item_category"]) if "item_category" in arrays else None
        obj.price_ = np.asarray(arrays["item_price"]) if "item_price" in arrays else None
        obj.fit_info_ = dict(meta.get("fit_info", {}))
        obj._build_indexes()
        return obj
