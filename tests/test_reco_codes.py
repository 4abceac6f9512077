"""The categorical id lookups memoised per categories object (interactions._codes): the same codes
for the reader's frame, its slices and other categories."""

import numpy as np
import pandas as pd

from shared.reco.interactions import _codes


def test_codes_memo_same_codes_for_slices_and_new_categories():
    cats = [f"u{k}" for k in range(50)]
    col = pd.Series(pd.Categorical.from_codes(np.arange(200) % 50, cats))
    ids = np.asarray(cats[::-1], dtype=str)
    a, _ = _codes(col, ids)
    b, _ = _codes(col[col.index % 3 == 0], ids)  # a slice: the same categories object, memoised remap
    assert a.tolist() == [49 - k % 50 for k in range(200)] and b.tolist() == a[::3].tolist()
    other = pd.Series(pd.Categorical.from_codes(np.arange(5), ["u1", "u2", "x", "u3", "u4"]))
    assert _codes(other, ids)[0].tolist() == [48, 47, -1, 46, 45]  # other categories: looked up afresh
    first, uids = _codes(col[::-1].reset_index(drop=True), None)
    assert uids.tolist()[:2] == ["u49", "u48"] and first[:2].tolist() == [0, 1]
