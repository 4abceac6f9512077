"""Array helpers on the hot paths of train and recommend.

``ascending``: a 1-D array in non-decreasing order. ``unique``: ``np.unique(a)`` (sorted distinct values of the flattened array) by one sort and a
neighbour comparison. numpy 2.3+ answers a plain ``np.unique`` of integers with a hash table, which
measured 10-110x slower than this here from 1,000 values up (8M int64 keys: 8.1 s against 0.07 s;
numpy 2.4.6, ``python bench/bench_unique.py``); the result is the same array (values and dtype).
Floats (NaN handling), strings and objects keep ``np.unique``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ascending", "unique"]


def ascending(a) -> bool:
    """True when the 1-D ``a`` never decreases (a time column already in order: the callers' fast paths)."""
    arr = np.asarray(a)
    return arr.size < 2 or bool((arr[1:] >= arr[:-1]).all())


def unique(a) -> np.ndarray:
    """The sorted distinct values of ``a`` (flattened), as ``np.unique(a)``."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "biu":
        return np.unique(arr)
    s = np.sort(arr, axis=None)
    if s.size < 2:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]
