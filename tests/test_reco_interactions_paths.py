"""build_user_items' fast paths against their definitions: the strongest action per (user, item), the
weights-only call, and the instants' seconds for every unit a column may have."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.reco import interactions as I

TYPES = ["product_click", "add_to_cart", "purchase", "refund", "like", "product_impression"]


def _events(rng, n, categorical: bool) -> pd.DataFrame:
    ev = pd.DataFrame(
        {
            "user_id": [f"u{x}" for x in rng.integers(0, 40, n)],
            "item_id": [f"i{x}" for x in rng.integers(0, 30, n)],
            "type": rng.choice(TYPES, n),
            "ts": pd.to_datetime(rng.integers(1.70e18, 1.71e18, n), utc=True),
        }
    )
    ev.loc[ev.index % 7 == 0, "item_id"] = None
    return ev.astype({"user_id": "category", "item_id": "category", "type": "category"}) if categorical else ev


@pytest.mark.parametrize("categorical", [False, True])
def test_strongest_action_per_pair_is_its_definition(categorical):
    rng = np.random.default_rng(3)
    ev = _events(rng, 2500, categorical)
    aw = I.DEFAULT_ACTION_WEIGHTS
    got = I.build_user_items(ev, half_life_days=30.0)
    assert got.actions is not None and got.actions.has_sorted_indices
    upos = {u: k for k, u in enumerate(got.user_ids.tolist())}
    ipos = {x: k for k, x in enumerate(got.item_ids.tolist())}
    names = got.action_names
    want: dict[tuple[int, int], int] = {}
    for u, i, t in zip(ev["user_id"], ev["item_id"], ev["type"]):
        if i is None or pd.isna(i) or t not in aw:
            continue
        key, code = (upos[u], ipos[i]), names.index(t)
        old = want.get(key)
        # the highest weight; among equal weights the action named later
        if old is None or (aw[t], code) > (aw[names[old]], old):
            want[key] = code
    A = got.actions.tocoo()
    assert {(int(r), int(c)): int(v) - 1 for r, c, v in zip(A.row, A.col, A.data)} == want
    assert got.actions.indices.dtype == got.matrix.indices.dtype
    # weights only: the same matrix, no actions
    plain = I.build_user_items(ev, half_life_days=30.0, actions=False)
    assert plain.actions is None
    assert (plain.matrix != got.matrix).nnz == 0 and np.array_equal(plain.matrix.indices, got.matrix.indices)


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_seconds_of_every_unit_are_pandas_microseconds(unit):
    rng = np.random.default_rng(4)
    v = rng.integers(-3_000_000_000, 3_000_000_000, 5000) * 1_000_000_000 + rng.integers(0, 10**9, 5000)
    s = pd.Series(pd.to_datetime(v, utc=True)).astype(f"datetime64[{unit}, UTC]")
    want = pd.to_datetime(s, utc=True).dt.as_unit("us").astype("int64").to_numpy().astype(np.float64) / 1e6
    assert np.array_equal(I._ts_seconds(s), want)
    s[3] = pd.NaT  # through pandas: NaN there
    assert np.isnan(I._ts_seconds(s)).sum() == 1


def test_codes_of_a_categorical_without_ids_are_factorize():
    rng = np.random.default_rng(5)
    for _ in range(50):
        vals = rng.choice([f"s{x}" for x in range(int(rng.integers(1, 60)))] + [None], int(rng.integers(0, 400)))
        col = pd.Series(pd.Categorical(vals, categories=sorted({v for v in vals if v is not None} | {"unused"})))
        codes, ids = I._codes(col, None)
        want_codes, want_ids = pd.factorize(pd.Series(vals, dtype=object))
        assert codes.tolist() == want_codes.tolist() and ids.tolist() == list(want_ids)
