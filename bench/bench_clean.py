"""Benchmark: clean + analytics over N simulated events (raw NDJSON.gz objects in a local store,
generated once and cached), beside an honest yardstick: the same job as plain DuckDB SQL over the same
files (``yardstick_sql``: in memory, one pass, the contract's SQL-expressible checks, the same outputs).

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


def yardstick_sql(glob: str, out: str, memory_limit: str, threads: int, tmp: str) -> list[str]:
    """The honest yardstick: the same job as plain DuckDB SQL, in memory, one pass over the files.

    ``read_json`` (DuckDB's own reader: parallel gunzip, typed columns = the contract's fields, generated
    by ``shared.pipeline.contract_sql``) -> one table with each row's reason, from every check the SQL
    form of the contract expresses over typed columns (known type, required fields, fields outside the
    type's set absent, patterns / lengths / enums / ranges / RFC 3339 timestamps, conditional
    requirements) -> dedupe (earliest received_at; windowing only the repeated ids) -> the skew rule and
    the defaults -> clean/ per date, clean_host, catalog (latest per item), quarantine (NDJSON.gz),
    the dedupe index, and the SAME three analytics tables (``analytics_sql``), all to files.

    What it does not do, and the pipeline does: the checks that need the raw line (unknown or duplicate
    keys, raw JSON types the reader would coerce: ``"quantity": 1.5`` -> 2), the contract's re-check
    (Python) of the flagged rows with exact reasons, row-exact provenance (source object per row), the
    anti-join against a stored dedupe index (empty in a first run), the manifest commit."""
    import re

    from shared.contract import ALL_TYPES, CATALOG_TYPE, HOST_ACTIONS, VIEWER_ACTIONS
    from shared.pipeline import contract_sql
    from shared.pipeline.config import TimeRules
    from shared.pipeline.skew import skew_sql

    def col(sql: str) -> str:  # the contract's conditions name fields j."x": here they are columns
        return re.sub(r"\bj\.", "", sql)

    fields = contract_sql.FIELDS
    outside = " ".join(
        f"WHEN '{t}' THEN " + (" AND ".join(f'"{f}" IS NULL' for f in fields if f not in keys) or "true")
        for t, keys in contract_sql.ALLOWED_KEYS.items()
    )
    conds = [
        (f"NOT list_contains({list(ALL_TYPES)}, type)", "'schema'"),
        (f"NOT (CASE type {outside} ELSE false END)", "'schema'"),
        *[(col(c), r) for c, r in contract_sql.required_conds() + contract_sql.value_conds()],
    ]
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r in conds) + " ELSE NULL END"
    columns = "{" + ", ".join(f"{f}: '{d}'" for f, d in fields.items()) + "}"
    ts = contract_sql.timestamp_sql
    corrected, late = skew_sql("lag_s", TimeRules())
    events = f"reason IS NULL AND type <> '{CATALOG_TYPE}'"
    wc = contract_sql.types_with("currency", VIEWER_ACTIONS)
    wq = contract_sql.types_with("quantity", VIEWER_ACTIONS)

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
        f"""CREATE TABLE ev AS SELECT *, {reason} AS reason
            FROM read_json('{glob}', format='newline_delimited', ignore_errors=true, columns={columns})""",
        f"""CREATE TABLE losers AS SELECT rid FROM (
              SELECT rowid AS rid, row_number() OVER (PARTITION BY event_id ORDER BY received_at, rowid) AS rn
              FROM ev WHERE {events} AND event_id IN (SELECT event_id FROM ev WHERE {events} GROUP BY 1 HAVING count(*) > 1))
            WHERE rn > 1""",
        f"""CREATE TABLE clean AS SELECT event_id, type, ts_final AS ts, rec AS received_at, platform, stream_id,
                   user_id, item_id, price,
                   CASE WHEN currency IS NOT NULL THEN currency WHEN type IN {wc} THEN 'CNY' END AS currency,
                   CAST(CASE WHEN quantity IS NOT NULL THEN quantity WHEN type IN {wq} THEN 1 END AS INTEGER) AS quantity,
                   order_id, CAST(CASE WHEN type = 'like' THEN coalesce(count, 1) ELSE count END AS INTEGER) AS count,
                   gift_value, text, CAST(props AS VARCHAR) AS props, ts AS ts_sent, ts_corrected, late, 'r-y' AS run_id,
                   rec_id, CAST(position AS INTEGER) AS position
            FROM {timed(f"reason IS NULL AND type IN {VIEWER_ACTIONS}")}""",
        f"""CREATE TABLE clean_host AS SELECT event_id, type, ts_final AS ts, rec AS received_at, platform, stream_id,
                   host_id, host_name, title, {ts("scheduled_start")} AS scheduled_start,
                   {ts("scheduled_end")} AS scheduled_end, slot_id, item_id, price, change, stock, currency,
                   CAST(props AS VARCHAR) AS props, ts AS ts_sent, ts_corrected, late, 'r-y' AS run_id
            FROM {timed(f"reason IS NULL AND type IN {HOST_ACTIONS}")}""",
        f"""COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS date FROM clean) TO '{out}/clean'
            (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))""",
        f"COPY clean_host TO '{out}/host.parquet' (FORMAT parquet, COMPRESSION zstd)",
        f"""COPY (SELECT item_id, title, description, category, price, coalesce(currency, 'CNY') AS currency,
                         stream_ids, platform, {ts("ts")} AS ts, event_id, 'r-y' AS run_id
                  FROM ev WHERE reason IS NULL AND type = '{CATALOG_TYPE}'
                  QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY {ts("ts")} DESC) = 1)
            TO '{out}/catalog.parquet' (FORMAT parquet, COMPRESSION zstd)""",
        f"""COPY (SELECT reason, event_id, received_at, to_json(ev) AS raw FROM ev WHERE reason IS NOT NULL)
            TO '{out}/quarantine.ndjson.gz' (FORMAT json, COMPRESSION gzip)""",
        f"""COPY (SELECT event_id FROM clean UNION ALL SELECT event_id FROM clean_host)
            TO '{out}/dedupe.parquet' (FORMAT parquet, COMPRESSION zstd)""",
        "DROP TABLE ev",
    ]


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

        from shared.pipeline.analytics import analytics_sql
        from shared.settings import settings

        out = work + "-duck"
        os.makedirs(out, exist_ok=True)
        con = duckdb.connect(":memory:")
        glob = os.path.join(store_dir, "raw/*/*/*.ndjson.gz")
        for sql in yardstick_sql(glob, out, "2GB", 2, work + "-tmp"):
            con.execute(sql)
        analytics_sql(con, "clean", settings().max_session_s, host_source="clean_host")
        for name in ("stream", "stream_hour", "stream_item"):
            con.execute(
                f"COPY (SELECT * FROM a_{name} ORDER BY ALL) TO '{out}/a-{name}.parquet' (FORMAT parquet, COMPRESSION zstd)"
            )
        print(json.dumps({"rows_out": con.execute("SELECT count(*) FROM clean").fetchone()[0]}))


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
        shutil.rmtree(str(work) + "-duck", ignore_errors=True)
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
