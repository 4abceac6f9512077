"""Read the training inputs from the store: ``clean/`` events of a time window + the ``catalog/``.

The layout is the batch pipeline's (docs/pipeline.md; keys in shared/layout.py):

* ``clean/date=YYYY-MM-DD/<run-id>.parquet`` - one row per unique event_id, ``ts`` a UTC timestamp,
  the contract's columns (``event_id, type, ts, platform, stream_id, user_id, item_id, price, ...``),
  ids possibly dictionary-encoded;
* ``catalog/...parquet`` - catalog_item records (``item_id, title, description, category, price,
  currency, stream_ids, ts, ...``), possibly several parts: the latest record per item wins.

* ``state/clean-manifest.json`` - ``clean_files: [{"key", "streams"}]`` and ``catalog: [key]`` list the
  COMMITTED objects; only those are read when the manifest exists.

Everything that knows about that layout is in :func:`read_training_data` (one place to adapt).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from shared import layout
from shared.adapters.storage import ObjectStore
from shared.reco.arrays import ascending, unique

CLEAN_PREFIX = layout.CLEAN
CATALOG_PREFIX = layout.CATALOG
EVENT_COLUMNS = ["event_id", "type", "ts", "stream_id", "user_id", "item_id", "price"]
CATALOG_COLUMNS = ["item_id", "title", "description", "category", "price", "stream_ids", "ts"]
_DATE = layout.DATE_RE


@dataclass
class TrainingData:
    events: pd.DataFrame  # EVENT_COLUMNS, ts = datetime64[UTC], ids as str
    catalog: pd.DataFrame  # CATALOG_COLUMNS (one row per item), may be empty
    inputs: list[dict] = field(default_factory=list)  # [{"key", "generation"}] every object read
    window: dict = field(default_factory=dict)  # {"start", "end", "days"} (ISO UTC)


def _read_parquet(store: ObjectStore, key: str, columns: list[str]) -> tuple[pa.Table, str]:
    data, gen = store.get_with_generation(key)
    pf = pq.ParquetFile(io.BytesIO(data))
    have = set(pf.schema_arrow.names)
    return pf.read(columns=[c for c in columns if c in have]), gen


def _to_str(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if pd.api.types.is_string_dtype(s.dtype) and s.dtype != object:
        return s
    return s.where(s.notna(), None).map(lambda v: None if v is None else str(v))


_ID_COLUMNS = ("type", "stream_id", "user_id", "item_id")


def _events_frame(tables: list[pa.Table], dates: list | None = None) -> pd.DataFrame:
    """Concatenate event tables in arrow and hand pandas codes directly: the id columns become
    ``pd.Categorical`` (arrow dictionaries, unified across files; no per-row Python strings),
    ``ts`` UTC datetime64, ``event_id`` str.  Unique ``event_id`` (first occurrence in file order),
    sorted by ``(ts, event_id)``."""
    if not tables:
        ev = pd.DataFrame({c: pd.Series([], dtype=object) for c in EVENT_COLUMNS})
        ev["ts"] = pd.to_datetime(ev["ts"], utc=True)
        ev["price"] = ev["price"].astype(np.float64)
        return ev
    cols: dict[str, list] = {c: [] for c in EVENT_COLUMNS}
    n = 0
    for t in tables:
        for c in EVENT_COLUMNS:
            if c in t.column_names:
                a = t[c]
                if c in _ID_COLUMNS:
                    if not pa.types.is_dictionary(a.type):
                        a = pa.compute.dictionary_encode(a.cast(pa.string()) if not pa.types.is_string(a.type) else a)
                    a = a.cast(pa.dictionary(pa.int32(), pa.string()))
                elif c == "event_id":
                    a = a.cast(a.type.value_type) if pa.types.is_dictionary(a.type) else a
                    a = a.cast(pa.string())
                elif c == "ts":
                    if pa.types.is_timestamp(a.type):
                        a = a.cast(pa.timestamp("us", tz="UTC"))
                    else:
                        a = pa.chunked_array(
                            [
                                pa.array(
                                    pd.to_datetime(a.to_pandas(), utc=True, format="ISO8601").astype(
                                        "datetime64[us, UTC]"
                                    )
                                )
                            ]
                        )
                elif c == "price":
                    a = (
                        pa.chunked_array(
                            [pa.array(pd.to_numeric(a.to_pandas(), errors="coerce").to_numpy(dtype=np.float64))]
                        )
                        if not (pa.types.is_floating(a.type) or pa.types.is_integer(a.type))
                        else a.cast(pa.float64())
                    )
            else:
                typ = {"ts": pa.timestamp("us", tz="UTC"), "price": pa.float64(), "event_id": pa.string()}.get(
                    c, pa.dictionary(pa.int32(), pa.string())
                )
                a = pa.chunked_array([pa.nulls(t.num_rows, typ)])
            cols[c].append(a)
        n += t.num_rows
    table = pa.table({c: pa.chunked_array([ch for a in v for ch in a.chunks], type=v[0].type) for c, v in cols.items()})
    table = table.unify_dictionaries()  # (no combine_chunks: a copy of every column for nothing)
    # event_id is unique within a clean file (the pipeline dedupes per run) and an event lives in the
    # partition of its own date, so duplicates can only come from several files of one date partition:
    # only those are checked (hashing 10M ids costs seconds).
    bounds = np.concatenate([[0], np.cumsum([t.num_rows for t in tables])])
    groups: dict = {}
    for k, d in enumerate(dates or [None] * len(tables)):
        groups.setdefault(d, []).append(k)
    drop = None
    for d, members in groups.items():
        if len(members) < 2 and d is not None:
            continue
        sel = np.concatenate([np.arange(bounds[k], bounds[k + 1]) for k in members])
        ids = pd.Series(table["event_id"].take(pa.array(sel)).to_numpy(zero_copy_only=False))
        dup = ids.duplicated(keep="first").to_numpy()
        if dup.any():
            drop = np.zeros(table.num_rows, dtype=bool) if drop is None else drop
            drop[sel[dup]] = True
    if drop is not None:
        table = table.filter(pa.array(~drop))
    # sort by (ts, event_id): the day files are usually already in ts order, then only runs of equal
    # ts need their event_id order checked
    ts = table["ts"].cast(pa.int64()).to_numpy()
    if ts.size > 1 and ascending(ts):
        ties = np.flatnonzero(ts[1:] == ts[:-1])
        order = None
        if ties.size:
            starts = unique(np.concatenate([ties[np.r_[True, np.diff(ties) > 1]]]))
            if starts.size <= 100_000:
                eid = table["event_id"]
                for a in starts.tolist():
                    b = a + 1
                    while b < ts.size and ts[b] == ts[a]:
                        b += 1
                    p = np.argsort(np.asarray(eid.slice(a, b - a).to_pylist(), dtype=object), kind="stable")
                    # only a run that moves asks for a take (a copy of every column, ~2 s at 10M rows)
                    if (p != np.arange(p.size)).any():
                        order = np.arange(ts.size) if order is None else order
                        order[a:b] = a + p
            else:
                order = pa.compute.sort_indices(table, sort_keys=[("ts", "ascending"), ("event_id", "ascending")])
        if order is not None:
            table = table.take(pa.array(order) if isinstance(order, np.ndarray) else order)
    else:
        order = pa.compute.sort_indices(table, sort_keys=[("ts", "ascending"), ("event_id", "ascending")])
        table = table.take(order)
    ev = table.to_pandas()
    for c in _ID_COLUMNS:
        if not isinstance(ev[c].dtype, pd.CategoricalDtype):
            ev[c] = ev[c].astype("category")
    ev["ts"] = ev["ts"].astype("datetime64[us, UTC]")
    return ev[EVENT_COLUMNS]


def read_training_data(store: ObjectStore, window_days: float = 30.0, *, end=None) -> TrainingData:
    """Clean events with ``ts`` in ``(end - window_days, end]`` and the latest catalog record per item.

    ``end`` defaults to the newest event ``ts`` in the data (not the wall clock), so the same objects
    always give the same window: training is a pure function of its inputs (idempotent versions).
    Partitions (``date=YYYY-MM-DD``) older than the window are not even downloaded.
    """
    # Only COMMITTED objects: the clean run's manifest lists them (a run that lost the manifest race or
    # crashed before committing leaves unreferenced objects under clean/ that readers must ignore).
    # Without a manifest (data written directly, e.g. tests/bench), every object under the prefixes.
    manifest, gen = layout.load_manifest(store)
    if gen is not None:
        keys = sorted({f.key for f in manifest.clean_files})
        catalog_keys = sorted(set(manifest.catalog))
    else:
        keys = sorted(k for k in store.list(CLEAN_PREFIX) if k.endswith(".parquet"))
        catalog_keys = sorted(k for k in store.list(CATALOG_PREFIX) if k.endswith(".parquet"))
    dates = {k: (m.group(1) if (m := _DATE.search(k)) else None) for k in keys}
    if end is None:
        newest = None
    else:
        newest = (
            pd.Timestamp(end).tz_convert("UTC").date().isoformat()
            if pd.Timestamp(end).tzinfo
            else pd.Timestamp(end).date().isoformat()
        )
    # the partitions the window may reach (objects without a date partition are always read); the Beam
    # item-item job selects its inputs by the same rule (layout.window_keys)
    keys = layout.window_keys(keys, window_days, newest)
    inputs, tables, t_dates = [], [], []
    for k in keys:
        t, gen = _read_parquet(store, k, EVENT_COLUMNS)
        inputs.append({"key": k, "generation": gen})
        if t.num_rows:
            tables.append(t)
            t_dates.append(dates[k])
    ev = _events_frame(tables, t_dates)
    end_ts = (
        pd.Timestamp(end).tz_convert("UTC")
        if end is not None and pd.Timestamp(end).tzinfo
        else (pd.Timestamp(end, tz="UTC") if end is not None else (ev["ts"].max() if len(ev) else None))
    )
    if end_ts is not None and not pd.isna(end_ts):
        start_ts = end_ts - pd.Timedelta(days=window_days)
        keep = ((ev["ts"] > start_ts) & (ev["ts"] <= end_ts)).to_numpy()
        if not keep.all():
            ev = ev[keep].reset_index(drop=True)
        window = {"start": start_ts.isoformat(), "end": end_ts.isoformat(), "days": window_days}
    else:
        window = {"start": None, "end": None, "days": window_days}

    cat_tables = []
    for k in catalog_keys:
        t, gen = _read_parquet(store, k, CATALOG_COLUMNS)
        inputs.append({"key": k, "generation": gen})
        if t.num_rows:
            cat_tables.append(
                pa.table(
                    {
                        c: (t[c].cast(t[c].type.value_type) if pa.types.is_dictionary(t[c].type) else t[c])
                        for c in t.column_names
                    }
                )
            )
    if cat_tables:
        cat = pa.concat_tables(cat_tables, promote_options="permissive").to_pandas()
        for c in CATALOG_COLUMNS:
            if c not in cat:
                cat[c] = None
        cat["item_id"] = _to_str(cat["item_id"])
        cat["_ts"] = (
            pd.to_datetime(cat["ts"], utc=True, format="ISO8601")
            if cat["ts"].dtype == object
            else pd.to_datetime(cat["ts"], utc=True)
        )
        cat = (
            cat.reset_index(drop=True)
            .reset_index()
            .sort_values(["item_id", "_ts", "index"], kind="stable")
            .drop_duplicates("item_id", keep="last")
        )
        cat = cat[CATALOG_COLUMNS].reset_index(drop=True)
        cat["stream_ids"] = cat["stream_ids"].map(
            lambda v: [] if v is None or (not hasattr(v, "__len__")) else [str(s) for s in v]
        )
    else:
        cat = pd.DataFrame(columns=CATALOG_COLUMNS)
    # arrow's allocator (mimalloc) keeps the memory of the tables decoded above for reuse; numpy and
    # pandas, which do the rest of the train, never reuse it: at 10M events that is 1.4 GiB of a 2.2 GiB
    # resident set after the read (bench_train's peak RSS column), handed back here
    del tables, cat_tables
    pa.default_memory_pool().release_unused()
    return TrainingData(ev, cat, inputs, window)


# --------------------------------------------------------------------------- test/bench helpers
def write_clean_from_frames(
    store: ObjectStore, events: pd.DataFrame, catalog: pd.DataFrame | None = None, run_id: str = "sim"
) -> list[str]:
    """Write events (e.g. ``sim.truth.expected_clean()``) as the pipeline would: one Parquet object
    per UTC day under ``clean/date=YYYY-MM-DD/<run_id>.parquet`` (ids dictionary-encoded, ts UTC),
    and the catalog under ``catalog/<run_id>.parquet``. Returns the keys written."""
    ev = events.copy()
    ts = ev["ts_utc"] if "ts_utc" in ev else pd.to_datetime(ev["ts"], utc=True, format="ISO8601")
    ev["ts"] = pd.to_datetime(ts, utc=True).astype("datetime64[us, UTC]")
    cols = [
        c
        for c in (
            "event_id",
            "type",
            "ts",
            "platform",
            "stream_id",
            "user_id",
            "item_id",
            "price",
            "currency",
            "quantity",
        )
        if c in ev
    ]
    ev = ev[cols]
    keys = []
    day = ev["ts"].dt.strftime("%Y-%m-%d")
    for d, part in ev.groupby(day, sort=True):
        part = part.reset_index(drop=True)
        # a day's file carries the ids of that day only, as the pipeline's (DuckDB writes each row group's
        # dictionary from its values): a categorical's unused categories (a whole user universe) are not
        # written into every file
        for c in part.columns:
            if isinstance(part[c].dtype, pd.CategoricalDtype):
                part[c] = part[c].cat.remove_unused_categories()
        t = pa.Table.from_pandas(part, preserve_index=False)
        t = pa.table(
            {
                c: (t[c].dictionary_encode() if c in ("type", "platform", "stream_id", "user_id", "item_id") else t[c])
                for c in t.column_names
            }
        )
        buf = io.BytesIO()
        pq.write_table(t, buf)
        key = layout.clean_key(d, run_id)
        store.put(key, buf.getvalue(), content_type="application/vnd.apache.parquet")
        keys.append(key)
    if catalog is not None and len(catalog):
        cat = catalog.copy()
        cat["ts"] = pd.to_datetime(cat["ts"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        cat = cat[
            [
                c
                for c in (
                    "item_id",
                    "title",
                    "description",
                    "category",
                    "price",
                    "currency",
                    "stream_ids",
                    "platform",
                    "ts",
                    "event_id",
                )
                if c in cat
            ]
        ]
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(cat.reset_index(drop=True), preserve_index=False), buf)
        key = layout.catalog_key(run_id)
        store.put(key, buf.getvalue(), content_type="application/vnd.apache.parquet")
        keys.append(key)
    return keys
