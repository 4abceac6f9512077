"""The analytics tables beyond ``analytics_sql``'s three, for both clean engines (the DuckDB path,
``clean._write_analytics``, and the Beam one, ``pipelines/beam/clean.py``): which are computed per stream,
which are derived from the merged per-stream tables, and the SQL that makes them.

* per stream: the host / audience tables (``host_kpis.STREAM_TABLES``) and the experiments' viewer
  table (``experiments.STREAM_TABLES``), recomputed for the streams a run touches;
* derived: ``host_kpis.DERIVED_TABLES`` and ``experiments.DERIVED_TABLES``, from the whole merged
  ``m_<name>`` tables of ``DERIVED_INPUTS`` on every run.
"""

from __future__ import annotations

import duckdb

from shared.pipeline import experiments, host_kpis

DERIVED_TABLES: tuple[str, ...] = host_kpis.DERIVED_TABLES + experiments.DERIVED_TABLES
DERIVED_INPUTS: tuple[str, ...] = host_kpis.DERIVED_INPUTS + experiments.DERIVED_INPUTS


def stream_tables_sql(con: duckdb.DuckDBPyConnection, source: str, host_source: str | None) -> None:
    """The per-stream tables (``analytics_sql`` ran on ``con`` over ``source``, the clean events)."""
    host_kpis.stream_tables_sql(con, host_source)
    experiments.stream_tables_sql(con, source)


def derived_sql(con: duckdb.DuckDBPyConnection, tz: str, prefix: str = "m_") -> None:
    """The derived tables from the merged ``<prefix><name>`` tables of ``DERIVED_INPUTS``."""
    host_kpis.derived_sql(con, f"{prefix}stream", f"{prefix}viewer_stream", tz)
    experiments.derived_sql(con, f"{prefix}rec_viewer")
