"""RoomLog (the rooms of the evaluation and training queries) against the per-query mask + np.unique it
replaced, and room_so_far on ids and on model positions."""

import numpy as np
import pandas as pd

from shared.reco.recipe import room_so_far
from shared.reco.roomlog import RoomLog


def _reference(stream, ts, item, typ, t, s, lo, hi):
    m = (stream == s) & (typ == t) & (ts < hi) & ((ts >= lo) if lo is not None else True)
    return np.unique(item[m], return_counts=True)


def test_roomlog_counts_equal_unique_of_the_window():
    rng = np.random.default_rng(3)
    n = 5000
    stream = rng.integers(0, 7, n)
    ts = rng.integers(0, 10_000, n)  # ties on purpose
    item = rng.integers(-1, 300, n)  # -1: an unknown item is counted as any code
    typ = rng.integers(0, 4, n)
    log = RoomLog(stream, ts, item, typ, 8, 4)  # stream 7 has no rows
    for _ in range(400):
        t, s = int(rng.integers(0, 4)), int(rng.integers(0, 8))
        hi = int(rng.integers(-5, 10_100))
        lo = None if rng.random() < 0.5 else hi - int(rng.integers(0, 3000))
        u, c = log.counts(t, s, lo, hi)
        ru, rc = _reference(stream, ts, item, typ, t, s, lo, hi)
        assert u.tolist() == ru.tolist() and c.tolist() == rc.tolist()
        assert u.dtype == np.int64 and c.dtype == np.int64


def test_roomlog_prefixes_in_time_order_and_back():
    """Rooms so far asked in time order per stream (the callers' order: each prefix extends the last one,
    counted incrementally), then backwards and repeated: always the reference's counts."""
    rng = np.random.default_rng(5)
    n = 20000
    stream = rng.integers(0, 3, n)
    ts = rng.integers(0, 50_000, n)
    item = rng.integers(0, 2000, n)  # many items per stream: the bincount (prefix) branch
    typ = rng.integers(0, 2, n)
    log = RoomLog(stream, ts, item, typ, 3, 2)
    his = np.sort(rng.integers(0, 50_500, 60))
    asks = [(s, int(h)) for s in range(3) for h in his]
    asks += [(s, int(h)) for s in range(3) for h in his[::-1]] + asks[:20]
    for s, hi in asks:
        for t in range(2):
            u, c = log.counts(t, s, None, hi)
            ru, rc = _reference(stream, ts, item, typ, t, s, None, hi)
            assert u.tolist() == ru.tolist() and c.tolist() == rc.tolist()
        u, c = log.counts(0, s, hi - 400, hi)  # a recent window between two prefixes leaves them alone
        ru, rc = _reference(stream, ts, item, typ, 0, s, hi - 400, hi)
        assert u.tolist() == ru.tolist() and c.tolist() == rc.tolist()


def test_room_so_far_ids_and_positions():
    t0 = pd.Timestamp("2026-11-01", tz="UTC")
    ev = pd.DataFrame(
        {
            "stream_id": ["s1", "s1", "s1", "s2", "s1", None],
            "item_id": ["b", "a", "b", "a", "zz", "a"],
            "type": ["purchase", "purchase", "product_click", "purchase", "purchase", "purchase"],
            "ts": [t0 + pd.Timedelta(minutes=m) for m in (0, 30, 31, 1, 40, 2)],
        }
    )
    keys = [("s1", t0 + pd.Timedelta(minutes=35)), ("s2", t0 + pd.Timedelta(minutes=5)), ("s9", t0)]
    rooms = room_so_far(ev, keys)
    assert rooms[0]["purchase"][0].tolist() == ["a", "b"] and rooms[0]["purchase"][1].tolist() == [1.0, 1.0]
    assert rooms[0]["purchase@10m"][0].tolist() == ["a"] and rooms[0]["product_click"][0].tolist() == ["b"]
    assert "product_click@5m" in rooms[0] and rooms[2] == {} and list(rooms[1]) == ["purchase", "purchase@10m"]
    idx = room_so_far(ev, [(keys[0][0], t0 + pd.Timedelta(minutes=45))], pd.Index(["a", "b"]))[0]
    assert idx["purchase"][0] == "idx" and idx["purchase"][1].tolist() == [0, 1]  # "zz" unknown: dropped


def test_roomlog_of_time_ordered_rows_compiled_and_plain():
    """Rows in time order (the callers' frames): the compiled one-pass build gives the arrays of the numpy
    build, and the reference's counts."""
    import pytest

    from shared.reco import _kernels as K

    if not K.HAVE_NUMBA:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(11)
    for n, n_streams in ((1, 1), (7000, 9), (20000, 3)):
        stream = rng.integers(0, n_streams - 1 if n_streams > 1 else 1, n)  # (the last stream has no rows)
        ts = np.sort(rng.integers(0, 30_000, n))  # ties on purpose
        item = rng.integers(-1, 400, n)
        typ = rng.integers(0, 4, n)
        fast = RoomLog(stream, ts, item, typ, n_streams, 4)
        K.HAVE_NUMBA = False
        try:
            plain = RoomLog(stream, ts, item, typ, n_streams, 4)
        finally:
            K.HAVE_NUMBA = True
        for a in ("ts", "ptr", "pair_item", "pair_ptr", "local"):
            x, y = getattr(fast, a), getattr(plain, a)
            assert x.dtype == y.dtype and x.tolist() == y.tolist(), a
        for _ in range(200):
            t, s = int(rng.integers(0, 4)), int(rng.integers(0, n_streams))
            hi = int(rng.integers(-5, 30_100))
            lo = None if rng.random() < 0.5 else hi - int(rng.integers(0, 5000))
            u, c = fast.counts(t, s, lo, hi)
            ru, rc = _reference(stream, ts, item, typ, t, s, lo, hi)
            assert u.tolist() == ru.tolist() and c.tolist() == rc.tolist()
