"""Test oracle for ``shared.reco.hybrid.HybridRecommender.recommend``: the dense formula.

``recommend_reference(h, ...)`` scores the whole catalogue with full part arrays, exactly as the
module docstring of ``shared.reco.hybrid`` states the strategy, filters and reasons; the served
``recommend`` scores candidates only and must return the same answer (tests/test_reco_hybrid.py).
It reads the fitted arrays and id lookups (``_user_row``, ``_item_index``, ``_purchase_code``) only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from shared.reco._core import top_k
from shared.reco.hybrid import HybridRecommender

__all__ = ["recommend_reference"]


def _norm(x: np.ndarray) -> np.ndarray:
    m = float(x.max()) if x.size else 0.0
    return x / m if m > 0 else np.zeros_like(x)


def _item_idx(h: HybridRecommender, ids) -> np.ndarray:
    if ids is None:
        return np.empty(0, dtype=np.int64)
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).astype(str)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    pos = h._item_index.get_indexer(arr)
    return pos[pos >= 0].astype(np.int64)


def recommend_reference(
    h: HybridRecommender,
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
    """Dense reference implementation of ``h.recommend`` (full-catalogue part arrays): what the
    docstring of ``shared.reco.hybrid`` says, written directly, for the equivalence tests of the
    candidate-only ``HybridRecommender.recommend``.

    Returns ``{"strategy": "personal"|"context"|"stream"|"global",
    "items": [{"item_id", "score", "parts": {"cf", "content",
    "popularity"}, "reason": {...}}, ...]}`` best first.
    """
    n = h.n_items_
    # ---- history (known user and/or explicit history) + context
    h_idx = np.empty(0, dtype=np.int64)
    h_w = np.empty(0, dtype=np.float64)
    h_act = np.empty(0, dtype=np.int64)
    purchased = np.empty(0, dtype=np.int64)
    row = h._user_row(user_id)
    if row is not None:
        r = h.user_items_[row]
        h_idx, h_w = r.indices.astype(np.int64), r.data.astype(np.float64)
        if h.actions_ is not None:
            a = h.actions_[row]
            amap = dict(zip(a.indices.tolist(), a.data.tolist()))
            h_act = np.array([amap.get(j, 0) for j in h_idx.tolist()], dtype=np.int64)
            purchased = a.indices[a.data == h._purchase_code].astype(np.int64)
        else:
            h_act = np.zeros(h_idx.size, dtype=np.int64)
    if history:
        hk = _item_idx(h, list(history.keys()))
        hv = np.array([float(history[k]) for k in history.keys() if k in h._item_index], dtype=np.float64)
        h_idx = np.concatenate([h_idx, hk])
        h_w = np.concatenate([h_w, hv[: hk.size]])
        h_act = np.concatenate([h_act, np.zeros(hk.size, dtype=np.int64)])
    if h_idx.size > h.max_history:  # keep the strongest affinities
        keep = np.sort(np.argsort(-h_w, kind="stable")[: h.max_history])
        h_idx, h_w, h_act = h_idx[keep], h_w[keep], h_act[keep]
    c_idx = _item_idx(h, context_items)
    is_ctx = np.concatenate([np.zeros(h_idx.size, dtype=bool), np.ones(c_idx.size, dtype=bool)])
    src_idx = np.concatenate([h_idx, c_idx])
    src_w = np.concatenate([h_w, np.full(c_idx.size, float(h.context_weight))])
    src_act = np.concatenate([h_act, np.zeros(c_idx.size, dtype=np.int64)])
    pos = src_w > 0
    src_idx, src_w, src_act, is_ctx = src_idx[pos], src_w[pos], src_act[pos], is_ctx[pos]

    stream_pop = h.popularity_.stream_scores(stream_id) if stream_id is not None else None
    if h_idx.size:
        strategy, cw = "personal", h.content_weight
    elif src_idx.size:
        strategy, cw = "context", h.content_weight_context
    elif stream_pop is not None:
        strategy, cw = "stream", 0.0
    else:
        strategy, cw = "global", 0.0

    # ---- score parts (dense over the catalogue)
    cf = np.zeros(n)
    content = np.zeros(n)
    if src_idx.size:
        cand, sc = h.cf_model_.score_one(src_idx, src_w)
        cf[cand] = sc
        cf = h.cf_weight * _norm(cf)
        if h.content_model_ is not None and cw > 0:
            cand, sc = h.content_model_.score_one(src_idx, src_w)
            content[cand] = sc
            content = cw * _norm(content)
    gpop = h.popularity_.global_.astype(np.float64)
    if stream_pop is not None:
        # stream bestsellers first; other items ranked by a damped global popularity
        in_stream = stream_pop > 0
        pop = np.where(in_stream, stream_pop, 0.1 * gpop)
        mix = h.stream_pop_mix if strategy in ("personal", "context") else 0.0
        if mix > 0.0:
            in_stream = in_stream & ((1.0 - mix) * pop >= mix * gpop)
            pop = (1.0 - mix) * pop + mix * gpop
    else:
        in_stream = np.zeros(n, dtype=bool)
        pop = gpop
    popw = h.popularity_weight if strategy in ("personal", "context") else 1.0
    popularity = popw * pop
    total = cf + content + popularity

    # ---- filters
    bad = np.zeros(n, dtype=bool)
    if allowed_items is not None:
        bad[:] = True
        bad[_item_idx(h, allowed_items)] = False
    if exclude_items is not None:
        bad[_item_idx(h, exclude_items)] = True
    if filter_seen:
        bad[src_idx] = True
    if exclude_purchased:
        bad[purchased] = True
    if category is not None and h.category_ is not None:
        cats = [category] if isinstance(category, str) else list(category)
        bad |= ~np.isin(h.category_, cats)
    if price_range is not None and h.price_ is not None:
        lo, hi = price_range
        p = h.price_
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
        src_cf, _ = h.cf_model_.top_sources(src_idx, src_w, best)
        if h.content_model_ is not None and cw > 0:
            src_ct, _ = h.content_model_.top_sources(src_idx, src_w, best)
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
                reason = {"kind": "similar_to", "item": str(h.item_ids_[src]), "via": via}
            else:
                code = int(src_act[p])
                action = h.action_names_[code - 1] if 0 < code <= len(h.action_names_) else None
                reason = {"kind": "because_you", "item": str(h.item_ids_[src]), "action": action, "via": via}
        elif stream_pop is not None and in_stream[i]:
            reason = {"kind": "popular_in_stream", "stream": str(stream_id)}
        else:
            reason = {"kind": "popular"}
        out.append(
            {
                "item_id": str(h.item_ids_[i]),
                "score": float(total[i]),
                "parts": {"cf": float(cf[i]), "content": float(content[i]), "popularity": float(popularity[i])},
                "reason": reason,
            }
        )
    return {"strategy": strategy, "items": out}
