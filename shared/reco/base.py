"""Base class for item-based recommenders (scikit-learn / implicit style).

All item-based models in this package reduce to one formula

    R(u, i) = sum_{j in I_u} a(u, j) * W[j, i]

where ``a(u, j)`` is the user's (weighted, time-decayed) affinity to item
``j`` and ``W`` is an item x item weight matrix: a top-N similarity matrix
(item-item CF, content), or the EASE weight matrix ``B``.  ``W`` is kept either
as a sparse CSR matrix (top-N neighbours per row, fast single-user path) or a
dense ``ndarray`` (EASE on small catalogues).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._core import aggregate, as_csr, csr_from_arrays, csr_to_arrays, gather_rows, top_k, top_k_rows
from ._kernels import HAVE_NUMBA, user_scores

__all__ = ["ItemBasedRecommender", "NotFittedError"]


class NotFittedError(RuntimeError):
    pass


class ItemBasedRecommender:
    """Common scoring / recommend / serialisation code.

    Subclasses implement ``fit`` and set either ``self.W_`` (csr, sparse
    neighbours) or ``self.B_`` (dense ndarray), plus ``self.n_items_``.
    """

    W_: sp.csr_matrix | None = None
    B_: np.ndarray | None = None
    n_items_: int  # set by fit / from_arrays
    fit_info_: dict[str, Any]

    # ------------------------------------------------------------------ params
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- checks
    def _check_fitted(self):
        if self.W_ is None and self.B_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted")

    @property
    def is_dense(self) -> bool:
        return self.B_ is not None

    # ---------------------------------------------------------------- scoring
    def score_batch(self, user_items: sp.spmatrix) -> np.ndarray:
        """Dense scores ``(n_rows, n_items)`` for a batch of user rows (``X @ W``)."""
        self._check_fitted()
        X = sp.csr_matrix(user_items, dtype=np.float32)
        if self.B_ is not None:
            return np.asarray(X @ self.B_)
        return (X @ self.W_).toarray()

    def score_one(self, idx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores for one user given its item indices/affinities.

        Returns ``(candidate_items, scores)``; for sparse neighbours only the
        items reachable from the user's items are returned (everything else
        scores 0), for a dense ``B`` all items are returned.
        """
        self._check_fitted()
        idx = np.asarray(idx, dtype=np.int64)
        w = np.asarray(w, dtype=np.float64)
        if self.B_ is not None:
            if idx.size == 0:
                return np.arange(self.n_items_), np.zeros(self.n_items_)
            return np.arange(self.n_items_), w @ self.B_[idx]
        if HAVE_NUMBA:
            cand, sc, _, _ = user_scores(self.W_, idx, w)
            return cand, sc
        cols, vals, _ = gather_rows(self.W_, idx, w)
        return aggregate(cols, vals)

    def score_one_sources(self, idx: np.ndarray, w: np.ndarray):
        """``score_one`` plus, per candidate, the source with the largest term.

        Returns ``(candidates, scores, src, contrib)`` (``src = contrib = None``
        for a dense ``B``: call ``top_sources`` on the few targets) where ``src[k]`` is the
        item of ``idx`` with the largest ``a(u, j) * W[j, cand[k]]`` (-1 where
        that term is not > 0; ties: earlier source) — the same answer as
        ``top_sources(idx, w, candidates)``, computed from one gather.  Sparse
        ``W``: one stable argsort of the gathered columns + ``reduceat``.
        """
        self._check_fitted()
        idx = np.asarray(idx, dtype=np.int64)
        w = np.asarray(w, dtype=np.float64)
        if self.B_ is not None:
            # dense B: every item is a candidate; sources for all of them would
            # cost |idx| x n_items, so they are left to top_sources(targets)
            cand, sc = self.score_one(idx, w)
            return cand, sc, None, None
        if HAVE_NUMBA:
            return user_scores(self.W_, idx, w)
        cols, vals, s = gather_rows(self.W_, idx, w)
        if cols.size == 0:
            e = np.empty(0, dtype=np.int64)
            return e, np.empty(0, dtype=np.float64), e, np.empty(0, dtype=np.float64)
        o = np.argsort(cols, kind="stable")
        c, v, ss = cols[o], vals[o], s[o]
        head = np.empty(c.size, dtype=bool)
        head[0] = True
        np.not_equal(c[1:], c[:-1], out=head[1:])
        starts = np.flatnonzero(head)
        cand = c[starts].astype(np.int64)
        if starts.size == c.size:  # no repeated column: nothing to sum
            scores, contrib, first = v, v, np.arange(c.size)
        else:
            scores = np.add.reduceat(v, starts)
            contrib = np.maximum.reduceat(v, starts)
            gid = np.cumsum(head) - 1
            pos = np.where(v == contrib[gid], np.arange(c.size), c.size)
            first = np.minimum.reduceat(pos, starts)
        src = np.where(contrib > 0, idx[ss[first]], -1)
        return cand, scores, src, np.where(contrib > 0, contrib, 0.0)

    def top_sources(self, idx: np.ndarray, w: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each target item, the source item ``j`` (one of ``idx``) with the
        largest contribution ``a(u, j) * W[j, target]`` and that contribution.

        Source is -1 where no source contributes.  This is what the hybrid's
        "because you ..." reason names, so reasons always match the score.
        """
        self._check_fitted()
        idx = np.asarray(idx, dtype=np.int64)
        w = np.asarray(w, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.int64)
        src = np.full(targets.size, -1, dtype=np.int64)
        contrib = np.zeros(targets.size, dtype=np.float64)
        if idx.size == 0 or targets.size == 0:
            return src, contrib
        if self.B_ is not None:
            c = w[:, None] * self.B_[np.ix_(idx, targets)]
            best = np.argmax(c, axis=0)
            contrib = c[best, np.arange(targets.size)]
            src = np.where(contrib > 0, idx[best], -1)
            return src, np.where(contrib > 0, contrib, 0.0)
        cols, vals, s = gather_rows(self.W_, idx, w)
        order = np.argsort(targets)
        st = targets[order]
        pos = np.searchsorted(st, cols)
        pos_c = np.minimum(pos, st.size - 1)
        hit = (pos < st.size) & (st[pos_c] == cols) & (vals > 0)
        if not hit.any():
            return src, contrib
        tpos, v, ss = order[pos_c[hit]], vals[hit], s[hit]
        o = np.lexsort((-v, tpos))
        tpos, v, ss = tpos[o], v[o], ss[o]
        first = np.ones(tpos.size, dtype=bool)
        first[1:] = tpos[1:] != tpos[:-1]
        src[tpos[first]] = idx[ss[first]]
        contrib[tpos[first]] = v[first]
        return src, contrib

    # -------------------------------------------------------------- recommend
    def _rows(self, user, user_items) -> tuple[sp.csr_matrix, bool]:
        """-> (user rows as CSR, single-user?)."""
        if sp.issparse(user):
            rows = sp.csr_matrix(user)
            return rows, rows.shape[0] == 1
        arr = np.asarray(user)
        if arr.dtype.kind == "f":
            return sp.csr_matrix(np.atleast_2d(arr)), arr.ndim == 1
        src = user_items if user_items is not None else getattr(self, "user_items_", None)
        if src is None:
            raise ValueError("integer user ids need user_items (the user x item matrix)")
        src = sp.csr_matrix(src)
        return src[np.atleast_1d(arr).astype(np.int64)], arr.ndim == 0

    def recommend(
        self,
        user,
        N: int = 10,
        *,
        user_items: sp.spmatrix | None = None,
        filter_seen: bool = True,
        items: np.ndarray | None = None,
        filter_items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``N`` items for one or many users (benfred/implicit-like).

        ``user`` is either a user row (1 x n_items sparse / dense), a batch of
        rows, or integer user index(es) into ``user_items`` (defaults to the
        matrix seen by ``fit``).  ``items`` restricts the candidates (e.g. a
        stream showcase), ``filter_items`` removes items, ``filter_seen``
        removes the user's own items.

        Returns ``(ids, scores)``: 1-d arrays for a single user (possibly
        shorter than ``N`` if fewer candidates score), 2-d ``(n_users, N)`` for
        a batch, padded with id -1 / score -inf.
        """
        self._check_fitted()
        rows, single = self._rows(user, user_items)
        if single and rows.shape[0] == 1:
            idx = rows.indices.astype(np.int64)
            w = rows.data.astype(np.float64)
            return self.recommend_indices(idx, w, N, filter_seen=filter_seen, items=items, filter_items=filter_items)
        scores = self.score_batch(rows)
        if filter_seen:
            r, c = rows.nonzero()
            scores[r, c] = -np.inf
        mask = np.zeros(self.n_items_, dtype=np.bool_)
        if items is not None:
            mask[:] = True
            mask[np.asarray(items, dtype=np.int64)] = False
        if filter_items is not None:
            mask[np.asarray(filter_items, dtype=np.int64)] = True
        if mask.any():
            scores[:, mask] = -np.inf
        ids, vals = top_k_rows(scores, N)
        ids = np.where(np.isfinite(vals), ids, -1)
        return ids, vals

    def recommend_indices(
        self,
        idx: np.ndarray,
        w: np.ndarray,
        N: int = 10,
        *,
        filter_seen: bool = True,
        items: np.ndarray | None = None,
        filter_items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fast single-user path: the user's item indices and affinities in,
        ``(ids, scores)`` out.  For sparse neighbours the cost is proportional
        to the number of gathered neighbours (|I_u| x N), not the catalogue."""
        return self._recommend_one(
            np.asarray(idx, dtype=np.int64), np.asarray(w, dtype=np.float64), N, filter_seen, items, filter_items
        )

    def _recommend_one(self, idx, w, N, filter_seen, items, filter_items):
        cand, scores = self.score_one(idx, w)
        keep = np.ones(cand.size, dtype=bool)
        if filter_seen and idx.size:
            seen = np.sort(idx)
            p = np.minimum(np.searchsorted(seen, cand), seen.size - 1)
            keep &= seen[p] != cand
        if items is not None:
            keep &= np.isin(cand, items)
        if filter_items is not None:
            keep &= ~np.isin(cand, filter_items)
        if not self.is_dense:
            keep &= scores != 0
        if not keep.all():
            cand, scores = cand[keep], scores[keep]
        best = top_k(scores, N)
        return cand[best], scores[best]

    def similar_items(self, item: int, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items most similar to ``item`` (row of W / B), excluding itself."""
        return self._recommend_one(np.array([item]), np.array([1.0]), N, True, None, None)

    # ---------------------------------------------------------- serialisation
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numeric arrays (np.savez-able, loadable with allow_pickle=False)."""
        self._check_fitted()
        if self.B_ is not None:
            return {"B": np.ascontiguousarray(self.B_)}
        return csr_to_arrays(self.W_, "W")

    @property
    def meta(self) -> dict[str, Any]:
        """JSON-able description: class, params, shapes, storage format."""
        self._check_fitted()
        params = {k: v for k, v in self.get_params().items()}
        json.dumps(params)  # fail early if a param is not JSON-able
        return {
            "class": type(self).__name__,
            "params": params,
            "n_items": int(self.n_items_),
            "format": "dense" if self.B_ is not None else "sparse",
            "fit_info": getattr(self, "fit_info_", {}),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]):
        if meta.get("class") not in (None, cls.__name__):
            raise ValueError(f"meta is for {meta.get('class')}, not {cls.__name__}")
        obj = cls(**meta.get("params", {}))
        obj.n_items_ = int(meta["n_items"])
        obj.fit_info_ = dict(meta.get("fit_info", {}))
        if meta.get("format") == "dense":
            obj.B_ = np.asarray(arrays["B"])
            obj.W_ = None
        else:
            obj.W_ = as_csr(csr_from_arrays(arrays, "W"), dtype=arrays["W.data"].dtype)
            obj.B_ = None
        return obj
