"""``RoomRanker.touch_last_`` (each viewer x item pair's latest positive touch): the compiled build
(``shared.reco._kernels.last_touch_build``) against its numpy formulation, and the matrix against the
plain definition (a groupby max)."""

import numpy as np
import pandas as pd
import pytest

from shared.reco import _kernels as K
from shared.reco.ranker import RoomRanker


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_build_equals_numpy(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n, nu, ni = 5000, 300, 80
    u = rng.integers(0, nu, n)
    i = rng.integers(0, ni, n)
    d = np.round(rng.uniform(19000, 19100, n), 3)
    d[rng.random(n) < 0.01] = np.nan  # a NaN day wins its pair, as np.maximum does
    got = K.last_touch_build(u, i, d, nu, ni)
    monkeypatch.setattr(K, "HAVE_NUMBA", False)
    ref = K.last_touch_build(u, i, d, nu, ni)
    assert K._last_touch_build is not None
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert got[1].dtype == np.int32 and np.isnan(got[2]).any()


def test_matrix_is_the_latest_positive_touch():
    rng = np.random.default_rng(5)
    n = 3000
    ev = pd.DataFrame(
        {
            "user_id": pd.Categorical(rng.choice([f"u{k}" for k in range(40)] + [None], n)),
            "item_id": pd.Categorical(rng.choice([f"i{k}" for k in range(30)] + [None], n)),
            "type": pd.Categorical(rng.choice(["product_impression", "product_click", "add_to_cart", "purchase"], n)),
            "ts": pd.to_datetime(1.7e9 + rng.integers(0, 40 * 86400, n), unit="s", utc=True),
        }
    )
    uids = np.array([f"u{k}" for k in range(45)])  # some viewers without a touch
    iids = np.array([f"i{k}" for k in range(25)])  # some items outside the index space: dropped
    M = RoomRanker._last_touch(ev, uids, iids)
    pos = ev[ev["type"].isin(["product_click", "add_to_cart", "purchase"])].dropna(subset=["user_id", "item_id"])
    pos = pos[pos["item_id"].isin(iids)]
    want = (
        ((pos["ts"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(days=1))
        .groupby([pos["user_id"].astype(str), pos["item_id"].astype(str)])
        .max()
    )
    u_of = {x: k for k, x in enumerate(uids)}
    i_of = {x: k for k, x in enumerate(iids)}
    D = M.toarray()
    assert M.nnz == len(want) > 100 and M.has_sorted_indices
    for (uu, ii), day in want.items():
        assert D[u_of[uu], i_of[ii]] == pytest.approx(day, abs=1e-9)
