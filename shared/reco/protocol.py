"""The evaluation harness every recommender is judged by (issue 9).

A clean library (the train job's promotion gate calls it) plus the thin CLI in
``devtools.evaluate``.  Four steps:

1. ``load_interactions`` — any events file (CSV / Parquet / Ta Feng / MovieLens)
   with a column mapping -> an *events frame* ``user_id, item_id, ts (UTC),
   type[, stream_id, price, weight]`` and, when derivable, an *items frame*
   ``item_id, title, description, category, price``.
2. ``make_split`` — a protocol (``leave-last`` / ``global-time`` / in-stream),
   a target (``purchase`` / ``cart`` / ``any``) and a variant (``all`` /
   ``new``) -> a training events frame + a list of ``Query``.
3. Rankers — ``fit(train_events, items, reference_time) -> self`` and
   ``rank(queries, k) -> list[list[str]]``: the baselines (``most_popular``,
   ``own_history``, ``itemknn``, and in-stream ``stream_bestsellers``,
   ``showcase_popularity``, ``own_then_stream``) and adapters for models with
   the service's ``recommend(...)`` call (``RecommendRanker``,
   ``HybridRanker``).
4. ``evaluate`` — NDCG / HitRate / Recall@k per query, means, the best
   baseline, and each model's ratio to it with a paired bootstrap interval.

See docs/evaluation.md for the protocol definitions.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.reco.arrays import ascending, unique

from ._kernels import segments_sorted
from .event_types import (
    CART_OR_BUY_TYPES,
    NON_TOUCH_TYPES,
    POSITIVE_TYPES,
    PURCHASE,
    QUERY_ROOM_TYPES,
    ROOM_RECENT,
    room_key,
)
from .interactions import DEFAULT_ACTION_WEIGHTS
from .rebuy import ts_ns, ts_ns1
from .roomlog import RoomLog

__all__ = [
    "SplitEvents",
    "ColumnError",
    "TARGETS",
    "Query",
    "Split",
    "Report",
    "load_interactions",
    "load_items",
    "make_split",
    "Ranker",
    "MostPopular",
    "ShowcasePopularity",
    "StreamBestsellers",
    "OwnHistory",
    "OwnThenStream",
    "ItemKNNRanker",
    "RecommendRanker",
    "HybridRanker",
    "baseline_rankers",
    "query_metrics",
    "paired_bootstrap",
    "release_caches",
    "evaluate",
    "format_report",
]

#: event types that count as relevant (and define baskets) for each target
TARGETS: dict[str, tuple[str, ...]] = {
    "purchase": (PURCHASE,),
    "cart": CART_OR_BUY_TYPES,  # carted or bought
    "any": POSITIVE_TYPES,
}
# NON_TOUCH_TYPES (never "touching" an item: history for variant new / repeats=False), QUERY_ROOM_TYPES
# (what a query records of its room) and ROOM_RECENT (recent-window room counts, key "<type>@<minutes>m"):
# shared.reco.event_types
HALF_LIFE_DAYS = 30.0
NS_PER_DAY = 86400 * 10**9


class ColumnError(ValueError):
    """A requested / required column is missing from the file."""


# ======================================================================= loading
_GUESS = {
    "user": ("user_id", "user", "userId", "userID", "customer_id", "CUSTOMER_ID", "viewer_id", "viewer"),
    "item": ("item_id", "item", "itemId", "itemID", "movieId", "product_id", "PRODUCT_ID", "sku"),
    "time": ("ts", "timestamp", "time", "event_time", "ts_utc", "datetime", "date", "TRANSACTION_DT"),
    "type": ("type", "event_type", "action"),
    "stream": ("stream_id", "stream", "room_id", "room"),
    "weight": ("weight",),
}


def _guess_format(path: Path) -> str:
    if path.is_dir():
        return "movielens"
    name = path.name.lower()
    if "ta_feng" in name or "tafeng" in name:
        return "tafeng"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "csv"


@overload
def _resolve(cols: list[str], given: str | None, role: str, path, required: Literal[True]) -> str: ...
@overload
def _resolve(cols: list[str], given: str | None, role: str, path, required: bool) -> str | None: ...
def _resolve(cols: list[str], given: str | None, role: str, path, required: bool) -> str | None:
    if given is not None:
        if given not in cols:
            raise ColumnError(
                f"{path}: {role} column {given!r} (--{role}-col) not found; the file's columns are {cols}"
            )
        return given
    for c in _GUESS[role]:
        if c in cols:
            return c
    if required:
        raise ColumnError(
            f"{path}: no {role} column (tried {list(_GUESS[role])}); the file's columns are {cols} "
            f"— name it with --{role}-col"
        )
    return None


def _to_utc(col: pd.Series, time_unit: str | None) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        t = pd.to_datetime(col, utc=True)
    else:
        num = pd.to_numeric(col, errors="coerce") if not pd.api.types.is_numeric_dtype(col) else col
        if num.notna().all() and len(num):
            unit = time_unit
            if unit is None:
                mx = float(np.nanmax(np.abs(num.to_numpy(dtype=np.float64)))) if len(num) else 0.0
                unit = "ns" if mx > 1e17 else "us" if mx > 1e14 else "ms" if mx > 1e11 else "s"
            t = pd.to_datetime(num.astype(np.float64), unit=unit, utc=True)
        else:
            try:
                t = pd.to_datetime(col, utc=True)
            except (ValueError, TypeError):
                t = pd.to_datetime(col, utc=True, format="mixed")
    return t.astype("datetime64[ns, UTC]")


def _read_table(path: Path, fmt: str, str_cols: Iterable[str] = ()) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=dict.fromkeys(str_cols, str), encoding="utf-8-sig")


def _ids(s: pd.Series) -> pd.Series:
    """Ids as Python str (None where missing), vectorised; integral floats lose their ``.0``."""
    na = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s) and np.all(np.mod(s.to_numpy()[~na], 1) == 0):
        v = s.astype("Int64").astype(str)
    else:
        v = s.astype(str)
    out = pd.Series(v.to_numpy(dtype=object), index=s.index, dtype=object)
    out[na] = None
    return out


def _read_tafeng(path: Path, default_type: str):
    df = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    need = ("TRANSACTION_DT", "CUSTOMER_ID", "PRODUCT_ID")
    miss = [c for c in need if c not in df.columns]
    if miss:
        raise ColumnError(f"{path}: Ta Feng columns {miss} not found; the file's columns are {list(df.columns)}")
    amount = pd.to_numeric(df.get("AMOUNT"), errors="coerce") if "AMOUNT" in df else None
    sales = pd.to_numeric(df.get("SALES_PRICE"), errors="coerce") if "SALES_PRICE" in df else None
    price = (sales / amount.where(amount > 0)) if sales is not None and amount is not None else sales
    ev = pd.DataFrame(
        {
            "user_id": df["CUSTOMER_ID"].astype(str).to_numpy(dtype=object),
            "item_id": df["PRODUCT_ID"].astype(str).to_numpy(dtype=object),
            "ts": pd.to_datetime(df["TRANSACTION_DT"], format="%m/%d/%Y", utc=True).astype("datetime64[ns, UTC]"),
            "type": default_type,
            "stream_id": None,
        }
    )
    ev["type"] = ev["type"].astype(object)
    if price is not None:
        ev["price"] = price.to_numpy(dtype=np.float64)
    if amount is not None:
        ev["quantity"] = amount.to_numpy(dtype=np.float64)
    ev = ev.drop(columns="stream_id")
    g = pd.DataFrame(
        {
            "item_id": ev["item_id"],
            "category": df.get("PRODUCT_SUBCLASS", pd.Series("", index=df.index)).astype(str),
            "price": ev.get("price", np.nan),
        }
    )
    items = (
        g.groupby("item_id", sort=False).agg(category=("category", "first"), price=("price", "median")).reset_index()
    )
    items.insert(1, "title", "")
    items.insert(2, "description", "")
    items["category"] = items["category"].astype(object)
    items["item_id"] = items["item_id"].astype(object)
    return ev, items


def _read_movielens(path: Path, default_type: str):
    df = pd.read_csv(path / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
    ev = pd.DataFrame(
        {
            "user_id": df["user_id"].astype(str).to_numpy(dtype=object),
            "item_id": df["item_id"].astype(str).to_numpy(dtype=object),
            "ts": pd.to_datetime(df["ts"], unit="s", utc=True).astype("datetime64[ns, UTC]"),
            "type": default_type,
        }
    )
    ev["type"] = ev["type"].astype(object)
    items = None
    if (path / "u.item").exists():
        genres = []
        if (path / "u.genre").exists():
            g = pd.read_csv(path / "u.genre", sep="|", names=["genre", "gid"], encoding="latin-1").dropna()
            genres = g.sort_values("gid")["genre"].tolist()
        cols = ["item_id", "title", "release", "video_release", "url"] + (genres or [f"g{k}" for k in range(19)])
        it = pd.read_csv(path / "u.item", sep="|", names=cols, encoding="latin-1")
        gmat = it[cols[5:]].to_numpy(dtype=bool)
        gnames = np.array(cols[5:], dtype=object)
        items = pd.DataFrame(
            {
                "item_id": it["item_id"].astype(str).to_numpy(dtype=object),
                "title": it["title"].fillna("").astype(str).to_numpy(dtype=object),
                "description": "",
                "category": [" ".join(gnames[r]) for r in gmat],
                "price": np.nan,
            }
        )
    return ev, items


def load_items(path, *, item_col: str | None = None) -> pd.DataFrame:
    """An items file (CSV / Parquet): ``item_id`` (or ``item_col``) + optional title, description,
    category, price, stream_ids (a list, or a ``|`` / ``,``-separated string)."""
    path = Path(path)
    fmt = _guess_format(path)
    cols = (
        list(pd.read_parquet(path).columns)
        if fmt == "parquet"
        else list(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns)
    )
    ic = _resolve(cols, item_col, "item", path, True)
    it = _read_table(path, fmt, [ic])
    it = it.rename(columns={ic: "item_id"})
    it["item_id"] = _ids(it["item_id"])
    for c in ("title", "description", "category"):
        if c not in it:
            it[c] = ""
    if "price" not in it:
        it["price"] = np.nan
    if "stream_ids" in it:
        it["stream_ids"] = it["stream_ids"].map(
            lambda v: (
                []
                if v is None or (isinstance(v, float) and np.isnan(v))
                else [s for s in str(v).replace(",", "|").split("|") if s]
                if isinstance(v, str)
                else [str(s) for s in v]
            )
        )
    return it


def load_interactions(
    path,
    *,
    fmt: str = "auto",
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    type_col: str | None = None,
    stream_col: str | None = None,
    weight_col: str | None = None,
    default_type: str = "purchase",
    time_unit: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Read an events file -> ``(events, items | None)``.

    ``fmt``: ``auto`` (directory -> movielens, ``*ta_feng*`` -> tafeng, ``.parquet`` -> parquet,
    else csv), ``csv``, ``parquet``, ``tafeng`` (every row a purchase, day timestamps,
    PRODUCT_SUBCLASS -> category, SALES_PRICE / AMOUNT -> price), ``movielens`` (``u.data`` +
    ``u.item``; every rating a ``default_type`` event).  For csv / parquet the columns are the given
    ``*_col`` names or guessed from common names; a missing column raises ``ColumnError`` naming it
    and listing the file's columns.  Without a type column every row is ``default_type``; without
    a time column the row order is the time (1 s apart).  Numeric times are epoch ``time_unit``
    (``s`` / ``ms`` / ``us`` / ``ns``; guessed from the magnitude when None).
    Events are sorted by ``ts`` (stable)."""
    path = Path(path)
    if fmt in (None, "auto"):
        fmt = _guess_format(path)
    if fmt == "tafeng":
        ev, items = _read_tafeng(path, default_type)
    elif fmt == "movielens":
        ev, items = _read_movielens(path, default_type)
    elif fmt in ("csv", "parquet"):
        if not path.exists():
            raise FileNotFoundError(path)
        cols = (
            list(pd.read_parquet(path).columns)
            if fmt == "parquet"
            else list(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns)
        )
        u = _resolve(cols, user_col, "user", path, True)
        i = _resolve(cols, item_col, "item", path, True)
        t = _resolve(cols, time_col, "time", path, False)
        ty = _resolve(cols, type_col, "type", path, False)
        s = _resolve(cols, stream_col, "stream", path, False)
        w = _resolve(cols, weight_col, "weight", path, False)
        df = _read_table(path, fmt, [c for c in (u, i, ty, s) if c])
        ev = pd.DataFrame(
            {"user_id": _ids(df[u]).to_numpy(dtype=object), "item_id": _ids(df[i]).to_numpy(dtype=object)}
        )
        if t is not None:
            ev["ts"] = _to_utc(df[t], time_unit).to_numpy()
            ev["ts"] = pd.to_datetime(ev["ts"], utc=True).astype("datetime64[ns, UTC]")
        else:
            ev["ts"] = pd.to_datetime(np.arange(len(df)), unit="s", utc=True).astype("datetime64[ns, UTC]")
        ev["type"] = (
            df[ty].astype(object).where(df[ty].notna(), default_type).astype(str).to_numpy(dtype=object)
            if ty
            else np.full(len(df), default_type, dtype=object)
        )
        if s is not None:
            ev["stream_id"] = _ids(df[s]).to_numpy(dtype=object)
        if "price" in df and "price" not in (u, i, t, ty, s, w):
            ev["price"] = pd.to_numeric(df["price"], errors="coerce").to_numpy(dtype=np.float64)
        if w is not None:
            ev["weight"] = pd.to_numeric(df[w], errors="coerce").to_numpy(dtype=np.float64)
        items = None
        if ev["ts"].isna().any():
            bad = int(ev["ts"].isna().sum())
            raise ValueError(f"{path}: {bad} rows have an unparseable time in column {t!r}")
    else:
        raise ValueError(f"unknown format {fmt!r}; expected auto, csv, parquet, tafeng or movielens")
    ev = ev[ev["user_id"].notna()].sort_values("ts", kind="stable").reset_index(drop=True)
    return ev, items


# ======================================================================= splits
class RoomCounts(Mapping):
    """A query's room as ``{key: {item id: n}}`` (``Query.room``), built from its codes the first time a
    ranker reads it. The gate's models and room baselines read ``Query.room_codes`` instead, so at 10M
    events the 25,000 room queries of a gate never build their ~100M dict entries (0.65 GiB at the
    gate's peak, memray; bench_train's peak RSS column)."""

    __slots__ = ("_ids", "_codes", "_dicts")

    def __init__(self, ids: np.ndarray, codes: dict[str, tuple[np.ndarray, np.ndarray]]):
        self._ids, self._codes = ids, codes
        self._dicts: dict[str, dict] | None = None

    def _built(self) -> dict[str, dict]:
        if self._dicts is None:
            ids = self._ids
            self._dicts = {k: dict(zip(ids[u].tolist(), c.tolist())) for k, (u, c) in self._codes.items()}
        return self._dicts

    def __getitem__(self, key: str) -> dict:
        return self._built()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._codes)

    def __len__(self) -> int:
        return len(self._codes)

    def __repr__(self) -> str:
        return f"RoomCounts({self._built()!r})"


@dataclass
class Query:
    user_id: str
    ts: pd.Timestamp
    stream_id: str | None = None
    allowed: np.ndarray | None = None  # item ids the ranking is restricted to (a showcase)
    relevant: list[str] = field(default_factory=list)
    room: Mapping | None = None  # {"purchase": {item: n}, "product_click": {...}, "add_to_cart": {...},
    #                            "product_impression": {...}, "purchase@10m": {...}, "product_impression@5m": ...}
    repeats: bool = True  # False: the user's training items must not be recommended
    # the room as codes: (item ids array shared by the split's queries, {key: (codes ascending, counts)}),
    # the same counts as ``room`` (a model with ``item_positions`` maps the ids once per split)
    room_codes: tuple | None = None


@dataclass
class Split:
    name: str
    train: pd.DataFrame
    queries: list[Query]
    reference_time: pd.Timestamp
    info: dict = field(default_factory=dict)


def _first_at(keys: np.ndarray, ts: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per key of ``want`` the smallest ``ts`` of its rows (every key of ``want`` has rows): rows already
    in time order take each key's first row (a hash pass), others a groupby minimum."""
    if ascending(ts):
        first = pd.Series(keys).drop_duplicates()  # (keep the first: the index is its row)
        at = pd.Index(first.to_numpy()).get_indexer(want)
        if not (at < 0).any():
            return ts[first.index.to_numpy()[at]].astype(np.int64)
    return pd.Series(ts).groupby(keys).min().reindex(want).to_numpy(dtype=np.int64)


def _stamp(ns: int) -> pd.Timestamp:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC")


def touch_mask(events: pd.DataFrame) -> np.ndarray:
    """Rows that count as the user touching the item (history): an item, and not an impression /
    refund / stream-level action; with a weight column, weight > 0."""
    m = events["item_id"].notna().to_numpy().copy()
    if "type" in events:
        m &= ~events["type"].isin(NON_TOUCH_TYPES).to_numpy()
    if "weight" in events:
        m &= ~(events["weight"].to_numpy(dtype=np.float64) <= 0)
    return m


def _type_codes(col: pd.Series, types: Sequence[str]) -> np.ndarray:
    """Each row's position in ``types`` (-1: another type or none); a categorical column maps its
    categories, not every row."""
    idx = pd.Index(list(types))
    if isinstance(col.dtype, pd.CategoricalDtype):
        remap = idx.get_indexer(np.asarray(col.cat.categories.astype(object), dtype=object)).astype(np.int64)
        return np.append(remap, -1)[col.cat.codes.to_numpy()]  # (code -1, none, takes the appended -1)
    return idx.get_indexer(col.to_numpy(dtype=object)).astype(np.int64)


class SplitEvents:
    """What ``make_split`` derives from one events frame whatever the protocol (the frame's codes, the
    training part and history of a time cut, the showcases, the room log, a query's room), kept for
    the next split of the SAME frame: the gate makes five splits of one frame at one cut, each then
    reuses the codes, the training frame (one object: the baselines' per-frame index is built once
    per target) and the rooms of the queries they share. ``make_split(events, ..., shared=SplitEvents(events))``
    answers exactly what ``make_split(events, ...)`` answers; the frame must not change in between."""

    def __init__(self, events: pd.DataFrame):
        self.events = events
        self._memo: dict[Any, Any] = {}

    def get(self, key, make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


def _rows(ev: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """``ev[mask].reset_index(drop=True)``. A time cut of time-ordered rows keeps a prefix: then a row
    slice (a copy-on-write view), not a take of every column (~1 s at 10M events)."""
    k = int(np.count_nonzero(mask))
    if mask[:k].all():
        return ev.iloc[:k].reset_index(drop=True)
    return ev[mask].reset_index(drop=True)


def _no_memo(key, make: Callable[[], Any]) -> Any:
    return make()


def _md5_order(keys: Sequence[str]) -> np.ndarray:
    h = np.array([int(hashlib.md5(k.encode()).hexdigest()[:15], 16) for k in keys], dtype=np.int64)
    return np.argsort(h, kind="stable")


def make_split(
    events: pd.DataFrame,
    *,
    split: str = "leave-last",
    target: str = "purchase",
    variant: str = "all",
    in_stream: bool | None = None,
    test_frac: float = 0.2,
    horizon=None,
    items: pd.DataFrame | None = None,
    max_queries: int | None = 5000,
    min_history: int | None = None,
    cut_at: pd.Timestamp | None = None,
    shared: SplitEvents | None = None,
) -> Split:
    """Training events + queries for one protocol (see docs/evaluation.md).

    ``split``: ``leave-last`` (per user the last target basket) or ``global-time`` (cut at the
    ``1 - test_frac`` time quantile of target events; ``horizon`` = a ``pd.Timedelta`` / str / days
    limiting the test window after the cut).  ``in_stream`` (default: the frame has a non-empty
    ``stream_id`` column) uses the global-time cut and one query per (user, stream).
    ``target``: purchase | cart | any (``TARGETS``).  ``variant``: all | new.  ``min_history``:
    queries need at least this many training touch events of the user (default 1; 0 in-stream).
    ``max_queries``: deterministic sample by md5 of the query key.  ``cut_at``: the global-time /
    in-stream cut given (e.g. another target's, so that several blocks share one training part)
    instead of the target's quantile. ``shared``: a ``SplitEvents`` of ``events`` kept across calls
    (the same answer, the common work done once)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    if variant not in ("all", "new"):
        raise ValueError(f"variant must be all or new, got {variant!r}")
    if split not in ("leave-last", "global-time"):
        raise ValueError(f"split must be leave-last or global-time, got {split!r}")
    has_stream = "stream_id" in events and events["stream_id"].notna().any()
    if in_stream is None:
        in_stream = bool(has_stream)
    if in_stream and not has_stream:
        raise ValueError("in-stream protocol needs a stream_id column")
    if min_history is None:
        min_history = 0 if in_stream else 1
    if shared is not None and shared.events is not events:
        raise ValueError("shared: a SplitEvents of another frame")
    memo = shared.get if shared is not None else _no_memo
    ev = memo("ev", lambda: events.reset_index(drop=True))
    n = len(ev)
    ts = memo("ts", lambda: ts_ns(ev["ts"]))
    ucodes, uids = memo("users", lambda: pd.factorize(ev["user_id"]))
    is_tgt = memo(
        ("target", target),
        lambda: (
            (ev["type"].isin(TARGETS[target]).to_numpy() if "type" in ev else np.ones(n, bool))
            & ev["item_id"].notna().to_numpy()
        ),
    )
    touch = memo("touch", lambda: touch_mask(ev))
    if not is_tgt.any():
        raise ValueError(f"no {target} events ({TARGETS[target]}) in the data")
    tgt_idx = np.flatnonzero(is_tgt)
    info: dict[str, Any] = {"split": "in-stream" if in_stream else split, "target": target, "variant": variant}

    if in_stream or split == "global-time":
        if cut_at is None:
            cut = int(np.quantile(ts[tgt_idx], 1.0 - test_frac, method="higher"))
        else:
            cut = ts_ns1(cut_at)
        end = np.iinfo(np.int64).max
        if horizon is not None:
            hz = pd.Timedelta(days=float(horizon)) if isinstance(horizon, (int, float)) else pd.Timedelta(horizon)
            end = cut + int(hz.value)
        train_mask = ts < cut
        test_rows = tgt_idx[(ts[tgt_idx] >= cut) & (ts[tgt_idx] < end)]
        info["cut"] = str(_stamp(cut))
        ref = _stamp(cut)
    if in_stream:
        scodes, sids = memo("streams", lambda: pd.factorize(ev["stream_id"]))
        test_rows = test_rows[scodes[test_rows] >= 0]  # (a stream named: factorize codes a missing one -1)
        qk = ucodes[test_rows].astype(np.int64) * (len(sids) + 1) + scodes[test_rows]
        qkeys, qinv = np.unique(qk, return_inverse=True)
        q_user = (qkeys // (len(sids) + 1)).astype(np.int64)
        q_stream = (qkeys % (len(sids) + 1)).astype(np.int64)
        # entry = the user's first event in that stream at/after the cut
        after = np.flatnonzero((ts >= cut) & (scodes >= 0))
        ak = ucodes[after].astype(np.int64) * (len(sids) + 1) + scodes[after]
        q_ts = _first_at(ak, ts[after], qkeys)
        rel_q, rel_i = qinv, test_rows
    else:
        if split == "global-time":
            q_user_all = ucodes[test_rows]
            q_user, rel_q = np.unique(q_user_all, return_inverse=True)
            q_ts = np.full(q_user.size, cut, dtype=np.int64)
            q_stream = np.full(q_user.size, -1)
            rel_i = test_rows
        else:  # leave-last
            last = np.full(len(uids), np.iinfo(np.int64).min, dtype=np.int64)
            np.maximum.at(last, ucodes[tgt_idx], ts[tgt_idx])
            has_t = last > np.iinfo(np.int64).min
            # eligible: a training touch event strictly before the basket
            prior = touch & has_t[ucodes] & (ts < last[ucodes])
            n_prior = np.bincount(ucodes[prior], minlength=len(uids))
            elig = has_t & (n_prior >= max(min_history, 0))
            if min_history <= 0:
                elig = has_t
            train_mask = ~(elig[ucodes] & (ts >= last[ucodes]))
            basket = tgt_idx[elig[ucodes[tgt_idx]] & (ts[tgt_idx] == last[ucodes[tgt_idx]])]
            q_user, rel_q = np.unique(ucodes[basket], return_inverse=True)
            q_ts = last[q_user]
            q_stream = np.full(q_user.size, -1)
            rel_i = basket
            ref = _stamp(int(ts[train_mask].max())) if train_mask.any() else _stamp(int(ts.max()))
    # a time cut's training part, history and the rooms depend on the cut only (leave-last's on more)
    part = ("cut", cut, end) if (in_stream or split == "global-time") else ("own", id(train_mask))
    pmemo = memo if part[0] == "cut" else _no_memo
    train = pmemo((part, "train"), lambda: _rows(ev, train_mask))
    info["train_events"] = int(train_mask.sum())

    # training history per user (touch events in train) as sorted (user, item) keys
    icodes, iids = memo("items", lambda: pd.factorize(ev["item_id"]))
    ni = len(iids) + 1

    def history() -> tuple[np.ndarray, np.ndarray]:
        tr_touch = train_mask & touch & (icodes >= 0)
        return (
            unique(ucodes[tr_touch].astype(np.int64) * ni + icodes[tr_touch]),
            np.bincount(ucodes[tr_touch], minlength=len(uids)),
        )

    hist_keys, n_hist = pmemo((part, "history"), history)
    # relevant (query, item) pairs, unique
    pairs = unique(rel_q.astype(np.int64) * ni + icodes[rel_i])
    pq, pi = pairs // ni, pairs % ni
    if variant == "new":
        key = q_user[pq].astype(np.int64) * ni + pi
        pos = np.minimum(np.searchsorted(hist_keys, key), max(hist_keys.size - 1, 0))
        seen = (hist_keys[pos] == key) if hist_keys.size else np.zeros(key.size, bool)
        pq, pi = pq[~seen], pi[~seen]
    nq = q_user.size
    has_rel = np.bincount(pq, minlength=nq) > 0
    keep = has_rel & (n_hist[q_user] >= min_history)
    info["candidate_queries"] = int(keep.sum())
    kept = np.flatnonzero(keep)
    # the queries' keys, built from Python lists (a pandas Index read per element cost ~3 s at 10M events)
    u_l = np.asarray(uids, dtype=object)[q_user[kept]].tolist()
    t_l = q_ts[kept].tolist()
    s_l = np.asarray(sids, dtype=object)[q_stream[kept]].tolist() if in_stream else [""] * kept.size
    skeys = [f"{u_}|{s_}|{t_}" for u_, s_, t_ in zip(u_l, s_l, t_l)]
    order = _md5_order(skeys)
    if max_queries is not None and kept.size > max_queries:
        order = order[:max_queries]
    chosen = np.sort(kept[order])
    info["queries"] = int(chosen.size)
    # relevant lists
    sel = np.zeros(nq, bool)
    sel[chosen] = True
    m = sel[pq]
    pq, pi = pq[m], pi[m]
    rel_ptr = np.searchsorted(pq, np.arange(nq + 1))  # pq sorted (pairs sorted by query)
    iid_arr = np.asarray(iids, dtype=object)

    showcase: dict[int, np.ndarray] = {}
    rooms: dict[int, dict] = {}
    room_codes: dict[int, tuple] = {}
    if in_stream:

        def showcases() -> dict[int, np.ndarray]:
            # per stream its items in order of first appearance (the (stream, item) codes' first rows), then
            # the catalogue's own stream_ids items not among them
            out: dict[int, np.ndarray] = {}
            ok = (scodes >= 0) & (icodes >= 0)
            span = len(iids) + 1
            uk = pd.unique(scodes[ok].astype(np.int64) * span + icodes[ok])
            ks, ki = uk // span, uk % span
            o = np.argsort(ks, kind="stable")
            ks, ki = ks[o], ki[o]
            starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]) if ks.size else np.empty(0, dtype=np.int64)
            ends = np.r_[starts[1:], ks.size]
            extra: dict[str, list] = {}
            if items is not None and "stream_ids" in items:
                for it, ss in zip(items["item_id"], items["stream_ids"]):
                    for s_ in ss if ss is not None else ():
                        extra.setdefault(str(s_), []).append(str(it))
            iid_obj = np.asarray(iids, dtype=object)
            for a, b in zip(starts.tolist(), ends.tolist()):
                got = iid_obj[ki[a:b]]
                more = extra.get(str(sids[int(ks[a])]))
                out[int(ks[a])] = (
                    np.asarray(pd.unique(np.concatenate([got, np.asarray(more, dtype=object)])), dtype=object)
                    if more
                    else got
                )
            return out

        # (the items frame is part of the key: a showcase adds the catalogue's stream_ids)
        showcase = memo(("showcases", id(items)), showcases)

        def room_log() -> RoomLog:
            # rooms: per stream, typed events sorted by ts; a query's room = the prefix before its entry
            # (RoomLog: one slice per (type, stream), counted over the stream's items)
            tcode = _type_codes(ev["type"], QUERY_ROOM_TYPES)
            rr = np.flatnonzero((scodes >= 0) & (icodes >= 0) & (tcode >= 0))
            return RoomLog(scodes[rr], ts[rr], icodes[rr], tcode[rr], len(sids), len(QUERY_ROOM_TYPES))

        log = memo("room_log", room_log)

        def one_room(s_: int, tq: int) -> tuple[RoomCounts, dict]:
            codes = {}
            for k_, name in enumerate(QUERY_ROOM_TYPES):
                codes[name] = log.counts(k_, s_, None, tq)
            for name, minutes in ROOM_RECENT:
                codes[room_key(name, minutes)] = log.counts(
                    QUERY_ROOM_TYPES.index(name), s_, tq - minutes * 60 * 10**9, tq
                )
            return RoomCounts(iid_arr, codes), codes

        built: dict[int, tuple] = {}
        # in (stream, time) order: each room prefix extends the one before it (RoomLog counts the rows in
        # between only); the dicts below keep the queries' order
        for q in chosen[np.lexsort((q_ts[chosen], q_stream[chosen]))].tolist():
            s_, tq = int(q_stream[q]), int(q_ts[q])
            built[q] = memo(("room", s_, tq), functools.partial(one_room, s_, tq))
        for q in chosen.tolist():
            room, codes = built[q]
            rooms[int(q)] = room
            room_codes[int(q)] = (iid_arr, codes)

    repeats = variant == "all"
    queries = []
    for q in chosen:
        rel = iid_arr[pi[rel_ptr[q] : rel_ptr[q + 1]]].tolist()
        if in_stream:
            s_ = int(q_stream[q])
            queries.append(
                Query(
                    str(uids[q_user[q]]),
                    _stamp(q_ts[q]),
                    str(sids[s_]),
                    showcase.get(s_, np.empty(0, object)),
                    rel,
                    rooms[int(q)],
                    repeats,
                    room_codes[int(q)],
                )
            )
        else:
            queries.append(Query(str(uids[q_user[q]]), _stamp(q_ts[q]), None, None, rel, None, repeats))
    name = f"{info['split']}/{target}/{variant}"
    return Split(name, train, queries, ref, info)


# ======================================================================= rankers
class Ranker:
    """``fit(train_events, items, reference_time) -> self``; ``rank(queries, k) -> list[list[str]]``.
    ``is_model=False`` marks a baseline (the best of them is what models are compared with)."""

    name = "ranker"
    is_model = False

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame | None = None, reference_time=None):
        raise NotImplementedError

    def rank(self, queries: Sequence[Query], k: int) -> list[list[str]]:
        raise NotImplementedError


def release_caches() -> None:
    """Forget the per-frame lookups kept for the next ranker of the same training frame (``_TrainIndex``:
    the last frame's, with the frame): call when the evaluation is over."""
    _TrainIndex._cache.clear()


def _id_list(ids) -> list:
    """A factorize's uniques as a list of ids (a Categorical's through its categories: iterating one
    element by element cost ~0.35 s for 1M users)."""
    if isinstance(ids, pd.Categorical):
        return np.asarray(ids.categories, dtype=object)[ids.codes].tolist()
    return np.asarray(ids, dtype=object).tolist()


class _TrainIndex:
    """Per-training-frame lookups shared by the baselines (cached for the last frame)."""

    _cache: list = []

    @classmethod
    def get(cls, train: pd.DataFrame, reference_time, target_types: tuple[str, ...]):
        for c in cls._cache:
            if c.train is train and c.ref == reference_time and c.target_types == target_types:
                return c
        same = [c for c in cls._cache if c.train is train and c.ref == reference_time]
        if same:  # another target on the same frame: everything but the popularity is shared
            obj = object.__new__(cls)
            obj.__dict__.update({k: v for k, v in same[0].__dict__.items() if k not in cls._TARGET_ATTRS})
            obj.target_types = target_types
            obj._popularity()
            cls._cache[:] = same + [obj]
            return obj
        obj = cls(train, reference_time, target_types)
        cls._cache[:] = [obj]
        return obj

    #: what depends on the target (the rest, the histories and X with its kNN fits, on the frame only)
    _TARGET_ATTRS = ("target_types", "pop", "pop_order", "pop_rank", "pop_ids")

    def _popularity(self) -> None:
        """Distinct users with a target event per item (not decayed); the order: popularity, then index."""
        is_t = self._of_type(self.target_types)
        if not is_t.any():
            is_t = self._touch
        u, i, ni = self._u, self._i, len(self.item_ids)
        key = unique(u[is_t].astype(np.int64) * ni + i[is_t])
        self.pop = np.bincount(key % ni, minlength=ni).astype(np.float64) if ni else np.zeros(0)
        self.pop_order = np.lexsort((np.arange(ni), -self.pop))
        self.pop_rank = np.empty(ni, dtype=np.int64)
        self.pop_rank[self.pop_order] = np.arange(ni)
        self.pop_ids = self.item_ids[self.pop_order]

    def __init__(self, train: pd.DataFrame, reference_time, target_types):
        self.train, self.ref, self.target_types = train, reference_time, target_types
        self.knn: dict[tuple, tuple] = {}  # (similarity, neighbours) -> ItemKNNRanker's fit on X
        ev = train[train["item_id"].notna()]
        u, self.user_index = pd.factorize(ev["user_id"])
        i, items = pd.factorize(ev["item_id"])
        self.item_ids = np.asarray(items, dtype=object)
        self.item_index = pd.Index(self.item_ids)
        self.item_pos = {x: k for k, x in enumerate(self.item_ids.tolist())}
        nu, ni = len(self.user_index), len(self.item_ids)
        self.user_pos = dict(zip(_id_list(self.user_index), range(nu)))
        # each row's type as a code into a few names (a categorical column: its codes, no object array)
        if "type" not in ev:
            tc, tu = np.zeros(len(ev), dtype=np.int64), np.asarray([PURCHASE], dtype=object)
        elif isinstance(ev["type"].dtype, pd.CategoricalDtype):
            tc = ev["type"].cat.codes.to_numpy()  # (int8 for a few types: the lookups' index)
            tu = np.asarray(ev["type"].cat.categories, dtype=object)
        else:
            tc, tu = pd.factorize(ev["type"].to_numpy(dtype=object))
            tu = np.asarray(tu, dtype=object)

        def of_type(names) -> np.ndarray:
            # one lookup per row in the few types' table (its last entry, False, for code -1: no type)
            return np.append(np.isin(tu, list(names)), False)[tc]

        touch = touch_mask(ev)
        self._of_type, self._touch, self._u, self._i = of_type, touch, u, i
        self._popularity()
        # history: touch events; affinity = action weight x 30-day decay (clicks/carts count less);
        # purchase counts first
        t = ts_ns(ev["ts"])
        refn = (
            int(ts_ns(pd.Series([reference_time]))[0])
            if reference_time is not None
            else (int(t.max()) if t.size else 0)
        )
        # action weight per row: the few distinct types mapped, then taken (not a dict lookup per row)
        tw = pd.Series(tu).map(DEFAULT_ACTION_WEIGHTS).fillna(1.0).to_numpy(np.float64)
        aw = np.append(tw, 1.0)[tc]
        if "weight" in ev:
            aw = np.where(
                np.isfinite(ev["weight"].to_numpy(dtype=np.float64)), ev["weight"].to_numpy(dtype=np.float64), aw
            )
        decay = np.exp2(-np.maximum(refn - t, 0) / (HALF_LIFE_DAYS * NS_PER_DAY))
        w = aw * decay
        xm = touch | of_type(("refund",))
        self.X = sp.csr_matrix((w[xm], (u[xm], i[xm])), shape=(nu, ni))
        self.X.sum_duplicates()
        self.X.data = np.maximum(self.X.data, 0.0)
        self.X.eliminate_zeros()
        pm = touch & of_type((PURCHASE,))
        P = sp.csr_matrix((np.ones(int(pm.sum())), (u[pm], i[pm])), shape=(nu, ni))
        P.sum_duplicates()
        H = sp.csr_matrix((np.ones(int(touch.sum())), (u[touch], i[touch])), shape=(nu, ni))
        H.sum_duplicates()
        H.sort_indices()
        self.H = H
        # own history order per user: purchase count desc, decayed affinity desc, item index
        hu = np.repeat(np.arange(nu, dtype=np.int32), np.diff(H.indptr))
        hi = H.indices
        pc = np.asarray(P[hu, hi]).ravel() if hi.size else np.zeros(0)
        Xd = self.X.copy()
        Xd.sort_indices()
        af = np.asarray(Xd[hu, hi]).ravel() if hi.size else np.zeros(0)
        # (per row: pc desc, af desc, item asc; a compiled sort of each row's few entries, not a
        # 3-key lexsort of all of them)
        o = segments_sorted(H.indptr, pc, af, hi)
        self.own_items = hi[o]
        self.own_ptr = H.indptr

    def urow(self, user_id) -> int | None:
        return self.user_pos.get(user_id)

    def own(self, user_id) -> np.ndarray:
        r = self.urow(user_id)
        if r is None:
            return np.empty(0, dtype=object)
        return self.item_ids[self.own_items[self.own_ptr[r] : self.own_ptr[r + 1]]]


class _BaseRanker(Ranker):
    """Selection shared by the baselines: candidates in priority order, restricted to ``allowed``,
    the user's training items removed when ``repeats`` is False, filled with popularity (global
    popularity within ``allowed`` for a showcase)."""

    def __init__(self, target: str = "purchase", name: str | None = None):
        self.target = target
        self.target_types = TARGETS[target]
        if name:
            self.name = name

    def fit(self, train_events, items=None, reference_time=None):
        self.t = _TrainIndex.get(train_events, reference_time, self.target_types)
        self._sc_cache: dict = {}
        return self

    def split_positions(self, ids: np.ndarray) -> np.ndarray:
        """A split's item ids (``Query.room_codes[0]``) -> positions in the training index (-1: unknown),
        mapped once per ids array."""
        hit = getattr(self, "_split_pos", None)
        if hit is None or hit[0] is not ids:
            hit = self._split_pos = (ids, self.t.item_index.get_indexer(np.asarray(ids, dtype=object)))
        return hit[1]

    def _showcase(self, allowed: np.ndarray):
        key = id(allowed)
        hit = self._sc_cache.get(key)
        if hit is None or hit[0] is not allowed:
            codes = self.t.item_index.get_indexer(np.asarray(allowed, dtype=object))
            n = len(self.t.item_ids)
            pk = np.where(codes >= 0, self.t.pop_rank[np.maximum(codes, 0)] if n else 0, n + np.arange(codes.size))
            order = np.asarray(allowed, dtype=object)[np.argsort(pk, kind="stable")]
            hit = [allowed, set(np.asarray(allowed, dtype=object).tolist()), order.tolist(), codes, None]
            self._sc_cache[key] = hit
        return hit[1], hit[2]

    def allowed_mask(self, allowed: np.ndarray) -> np.ndarray:
        """A showcase as a mask over the training index's positions (its ids the index does not know
        have no position: no training item is one of them), built once per showcase array."""
        self._showcase(allowed)
        hit = self._sc_cache[id(allowed)]
        if hit[4] is None:
            mask = np.zeros(len(self.t.item_ids), dtype=bool)
            mask[hit[3][hit[3] >= 0]] = True
            hit[4] = mask
        return hit[4]

    def _select(self, q: Query, k: int, primary: Iterable[str]) -> list[str]:
        excl = set(self.t.own(q.user_id).tolist()) if not q.repeats else ()
        if q.allowed is not None:
            aset, fill = self._showcase(q.allowed)
        else:
            aset, fill = None, self.t.pop_ids
        out: list[str] = []
        seen: set = set()
        for seq in (primary, fill):
            for x in seq:
                if x in seen or x in excl or (aset is not None and x not in aset):
                    continue
                out.append(x)
                seen.add(x)
                if len(out) >= k:
                    return out
        return out

    def primary(self, q: Query) -> Iterable[str]:
        return ()

    def rank(self, queries, k):
        return [self._select(q, k, self.primary(q)) for q in queries]


class MostPopular(_BaseRanker):
    """Items by the number of distinct users with a target event in train (not decayed)."""

    name = "most_popular"


class ShowcasePopularity(_BaseRanker):
    """In-stream: global popularity (``MostPopular``) restricted to the stream's showcase."""

    name = "showcase_popularity"


def _room_order(q: Query, ranker: _BaseRanker) -> list[str]:
    """The room's items by purchases so far, ties by global popularity, then by id code order."""
    if q.room_codes is not None and PURCHASE in q.room_codes[1]:
        # the same order from the split's codes (ascending, as the dict's keys): no per-id lookups
        ids, codes = q.room_codes
        u, cnt = codes[PURCHASE]
        if not len(u):
            return []
        n = len(ranker.t.item_ids)
        p = ranker.split_positions(ids)[u]
        pk = np.where(p >= 0, ranker.t.pop_rank[np.maximum(p, 0)] if n else 0, n)
        return ids[u[np.lexsort((pk, -np.asarray(cnt, dtype=np.float64)))]].tolist()
    counts = (q.room or {}).get(PURCHASE) or {}
    if not counts:
        return []
    ids = list(counts.keys())
    n = len(ranker.t.item_ids)
    pos = ranker.t.item_pos  # a dict lookup per id: cheaper than Index.get_indexer per query
    codes = np.fromiter((pos.get(x, -1) for x in ids), dtype=np.int64, count=len(ids))
    pk = np.where(codes >= 0, ranker.t.pop_rank[np.maximum(codes, 0)] if n else 0, n)
    c = np.array([counts[x] for x in ids], dtype=np.float64)
    return [ids[j] for j in np.lexsort((pk, -c))]


class StreamBestsellers(_BaseRanker):
    """In-stream: the room's purchase counts so far (before the query time); ties and the fill by
    global popularity within the showcase."""

    name = "stream_bestsellers"

    def primary(self, q):
        return _room_order(q, self)


class OwnHistory(_BaseRanker):
    """ "Buy it again": the user's training items by purchase count, then 30-day-decayed affinity
    (purchase 5, cart 3, click 1), filled with most popular / showcase popularity."""

    name = "own_history"

    def primary(self, q):
        return self.t.own(q.user_id)


class OwnThenStream(_BaseRanker):
    """In-stream: own history items in the showcase, then the stream's bestsellers so far, then
    showcase popularity."""

    name = "own_then_stream"

    def primary(self, q):
        own = self.t.own(q.user_id).tolist()
        return own + _room_order(q, self)


class ItemKNNRanker(_BaseRanker):
    """``ItemItemCF(similarity="cosine", neighbours=100)`` on the decayed user x item matrix,
    scores ``R = X·W`` (W has a zero diagonal: a history item only scores through its neighbours),
    items with a positive score first, filled with popularity."""

    name = "itemknn"

    def __init__(self, target="purchase", name=None, similarity="cosine", neighbours=100):
        super().__init__(target, name)
        self.similarity, self.neighbours = similarity, neighbours

    def fit(self, train_events, items=None, reference_time=None):
        super().fit(train_events, items, reference_time)
        from .itemknn import ItemItemCF

        # fitted once per training index (the blocks of one training part share it: same X, same W)
        key = (self.similarity, self.neighbours)
        hit = self.t.knn.get(key)
        if hit is None:
            cf = ItemItemCF(similarity=self.similarity, neighbours=self.neighbours).fit(self.t.X.astype(np.float32))
            hit = self.t.knn[key] = (cf, sp.csr_matrix(cf.W_, dtype=np.float64))
        self.cf, self.W = hit
        return self

    def rank(self, queries, k):
        rows = np.array([self.t.urow(q.user_id) if self.t.urow(q.user_id) is not None else -1 for q in queries])
        out = []
        B = 2000
        for a in range(0, len(queries), B):
            r = rows[a : a + B]
            Xr = self.t.X[np.maximum(r, 0)]
            Xr = sp.diags((r >= 0).astype(np.float64)) @ Xr
            # (no sort_indices: the order below is total, pop_rank being a permutation, whatever a row's order)
            S = sp.csr_matrix(Xr @ self.W)
            for j, q in enumerate(queries[a : a + B]):
                s0, s1 = S.indptr[j], S.indptr[j + 1]
                idx, val = S.indices[s0:s1], S.data[s0:s1]
                # what _select would skip, dropped here in index space: not positive, outside the
                # showcase, the user's own items when repeats are not wanted (a row's indices are unique)
                pos = val > 0
                if q.allowed is not None:
                    pos &= self.allowed_mask(q.allowed)[idx]
                if not q.repeats and r[j] >= 0:
                    pos[np.isin(idx, self.t.own_items[self.t.own_ptr[r[j]] : self.t.own_ptr[r[j] + 1]])] = False
                idx, val = idx[pos], val[pos]
                if idx.size > 4 * k:  # only the k best can be taken: those at or above the k-th value
                    top = val >= -np.partition(-val, k - 1)[k - 1]
                    idx, val = idx[top], val[top]
                o = np.lexsort((self.t.pop_rank[idx], -val))
                out.append(self._select(q, k, self.t.item_ids[idx[o[:k]]]))
        return out


def _room_positions(pos: np.ndarray, codes: dict, keys: Sequence[str]) -> dict[str, tuple]:
    """A query's room counts ``{key: (split item codes ascending, counts)}`` -> ``{key: ("idx", model
    positions sorted, counts float64)}`` through ``pos`` (split code -> model position, -1 unknown): what
    ``RoomRanker`` builds from the id -> n dict (ids in code order, unknown ones dropped, equal positions
    summed)."""
    out: dict[str, tuple] = {}
    for key in keys:
        hit = codes.get(key)
        if hit is None:
            continue
        j = pos[hit[0]]
        ok = j >= 0
        if not ok.any():
            out[key] = ("idx", np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
            continue
        j, w = j[ok], np.asarray(hit[1], dtype=np.float64)[ok]
        o = np.argsort(j)
        u = j[o]
        if u.size > 1 and bool((u[1:] == u[:-1]).any()):  # (distinct ids have distinct positions: never)
            u, inv = np.unique(j, return_inverse=True)
            out[key] = ("idx", u.astype(np.int64), np.bincount(inv, weights=w, minlength=u.size).astype(np.float64))
        else:  # one count per position: sorted, nothing to sum
            out[key] = ("idx", u.astype(np.int64), w[o])
    return out


def _ids_of(result) -> list[str]:
    items = result.get("items", []) if isinstance(result, dict) else result
    return [str(it["item_id"]) if isinstance(it, dict) else str(it) for it in items]


class RecommendRanker(Ranker):
    """Adapter for any model with the service's ``recommend`` call: ``factory(train_events, items,
    reference_time) -> model``; ranking calls exactly ``model.recommend(q.user_id, k,
    stream_id=q.stream_id, allowed_items=q.allowed, room=q.room, now=q.ts, repeats=q.repeats)``
    (``allowed_idx=model.allowed_index(q.allowed)`` instead, converted once per showcase, for a model
    that has ``allowed_index``: the same call), and ``reasons=False`` for a model that declares
    ``ranks_without_reasons`` (only the order is read here)."""

    is_model = True

    def __init__(self, factory: Callable, name: str = "model"):
        self.factory, self.name = factory, name

    def fit(self, train_events, items=None, reference_time=None):
        self.model = self.factory(train_events, items, reference_time)
        return self

    def rank(self, queries, k):
        m = self.model
        # a model that converts allowed ids to positions (``RoomRanker.allowed_index``): each showcase
        # (one array per stream, shared by its queries) converted once, the same positions
        # ``recommend(allowed_items=)`` would compute per query
        conv = getattr(m, "allowed_index", None)
        idx: dict[int, tuple[Any, np.ndarray]] = {}
        # a model that maps ids to positions in bulk (``RoomRanker.item_positions``) and names the room keys
        # it reads: each query's room from the split's codes (the split's ids mapped once), the
        # ("idx", positions, counts) the model would build from the id -> n dicts
        positions, keys = getattr(m, "item_positions", None), getattr(m, "room_keys", None)
        maps: dict[int, tuple[Any, np.ndarray]] = {}

        done: dict[int, tuple[dict, dict]] = {}  # a room shared by queries (the split's memo): converted once
        quiet = {"reasons": False} if getattr(m, "ranks_without_reasons", False) else {}

        def room(q: Query):
            if q.room_codes is None or positions is None or keys is None:
                return q.room
            ids, codes = q.room_codes
            hit = maps.get(id(ids))
            if hit is None or hit[0] is not ids:
                hit = maps[id(ids)] = (ids, positions(ids))
            got = done.get(id(codes))
            if got is None or got[0] is not codes:
                got = done[id(codes)] = (codes, _room_positions(hit[1], codes, keys))
            return got[1]

        def allowed(q: Query) -> dict[str, Any]:
            if q.allowed is None or conv is None:
                return {"allowed_items": q.allowed}
            hit = idx.get(id(q.allowed))
            if hit is None or hit[0] is not q.allowed:
                hit = idx[id(q.allowed)] = (q.allowed, conv(q.allowed))
            return {"allowed_idx": hit[1]}

        return [
            _ids_of(
                m.recommend(
                    q.user_id,
                    k,
                    stream_id=q.stream_id,
                    room=room(q),
                    now=q.ts,
                    repeats=q.repeats,
                    **allowed(q),
                    **quiet,
                )
            )[:k]
            for q in queries
        ]


class HybridRanker(Ranker):
    """Legacy adapter for ``shared.reco.HybridRecommender`` (``fit_events``; ``recommend(...,
    filter_seen=not repeats, exclude_purchased=not repeats, allowed_items=...)``).  ``cf="auto"``:
    EASE up to 5000 items, item-kNN above (a dense EASE of a big catalogue does not fit)."""

    is_model = True
    name = "hybrid"

    def __init__(self, name: str = "hybrid", cf: str = "auto", **params):
        self.name, self.cf, self.params = name, cf, params

    def fit(self, train_events, items=None, reference_time=None):
        from .hybrid import HybridRecommender

        cf = self.cf
        if cf == "auto":
            cf = "ease" if train_events["item_id"].nunique() <= 5000 else "itemknn"
        cf_params = {"lam": 200.0} if cf == "ease" else {"similarity": "cosine", "neighbours": 100}
        it = None
        if items is not None:
            it = items[[c for c in ("item_id", "title", "description", "category", "price") if c in items]]
        self.model = HybridRecommender(cf=cf, cf_params=cf_params, **self.params).fit_events(
            train_events, it, reference_time=reference_time
        )
        return self

    def rank(self, queries, k):
        m = self.model
        return [
            _ids_of(
                m.recommend(
                    q.user_id,
                    k,
                    stream_id=q.stream_id,
                    allowed_items=q.allowed,
                    filter_seen=not q.repeats,
                    exclude_purchased=not q.repeats,
                )
            )[:k]
            for q in queries
        ]


def baseline_rankers(target: str = "purchase", in_stream: bool = False) -> list[Ranker]:
    """The baselines every model is compared with."""
    if in_stream:
        return [
            ShowcasePopularity(target),
            StreamBestsellers(target),
            OwnHistory(target),
            OwnThenStream(target),
            ItemKNNRanker(target),
        ]
    return [MostPopular(target), OwnHistory(target), ItemKNNRanker(target)]


# ======================================================================= scoring
def query_metrics(rankings: Sequence[Sequence[str]], queries: Sequence[Query], k: int = 10) -> dict[str, np.ndarray]:
    """Per query NDCG@k (binary gains, IDCG over min(|rel|, k), as ``shared.reco.metrics``),
    HitRate@k and Recall@k."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    cdisc = np.concatenate(([0.0], np.cumsum(disc)))
    nq = len(queries)
    ndcg, hr, rec = np.zeros(nq), np.zeros(nq), np.zeros(nq)
    for j, (r, q) in enumerate(zip(rankings, queries)):
        rel = set(q.relevant)
        if not rel:
            continue
        seen: set = set()
        hits = np.zeros(k)
        for p, x in enumerate(list(r)[:k]):
            if x in rel and x not in seen:
                hits[p] = 1.0
            seen.add(x)
        nh = hits.sum()
        ndcg[j] = float(hits @ disc) / cdisc[min(len(rel), k)]
        hr[j] = float(nh > 0)
        rec[j] = nh / len(rel)
    return {f"ndcg@{k}": ndcg, f"hitrate@{k}": hr, f"recall@{k}": rec}


def paired_bootstrap(a, b, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, float]:
    """Paired bootstrap over queries (the same resampled indices for ``a`` and ``b``): the mean
    difference ``mean(a) - mean(b)`` and the ratio ``mean(a) / mean(b)``, each with its
    ``1 - alpha`` percentile interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("a and b must be 1-d arrays of the same length (one value per query)")
    n = a.size
    ma, mb = (float(a.mean()), float(b.mean())) if n else (0.0, 0.0)
    out = {
        "n": int(n),
        "mean_a": ma,
        "mean_b": mb,
        "diff": ma - mb,
        "ratio": ma / mb if mb > 0 else (float("nan") if ma == 0 else float("inf")),
    }
    if n == 0:
        out.update(diff_lo=float("nan"), diff_hi=float("nan"), ratio_lo=float("nan"), ratio_hi=float("nan"))
        return out
    rng = np.random.default_rng(seed)
    da, db = np.empty(n_boot), np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)
    for s in range(0, n_boot, chunk):
        e = min(n_boot, s + chunk)
        idx = rng.integers(0, n, size=(e - s, n))
        da[s:e], db[s:e] = a[idx].mean(1), b[idx].mean(1)
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    d = da - db
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(db > 0, da / np.where(db > 0, db, 1.0), np.where(da == 0, 1.0, np.inf))
    out["diff_lo"], out["diff_hi"] = (float(x) for x in np.percentile(d, [lo, hi]))
    out["ratio_lo"], out["ratio_hi"] = (float(x) for x in np.percentile(r, [lo, hi]))
    return out


class Report(dict):
    """A JSON-able dict; ``per_query[ranker][metric]`` holds the per-query arrays and
    ``rankings[ranker]`` the ranked lists (both not serialised)."""

    per_query: dict
    rankings: dict


def evaluate(
    train: pd.DataFrame,
    queries: Sequence[Query],
    items: pd.DataFrame | None,
    rankers: Sequence[Ranker],
    k: int = 10,
    *,
    reference_time=None,
    metric: str = "ndcg",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Fit every ranker on ``train`` (at ``reference_time``, default the last training event), rank
    the queries, score them.  -> ``Report``::

        {"k", "n_queries", "metric",
         "rankers": {name: {"kind": "baseline"|"model", "ndcg@k", "hitrate@k", "recall@k",
                            "fit_s", "rank_s"}},
         "best_baseline": name of the baseline with the best mean ``metric@k``,
         "vs_best_baseline": {model: paired_bootstrap(model, best baseline) on ``metric@k``}}
    """
    say = log or (lambda s: None)
    if reference_time is None:
        reference_time = pd.to_datetime(train["ts"], utc=True).max() if len(train) else None
    rep = Report(
        k=k, n_queries=len(queries), metric=f"{metric}@{k}", rankers={}, best_baseline=None, vs_best_baseline={}
    )
    rep.per_query, rep.rankings = {}, {}
    for r in rankers:
        t0 = time.perf_counter()
        say(f"  fit {r.name} on {len(train)} events")
        r.fit(train, items, reference_time)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        ranked = r.rank(list(queries), k)
        rank_s = time.perf_counter() - t1
        m = query_metrics(ranked, queries, k)
        rep.per_query[r.name], rep.rankings[r.name] = m, ranked
        rep["rankers"][r.name] = {
            "kind": "model" if r.is_model else "baseline",
            **{key: float(v.mean()) if v.size else 0.0 for key, v in m.items()},
            "fit_s": round(fit_s, 3),
            "rank_s": round(rank_s, 3),
        }
        say(
            f"  {r.name}: {metric}@{k}={rep['rankers'][r.name][f'{metric}@{k}']:.4f} "
            f"(fit {fit_s:.1f}s, rank {len(queries)} queries {rank_s:.1f}s)"
        )
    key = f"{metric}@{k}"
    base = [n for n, v in rep["rankers"].items() if v["kind"] == "baseline"]
    if base:
        best = max(base, key=lambda n: rep["rankers"][n][key])
        rep["best_baseline"] = best
        for n, v in rep["rankers"].items():
            if v["kind"] == "model":
                rep["vs_best_baseline"][n] = paired_bootstrap(
                    rep.per_query[n][key], rep.per_query[best][key], n_boot=n_boot, seed=seed, alpha=alpha
                )
    return rep


def format_report(rep: Report, title: str = "") -> str:
    k = rep["k"]
    hdr = f"{'ranker':<22} {'NDCG@' + str(k):>8} {'HR@' + str(k):>7} {'R@' + str(k):>7} {'fit s':>6} {'rank s':>6}  vs best baseline ({rep['metric']} ratio, 95% CI)"
    lines = []
    if title:
        lines.append(f"== {title}  ({rep['n_queries']} queries)")
    lines += [hdr, "-" * len(hdr)]
    for n, v in rep["rankers"].items():
        extra = ""
        if n in rep["vs_best_baseline"]:
            b = rep["vs_best_baseline"][n]
            extra = f"  {b['ratio']:.3f} [{b['ratio_lo']:.3f}, {b['ratio_hi']:.3f}] vs {rep['best_baseline']}"
        elif n == rep["best_baseline"]:
            extra = "  (best baseline)"
        lines.append(
            f"{n:<22} {v[f'ndcg@{k}']:8.4f} {v[f'hitrate@{k}']:7.4f} {v[f'recall@{k}']:7.4f} "
            f"{v['fit_s']:6.1f} {v['rank_s']:6.1f}{extra}"
        )
    return "\n".join(lines)
