"""Content-based item similarity: TF-IDF over character n-grams.

Each item's text is ``title + description + category``.  ``TfidfVectorizer``
with ``analyzer='char_wb'`` and ``ngram_range=(1, 3)`` needs no word
segmentation, so it works for Chinese ("纯棉T恤" and "纯棉 T恤" share the
n-grams 纯, 棉, 纯棉, t恤, ...) as well as for Latin scripts.  Rows are
L2-normalised, so the similarity is the cosine

    S[i, j] = v_i · v_j / (||v_i|| ||v_j||)

kept as the top-``neighbours`` per item (diagonal removed).  Scoring is the
same item-item formula as CF, ``R(u, i) = sum_j a(u, j) S[j, i]``, and works
for items nobody has interacted with yet (cold items).

Note on persistence: the vectorizer vocabulary is not serialised, only the
neighbour matrix; a newly added item needs a re-fit (cheap: seconds for tens
of thousands of items).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._core import as_csr, prune_top_n
from ._kernels import HAVE_NUMBA, topn_similarity
from .base import ItemBasedRecommender

__all__ = ["ContentModel", "item_texts"]


def item_texts(items: pd.DataFrame, cols: Sequence[str] = ("title", "description", "category")) -> list[str]:
    """Concatenate the available text columns (vectorised, missing -> '')."""
    parts = [items[c].fillna("").astype(str) for c in cols if c in items]
    if not parts:
        return [""] * len(items)
    s = parts[0]
    for p in parts[1:]:
        s = s + " " + p
    return s.str.strip().tolist()


class ContentModel(ItemBasedRecommender):
    """TF-IDF char n-gram item-item similarity (top-N neighbours).

    ``fit(texts)`` takes one string per item, in item-index order.
    """

    def __init__(
        self,
        neighbours: int = 50,
        analyzer: str = "char_wb",
        ngram_min: int = 1,
        ngram_max: int = 3,
        min_df: int = 1,
        max_features: int | None = None,
        sublinear_tf: bool = True,
        block_size: int = 2048,
        max_df: float | int = 1.0,
        max_df_items: int | None = 2000,
        engine: str = "auto",
    ):
        self.neighbours = neighbours
        self.analyzer = analyzer
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf
        self.block_size = block_size
        self.max_df = max_df
        self.max_df_items = max_df_items
        self.engine = engine

    def vectorizer(self):
        # imported here: serving only loads fitted neighbour arrays, and sklearn costs ~0.9 s of a
        # cold start (python -X importtime)
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            analyzer=self.analyzer,
            ngram_range=(self.ngram_min, self.ngram_max),
            min_df=self.min_df,
            max_features=self.max_features,
            max_df=self.max_df,
            sublinear_tf=self.sublinear_tf,
            lowercase=True,
            dtype=np.float32,
        )

    def fit(self, texts: Sequence[str]):
        t0 = time.perf_counter()
        texts = ["" if t is None else str(t) for t in texts]
        n = len(texts)
        self.n_items_ = n
        if n == 0 or not any(t.strip() for t in texts):
            self.W_ = sp.csr_matrix((n, n), dtype=np.float32)
            self.B_ = None
            self.fit_info_ = {"fit_seconds": time.perf_counter() - t0}
            return self
        try:
            V = self.vectorizer().fit_transform(texts).astype(np.float32).tocsr()
        except ValueError:  # max_df / min_df pruned every feature (e.g. identical texts)
            V = sp.csr_matrix((n, 0), dtype=np.float32)
        n_features = int(V.shape[1])
        V, n_dropped = self._drop_common(V)
        use_numba = self.engine == "numba" or (self.engine == "auto" and HAVE_NUMBA)
        if use_numba and n and V.shape[1]:
            # cos(i, j) = sum_f v_if v_jf: the fused top-N kernel with features as "users"
            # (X = Vᵀ, feature x item) and the raw co-occurrence value as similarity
            X = as_csr(V.T, dtype=np.float64)
            X.eliminate_zeros()
            XT = as_csr(X.T, dtype=np.float64)
            work = XT @ np.diff(X.indptr).astype(np.float64)
            indptr, indices, data = topn_similarity(
                X, XT, np.ones(n), "cooccurrence", int(self.neighbours), 1e-6, np.minimum(work, n), np.float32
            )
            self.W_ = sp.csr_matrix((data, indices, indptr), shape=(n, n))
            engine = "numba"
        else:
            VT = as_csr(V.T, dtype=np.float32)
            blocks = []
            for start in range(0, n, self.block_size):
                end = min(start + self.block_size, n)
                sims = V[start:end] @ VT
                blocks.append(prune_top_n(sims, self.neighbours, drop_diagonal=True, row_offset=start, min_value=1e-6))
            self.W_ = as_csr(sp.vstack(blocks, format="csr"), dtype=np.float32)
            engine = "scipy"
        self.B_ = None
        self.fit_info_ = {
            "fit_seconds": time.perf_counter() - t0,
            "n_features": n_features,
            "dropped_common_features": n_dropped,
            "engine": engine,
        }
        return self

    def _drop_common(self, V: sp.csr_matrix) -> tuple[sp.csr_matrix, int]:
        """Drop features present in more than ``max_df_items`` items (stop-n-grams such as a shared
        "商品" prefix) from the neighbour search and re-normalise the rows.  The search costs
        ``sum_f df_f^2``, so one feature shared by every item costs ``n^2`` alone; such features
        carry almost no idf weight and barely move the ranking.  ``None`` keeps all features."""
        cap = self.max_df_items
        if cap is None or V.shape[1] == 0 or V.shape[0] <= cap:
            return V, 0
        df = np.bincount(V.indices, minlength=V.shape[1])
        keep = df <= cap
        if keep.all():
            return V, 0
        V = V[:, np.flatnonzero(keep)].tocsr()
        norms = np.sqrt(np.asarray(V.multiply(V).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        V = sp.diags((1.0 / norms).astype(np.float32)) @ V
        return as_csr(V, dtype=np.float32), int((~keep).sum())
