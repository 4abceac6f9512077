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
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._core import as_csr, csr_from_arrays, csr_to_arrays, str_array, top_k
from ._kernels import HAVE_NUMBA, pair_scores
from .content import ContentModel, item_texts
from .ease import EASE
from .interactions import Interactions, build_stream_items, build_user_items
from .itemknn import ItemItemCF
from .popularity import Popularity

__all__ = ["HybridRecommender"]

_CF_CLASSES = {"EASE": EASE, "ItemItemCF": ItemItemCF}


def _norm(x: np.ndarray) -> np.ndarray:
    m = float(x.max()) if x.size else 0.0
    return x / m if m > 0 else np.zeros_like(x)


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
    ):
        """Fit from an ``Interactions`` (its ``item_ids`` define the catalogue
        index) and an optional item table (``item_id`` + text columns, and
        optional ``category`` / ``price`` used by the filters).

        ``content``: an already fitted ``ContentModel`` over the SAME item
        index (``interactions.item_ids`` order, see ``fit_content``) to reuse
        instead of fitting one — the content neighbours depend only on the
        catalogue, so a train job fits them once for the holdout model and the
        served model."""
        t0 = time.perf_counter()
        X = as_csr(interactions.matrix)
        self.item_ids_ = str_array(interactions.item_ids)
        self.user_ids_ = str_array(interactions.user_ids)
        self.n_items_ = X.shape[1]
        self.user_items_ = X
        self.actions_ = as_csr(interactions.actions, dtype=np.int16) if interactions.actions is not None else None
        self.action_names_ = list(interactions.action_names)
        self.cf_model_ = self._make_cf().fit(X)
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
        return self.fit(inter, items, stream_items, stream_ids, content=content)

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
        self._purchase_code = self.action_names_.index("purchase") + 1 if "purchase" in self.action_names_ else -1
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
    def _item_idx(self, ids) -> np.ndarray:
        if ids is None:
            return np.empty(0, dtype=np.int64)
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).astype(str)
        if arr.size == 0:
            return np.empty(0, dtype=np.int64)
        pos = self._item_index.get_indexer(arr)
        return pos[pos >= 0].astype(np.int64)

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
        ``_recommend_reference``): an item outside the CF / content neighbours
        of the sources scores ``popularity`` only, so the top-N is contained in
        (neighbours passing the filters) ∪ (the first N filter-passing items of
        each popularity order); with ``allowed_items`` the candidates are just
        the allowed items.  Cost ~ |sources| x neighbours + N, not the catalogue.
        """
        N = int(N)
        # ---- history (known user and/or explicit history) + context
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

        sk = self.popularity_._stream_index.get(str(stream_id)) if stream_id is not None else None
        if h_idx.size:
            strategy, cw = "personal", self.content_weight
        elif src_idx.size:
            strategy, cw = "context", self.content_weight_context
        elif sk is not None:
            strategy, cw = "stream", 0.0
        else:
            strategy, cw = "global", 0.0
        if N <= 0:
            return {"strategy": strategy, "items": []}

        # ---- sparse score parts: (sorted candidate items, normalised part)
        n = self.n_items_
        cf_c = ct_c = None
        joint = False  # cf and content parts aligned on one sorted candidate array (pair_scores)
        if src_idx.size:
            use_ct = self.content_model_ is not None and cw > 0
            if (
                HAVE_NUMBA
                and self.cf_model_.B_ is None
                and self.cf_model_.W_ is not None
                and (
                    not use_ct
                    or (
                        self.content_model_.B_ is None
                        and self.content_model_.W_ is not None
                        and self.content_model_.W_.shape == self.cf_model_.W_.shape
                    )
                )
            ):
                joint = True
                cf_c, cf_v, cf_s, ct_v, ct_s = pair_scores(
                    self.cf_model_.W_, self.content_model_.W_ if use_ct else None, src_idx, src_w
                )
                m = float(cf_v.max()) if cf_v.size else 0.0
                if cf_c.size < n:
                    m = max(m, 0.0)
                cf_v = self.cf_weight * (cf_v / m if m > 0 else np.zeros_like(cf_v))
                if use_ct:
                    ct_c = cf_c
                    m = float(ct_v.max()) if ct_v.size else 0.0
                    if ct_c.size < n:
                        m = max(m, 0.0)
                    ct_v = cw * (ct_v / m if m > 0 else np.zeros_like(ct_v))
        if src_idx.size and not joint:
            cf_c, cf_v, cf_s, _ = self.cf_model_.score_one_sources(src_idx, src_w)
            cf_v = np.asarray(cf_v, dtype=np.float64)
            m = float(cf_v.max()) if cf_v.size else 0.0
            if cf_c.size < n:
                m = max(m, 0.0)  # items outside the neighbours score 0
            cf_v = self.cf_weight * (cf_v / m if m > 0 else np.zeros_like(cf_v))
            if self.content_model_ is not None and cw > 0:
                ct_c, ct_v, ct_s, _ = self.content_model_.score_one_sources(src_idx, src_w)
                ct_v = np.asarray(ct_v, dtype=np.float64)
                m = float(ct_v.max()) if ct_v.size else 0.0
                if ct_c.size < n:
                    m = max(m, 0.0)
                ct_v = cw * (ct_v / m if m > 0 else np.zeros_like(ct_v))

        # ---- filters, evaluated on candidate arrays only
        bad_parts = []
        if exclude_items is not None:
            bad_parts.append(self._item_idx_fast(exclude_items))
        if filter_seen:
            bad_parts.append(src_idx)
        if exclude_purchased:
            bad_parts.append(purchased)
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
        if price is not None:
            lo, hi = price_range

        def passing(c: np.ndarray) -> np.ndarray:
            ok = np.ones(c.size, dtype=bool)
            if bad.size:
                p_ = np.minimum(np.searchsorted(bad, c), bad.size - 1)
                ok &= bad[p_] != c
            if cat_codes is not None:
                ok &= np.isin(self._cat_code[c], cat_codes)
            if price is not None:
                pc = price[c]
                if lo is not None:
                    ok &= pc >= lo
                if hi is not None:
                    ok &= pc <= hi
            return ok

        def first_passing(order: np.ndarray, *skips: np.ndarray) -> np.ndarray:
            # the first N items of ``order`` passing the filters and in none of the sorted ``skips``
            got, total_, start, step = [], 0, 0, max(4 * N, 64)
            while start < order.size and total_ < N:
                chunk = order[start : start + step]
                ok = passing(chunk)
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

        # share of global popularity in the popularity part (personal / context with a stream only;
        # the stream strategy stays "stream bestsellers")
        mix = self.stream_pop_mix if (sk is not None and strategy in ("personal", "context")) else 0.0
        if sk is not None:
            s_in = self._s_idx[self._s_ptr[sk] : self._s_ptr[sk + 1]]
            s_val = self._s_val[self._s_ptr[sk] : self._s_ptr[sk + 1]]
        fast = False
        if allowed_items is not None or allowed_idx is not None:
            if allowed_items is not None:
                cand = np.unique(self._item_idx_fast(allowed_items))
            else:
                cand = np.asarray(allowed_idx, dtype=np.int64)
                cand = cand[(cand >= 0) & (cand < n)]
            cand = cand[passing(cand)]
        else:
            # scored = items with a cf / content term (all of them pass through
            # the filters); the rest score popularity only, so their best N
            # (per popularity order, skipping scored items) complete the set
            scored = [c_ for c_ in (cf_c, ct_c) if c_ is not None and c_.size]
            if joint:  # already the sorted union
                scored = cf_c
            elif len(scored) == 2 and max(scored[0].size, scored[1].size) == n:
                scored = scored[0] if scored[0].size == n else scored[1]  # dense B: all items
            elif len(scored) == 2:
                scored = np.union1d(scored[0], scored[1])
            else:  # candidates from score_one_sources are sorted and unique
                scored = scored[0] if scored else np.empty(0, dtype=np.int64)
            fast = joint or (ct_c is None and cf_c is not None and 0 < cf_c.size < n)
            if fast:  # parts aligned on the candidates: carry values / sources along, no re-lookup
                keep_ = passing(cf_c)
                pieces = [cf_c[keep_]]
            else:
                pieces = [scored[passing(scored)]]
            if scored.size < n:
                if sk is not None and mix >= 1.0:  # popularity part = global popularity
                    pieces.append(first_passing(self._gpop_order, scored))
                elif sk is not None and mix > 0.0:
                    # blended order inside the stream: every stream item not scored is a candidate
                    rest = s_in[passing(s_in)]
                    if scored.size and rest.size:
                        p_ = np.minimum(np.searchsorted(scored, rest), scored.size - 1)
                        rest = rest[scored[p_] != rest]
                    pieces.append(rest)
                    pieces.append(first_passing(self._gpop_order, scored, s_in))
                elif sk is not None:
                    pieces.append(first_passing(self._s_ord[self._s_ptr[sk] : self._s_ptr[sk + 1]], scored))
                    pieces.append(first_passing(self._gpop_order, scored, s_in))
                else:
                    pieces.append(first_passing(self._gpop_order, scored))
            # pieces are disjoint (fills skip scored items / the stream's items)
            if fast:
                cand = np.concatenate(pieces)
                n_fill = cand.size - pieces[0].size
                cf_fast = np.concatenate([cf_v[keep_], np.zeros(n_fill)])
                src_fast = np.concatenate([cf_s[keep_], np.full(n_fill, -1, dtype=np.int64)])
                if ct_c is not None:
                    ct_fast = np.concatenate([ct_v[keep_], np.zeros(n_fill)])
                    ct_src_fast = np.concatenate([ct_s[keep_], np.full(n_fill, -1, dtype=np.int64)])
            else:
                cand = np.sort(np.concatenate(pieces)) if len(pieces) > 1 else pieces[0]

        # ---- parts on the candidates
        def lookup(cs, vs):
            out_ = np.zeros(cand.size, dtype=np.float64)
            if cs is None or cs.size == 0 or cand.size == 0:
                return out_
            if cs.size == n:  # dense B: candidates are all items in order
                return vs[cand]
            p_ = np.minimum(np.searchsorted(cs, cand), cs.size - 1)
            hit = cs[p_] == cand
            out_[hit] = vs[p_[hit]]
            return out_

        def lookup_src(cs, ss, targets):
            out_ = np.full(targets.size, -1, dtype=np.int64)
            if cs.size == 0:
                return out_
            p_ = np.minimum(np.searchsorted(cs, targets), cs.size - 1)
            hit = cs[p_] == targets
            out_[hit] = ss[p_[hit]]
            return out_

        cf = cf_fast if fast else lookup(cf_c, cf_v if cf_c is not None else None)
        if ct_c is None:
            content = None
        elif fast:
            content = ct_fast
        else:
            content = lookup(ct_c, ct_v)
        g = self._gpop[cand]
        if sk is not None and s_in.size and cand.size:
            p_ = np.minimum(np.searchsorted(s_in, cand), s_in.size - 1)
            in_stream = s_in[p_] == cand
            pop = np.where(in_stream, s_val[p_].astype(np.float64), 0.1 * g)
            if mix > 0.0:
                # reason "popular_in_stream" only where the stream share is the larger one
                in_stream &= (1.0 - mix) * pop >= mix * g
                pop = (1.0 - mix) * pop + mix * g
        elif sk is not None and mix > 0.0:
            in_stream = np.zeros(cand.size, dtype=bool)
            pop = (1.0 - mix) * 0.1 * g + mix * g
        elif sk is not None:
            in_stream = np.zeros(cand.size, dtype=bool)
            pop = 0.1 * g
        else:
            in_stream = np.zeros(cand.size, dtype=bool)
            pop = g
        popw = self.popularity_weight if strategy in ("personal", "context") else 1.0
        popularity = popw * pop
        total = cf + popularity if content is None else cf + content + popularity
        if fast:  # cand not sorted: top-k with ties broken by item index
            if N < total.size:  # everything >= the N-th largest total (all ties at the boundary)
                kth = np.partition(total, total.size - N)[total.size - N]
                part_ = np.flatnonzero(total >= kth)
            else:
                part_ = np.arange(total.size)
            best = part_[np.lexsort((cand[part_], -total[part_]))][:N]
        else:
            best = top_k(total, N)

        # ---- reasons (from the largest part; sources from that part's sum)
        items = cand[best]
        src_cf = src_ct = None
        if src_idx.size and best.size:
            if fast:
                src_cf = src_fast[best]
                if ct_c is not None:
                    src_ct = ct_src_fast[best]
            elif cf_s is None:  # dense B
                src_cf, _ = self.cf_model_.top_sources(src_idx, src_w, items)
            else:
                src_cf = lookup_src(cf_c, cf_s, items)
            if ct_c is not None and not fast:
                src_ct = (
                    lookup_src(ct_c, ct_s, items)
                    if ct_s is not None
                    else self.content_model_.top_sources(src_idx, src_w, items)[0]
                )
        if src_idx.size <= 64:
            pos_of = {int(j): k for k, j in enumerate(src_idx.tolist())}
        else:  # long histories: look up only the few named sources (last occurrence, as the dict)
            _memo: dict[int, int] = {}

            class _Pos:
                def __getitem__(self_, j):
                    if j not in _memo:
                        _memo[j] = int(np.flatnonzero(src_idx == j)[-1])
                    return _memo[j]

            pos_of = _Pos()
        ids = self.item_ids_[items].tolist()
        tot_l, cf_l, pop_l = total[best].tolist(), cf[best].tolist(), popularity[best].tolist()
        ct_l = content[best].tolist() if content is not None else [0.0] * best.size
        ins_l = in_stream[best].tolist()
        out = []
        for k in range(best.size):
            # largest part (first on ties, as np.argmax)
            w_, top = 0, cf_l[k]
            if ct_l[k] > top:
                w_, top = 1, ct_l[k]
            if pop_l[k] > top:
                w_, top = 2, pop_l[k]
            reason: dict[str, Any]
            src = None
            if top > 0 and w_ == 0 and src_cf is not None:
                src = int(src_cf[k])
            elif top > 0 and w_ == 1 and src_ct is not None:
                src = int(src_ct[k])
            if src is not None and src >= 0:
                p = pos_of[src]
                via = "cf" if w_ == 0 else "content"
                if is_ctx[p]:
                    reason = {"kind": "similar_to", "item": str(self.item_ids_[src]), "via": via}
                else:
                    code = int(src_act[p])
                    action = self.action_names_[code - 1] if 0 < code <= len(self.action_names_) else None
                    reason = {"kind": "because_you", "item": str(self.item_ids_[src]), "action": action, "via": via}
            elif sk is not None and ins_l[k]:
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
        return {"strategy": strategy, "items": out}

    def _recommend_reference(
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
    ) -> dict[str, Any]:
        """Dense reference implementation (full-catalogue part arrays); kept
        for the equivalence tests of the candidate-only ``recommend``.

        Returns ``{"strategy": "personal"|"context"|"stream"|"global",
        "items": [{"item_id", "score", "parts": {"cf", "content",
        "popularity"}, "reason": {...}}, ...]}`` best first.
        """
        n = self.n_items_
        # ---- history (known user and/or explicit history) + context
        h_idx = np.empty(0, dtype=np.int64)
        h_w = np.empty(0, dtype=np.float64)
        h_act = np.empty(0, dtype=np.int64)
        purchased = np.empty(0, dtype=np.int64)
        row = self._user_row(user_id)
        if row is not None:
            r = self.user_items_[row]
            h_idx, h_w = r.indices.astype(np.int64), r.data.astype(np.float64)
            if self.actions_ is not None:
                a = self.actions_[row]
                amap = dict(zip(a.indices.tolist(), a.data.tolist()))
                h_act = np.array([amap.get(j, 0) for j in h_idx.tolist()], dtype=np.int64)
                purchased = a.indices[a.data == self._purchase_code].astype(np.int64)
            else:
                h_act = np.zeros(h_idx.size, dtype=np.int64)
        if history:
            hk = self._item_idx(list(history.keys()))
            hv = np.array([float(history[k]) for k in history.keys() if k in self._item_index], dtype=np.float64)
            h_idx = np.concatenate([h_idx, hk])
            h_w = np.concatenate([h_w, hv[: hk.size]])
            h_act = np.concatenate([h_act, np.zeros(hk.size, dtype=np.int64)])
        if h_idx.size > self.max_history:  # keep the strongest affinities
            keep = np.sort(np.argsort(-h_w, kind="stable")[: self.max_history])
            h_idx, h_w, h_act = h_idx[keep], h_w[keep], h_act[keep]
        c_idx = self._item_idx(context_items)
        is_ctx = np.concatenate([np.zeros(h_idx.size, dtype=bool), np.ones(c_idx.size, dtype=bool)])
        src_idx = np.concatenate([h_idx, c_idx])
        src_w = np.concatenate([h_w, np.full(c_idx.size, float(self.context_weight))])
        src_act = np.concatenate([h_act, np.zeros(c_idx.size, dtype=np.int64)])
        pos = src_w > 0
        src_idx, src_w, src_act, is_ctx = src_idx[pos], src_w[pos], src_act[pos], is_ctx[pos]

        stream_pop = self.popularity_.stream_scores(stream_id) if stream_id is not None else None
        if h_idx.size:
            strategy, cw = "personal", self.content_weight
        elif src_idx.size:
            strategy, cw = "context", self.content_weight_context
        elif stream_pop is not None:
            strategy, cw = "stream", 0.0
        else:
            strategy, cw = "global", 0.0

        # ---- score parts (dense over the catalogue)
        cf = np.zeros(n)
        content = np.zeros(n)
        if src_idx.size:
            cand, sc = self.cf_model_.score_one(src_idx, src_w)
            cf[cand] = sc
            cf = self.cf_weight * _norm(cf)
            if self.content_model_ is not None and cw > 0:
                cand, sc = self.content_model_.score_one(src_idx, src_w)
                content[cand] = sc
                content = cw * _norm(content)
        gpop = self.popularity_.global_.astype(np.float64)
        if stream_pop is not None:
            # stream bestsellers first; other items ranked by a damped global popularity
            in_stream = stream_pop > 0
            pop = np.where(in_stream, stream_pop, 0.1 * gpop)
            mix = self.stream_pop_mix if strategy in ("personal", "context") else 0.0
            if mix > 0.0:
                in_stream = in_stream & ((1.0 - mix) * pop >= mix * gpop)
                pop = (1.0 - mix) * pop + mix * gpop
        else:
            in_stream = np.zeros(n, dtype=bool)
            pop = gpop
        popw = self.popularity_weight if strategy in ("personal", "context") else 1.0
        popularity = popw * pop
        total = cf + content + popularity

        # ---- filters
        bad = np.zeros(n, dtype=bool)
        if allowed_items is not None:
            bad[:] = True
            bad[self._item_idx(allowed_items)] = False
        if exclude_items is not None:
            bad[self._item_idx(exclude_items)] = True
        if filter_seen:
            bad[src_idx] = True
        if exclude_purchased:
            bad[purchased] = True
        if category is not None and self.category_ is not None:
            cats = [category] if isinstance(category, str) else list(category)
            bad |= ~np.isin(self.category_, cats)
        if price_range is not None and self.price_ is not None:
            lo, hi = price_range
            p = self.price_
            if lo is not None:
                bad |= ~(p >= lo)
            if hi is not None:
                bad |= ~(p <= hi)
        total[bad] = -np.inf
        best = top_k(total, N)
        best = best[np.isfinite(total[best])]

        # ---- reasons (from the largest part; sources from that part's sum)
        parts = np.stack([cf[best], content[best], popularity[best]])
        which = np.argmax(parts, axis=0)
        src_cf = src_ct = None
        if src_idx.size and best.size:
            src_cf, _ = self.cf_model_.top_sources(src_idx, src_w, best)
            if self.content_model_ is not None and cw > 0:
                src_ct, _ = self.content_model_.top_sources(src_idx, src_w, best)
        pos_of = {int(j): k for k, j in enumerate(src_idx.tolist())}
        out = []
        for k, i in enumerate(best.tolist()):
            w_ = int(which[k])
            reason: dict[str, Any]
            src = None
            if parts[w_, k] > 0 and w_ == 0 and src_cf is not None:
                src = int(src_cf[k])
            elif parts[w_, k] > 0 and w_ == 1 and src_ct is not None:
                src = int(src_ct[k])
            if src is not None and src >= 0:
                p = pos_of[src]
                via = "cf" if w_ == 0 else "content"
                if is_ctx[p]:
                    reason = {"kind": "similar_to", "item": str(self.item_ids_[src]), "via": via}
                else:
                    code = int(src_act[p])
                    action = self.action_names_[code - 1] if 0 < code <= len(self.action_names_) else None
                    reason = {"kind": "because_you", "item": str(self.item_ids_[src]), "action": action, "via": via}
            elif stream_pop is not None and in_stream[i]:
                reason = {"kind": "popular_in_stream", "stream": str(stream_id)}
            else:
                reason = {"kind": "popular"}
            out.append(
                {
                    "item_id": str(self.item_ids_[i]),
                    "score": float(total[i]),
                    "parts": {"cf": float(cf[i]), "content": float(content[i]), "popularity": float(popularity[i])},
                    "reason": reason,
                }
            )
        return {"strategy": strategy, "items": out}

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
