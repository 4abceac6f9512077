"""Build weighted, time-decayed implicit-feedback matrices from event DataFrames.

Events have columns ``user_id``, ``item_id``, ``ts`` (UTC datetime), ``type``
(and optionally ``stream_id``).  Each event gets

    w(e) = action_weight[type(e)] · 0.5 ** (age_days(e) / half_life_days)

with ``age_days = (reference_time - ts) / 1 day`` clipped at 0 (so events
after the reference time are not up-weighted).  ``w`` is summed per
(user, item) and totals are clipped at 0 (a refund cancels a purchase, but an
item never gets a negative affinity).  Ids are mapped with ``pd.factorize`` /
categorical codes, the matrix is assembled as COO and converted to CSR, which
sums duplicates.  Events without an ``item_id`` (likes/comments/shares on the
stream itself) are ignored.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.action_weights import DEFAULT_ACTION_WEIGHTS  # (one definition; the Beam job reads it too)

from ._core import str_array

__all__ = [
    "DEFAULT_ACTION_WEIGHTS",
    "Interactions",
    "build_user_items",
    "build_stream_items",
    "event_weights",
]


@dataclass
class Interactions:
    """A user x item matrix with its id mappings.

    ``actions`` has the same shape; its value at (u, i) is 1 + the index in
    ``action_names`` of the strongest (highest-weight) action u took on i —
    what a "because you <action> X" reason names.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    actions: sp.csr_matrix | None = None
    action_names: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape


def _ts_seconds(ts: pd.Series) -> np.ndarray:
    """Float seconds since the epoch of the instants' whole microseconds (a UTC column's int64s scaled,
    no datetime conversion; anything else, or NaT, through pandas)."""
    per_us = {"ns": -1000, "us": 1, "ms": 1000, "s": 1_000_000}
    if isinstance(ts.dtype, pd.DatetimeTZDtype) and str(ts.dtype.tz) == "UTC" and ts.dtype.unit in per_us:
        v = ts.array.asi8  # (NaT is int64 min: the path below then handles it)
        f = per_us[ts.dtype.unit]
        big = np.iinfo(np.int64).max // max(f, 1)  # (a coarser unit's values must fit as microseconds)
        if not v.size or (int(v.min()) > np.iinfo(np.int64).min and int(np.abs(v).max()) <= big):
            us = v // -f if f < 0 else (v * f if f > 1 else v)
            return us.astype(np.float64) / 1e6
    t = pd.to_datetime(ts, utc=True)
    if not t.isna().any():  # integer microseconds since the epoch (no per-element timedelta objects)
        return t.dt.as_unit("us").astype("int64").to_numpy().astype(np.float64) / 1e6
    return (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)


def event_weights(
    events: pd.DataFrame,
    action_weights: dict[str, float] | None = None,
    half_life_days: float | None = None,
    reference_time=None,
    *,
    type_col: str = "type",
    time_col: str = "ts",
    weight_col: str | None = None,
    default_weight: float = 0.0,
) -> np.ndarray:
    """Per-event weight (action weight x exponential time decay), vectorised."""
    aw = DEFAULT_ACTION_WEIGHTS if action_weights is None else action_weights
    if weight_col is not None and weight_col in events:
        w = events[weight_col].to_numpy(dtype=np.float64)
    elif type_col in events and isinstance(events[type_col].dtype, pd.CategoricalDtype):
        col = events[type_col]
        lut = np.array(
            [aw.get(str(c), default_weight) for c in col.cat.categories] + [default_weight], dtype=np.float64
        )
        w = lut[col.cat.codes.to_numpy()]  # code -1 (missing) -> the last entry
    elif type_col in events:
        w = events[type_col].map(aw).fillna(default_weight).to_numpy(dtype=np.float64)
    else:
        w = np.ones(len(events), dtype=np.float64)
    if half_life_days is not None and len(events):
        secs = _ts_seconds(events[time_col])
        ref = secs.max() if reference_time is None else _ts_seconds(pd.Series([reference_time]))[0]
        age = np.maximum(ref - secs, 0.0) / 86400.0
        w = w * np.exp2(-age / float(half_life_days))
    return w


_INDEXES: dict[int, tuple[weakref.ref, pd.Index]] = {}


def id_index(ids: np.ndarray) -> pd.Index:
    """``pd.Index(ids)`` built once per ids array (its hash table is built on the first lookup and kept
    with it): every ``_codes`` call of a run against the same user / item ids reuses it instead of
    hashing 1M user ids again. Keyed by the array's identity, checked through a weak reference (a
    freed array's id reused by another array is never mistaken for it); ids arrays are not mutated."""
    key = id(ids)
    hit = _INDEXES.get(key)
    if hit is not None and hit[0]() is ids:
        return hit[1]
    index = pd.Index(ids)
    if len(_INDEXES) >= 64:
        for k in [k for k, (r, _) in _INDEXES.items() if r() is None] or list(_INDEXES)[:32]:
            _INDEXES.pop(k, None)
    _INDEXES[key] = (weakref.ref(ids), index)
    return index


_CATS: dict[int, tuple[weakref.ref, np.ndarray]] = {}
_REMAPS: dict[tuple[int, int], tuple[weakref.ref, weakref.ref, np.ndarray]] = {}


def _memo_put(memo: dict, key, value) -> None:
    if len(memo) >= 64:  # dead entries first, else the oldest half
        for k in [k for k, v in memo.items() if any(r() is None for r in v[:-1])] or list(memo)[:32]:
            memo.pop(k, None)
    memo[key] = value


def _category_strings(categories: pd.Index) -> np.ndarray:
    """A categorical column's categories as a ``<U`` array, converted once per categories Index: every
    slice of the reader's frame (the gate's training part, the label windows, each type's rows) shares
    its dtype's categories object, so the 1M user ids are not converted again per call. Keyed by
    identity through a weak reference, as ``id_index`` (pandas Indexes are immutable)."""
    hit = _CATS.get(id(categories))
    if hit is not None and hit[0]() is categories:
        return hit[1]
    cats = np.asarray(categories.astype(str), dtype=str)
    cats.setflags(write=False)
    _memo_put(_CATS, id(categories), (weakref.ref(categories), cats))
    return cats


def _category_remap(categories: pd.Index, ids: np.ndarray, missing: bool = False) -> np.ndarray:
    """Positions of a categorical column's categories in ``ids`` (-1: not there), once per
    (categories Index, ids array) pair: the same lookup every phase of a run repeats otherwise.
    ``missing``: with one more entry, -1, at the end (what code -1, a missing value, indexes)."""
    key = (id(categories), id(ids))
    hit = _REMAPS.get(key)
    if not (hit is not None and hit[0]() is categories and hit[1]() is ids):
        remap = np.append(id_index(ids).get_indexer(_category_strings(categories)).astype(np.int64), -1)
        remap.setflags(write=False)
        hit = (weakref.ref(categories), weakref.ref(ids), remap)
        _memo_put(_REMAPS, key, hit)
    return hit[2] if missing else hit[2][:-1]


def _codes(values: pd.Series, ids: np.ndarray | None):
    """Codes into ``ids`` (or the ids of first appearance) — categorical columns (the train job's
    reader hands arrow dictionaries over as ``pd.Categorical``) map their few categories, not every row
    (converted and looked up once per categories object: ``_category_strings`` / ``_category_remap``)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = values.cat.categories
        cats = _category_strings(categories)
        if ids is None:
            codes = values.cat.codes.to_numpy()
            # the categories in first-appearance order, as pd.factorize: pd.unique of the codes (a hash
            # pass in order of appearance), code -1 (missing) left out
            order = pd.unique(codes)
            order = order[order >= 0].astype(np.int64)
            remap = np.full(len(cats) + 1, -1, dtype=np.int64)  # (its last entry: code -1)
            remap[order] = np.arange(order.size)
            return remap[codes], str_array(cats[order])
        ids = str_array(ids)
        # one gather from the remap with -1 appended: code -1 (missing) takes that last entry
        return _category_remap(categories, ids, missing=True)[values.cat.codes.to_numpy()], ids
    if ids is None:
        codes, uniques = pd.factorize(values.astype(str), sort=False)
        return codes, str_array(np.asarray(uniques, dtype=str))
    ids = str_array(ids)
    codes = id_index(ids).get_indexer(values.astype(str)).astype(np.int64)
    return codes, ids


def build_user_items(
    events: pd.DataFrame,
    action_weights: dict[str, float] | None = None,
    half_life_days: float | None = 30.0,
    reference_time=None,
    *,
    user_ids=None,
    item_ids=None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    type_col: str = "type",
    time_col: str = "ts",
    weight_col: str | None = None,
    dtype=np.float32,
    actions: bool = True,
) -> Interactions:
    """Events -> weighted user x item CSR (see module docstring).

    ``user_ids`` / ``item_ids`` fix the index space (e.g. the full catalogue,
    so cold items get a column); events with ids outside it are dropped.
    ``actions=False``: no strongest-action matrix (``Interactions.actions`` None), for a caller that
    reads only the weights.
    """
    aw = DEFAULT_ACTION_WEIGHTS if action_weights is None else action_weights
    ev = events[events[item_col].notna() & events[user_col].notna()]
    w = event_weights(
        ev, aw, half_life_days, reference_time, type_col=type_col, time_col=time_col, weight_col=weight_col
    )
    u, uids = _codes(ev[user_col], user_ids)
    i, iids = _codes(ev[item_col], item_ids)
    ok = (u >= 0) & (i >= 0)
    all_ok = bool(ok.all())
    if not all_ok:
        u, i, w = u[ok], i[ok], w[ok]
    shape = (len(uids), len(iids))
    X = sp.coo_matrix((w, (u, i)), shape=shape).tocsr()  # sums duplicates
    X.data = np.maximum(X.data, 0.0)
    X.eliminate_zeros()
    X = X.astype(dtype)
    X.sort_indices()
    strongest = None
    names: list[str] = []
    if actions and type_col in ev and weight_col is None:
        names = list(aw.keys())
        t = _codes(ev[type_col], np.asarray(names, dtype=str))[0]
        t = t if all_ok else t[ok]
        tw = np.array([aw[n] for n in names], dtype=np.float64)
        good = t >= 0
        if good.any():
            uu, ii, tt = (u, i, t) if good.all() else (u[good], i[good], t[good])
            # strongest action per (u, i): one sort of packed keys (u, i, rank of the action weight;
            # equal weights: later action name last, as the stable lexsort it replaces), keep the last
            rank = np.empty(len(names), dtype=np.int64)
            rank[np.lexsort((np.arange(len(names)), tw))] = np.arange(len(names))
            nb = max(int(len(names)).bit_length(), 1)
            if (len(uids) + 1) * (len(iids) + 1) < (1 << (62 - nb)):
                key = ((uu * len(iids) + ii) << nb) | rank[tt]
                key.sort()
                ui = key >> nb
                last = np.ones(ui.size, dtype=bool)
                last[:-1] = ui[1:] != ui[:-1]
                key, ui = key[last], ui[last]  # (decoded for the kept entries only)
                tt = np.argsort(rank)[key & ((1 << nb) - 1)]
                uu, ii = ui // len(iids), ui % len(iids)
            else:
                order = np.lexsort((tw[tt], ii, uu))
                uu, ii, tt = uu[order], ii[order], tt[order]
                last = np.ones(uu.size, dtype=bool)
                last[:-1] = (uu[1:] != uu[:-1]) | (ii[1:] != ii[:-1])
                uu, ii, tt = uu[last], ii[last], tt[last]
            # (u, i) ascending and distinct: the CSR arrays directly (no COO conversion, no sort)
            indptr = np.zeros(shape[0] + 1, dtype=np.int64)
            np.cumsum(np.bincount(uu, minlength=shape[0]), out=indptr[1:])
            strongest = sp.csr_matrix(((tt + 1).astype(np.int16), ii, indptr), shape=shape)
            strongest.sort_indices()
    return Interactions(matrix=X, user_ids=uids, item_ids=iids, actions=strongest, action_names=names)


def build_stream_items(
    events: pd.DataFrame,
    item_ids,
    action_weights: dict[str, float] | None = None,
    half_life_days: float | None = 7.0,
    reference_time=None,
    *,
    stream_col: str = "stream_id",
    item_col: str = "item_id",
    type_col: str = "type",
    time_col: str = "ts",
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Stream x item time-decayed popularity matrix -> (matrix, stream_ids)."""
    ev = events[events[item_col].notna() & events[stream_col].notna()]
    w = event_weights(ev, action_weights, half_life_days, reference_time, type_col=type_col, time_col=time_col)
    s, sids = _codes(ev[stream_col], None)
    i, iids = _codes(ev[item_col], item_ids)
    ok = i >= 0
    M = sp.coo_matrix((w[ok], (s[ok], i[ok])), shape=(len(sids), len(iids))).tocsr()
    M.data = np.maximum(M.data, 0.0)
    M.eliminate_zeros()
    M.sort_indices()
    return M.astype(np.float32), sids
