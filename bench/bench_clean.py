"""Benchmark: clean + analytics over N simulated events (raw NDJSON.gz objects in a local store,
generated once and cached), beside an honest yardstick: the same job as plain DuckDB SQL over the same
files (``yardstick_sql`` + ``job("yardstick")``: in memory, one pass, the pipeline's SQL checks of the
contract, the same outputs -- clean/, clean_host, catalog, quarantine, dedupe index, EVERY analytics
table by the pipeline's own SQL functions, the data-quality report -- without the manifest machinery).
After each size the two jobs' KPI tables are compared row for row (``compare_kpis``); a difference is
printed and fails the bench: the ratio is only printed for two jobs proven to produce the same tables.

    python bench/bench_clean.py --events 10000000 --scaling 1000000,2000000,5000000 --cache var/bench-data

Every size and job runs in its own subprocess; wall seconds, CPU seconds (user + sys) and peak RSS
(ru_maxrss of the child) are printed, with the load average, then a table (µs per event: linear scaling)
and a ``RESULT`` line for ``make bench``. The smaller sizes are prefixes (hard links) of the largest store.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# Events per session of the simulator, measured (sessions = mean_viewers_per_stream x streams, with a
# power-law popularity spread): the old fixed guess of 18 undershot (2M requested -> 1.64M rows).
EVENTS_PER_SESSION = 14.0
OVERSHOOT = 1.3  # generate a little more than needed and stop at exactly N rows (streams are sequential)


def generate(n_events: int, cache: Path) -> Path:
    """Exactly ``n_events`` raw rows (catalog + events in send order, truncated), cached per N."""
    store_dir = cache / f"store-n{n_events}"
    done = store_dir / "DONE"
    if done.exists():
        return store_dir
    import orjson

    from devtools.simulator import simulate

    sessions = n_events / EVENTS_PER_SESSION * OVERSHOOT
    n_streams = max(3, int(n_events / 100_000))
    sim = simulate(
        seed=5,
        n_streams=n_streams,
        n_users=max(2000, int(sessions * 1.5)),
        n_items=5000,
        mean_viewers_per_stream=sessions / n_streams,
        faults="default",
    )
    shutil.rmtree(store_dir, ignore_errors=True)
    part = store_dir / "raw" / "date=2026-11-27" / "hour=23"
    part.mkdir(parents=True)
    rec = b',"received_at":"2026-11-29T00:00:00.000Z"}'
    buf, n, k = [], 0, 0

    def flush():
        nonlocal buf, k
        if buf:
            (part / f"b{k:05d}.ndjson.gz").write_bytes(gzip.compress(b"\n".join(buf) + b"\n", compresslevel=3))
            k += 1
            buf = []

    for r in sim.iter_records():
        if n >= n_events:
            break
        if isinstance(r, dict):
            buf.append(orjson.dumps(r)[:-1] + rec)
        else:
            buf.append(r.encode())
        n += 1
        if len(buf) >= 20_000:
            flush()
        if n % 1_000_000 == 0:
            print(f"  generated {n:,}", file=sys.stderr)
    if n < n_events:
        print(f"  warning: the simulation ran out at {n:,} rows (< {n_events:,}); raise OVERSHOOT", file=sys.stderr)
    flush()
    done.write_text(json.dumps({"rows": n}))
    return store_dir


def _ev_sql(glob: str, guarded: bool) -> str:
    """One pass over the files: each line read as text (``read_csv`` with a delimiter JSON never holds
    unescaped: parallel gunzip), parsed once into the contract's fields, with its reason from the
    pipeline's own fast-path conditions (``clean._fast_conds``: JSON validity, known type, allowed /
    duplicate keys, required fields, every value check and conditional requirement, raw JSON types the
    reader would coerce), the contract-only re-check of ``SLOW_TYPES`` left out (no Python here). A
    flagged row keeps its line (the quarantine's ``raw``); the others keep only their typed fields."""
    from shared.pipeline import clean, contract_sql

    conds = clean._fast_conds()
    if contract_sql.SLOW_TYPES:  # the always-re-check rule: the yardstick takes the SQL checks' verdict
        conds = [c for c in conds if c[0] != contract_sql.type_in(contract_sql.SLOW_TYPES)]
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r in conds) + " ELSE NULL END"
    if guarded:  # as the pipeline: the JSON functions only see lines json_valid accepts
        j = f"CASE WHEN json_valid(line) THEN json_transform(line, '{clean._STRUCT}') END"
        k = "CASE WHEN json_valid(line) THEN json_keys(line) END"
    else:
        j, k = f"try(json_transform(line, '{clean._STRUCT}'))", "try(json_keys(line))"
    lines = (
        f"read_csv('{glob}', columns={{'line': 'VARCHAR'}}, delim='\\x01', quote='', escape='', "
        "header=false, auto_detect=false, new_line='\\n')"
    )
    return f"""CREATE TABLE ev AS SELECT unnest(j), reason, CASE WHEN reason IS NOT NULL THEN line END AS line
        FROM (SELECT line, j, {reason} AS reason
              FROM (SELECT *, nn_v + nn_o AS nn
                    FROM (SELECT *, {clean._NN_V} AS nn_v, {clean._NN_OTHER} AS nn_o
                          FROM (SELECT line, {j} AS j, {k} AS k FROM {lines} WHERE line IS NOT NULL))))"""


def yardstick_sql(glob: str, out: str, memory_limit: str, threads: int, tmp: str, guarded: bool = True) -> list[str]:
    """The honest yardstick: the same job as plain DuckDB SQL, in memory, one pass over the files.

    Each line, read by DuckDB itself (``_ev_sql``: parallel gunzip), is parsed once and gets its reason
    from the pipeline's fast-path conditions (generated from the contract by ``contract_sql``) -> one
    table -> dedupe (earliest received_at; windowing only the repeated ids) -> the skew rule and the
    defaults -> clean/ per date, clean_host, catalog (latest per item), quarantine (NDJSON.gz), the dedupe
    index; then (``job``) EVERY analytics table the pipeline writes, by the same functions
    (``analytics_sql``, ``kpi_tables.stream_tables_sql`` / ``derived_sql``) and the data-quality report.

    What it does not do, and the pipeline does: the contract's re-check (Python) of the flagged rows
    (exact reasons; a flagged row the contract accepts, e.g. ``"quantity": 1.0``, is kept by the pipeline
    and quarantined here; ``catalog_item``'s untranslated rule is not checked), row-exact provenance
    (source object per row), the anti-join against a stored dedupe index (empty in a first run), the
    merge with committed analytics, the manifest commit and the publication."""
    import re

    from shared.contract import CATALOG_TYPE, HOST_ACTIONS, VIEWER_ACTIONS
    from shared.pipeline import clean as pclean
    from shared.pipeline import contract_sql
    from shared.pipeline.config import TimeRules
    from shared.pipeline.skew import skew_sql
    from shared.settings import settings

    def col(sql: str) -> str:  # the pipeline's expressions name fields j."x": here they are columns
        return re.sub(r"\bj\.", "", sql)

    ts = contract_sql.timestamp_sql
    cur = settings().default_currency.replace("'", "")
    corrected, late = skew_sql("lag_s", TimeRules())
    events = f"reason IS NULL AND type <> '{CATALOG_TYPE}'"
    wc = contract_sql.types_with("currency", VIEWER_ACTIONS)
    wq = contract_sql.types_with("quantity", VIEWER_ACTIONS)
    hsel = ", ".join(col(pclean._HOST_SELECT.get(f, f'"{f}"')) + f' AS "{f}"' for f in pclean._HOST_FIELDS)

    def timed(where: str) -> str:
        return f"""(SELECT *, CASE WHEN {corrected} THEN rec ELSE tsp END AS ts_final, {corrected} AS ts_corrected,
                           {late} AS late
                    FROM (SELECT *, epoch(rec) - epoch(tsp) AS lag_s
                          FROM (SELECT *, {ts("ts")} AS tsp, try_cast(received_at AS TIMESTAMPTZ) AS rec
                                FROM ev WHERE {where} AND rowid NOT IN (SELECT rid FROM losers))))"""

    return [
        f"SET threads={int(threads)}",
        f"SET memory_limit='{memory_limit}'",
        f"SET temp_directory='{tmp}'",
        "SET preserve_insertion_order=false",
        "SET TimeZone='UTC'",
        _ev_sql(glob, guarded),
        f"""CREATE TABLE losers AS SELECT rid FROM (
              SELECT rowid AS rid, row_number() OVER (PARTITION BY event_id
                                                      ORDER BY try_cast(received_at AS TIMESTAMPTZ) NULLS LAST, rowid) AS rn
              FROM ev WHERE {events} AND event_id IN (SELECT event_id FROM ev WHERE {events} GROUP BY 1 HAVING count(*) > 1))
            WHERE rn > 1""",
        f"""CREATE TABLE clean AS SELECT event_id, type, ts_final AS ts, rec AS received_at, platform, stream_id,
                   user_id, item_id, price,
                   CASE WHEN currency IS NOT NULL THEN currency WHEN type IN {wc} THEN '{cur}' END AS currency,
                   CAST(CASE WHEN quantity IS NOT NULL THEN quantity WHEN type IN {wq} THEN 1 END AS INTEGER) AS quantity,
                   order_id, CAST(CASE WHEN type = 'like' THEN coalesce(count, 1) ELSE count END AS INTEGER) AS count,
                   gift_value, text, CAST(props AS VARCHAR) AS props, ts AS ts_sent, ts_corrected, late, 'r-y' AS run_id,
                   rec_id, CAST(position AS INTEGER) AS position
            FROM {timed(f"reason IS NULL AND type IN {VIEWER_ACTIONS}")}""",
        f"""CREATE TABLE clean_host AS SELECT event_id, type, ts_final AS ts, rec AS received_at, platform, stream_id,
                   {hsel},
                   CASE WHEN currency IS NOT NULL THEN currency WHEN price IS NOT NULL THEN '{cur}' END AS currency,
                   CAST(props AS VARCHAR) AS props, ts AS ts_sent, ts_corrected, late, 'r-y' AS run_id
            FROM {timed(f"reason IS NULL AND type IN {HOST_ACTIONS}")}""",
        f"""CREATE TABLE catalog AS SELECT item_id, title, description, category, price,
                   coalesce(currency, '{cur}') AS currency, stream_ids, platform, {ts("ts")} AS ts, event_id,
                   'r-y' AS run_id
            FROM ev WHERE reason IS NULL AND type = '{CATALOG_TYPE}'
            QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY {ts("ts")} DESC, rowid DESC) = 1""",
        f"""COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS date FROM clean) TO '{out}/clean'
            (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))""",
        f"COPY clean_host TO '{out}/host.parquet' (FORMAT parquet, COMPRESSION zstd)",
        f"COPY (SELECT * FROM catalog ORDER BY item_id) TO '{out}/catalog.parquet' (FORMAT parquet, COMPRESSION zstd)",
        f"""COPY (SELECT reason, event_id, received_at, line AS raw FROM ev WHERE reason IS NOT NULL)
            TO '{out}/quarantine.ndjson.gz' (FORMAT json, COMPRESSION gzip)""",
        f"""COPY (SELECT event_id FROM clean UNION ALL SELECT event_id FROM clean_host)
            TO '{out}/dedupe.parquet' (FORMAT parquet, COMPRESSION zstd)""",
    ]


#: the data-quality report's counters (the pipeline's names, ``clean_core``), as the yardstick computes them
_REPORT_SQL = """SELECT
    (SELECT count(*) FROM ev) AS rows_in,
    (SELECT count(*) FROM ev WHERE reason IS NULL AND type = 'catalog_item') AS catalog_rows,
    (SELECT count(*) FROM losers) AS duplicates,
    (SELECT count(*) FROM clean) AS rows_out,
    (SELECT count(*) FROM clean_host) AS host_rows,
    (SELECT count(*) FILTER (late) FROM clean) AS late,
    (SELECT count(*) FILTER (ts_corrected) FROM clean) AS ts_corrected,
    (SELECT count(*) FROM catalog) AS catalog_items,
    (SELECT count(*) FROM clean WHERE type = 'purchase' AND item_id IS NOT NULL
                                  AND item_id NOT IN (SELECT item_id FROM catalog)) AS uncatalogued_purchases,
    (SELECT count(*) FROM ev WHERE reason IS NOT NULL) AS dropped,
    (SELECT map(list(reason), list(n)) FROM (SELECT reason, count(*) AS n FROM ev WHERE reason IS NOT NULL
                                            GROUP BY 1 ORDER BY 1)) AS dropped_by_reason"""


def job(kind: str, store_dir: str, work: str) -> None:
    if kind == "pipeline":
        from shared.adapters.storage import open_store
        from shared.pipeline.clean import CleanConfig, run_clean

        s = run_clean(open_store(work), None, CleanConfig(threads=2, memory_limit="2GB", tmp_dir=work + "-tmp"))
        print(
            json.dumps(
                {
                    k: s.get(k)
                    for k in (
                        "status",
                        "rows_in",
                        "rows_out",
                        "dropped",
                        "duplicates",
                        "late",
                        "ts_corrected",
                        "seconds",
                    )
                }
            )
        )
    else:  # the yardstick
        import duckdb

        from shared import layout
        from shared.pipeline import kpi_tables
        from shared.pipeline.analytics import analytics_sql
        from shared.settings import settings

        out = work + "-duck"
        os.makedirs(out, exist_ok=True)
        con = duckdb.connect(":memory:")
        glob = os.path.join(store_dir, "raw/*/*/*.ndjson.gz")
        ev_guarded = _ev_sql(glob, True)
        for sql in yardstick_sql(glob, out, "2GB", 2, work + "-tmp"):
            try:
                con.execute(sql)
            except duckdb.Error:  # as the pipeline: a line json_valid accepts but the transform rejects
                if sql != ev_guarded:
                    raise
                con.execute("DROP TABLE IF EXISTS ev")
                con.execute(_ev_sql(glob, False))
        # the data-quality report (the pipeline writes it to reports/clean/<run>.json)
        cur = con.execute(_REPORT_SQL)
        report = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
        Path(out, "report.json").write_text(json.dumps(report, default=str, indent=1))
        con.execute("DROP TABLE ev")  # (the pipeline drops its parsed rows here too)
        con.execute("DROP TABLE losers")
        # every analytics table the pipeline writes, by the same functions (clean._write_analytics over a
        # first run: no committed rows to merge, the derived tables from the whole per-stream ones)
        analytics_sql(con, "clean", settings().max_session_s, host_source="clean_host")
        kpi_tables.stream_tables_sql(con, "clean", "clean_host")
        kpi_tables.derived_sql(con, settings().dashboard_tz, prefix="a_")
        for name in layout.ANALYTICS_TABLES:
            con.execute(
                f"COPY (SELECT * FROM a_{name} ORDER BY ALL) TO '{out}/a-{name}.parquet' (FORMAT parquet, COMPRESSION zstd)"
            )
        print(
            json.dumps({k: report[k] for k in ("rows_in", "rows_out", "dropped", "duplicates", "late", "ts_corrected")})
        )


def measure(kind: str, store_dir: Path, work: Path) -> dict:
    """Run one job in a child process: wall seconds, CPU seconds (user + sys, all threads) and the peak
    RSS of THAT child (os.wait4; the RUSAGE_CHILDREN running max would report the larger of the two
    jobs for the second one). CPU seconds say more than wall time on a box shared with other jobs."""
    t = time.monotonic()
    load0 = os.getloadavg()[0]
    with open(str(work) + ".out", "w+") as out, open(str(work) + ".err", "w+") as err:
        p = subprocess.Popen(
            [sys.executable, __file__, "--job", kind, "--store", str(store_dir), "--work", str(work)],
            stdout=out,
            stderr=err,
            text=True,
        )
        _, status, ru = os.wait4(p.pid, 0)
        secs = time.monotonic() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(stderr[-3000:])
    line = [ln for ln in stdout.splitlines() if ln.startswith("{") and "severity" not in ln][-1]
    res = json.loads(line)
    if "seconds" in res:  # run_clean's own timer (without interpreter start / imports): kept apart
        res["run_seconds"] = res.pop("seconds")
    return {
        "seconds": round(secs, 1),
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 1),
        "peak_rss_gib": round(ru.ru_maxrss / 2**20, 2),
        "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
        **res,
    }


ROWS_PER_OBJECT = 20_000  # generate() writes raw objects of exactly this many rows (the last one: the rest)


def store_for(n_events: int, cache: Path, sizes: list[int]) -> Path:
    """The store of exactly ``n_events`` rows: cached, or the first objects of a larger cached store (hard
    links: the same rows as a run at that size would generate up to the truncation), or generated."""
    own = cache / f"store-n{n_events}"
    if (own / "DONE").exists():
        return own
    if n_events % ROWS_PER_OBJECT == 0:
        for big in sorted(p for p in cache.glob("store-n*") if (p / "DONE").exists()):
            if int(big.name[7:]) > n_events:
                files = sorted((big / "raw").rglob("*.ndjson.gz"))[: n_events // ROWS_PER_OBJECT]
                shutil.rmtree(own, ignore_errors=True)
                for f in files:
                    dest = own / f.relative_to(big)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.link(f, dest)
                (own / "DONE").write_text(json.dumps({"rows": n_events, "prefix_of": big.name}))
                return own
    # in a child: the simulator's memory must not count in the jobs' peak RSS (Linux keeps the high-water
    # mark of a forked parent across exec)
    subprocess.run([sys.executable, __file__, "--generate", str(n_events), "--cache", str(cache)], check=True)
    return own


def compare_kpis(pipeline_work: Path, yardstick_out: Path, rel: float = 1e-9) -> dict[str, int]:
    """The yardstick's analytics tables against the pipeline's committed ones (its manifest names them),
    row for row: both sides ``ORDER BY ALL``, same columns and types, every value equal -- floats to
    ``rel`` relative (parallel sums differ in the last bits from run to run). Prints every table that
    differs (counts, columns, the first differing rows) and exits non-zero: a ratio between two jobs
    that do not produce the same tables would say nothing. Returns {table: rows} when all are equal."""
    import duckdb

    from shared import layout
    from shared.adapters.storage import open_store

    store = open_store(str(pipeline_work))
    manifest, _ = layout.load_manifest(store)
    con = duckdb.connect(":memory:")
    con.execute("SET threads=1")
    rows: dict[str, int] = {}
    bad: list[str] = []
    for name in layout.ANALYTICS_TABLES:
        key = (manifest.get("analytics") or {}).get(name)
        y = yardstick_out / f"a-{name}.parquet"
        if not key or not y.exists():
            bad.append(f"{name}: missing ({'pipeline' if not key else 'yardstick'} wrote no such table)")
            continue
        p = store.local_path(key, str(pipeline_work) + "-dl")
        cols = {}
        for side, path in (("p", p), ("y", str(y))):
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {side} AS SELECT row_number() OVER () AS rn_, * "
                f"FROM (SELECT * FROM read_parquet('{path}') ORDER BY ALL)"
            )
            cols[side] = [(c, t) for c, t, *_ in con.execute(f"DESCRIBE {side}").fetchall() if c != "rn_"]
        n_p, n_y = (con.execute(f"SELECT count(*) FROM {s}").fetchone()[0] for s in ("p", "y"))
        if cols["p"] != cols["y"] or n_p != n_y:
            bad.append(f"{name}: pipeline {n_p} rows {cols['p']}\n    yardstick {n_y} rows {cols['y']}")
            continue

        def same(c: str, t: str) -> str:
            if t in ("DOUBLE", "FLOAT") or t.startswith("DECIMAL"):
                return (
                    f'(p."{c}" IS NOT DISTINCT FROM y."{c}" OR abs(p."{c}" - y."{c}") '
                    f'<= {rel} * greatest(abs(p."{c}"), abs(y."{c}")))'
                )
            return f'p."{c}" IS NOT DISTINCT FROM y."{c}"'

        diff = " OR ".join(f"NOT {same(c, t)}" for c, t in cols["p"]) or "false"
        n_diff = con.execute(f"SELECT count(*) FROM p JOIN y USING (rn_) WHERE {diff}").fetchone()[0]
        if n_diff:
            names = [c for c, _ in cols["p"]]
            shown = []
            for r in con.execute(
                f"SELECT p.*, y.* EXCLUDE (rn_) FROM p JOIN y USING (rn_) WHERE {diff} ORDER BY rn_ LIMIT 3"
            ).fetchall():
                pv, yv = r[1 : 1 + len(names)], r[1 + len(names) :]
                delta = {c: (a, b) for c, a, b in zip(names, pv, yv, strict=True) if a != b}
                shown.append(
                    f"row {r[0]} {names[0]}={pv[0]!r}: "
                    + ", ".join(f"{c} {a!r} vs {b!r}" for c, (a, b) in delta.items())
                )
            bad.append(f"{name}: {n_diff} of {n_p} rows differ (pipeline vs yardstick); " + "\n      ".join(shown))
            continue
        rows[name] = n_p
    if bad:
        print("KPI TABLES DIFFER (yardstick vs pipeline, ORDER BY ALL, floats to 1e-9 relative):", flush=True)
        for b in bad:
            print("  " + b, flush=True)
        raise SystemExit(
            f"the yardstick's KPI tables differ from the pipeline's: {', '.join(b.split(':')[0] for b in bad)}"
        )
    return rows


def run_size(n_events: int, store_dir: Path, cache: Path) -> dict:
    results = {}
    for kind in ("yardstick", "pipeline"):
        work = cache / f"work-{kind}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(str(work) + "-duck", ignore_errors=True)
        shutil.rmtree(str(work) + "-tmp", ignore_errors=True)
        os.makedirs(str(work) + "-tmp")
        if kind == "pipeline":  # a store whose raw/ is the cached data (hard links, no copy)
            shutil.copytree(store_dir / "raw", work / "raw", copy_function=os.link)
        results[kind] = measure(kind, store_dir, work)
        print(f"  {n_events:>11,} {kind:9s} {json.dumps(results[kind])}", flush=True)
    # like for like: the same KPI tables (outside the timed jobs)
    rows = compare_kpis(cache / "work-pipeline", Path(str(cache / "work-yardstick") + "-duck"))
    print(
        f"  {n_events:>11,} same KPI tables row for row ({len(rows)}: "
        + ", ".join(f"{k} {v:,}" for k, v in rows.items())
        + ")",
        flush=True,
    )
    results["kpi_tables_equal"] = rows
    for kind in ("yardstick", "pipeline"):
        for suffix in ("-duck", "-dl"):
            shutil.rmtree(str(cache / f"work-{kind}") + suffix, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000, help="the largest size")
    ap.add_argument(
        "--scaling",
        default="",
        help="comma-separated smaller sizes also run (e.g. 1000000,2000000,5000000): linear scaling in one run",
    )
    ap.add_argument("--cache", default="var/bench-data")
    ap.add_argument("--json", help="write the results (one object per size) to this file")
    ap.add_argument("--job")
    ap.add_argument("--generate", type=int)
    ap.add_argument("--store")
    ap.add_argument("--work")
    a = ap.parse_args()
    if a.job:
        return job(a.job, a.store, a.work)
    if a.generate:
        generate(a.generate, Path(a.cache).resolve())
        return
    cache = Path(a.cache).resolve()
    sizes = sorted({a.events, *(int(x) for x in a.scaling.split(",") if x.strip() and int(x) < a.events)})
    t = time.monotonic()
    stores = {}
    for n in sorted(sizes, reverse=True):  # the largest first: the smaller ones are its prefixes
        stores[n] = store_for(n, cache, sizes)
        print(
            f"data: {stores[n]} ({json.loads((stores[n] / 'DONE').read_text())['rows']:,} rows, "
            f"{sum(p.stat().st_size for p in stores[n].rglob('*.gz')) / 2**20:.0f} MiB gz)"
        )
    print(f"(data ready in {time.monotonic() - t:.0f}s; cached under {cache})")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    out = {}
    for n in sizes:
        out[n] = run_size(n, stores[n], cache)
    print()
    print(
        "| events | yardstick s (CPU s) | pipeline s (CPU s) | ratio wall / CPU | pipeline µs/event | peak RSS yardstick / pipeline | load |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, r in out.items():
        y, p = r["yardstick"], r["pipeline"]
        print(
            f"| {n:,} | {y['seconds']} ({y['cpu_seconds']}) | {p['seconds']} ({p['cpu_seconds']}) | "
            f"{p['seconds'] / y['seconds']:.2f}x / {p['cpu_seconds'] / y['cpu_seconds']:.2f}x | "
            f"{p['seconds'] / n * 1e6:.2f} | {y['peak_rss_gib']} / {p['peak_rss_gib']} GiB | "
            f"{y['load'][0]:.1f}-{p['load'][1]:.1f} |"
        )
    big = out[max(sizes)]
    ratio = big["pipeline"]["seconds"] / big["yardstick"]["seconds"]
    print(
        f"RESULT clean {max(sizes):,} events: pipeline {big['pipeline']['seconds']} s, "
        f"{big['pipeline']['peak_rss_gib']} GiB vs yardstick {big['yardstick']['seconds']} s: {ratio:.2f}x "
        f"(CPU {big['pipeline']['cpu_seconds'] / big['yardstick']['cpu_seconds']:.2f}x; aim <= 1.3x, RSS < 3 GiB); "
        f"load average after: {os.getloadavg()[0]:.2f}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps({str(n): r for n, r in out.items()}, indent=1))


if __name__ == "__main__":
    main()
