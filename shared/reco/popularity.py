"""Popularity: global and per stream, time-decayed.

``global[i] = sum_u X[u, i]`` over the (already weighted and time-decayed, see
``interactions.build_user_items``) user x item matrix, or the number of
distinct users with ``binary=True``.  Per-stream popularity is the same sum
over a stream x item matrix (``interactions.build_stream_items``, usually
with a shorter half-life).  Scores are normalised to ``[0, 1]`` (divided by
the maximum) so they can be blended with other parts.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from ._core import as_csr, csr_from_arrays, csr_to_arrays, str_array

__all__ = ["Popularity"]


class Popularity:
    """Most-popular recommender (global and per stream)."""

    def __init__(self, binary: bool = False):
        self.binary = binary

    def get_params(self):
        return {"binary": self.binary}

    def fit(self, user_items: sp.spmatrix, stream_items: sp.spmatrix | None = None, stream_ids=None):
        t0 = time.perf_counter()
        X = as_csr(user_items, dtype=np.float64)
        if self.binary:
            X.data = (X.data > 0).astype(np.float64)
        g = np.asarray(X.sum(axis=0)).ravel()
        self.n_items_ = X.shape[1]
        self.global_ = (g / g.max() if g.max() > 0 else g).astype(np.float32)
        if stream_items is not None:
            S = as_csr(stream_items, dtype=np.float64)
            mx = np.asarray(S.max(axis=1).todense()).ravel()
            mx[mx <= 0] = 1.0
            S = sp.diags(1.0 / mx) @ S
            self.stream_ = as_csr(S, dtype=np.float32)
            self.stream_ids_ = str_array(stream_ids if stream_ids is not None else np.arange(S.shape[0]).astype(str))
        else:
            self.stream_ = sp.csr_matrix((0, self.n_items_), dtype=np.float32)
            self.stream_ids_ = str_array([])
        self._stream_index = {s: k for k, s in enumerate(self.stream_ids_.tolist())}
        self.user_items_ = as_csr(user_items)
        self.fit_info_ = {"fit_seconds": time.perf_counter() - t0}
        return self

    def stream_scores(self, stream_id) -> np.ndarray | None:
        """Dense normalised popularity of a stream, or None if unknown."""
        k = self._stream_index.get(str(stream_id)) if stream_id is not None else None
        if k is None:
            return None
        row = self.stream_[k]
        out = np.zeros(self.n_items_, dtype=np.float32)
        out[row.indices] = row.data
        return out

    def score_batch(self, user_items: sp.spmatrix) -> np.ndarray:
        return np.tile(self.global_, (user_items.shape[0], 1)).astype(np.float64)

    def recommend(
        self,
        user,
        N: int = 10,
        *,
        user_items=None,
        filter_seen: bool = True,
        items=None,
        filter_items=None,
        stream_id=None,
    ):
        """Top-N popular items; same calling convention as the item models."""
        base = self.stream_scores(stream_id)
        base = self.global_ if base is None else base
        if sp.issparse(user):
            rows, single = sp.csr_matrix(user), user.shape[0] == 1
        else:
            arr = np.asarray(user)
            src = sp.csr_matrix(user_items if user_items is not None else self.user_items_)
            rows, single = src[np.atleast_1d(arr).astype(np.int64)], arr.ndim == 0
        scores = np.tile(base.astype(np.float64), (rows.shape[0], 1))
        if filter_seen:
            r, c = rows.nonzero()
            scores[r, c] = -np.inf
        if items is not None:
            m = np.ones(self.n_items_, dtype=bool)
            m[np.asarray(items, dtype=np.int64)] = False
            scores[:, m] = -np.inf
        if filter_items is not None:
            scores[:, np.asarray(filter_items, dtype=np.int64)] = -np.inf
        from ._core import top_k_rows

        ids, vals = top_k_rows(scores, N)
        ids = np.where(np.isfinite(vals), ids, -1)
        if single:
            keep = ids[0] >= 0
            return ids[0][keep], vals[0][keep]
        return ids, vals

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"global": self.global_, "stream_ids": self.stream_ids_}
        out.update(csr_to_arrays(self.stream_, "stream"))
        return out

    @property
    def meta(self):
        return {"class": "Popularity", "params": self.get_params(), "n_items": int(self.n_items_)}

    @classmethod
    def from_arrays(cls, arrays, meta):
        obj = cls(**meta.get("params", {}))
        obj.n_items_ = int(meta["n_items"])
        obj.global_ = np.asarray(arrays["global"])
        obj.stream_ = csr_from_arrays(arrays, "stream")
        obj.stream_ids_ = np.asarray(arrays["stream_ids"])
        obj._stream_index = {s: k for k, s in enumerate(obj.stream_ids_.tolist())}
        obj.user_items_ = None
        return obj
