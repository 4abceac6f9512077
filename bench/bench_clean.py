"""Benchmark: clean + analytics over N simulated events (raw NDJSON.gz objects in a local store,
generated once and cached), vs. the same job written directly as DuckDB SQL over the same files.

    python bench/bench_clean.py --events 10000000 --cache var/bench-data

Each job runs in its own subprocess; wall seconds and peak RSS (ru_maxrss of the child) are printed.
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


DUCKDB_SQL = """
SET threads=2; SET memory_limit='3GB'; SET preserve_insertion_order=false; SET TimeZone='UTC';
CREATE TABLE ev AS SELECT * FROM read_json('{glob}', format='newline_delimited', ignore_errors=true,
  columns={{event_id:'VARCHAR', type:'VARCHAR', ts:'VARCHAR', received_at:'VARCHAR', platform:'VARCHAR',
  stream_id:'VARCHAR', user_id:'VARCHAR', item_id:'VARCHAR', price:'DOUBLE', currency:'VARCHAR',
  quantity:'BIGINT', count:'BIGINT', gift_value:'DOUBLE'}});
CREATE TABLE clean AS SELECT * REPLACE (try_cast(ts AS TIMESTAMPTZ) AS ts) FROM ev
  WHERE type IN ('stream_enter','stream_leave','like','comment','share','follow','gift','product_impression',
                 'product_click','add_to_cart','purchase','refund') AND event_id IS NOT NULL AND coalesce(quantity, 1) > 0
  QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at) = 1;
COPY clean TO '{out}/clean.parquet' (FORMAT parquet);
COPY (SELECT stream_id, count(DISTINCT user_id) uv, count(*) FILTER (type='purchase') orders,
      sum(price*coalesce(quantity,1)) FILTER (type='purchase') gmv, count(*) FILTER (type='product_impression') imp,
      count(*) FILTER (type='product_click') clicks FROM clean GROUP BY 1) TO '{out}/stream.parquet' (FORMAT parquet);
COPY (SELECT stream_id, date_trunc('hour', ts) h, count(DISTINCT user_id) uv, count(*) FILTER (type='purchase') orders
      FROM clean GROUP BY ALL) TO '{out}/hour.parquet' (FORMAT parquet);
COPY (SELECT stream_id, item_id, count(*) FILTER (type='product_impression') imp, count(*) FILTER (type='product_click') c,
      sum(price*coalesce(quantity,1)) FILTER (type='purchase') gmv FROM clean WHERE item_id IS NOT NULL GROUP BY ALL)
      TO '{out}/item.parquet' (FORMAT parquet);
"""


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
    else:
        import duckdb

        out = work + "-duck"
        os.makedirs(out, exist_ok=True)
        con = duckdb.connect(os.path.join(out, "db.duckdb"))
        con.execute(DUCKDB_SQL.format(glob=os.path.join(store_dir, "raw/*/*/*.ndjson.gz"), out=out))
        print(json.dumps({"rows_out": con.execute("SELECT count(*) FROM clean").fetchone()[0]}))


def measure(kind: str, store_dir: Path, work: Path) -> dict:
    """Run one job in a child process: wall seconds and the peak RSS of THAT child (os.wait4; the
    RUSAGE_CHILDREN running max would report the larger of the two jobs for the second one)."""
    t = time.monotonic()
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
    return {"seconds": round(secs, 1), "peak_rss_gib": round(ru.ru_maxrss / 2**20, 2), **res}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--cache", default="var/bench-data")
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
    t = time.monotonic()
    if not (cache / f"store-n{a.events}" / "DONE").exists():
        # in a child: the simulator's memory must not count in the jobs' peak RSS (Linux keeps the
        # high-water mark of a forked parent across exec)
        subprocess.run([sys.executable, __file__, "--generate", str(a.events), "--cache", str(cache)], check=True)
    store_dir = generate(a.events, cache)
    print(
        f"data: {store_dir} ({json.loads((store_dir / 'DONE').read_text())['rows']:,} rows, "
        f"{sum(p.stat().st_size for p in store_dir.rglob('*.gz')) / 2**20:.0f} MiB gz; "
        f"generation {time.monotonic() - t:.0f}s if not cached)"
    )
    results = {}
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    for kind in ("duckdb", "pipeline"):
        work = cache / f"work-{kind}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(str(work) + "-duck", ignore_errors=True)
        shutil.rmtree(str(work) + "-tmp", ignore_errors=True)
        os.makedirs(str(work) + "-tmp")
        if kind == "pipeline":  # a store whose raw/ is the cached data (hard links, no copy)
            shutil.copytree(store_dir / "raw", work / "raw", copy_function=os.link)
        results[kind] = measure(kind, store_dir, work)
        print(f"{kind:9s} {json.dumps(results[kind])}", flush=True)
    r = results["pipeline"]["seconds"] / results["duckdb"]["seconds"]
    print(f"pipeline / duckdb time: {r:.2f}x; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
