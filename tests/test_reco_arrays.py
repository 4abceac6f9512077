"""shared.reco.arrays: `unique` (the same array as np.unique, on every dtype it takes the fast path for) and `ascending`."""

import numpy as np
import pytest

from shared.reco.arrays import unique


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.uint16, np.uint64, np.bool_])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 20000])
def test_same_as_numpy(dtype, n):
    rng = np.random.default_rng(n)
    hi = 2 if dtype is np.bool_ else min(np.iinfo(dtype).max, 10**12)
    lo = 0 if dtype in (np.uint16, np.uint64, np.bool_) else -min(-np.iinfo(dtype).min, 10**12)
    a = rng.integers(lo, hi, n, endpoint=dtype is np.bool_).astype(dtype)
    got, want = unique(a), np.unique(a)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_flattens_like_numpy_and_leaves_the_input():
    a = np.array([[3, 1, 3], [2, 1, 9]], dtype=np.int64)
    before = a.copy()
    np.testing.assert_array_equal(unique(a), np.unique(a))
    np.testing.assert_array_equal(a, before)
    np.testing.assert_array_equal(unique([5, 5, -1]), np.array([-1, 5]))


def test_other_dtypes_fall_back_to_numpy():
    f = np.array([2.0, np.nan, 1.0, np.nan, 2.0])
    np.testing.assert_array_equal(unique(f), np.unique(f))  # one NaN, as numpy's equal_nan
    s = np.array(["b", "a", "b"])
    np.testing.assert_array_equal(unique(s), np.array(["a", "b"]))


def test_ascending_is_non_decreasing_order():
    from shared.reco.arrays import ascending

    assert ascending(np.array([], dtype=np.int64)) and ascending(np.array([5]))
    assert ascending(np.array([1, 1, 2, 9])) and not ascending(np.array([1, 3, 2]))
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 5, rng.integers(0, 8))
        assert ascending(a) == bool(np.all(np.diff(a) >= 0))
