"""The pipeline's public read API: what readers outside the pipeline (the dashboard, tools) may use.

Everything here is about COMMITTED outputs (the objects the clean manifest names, shared.layout) and
their definitions; the pipeline's internals (its SQL, its config, the run) stay private to it.

* :data:`CLEAN_SCHEMA`, :func:`empty_clean` - the clean/ table's Arrow schema;
* :data:`STREAM_COLUMNS` - the columns of the ``stream`` analytics table;
* :data:`TABLE_COLUMNS` - the columns of the host / audience tables (``stream_slot``,
  ``stream_retention``, ``stream_audience``, ``host``, ``host_cohort``; shared.pipeline.host_kpis);
* :data:`VIEWER_TABLES` - the analytics tables holding viewer ids: readers must not serve them;
* :func:`load_manifest` - the committed manifest (``shared.layout.Manifest``) and its generation;
* :func:`clean_events` - one stream's committed clean events (only the files holding it are read);
* :func:`read_table` - an analytics table of the manifest;
* :func:`session_tables` - the analytics' own event / span / session definitions over any relation
  of clean events (DuckDB tables ``a_ev``, ``a_span``, ``a_sess``), for finer series.
"""

from __future__ import annotations

import io

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.adapters.storage import ObjectStore
from shared.layout import ANALYTICS_TABLES, VIEWER_TABLES, Manifest, load_manifest
from shared.pipeline import experiments, host_kpis
from shared.pipeline.analytics import STREAM_COLS, analytics_sql
from shared.pipeline.clean import CLEAN_SCHEMA
from shared.settings import settings

__all__ = [
    "ANALYTICS_TABLES",
    "CLEAN_SCHEMA",
    "STREAM_COLUMNS",
    "TABLE_COLUMNS",
    "VIEWER_TABLES",
    "COHORT_GRAINS",
    "RETENTION_POINTS",
    "clean_events",
    "empty_clean",
    "load_manifest",
    "read_table",
    "session_tables",
]

STREAM_COLUMNS: list[str] = list(STREAM_COLS)
TABLE_COLUMNS: dict[str, list[str]] = {
    "stream_slot": list(host_kpis.SLOT_COLS),
    "stream_retention": list(host_kpis.RETENTION_COLS),
    "stream_audience": list(host_kpis.AUDIENCE_COLS),
    "host": list(host_kpis.HOST_COLS),
    "host_cohort": list(host_kpis.COHORT_COLS),
    "experiment": list(experiments.EXPERIMENT_COLS),
}
COHORT_GRAINS: tuple[str, ...] = host_kpis.COHORT_GRAINS
RETENTION_POINTS: tuple[int, ...] = host_kpis.RETENTION_POINTS


def empty_clean() -> pa.Table:
    return CLEAN_SCHEMA.empty_table()


def clean_events(store: ObjectStore, manifest: Manifest, stream_id: str) -> pa.Table:
    """The stream's committed clean events (only the clean files that hold the stream are read)."""
    parts = []
    for f in manifest.clean_files:
        if stream_id in f.streams:
            t = pq.read_table(io.BytesIO(store.get(f.key)))
            parts.append(t.filter(pc.equal(t.column("stream_id").cast(pa.string()), stream_id)))
    return pa.concat_tables(parts, promote_options="permissive") if parts else empty_clean()


def read_table(store: ObjectStore, manifest: Manifest, name: str) -> pa.Table | None:
    """The analytics table ``name`` (one of :data:`ANALYTICS_TABLES`) the manifest names, or None."""
    if name not in ANALYTICS_TABLES:
        raise ValueError(f"unknown analytics table {name!r} (known: {', '.join(ANALYTICS_TABLES)})")
    key = manifest.analytics.get(name)
    return pq.read_table(io.BytesIO(store.get(key))) if key else None


def session_tables(
    con: duckdb.DuckDBPyConnection, source: str, max_session_s: float | None = None, bounds: dict | None = None
) -> None:
    """Create the analytics' tables over ``source`` (a relation of clean events) in ``con``:
    ``a_ev``, ``a_span``, ``a_sess`` among them (docs/metrics.md). ``max_session_s`` defaults to
    ``DAIHUO_MAX_SESSION_S``, as the clean step uses. ``bounds`` ({stream_id: (start, end)}, e.g. the
    analytics table's span, which knows the host's stream_start / stream_end) stand for the host actions."""
    host = None
    if bounds:
        rows = [(sid, "stream_start", s, f"b{i}s") for i, (sid, (s, _)) in enumerate(bounds.items()) if s is not None]
        rows += [(sid, "stream_end", e, f"b{i}e") for i, (sid, (_, e)) in enumerate(bounds.items()) if e is not None]
        con.execute("""CREATE OR REPLACE TEMP TABLE a_bounds (stream_id VARCHAR, type VARCHAR, ts TIMESTAMPTZ,
                       event_id VARCHAR, title VARCHAR, host_id VARCHAR, host_name VARCHAR)""")
        if rows:
            con.executemany("INSERT INTO a_bounds VALUES (?, ?, ?, ?, NULL, NULL, NULL)", rows)
        host = "a_bounds"
    analytics_sql(con, source, settings().max_session_s if max_session_s is None else max_session_s, host)
