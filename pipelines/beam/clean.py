"""The clean step as an Apache Beam batch pipeline: raw/ NDJSON.gz -> clean/, clean_host/, quarantine/,
catalog/, the dedupe index part, the analytics/ KPI tables and the run's report, committed through the
same manifest swap as the DuckDB engine (``shared.pipeline.clean.plan_run`` / ``commit_run``).

    .venv-beam/bin/python -m pipelines.beam.clean --store file:///path/to/store [--now EPOCH] [beam args]

Offline, ``--runner=FnApiRunner`` is set unless a runner is given (Beam's default runner first tries to
download the Prism binary). On Dataflow the same pipeline takes ``--runner=DataflowRunner`` and its
options; the workers need the store's credentials and this package (a Flex Template image).

Shape (every step keyed, so it spreads over workers):

1. one element per pending raw object -> read through the project's storage adapter, split into lines,
   each judged by ``pipelines.beam.rows.judge`` (the contract: compiled checks, then pydantic for what
   they flag) -> bad / catalog / viewer / host;
2. exact dedupe: the events keyed by ``event_id`` co-grouped with the committed index
   (``state/dedupe/*.parquet`` parts the commit keeps): the first copy (earliest received_at, then raw
   order) wins, a copy of a committed id is counted and dropped -- the DuckDB path's semantics;
3. purchases keyed by ``item_id`` co-grouped with the known catalog (this run's + committed parts):
   kept and counted, or quarantined as ``unknown_item`` (``DAIHUO_CLEAN_UNKNOWN_ITEMS``);
4. clean/ and clean_host/ one Parquet object per event date, quarantine/ one NDJSON.gz per received
   date (rows in raw order), the catalog part (latest record per item), the dedupe part;
5. KPI tables: the affected streams' rows (this run's + their committed clean files) grouped by
   stream, each group through the SAME SQL as the DuckDB path (``shared.pipeline.analytics``,
   ``kpi_tables.stream_tables_sql``, DuckDB in the worker); then one merge step: the other streams'
   rows from the committed tables, and the cross-stream tables (``kpi_tables.derived_sql``) from the
   merged ones.

I/O goes through ``shared.adapters.storage`` inside the DoFns (not ``apache_beam.io``): the layout's
object names, the emulator and the local / S3 backends are the adapter's, and Beam's GCS filesystem
(the ``[gcp]`` extra) neither speaks to the emulator nor writes one object per partition by name.
The run ends inside the job: its last step (``Commit``, one worker) sums the report's counters (carried as
data beside the written objects' names; also Beam metrics, for the Dataflow UI), calls ``clean.commit_run``
and publishes the summary on ``events-cleaned`` (``--publish``, ``--cleaned_topic``, ``--pubsub_project``;
as the clean function does, unpublished runs are republished first). A Flex Template's launcher only builds
the job and exits, so nothing the driver did after ``wait_until_finish`` would run there.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from pipelines.beam import rows as R
from shared import layout
from shared.adapters.storage import open_store
from shared.pipeline import clean as dclean

NS = "clean"
_EPOCH_DAY = date(1970, 1, 1)
OUTPUTS = "state/beam/{run_id}.json"  # the committed summary, for a driver that waits (Commit)


def _count(name: str, n: int = 1) -> None:
    Metrics.counter(NS, name).inc(n)


def _counted(name: str, n: int = 1):
    """A report counter as data: ``(name, n)`` on the ``counts`` output (summed per name, then read by the
    commit step, which runs on a worker: a Flex Template's launcher never sees the job's metrics), and
    the same Beam metric (the Dataflow UI's counters)."""
    _count(name, n)
    return beam.pvalue.TaggedOutput("counts", (name, n))


def _plain(schema: pa.Schema) -> pa.Schema:
    """``schema`` with dictionary columns as plain strings (what DuckDB's tables and read_parquet give)."""
    return pa.schema(
        [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in schema]
    )


def ipc(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


def unipc(b: bytes) -> pa.Table:
    return pa.ipc.open_stream(b).read_all()


def _parquet_bytes(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    return buf.getvalue()


class _StoreFn(beam.DoFn):
    def __init__(self, store_url: str):
        self.store_url = store_url
        self.store = None

    def setup(self):
        self.store = open_store(self.store_url)


# An accepted event travels between the keyed steps as ``(event_id, Ev)``, Ev a flat tuple: the fields the
# steps route by, then the whole row as orjson bytes (decoded only where rows are written). Rows as
# dicts cost most of the run in Beam's element coder (a profile of the first version).
NULLS, REC, ORDER, TYPE, ITEM, DAY, STREAM, ROW = range(8)


def _ev(row: dict, order: int) -> tuple:
    rec = row["received_at"]
    return (
        rec is None,  # first copy: received_at NULLS LAST, then raw order
        rec or 0,
        order,
        row["type"],
        row.get("item_id"),
        _day(row["ts"]),
        row["stream_id"],
        orjson.dumps(row),
    )


class ReadAndJudge(_StoreFn):
    """(index, raw key) -> every line's verdict: main output the accepted events ``(event_id, Ev)``, tagged
    ``catalog`` (dict rows) and ``bad`` (``(quarantine date, row bytes)``)."""

    def __init__(self, store_url: str, params: R.Params):
        super().__init__(store_url)
        self.params = params

    def process(self, elem):
        idx, key = elem
        lines = R.split_lines(self.store.get(key))
        yield _counted("rows_in", len(lines))
        base = idx << 32
        catalog = 0
        for i, line in enumerate(lines):
            kind, row = R.judge(line, key, (idx, i), self.params)
            if kind == "viewer" or kind == "host":
                yield row["event_id"], _ev(row, base + i)
            elif kind == "bad":
                yield beam.pvalue.TaggedOutput("bad", (_quarantine_day(row), orjson.dumps(row)))
            else:
                catalog += 1
                yield beam.pvalue.TaggedOutput(kind, row)
        if catalog:
            yield _counted("catalog_rows", catalog)


class ReadIds(_StoreFn):
    """A Parquet key -> (value of ``column``, None) per row (the dedupe index, the committed catalog)."""

    def __init__(self, store_url: str, column: str):
        super().__init__(store_url)
        self.column = column

    def process(self, key):
        t = pq.read_table(io.BytesIO(self.store.get(key)), columns=[self.column])
        for v in t.column(self.column).cast(pa.string()).to_pylist():
            yield v, None


def dedupe(kv):
    """The copy the DuckDB path keeps (ORDER BY received_at NULLS LAST, row_id), unless the index has the id."""
    eid, g = kv
    rows = list(g["events"])
    if not rows:
        return
    if len(rows) > 1:
        yield _counted("duplicates_in_run", len(rows) - 1)
    if list(g["seen"]):
        yield _counted("duplicates_seen_before")
        return
    yield eid, (rows[0] if len(rows) == 1 else min(rows, key=lambda v: (v[NULLS], v[REC], v[ORDER])))


class KnownItems(beam.DoFn):
    """Purchases co-grouped with the known items: kept (counted if uncatalogued) or quarantined."""

    def __init__(self, require_catalog: bool):
        self.require_catalog = require_catalog

    def process(self, kv):
        item, g = kv
        rows = list(g["purchases"])
        known = item is None or bool(list(g["known"]))
        for ev in rows:
            if known:
                yield ev
            elif self.require_catalog:
                bad = R.unknown_item(orjson.loads(ev[1][ROW]))
                yield beam.pvalue.TaggedOutput("bad", (_quarantine_day(bad), orjson.dumps(bad)))
            else:
                yield _counted("uncatalogued_purchases")
                yield ev


def _day(us: int) -> str:
    """The UTC date of a timestamp in microseconds (integer arithmetic: no rounding at midnight)."""
    return (_EPOCH_DAY + timedelta(days=us // 86_400_000_000)).isoformat()


class WriteDay(_StoreFn):
    """(date, rows) -> one Parquet object of ``schema`` (clean/ or clean_host/) -> its manifest entry."""

    def __init__(self, store_url: str, kind: str, run_id: str, cutoff_us: float | None = None):
        super().__init__(store_url)
        self.kind, self.run_id, self.cutoff_us = kind, run_id, cutoff_us

    def process(self, kv):
        d, payloads = kv
        rows = [R.public(orjson.loads(b)) for b in payloads]
        if self.kind == "clean":
            schema, key = dclean.CLEAN_SCHEMA, layout.clean_key(d, self.run_id)
            # the index no longer covers rows whose sent ts is older than the look-back (report: beyond_lookback)
            old = 0
            for r in rows:
                sent = R.ts_us(r["ts_sent"], upper=False)
                if (sent if sent is not None else r["ts"]) < self.cutoff_us:
                    old += 1
            counts = {
                "rows_out": len(rows),
                "late": sum(1 for r in rows if r["late"]),
                "ts_corrected": sum(1 for r in rows if r["ts_corrected"]),
                "beyond_lookback": old,
            }
        else:
            schema, key = dclean.HOST_SCHEMA, layout.clean_host_key(d, self.run_id)
            counts = {"host_rows": len(rows)}
        for name, n in counts.items():
            _count(name, n)
        t = pa.Table.from_pylist(rows, schema=schema)
        self.store.put(key, _parquet_bytes(t), content_type="application/vnd.apache.parquet")
        streams = sorted({r["stream_id"] for r in rows if r["stream_id"] is not None})
        yield {"kind": self.kind, "date": d, "key": key, "streams": streams, "counts": counts}


class WriteQuarantine(_StoreFn):
    def __init__(self, store_url: str, run_id: str):
        super().__init__(store_url)
        self.run_id = run_id

    def process(self, kv):
        import gzip

        d, payloads = kv
        rows = sorted((orjson.loads(b) for b in payloads), key=lambda r: r["_order"])
        lines = []
        counts: dict[str, int] = {}
        for r in rows:
            for name in (
                f"dropped:{r['reason']}",
                f"dropped_field:{r['reason']}:{r['field'] if r['field'] is not None else '?'}",
            ):
                counts[name] = counts.get(name, 0) + 1
            lines.append(
                dclean.quarantine_line(
                    r["reason"],
                    r["field"],
                    r["reasons"],
                    r["raw"],
                    r["event_id"],
                    r["source"],
                    r["received_at"],
                    self.run_id,
                )
            )
        key = layout.quarantine_key(d, self.run_id)
        self.store.put(key, gzip.compress(b"\n".join(lines) + b"\n", mtime=0), content_type="application/gzip")
        for name, n in counts.items():
            _count(name, n)
        yield {"kind": "quarantine", "date": d, "key": key, "counts": counts}


def _quarantine_day(r: dict) -> str:
    rec = r["received_at"]
    return rec[:10] if rec is not None else datetime.now(UTC).strftime("%Y-%m-%d")


class WriteDedupe(_StoreFn):
    def __init__(self, store_url: str, run_id: str):
        super().__init__(store_url)
        self.run_id = run_id

    def process(self, kv):
        _, ids = kv
        ids = [i for i in ids if i is not None]
        key = layout.dedupe_key(self.run_id)
        t = pa.table({"event_id": pa.array(sorted(ids), pa.string())})
        self.store.put(key, _parquet_bytes(t), content_type="application/vnd.apache.parquet")
        yield {"kind": "dedupe", "key": key}


class WriteCatalog(_StoreFn):
    def __init__(self, store_url: str, run_id: str):
        super().__init__(store_url)
        self.run_id = run_id

    def process(self, kv):
        _, rows = kv
        rows = sorted((R.public(r) for r in rows), key=lambda r: r["item_id"])
        _count("catalog_items", len(rows))
        counts = {"catalog_items": len(rows)}
        key = layout.catalog_key(self.run_id)
        t = pa.Table.from_pylist(rows, schema=dclean.CATALOG_SCHEMA)
        self.store.put(key, _parquet_bytes(t), content_type="application/vnd.apache.parquet")
        yield {"kind": "catalog", "key": key, "counts": counts}


# ---------------------------------------------------------------------------------------- KPI tables
def _duck():
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET threads=1")
    con.execute("SET TimeZone='UTC'")
    return con


def _stream_tables() -> list[str]:
    from shared.pipeline import kpi_tables

    return [n for n in layout.ANALYTICS_TABLES if n not in kpi_tables.DERIVED_TABLES]


class ReadCommitted(_StoreFn):
    """A committed clean/ (or clean_host/) file whose streams include an affected one -> (stream, rows)."""

    def __init__(self, store_url: str, kind: str):
        super().__init__(store_url)
        self.kind = kind

    def process(self, entry, affected):
        want = set(entry["streams"]) & set(affected)
        if not want:
            return
        schema = dclean.CLEAN_SCHEMA if self.kind == "clean" else dclean.HOST_SCHEMA
        t = pq.read_table(io.BytesIO(self.store.get(entry["key"]))).cast(_plain(schema))
        sid = t.column("stream_id")
        for s in sorted(want):
            part = t.filter(pc.equal(sid, s))
            if part.num_rows:
                yield s, (self.kind, ipc(part))


class StreamKPIs(beam.DoFn):
    """(stream, its rows) -> the per-stream KPI tables of that stream, by the DuckDB path's own SQL."""

    def __init__(self, max_session_s: float):
        self.max_session_s = max_session_s

    def process(self, kv):
        from shared.pipeline import kpi_tables
        from shared.pipeline.analytics import analytics_sql

        _stream, items = kv
        parts: dict[str, list[pa.Table]] = {"clean": [], "host": []}
        rows: dict[str, list[dict]] = {"clean": [], "host": []}
        for kind, v in items:
            if kind.startswith("row:"):
                rows[kind[4:]].append(R.public(orjson.loads(v)))
            else:
                parts[kind].append(unipc(v))
        con = _duck()
        for kind, schema in (("clean", dclean.CLEAN_SCHEMA), ("host", dclean.HOST_SCHEMA)):
            t = pa.Table.from_pylist(rows[kind], schema=schema).cast(_plain(schema))
            t = pa.concat_tables([t, *parts[kind]])
            con.register(f"src_{kind}", t)
        con.execute("CREATE VIEW a_source AS SELECT * FROM src_clean")
        con.execute("CREATE VIEW a_host_source AS SELECT * FROM src_host")
        analytics_sql(con, "a_source", self.max_session_s, host_source="a_host_source")
        kpi_tables.stream_tables_sql(con, "a_source", "a_host_source")
        for name in _stream_tables():
            yield 0, (name, ipc(con.sql(f"SELECT * FROM a_{name}").to_arrow_table()))
        con.close()


class MergeKPIs(_StoreFn):
    """Every affected stream's KPI rows + the other streams' committed rows -> analytics/<table>/<run>;
    the cross-stream tables from the merged ones. The same statements as ``clean._write_analytics``."""

    def __init__(self, store_url: str, run_id: str, old: dict, max_session_s: float, tz: str):
        super().__init__(store_url)
        self.run_id, self.old, self.max_session_s, self.tz = run_id, old, max_session_s, tz

    def process(self, kv, affected):
        from shared.pipeline import kpi_tables
        from shared.pipeline.analytics import analytics_sql, hour_zeros

        _, items = kv
        con = _duck()
        # the tables' types: the same SQL over no rows, then every stream's rows inserted by name
        for kind, schema in (("clean", dclean.CLEAN_SCHEMA), ("host", dclean.HOST_SCHEMA)):
            con.register(f"src_{kind}", _plain(schema).empty_table())
        con.execute("CREATE VIEW a_source AS SELECT * FROM src_clean")
        con.execute("CREATE VIEW a_host_source AS SELECT * FROM src_host")
        analytics_sql(con, "a_source", self.max_session_s, host_source="a_host_source")
        kpi_tables.stream_tables_sql(con, "a_source", "a_host_source")
        for n, it in enumerate(x for x in items if x is not None):
            name, b = it
            con.register(f"part_{n}", unipc(b))
            con.execute(f"INSERT INTO a_{name} BY NAME SELECT * FROM part_{n}")
            con.unregister(f"part_{n}")
        hour_zeros(con)  # (as analytics_sql ends its hour table: the same column statistics in the files)
        con.execute("CREATE TEMP TABLE affected AS SELECT unnest(?::VARCHAR[]) AS stream_id", [sorted(affected)])
        out = {}
        with tempfile.TemporaryDirectory(prefix="daihuo-beam-kpi-") as tmp:

            def put(name: str, sql: str) -> None:
                p = os.path.join(tmp, f"a-{name}.parquet")
                con.execute(f"COPY ({sql} ORDER BY ALL) TO '{p}' (FORMAT parquet, COMPRESSION zstd)")
                key = layout.analytics_key(name, self.run_id)
                with open(p, "rb") as f:
                    self.store.put(key, f.read(), content_type="application/vnd.apache.parquet")
                out[name] = key

            for name in _stream_tables():
                sql = f"SELECT * FROM a_{name}"
                if self.old.get(name):
                    prev = os.path.join(tmp, f"old-{name}.parquet")
                    with open(prev, "wb") as f:
                        f.write(self.store.get(self.old[name]))
                    sql = (
                        f"SELECT * FROM a_{name} UNION ALL BY NAME SELECT * FROM read_parquet('{prev}') "
                        f"WHERE stream_id NOT IN (SELECT stream_id FROM affected)"
                    )
                if name in kpi_tables.DERIVED_INPUTS:
                    con.execute(f"CREATE OR REPLACE TEMP TABLE m_{name} AS {sql}")
                    sql = f"SELECT * FROM m_{name}"
                put(name, sql)
            kpi_tables.derived_sql(con, self.tz)
            for name in kpi_tables.DERIVED_TABLES:
                put(name, f"SELECT * FROM a_{name}")
        con.close()
        yield {"kind": "analytics", "tables": out}


class Commit(_StoreFn):
    """The last step, on one worker: every written object's meta and the summed counters -> the run's report,
    then ``clean.commit_run`` (the manifest swap with the generation the plan read) and, when a topic is
    given, the summary on ``events-cleaned`` (``clean._publish``: published, then marked in the manifest).

    It runs inside the job, not in the driver after ``wait_until_finish``: a Flex Template's launcher only
    builds the job graph and exits, so code after the pipeline would never see the job end. A retried
    bundle (Dataflow retries a failed one) finds its run already in the manifest and only republishes
    what is unpublished. The summary is left at ``state/beam/<run>.json`` for a driver that waits."""

    def __init__(self, store_url, cfg, plan, started_at: float, project: str | None, publish: bool):
        super().__init__(store_url)
        self.cfg, self.plan, self.started_at, self.project, self.publish = cfg, plan, started_at, project, publish
        self.bus = None

    def setup(self):
        super().setup()
        if self.publish:
            from shared.adapters.bus import Bus

            self.bus = Bus(self.project)

    def teardown(self):
        if self.bus is not None:
            self.bus.close()

    def process(self, kv):
        from shared.runtime import faults

        _, metas = kv
        run_id = self.plan.run_id
        manifest, _ = dclean.load_manifest(self.store)
        if any(r["run_id"] == run_id for r in manifest["runs"]):  # a retry after the commit
            if self.bus is not None:
                dclean._republish(self.store, self.bus, self.cfg, manifest)
            summary = orjson.loads(self.store.get(layout.clean_report_key(run_id)))
        else:
            summary = self._commit(metas, faults)
        self.store.put(OUTPUTS.format(run_id=run_id), orjson.dumps(summary), content_type="application/json")
        yield summary["status"]

    def _commit(self, metas: list[dict], faults) -> dict:
        counters: dict[str, int] = {}
        for m in metas:
            for k, v in (m.get("counts") or {}).items():
                counters[k] = counters.get(k, 0) + int(v)
        by = lambda kind: sorted((m for m in metas if m["kind"] == kind), key=lambda m: m.get("date", ""))
        written: dict[str, Any] = {
            "clean": [m["key"] for m in by("clean")],
            "clean_files": [{"key": m["key"], "streams": m["streams"]} for m in by("clean")],
            "host_files": [{"key": m["key"], "streams": m["streams"]} for m in by("host")],
            "quarantine": [m["key"] for m in by("quarantine")],
        }
        faults.point("clean:write_clean", self.store, "after writing clean/, before the manifest moved")
        by_reason = {k.split(":", 1)[1]: v for k, v in sorted(counters.items()) if k.startswith("dropped:")}
        by_field = {k.split(":", 1)[1]: v for k, v in sorted(counters.items()) if k.startswith("dropped_field:")}
        n = lambda k: counters.get(k, 0)
        report = {
            "rows_in": n("rows_in"),
            "catalog_rows": n("catalog_rows"),
            "duplicates_in_run": n("duplicates_in_run"),
            "duplicates_seen_before": n("duplicates_seen_before"),
            "duplicates": n("duplicates_in_run") + n("duplicates_seen_before"),
            "rows_out": n("rows_out"),
            "host_rows": n("host_rows"),
            "late": n("late"),
            "ts_corrected": n("ts_corrected"),
            "catalog_items": n("catalog_items"),
            "uncatalogued_purchases": n("uncatalogued_purchases"),
            "dropped": sum(by_reason.values()),
            "dropped_by_reason": by_reason,
            "dropped_by_field": by_field,
            "beyond_lookback": n("beyond_lookback"),
            "engine": "beam",
        }
        dkey = next(m["key"] for m in metas if m["kind"] == "dedupe")
        ckey = next((m["key"] for m in metas if m["kind"] == "catalog"), None)
        analytics = next(m["tables"] for m in metas if m["kind"] == "analytics")
        # commit_run's "seconds" is monotonic time since t0: the run's start, carried as wall time
        t0 = time.monotonic() - max(0.0, time.time() - self.started_at)
        return dclean.commit_run(
            self.store, self.bus, self.cfg, self.plan, written, report, dkey=dkey, ckey=ckey, analytics=analytics, t0=t0
        )


# ---------------------------------------------------------------------------------------- the pipeline
def build(
    p: beam.Pipeline,
    store_url: str,
    plan: dclean.RunPlan,
    cfg: dclean.CleanConfig,
    tz: str,
    *,
    started_at: float | None = None,
    project: str | None = None,
    publish: bool = False,
) -> None:
    """The run as one pipeline, ending with its commit (and, if ``publish``, the summary on ``cfg.topic``)."""
    from shared.pipeline import kpi_tables

    run_id, manifest = plan.run_id, plan.manifest
    params = R.Params.of(cfg, run_id)
    cutoff_us = (plan.ref - cfg.lookback_days * 86400.0) * 1e6
    judged = (
        p
        | "pending" >> beam.Create(list(enumerate(plan.pending)))
        | "spread" >> beam.Reshuffle()
        | "read+judge"
        >> beam.ParDo(ReadAndJudge(store_url, params)).with_outputs("catalog", "bad", "counts", main="events")
    )
    # the catalog: the latest record per item (ts, then raw order), + the committed parts: the known items
    catalog_new = (
        judged.catalog
        | "by item" >> beam.Map(lambda r: (r["item_id"], r))
        | "latest" >> beam.CombinePerKey(lambda rs: max(rs, key=lambda r: (r["ts"], r["_order"])))
        | "catalog rows" >> beam.Values()
    )
    known = (
        catalog_new | "new ids" >> beam.Map(lambda r: (r["item_id"], None)),
        p
        | "catalog parts" >> beam.Create(list(manifest["catalog"]))
        | "read catalog" >> beam.ParDo(ReadIds(store_url, "item_id")),
    ) | "known" >> beam.Flatten()
    # exact dedupe against the run and the committed index
    seen = (
        p
        | "index parts" >> beam.Create(list(plan.live_dedupe))
        | "read index" >> beam.ParDo(ReadIds(store_url, "event_id"))
    )
    joined = {"events": judged.events, "seen": seen} | "dedupe join" >> beam.CoGroupByKey()
    firsts = joined | "dedupe" >> beam.FlatMap(dedupe).with_outputs("counts", main="events")
    host = firsts.events | "host only" >> beam.Filter(lambda e: e[1][TYPE] in R.HOST_TYPES)
    viewer = firsts.events | "viewer only" >> beam.Filter(lambda e: e[1][TYPE] not in R.HOST_TYPES)
    purchases = viewer | "purchases" >> beam.Filter(lambda e: e[1][TYPE] == "purchase")
    others = viewer | "not purchases" >> beam.Filter(lambda e: e[1][TYPE] != "purchase")
    checked = (
        {"purchases": purchases | "by item id" >> beam.Map(lambda e: (e[1][ITEM], e)), "known": known}
        | "catalog join" >> beam.CoGroupByKey()
        | "known items" >> beam.ParDo(KnownItems(cfg.require_catalog)).with_outputs("bad", "counts", main="ok")
    )
    clean = (others, checked.ok) | "clean rows" >> beam.Flatten()
    metas = []
    metas.append(
        clean
        | "clean by day" >> beam.Map(lambda e: (e[1][DAY], e[1][ROW]))
        | "clean days" >> beam.GroupByKey()
        | "write clean" >> beam.ParDo(WriteDay(store_url, "clean", run_id, cutoff_us))
    )
    metas.append(
        host
        | "host by day" >> beam.Map(lambda e: (e[1][DAY], e[1][ROW]))
        | "host days" >> beam.GroupByKey()
        | "write host" >> beam.ParDo(WriteDay(store_url, "host", run_id))
    )
    metas.append(
        (judged.bad, checked.bad)
        | "bad" >> beam.Flatten()
        | "bad days" >> beam.GroupByKey()
        | "write quarantine" >> beam.ParDo(WriteQuarantine(store_url, run_id))
    )
    metas.append(
        (clean, host)
        | "committed" >> beam.Flatten()
        | "ids" >> beam.Map(lambda e: (0, e[0]))
        | "seed ids" >> _Seeded()
        | "write index" >> beam.ParDo(WriteDedupe(store_url, run_id))
    )
    metas.append(
        catalog_new
        | "one catalog" >> beam.Map(lambda r: (0, r))
        | "catalog part" >> beam.GroupByKey()
        | "write catalog" >> beam.ParDo(WriteCatalog(store_url, run_id))
    )
    # KPI tables: the affected streams (+ every stream once, when a table is new to this store)
    old = manifest.get("analytics") or {}
    everything = manifest["clean_files"] + (manifest.get("host_files") or [])
    backfill: list[str] = []
    if old and any(not old.get(n) for n in layout.ANALYTICS_TABLES if n not in kpi_tables.DERIVED_TABLES):
        backfill = sorted({s for f in everything for s in f["streams"]})
    affected = (
        (
            (clean, host) | "rows" >> beam.Flatten() | "streams" >> beam.Map(lambda e: e[1][STREAM]),
            p | "backfill" >> beam.Create(backfill),
        )
        | "all streams" >> beam.Flatten()
        | "real" >> beam.Filter(lambda s: s is not None)
        | "distinct" >> beam.Distinct()
    )
    aff = beam.pvalue.AsList(affected)
    grouped = (
        (
            clean | "clean by stream" >> beam.Map(lambda e: (e[1][STREAM], ("row:clean", e[1][ROW]))),
            host | "host by stream" >> beam.Map(lambda e: (e[1][STREAM], ("row:host", e[1][ROW]))),
            p
            | "clean files" >> beam.Create(list(manifest["clean_files"]))
            | "read clean" >> beam.ParDo(ReadCommitted(store_url, "clean"), aff),
            p
            | "host files" >> beam.Create(list(manifest.get("host_files") or []))
            | "read host" >> beam.ParDo(ReadCommitted(store_url, "host"), aff),
        )
        | "stream rows" >> beam.Flatten()
        | "real stream" >> beam.Filter(lambda kv: kv[0] is not None)
        | "by stream" >> beam.GroupByKey()
    )
    metas.append(
        grouped
        | "stream KPIs" >> beam.ParDo(StreamKPIs(cfg.max_session_s))
        | "seed KPIs" >> _Seeded()
        | "merge KPIs" >> beam.ParDo(MergeKPIs(store_url, run_id, old, cfg.max_session_s, tz), aff)
    )
    # the report's counters that no written object carries, summed per name (combined before the shuffle)
    metas.append(
        (judged.counts, firsts.counts, checked.counts)
        | "counters" >> beam.Flatten()
        | "sum counters" >> beam.CombinePerKey(sum)
        | "counter metas" >> beam.MapTuple(lambda k, v: {"kind": "counts", "counts": {k: v}})
    )
    started_at = time.time() if started_at is None else started_at
    _ = (
        metas
        | "metas" >> beam.Flatten()
        | "one list" >> beam.Map(lambda m: (0, m))
        | "seed metas" >> _Seeded()
        | "commit" >> beam.ParDo(Commit(store_url, cfg, plan, started_at, project, publish))
    )


class _Seeded(beam.PTransform):
    """(0, x) elements -> one (0, [x...]) group that exists even when there is no element (a None seed)."""

    def expand(self, pcoll):
        seed = pcoll.pipeline | f"{self.label} seed" >> beam.Create([(0, None)])
        return (
            (pcoll, seed)
            | f"{self.label} with seed" >> beam.Flatten()
            | f"{self.label} group" >> beam.GroupByKey()
            | f"{self.label} drop seed" >> beam.MapTuple(lambda k, xs: (k, [x for x in xs if x is not None]))
        )


def _options(args: list[str]) -> PipelineOptions:
    if not any(a.startswith("--runner") for a in args):
        args = ["--runner=FnApiRunner", *args]
    return PipelineOptions(args)


def run(
    store_url: str,
    cfg: dclean.CleanConfig | None = None,
    *,
    now: float | None = None,
    beam_args=(),
    publish: bool = False,
    project: str | None = None,
) -> dict:
    """One clean run on Beam: plan (the manifest; with ``publish``, unpublished runs are republished first, as
    the DuckDB engine does), then the pipeline, whose last step commits and publishes (``Commit``).

    Returns the committed summary when the runner waits for the job (the FnApiRunner; DataflowRunner run
    directly), ``{"status": "submitted", "run_id": ...}`` when it only submitted it (a Flex Template's
    launcher: the job commits on its own), or ``noop``."""
    from shared.settings import settings

    cfg = cfg or dclean.CleanConfig()
    started_at = time.time()
    now = started_at if now is None else now
    store = open_store(store_url)
    bus = None
    if publish:
        from shared.adapters.bus import Bus

        bus = Bus(project)
    try:
        plan = dclean.plan_run(store, bus, cfg, now)
    finally:
        if bus is not None:
            bus.close()
    if plan is None:
        return {"status": "noop", "pending": 0}
    p = beam.Pipeline(options=_options(list(beam_args)))
    build(p, store_url, plan, cfg, settings().dashboard_tz, started_at=started_at, project=project, publish=publish)
    result = p.run()
    result.wait_until_finish()
    out_key = OUTPUTS.format(run_id=plan.run_id)
    if not store.exists(out_key):  # the runner only submitted the job (a Flex Template launch)
        return {"status": "submitted", "run_id": plan.run_id, "raw_objects": len(plan.pending)}
    summary = orjson.loads(store.get(out_key))
    store.delete(out_key)
    return summary


def _flag(v: str) -> bool:
    if v.lower() in ("true", "yes", "on", "1"):
        return True
    if v.lower() in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {v!r}")


def main(argv: list[str] | None = None) -> int:
    from shared.adapters.bus import project_id
    from shared.settings import settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", default=None, help="the store URL (default: DAIHUO_STORE)")
    ap.add_argument("--now", type=float, default=None, help="the run's clock (epoch seconds; tests)")
    ap.add_argument(
        "--cleaned_topic",
        default=None,
        help="the topic the committed run's summary is published on (default: DAIHUO_CLEANED_TOPIC, events-cleaned)",
    )
    ap.add_argument(
        "--pubsub_project",
        default=None,
        help="the topic's project (default: the job's --project, else PUBSUB_PROJECT_ID / GOOGLE_CLOUD_PROJECT)",
    )
    ap.add_argument(
        "--publish",
        type=_flag,
        default=True,
        help="true (default): publish the summary, as the clean function does; false: commit only",
    )
    args, beam_args = ap.parse_known_args(argv)
    url = args.store or settings().store
    cfg = dclean.CleanConfig()
    if args.cleaned_topic:
        cfg = dataclasses.replace(cfg, topic=args.cleaned_topic)
    # the topic's project: the flag, else the job's own (--project, what Dataflow's launcher passes), else the env's
    project = args.pubsub_project or PipelineOptions(beam_args).view_as(GoogleCloudOptions).project or project_id()
    summary = run(url, cfg, now=args.now, beam_args=beam_args, publish=args.publish, project=project)
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
