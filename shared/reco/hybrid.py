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
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._core import as_csr, csr_from_arrays, csr_to_arrays, str_array, top_k
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

    def get_params(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "cf", "cf_params", "content_params", "cf_weight", "content_weight",
                "content_weight_context", "popularity_weight", "context_weight", "max_history",
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
    ):
        """Fit from an ``Interactions`` (its ``item_ids`` define the catalogue
        index) and an optional item table (``item_id`` + text columns, and
        optional ``category`` / ``price`` used by the filters)."""
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
    ):
        """Convenience: events (+ item table) -> fitted hybrid.  The catalogue
        is the union of the item table and the items seen in events, so cold
        items (no events yet) still get content neighbours."""
        ev_items = events["item_id"].dropna().astype(str)
        all_items = pd.unique(pd.concat([items["item_id"].astype(str), ev_items]) if items is not None else ev_items)
        inter = build_user_items(events, action_weights, half_life_days, reference_time, item_ids=str_array(np.asarray(all_items, dtype=str)))
        stream_items = stream_ids = None
        if "stream_id" in events:
            stream_items, stream_ids = build_stream_items(
                events, inter.item_ids, action_weights, stream_half_life_days, reference_time
            )
        return self.fit(inter, items, stream_items, stream_ids)

    def _build_indexes(self):
        self._user_index = pd.Index(self.user_ids_)
        self._item_index = pd.Index(self.item_ids_)
        self._purchase_code = (
            self.action_names_.index("purchase") + 1 if "purchase" in self.action_names_ else -1
        )

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
        loc = self._user_index.get_indexer([str(user_id)])[0]
        return None if loc < 0 else int(loc)

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
    ) -> dict[str, Any]:
        """Recommend ``N`` items.

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
        pop = self.popularity_.global_ if pop is None else pop
        scores += self.popularity_weight * pop.astype(np.float64)[None, :]
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
            return {k[len(prefix) + 1:]: arrays[k] for k in arrays if k.startswith(prefix + ".")}

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
