"""bench/bench_clean.py's yardstick is like for like: over a small simulated world with every fault class,
host actions and tagged recommendations, the yardstick job (plain DuckDB, one pass) writes every KPI
table ``run_clean`` commits, equal row for row (``compare_kpis``), and the report's counters agree; a
table that differs makes the comparison fail loudly."""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import shutil
from pathlib import Path

import duckdb
import orjson
import pytest

from devtools.simulator import simulate
from shared import layout
from shared.adapters.storage import open_store
from shared.pipeline.clean import CleanConfig, run_clean
from shared.serving import experiments as sx

ROOT = Path(__file__).resolve().parent.parent
REC = "2026-11-29T00:00:00.000Z"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_clean", ROOT / "bench" / "bench_clean.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tagged(events: list[dict], rng: random.Random) -> list[dict]:
    """Recommendation answers of two arms shown to some viewers of the simulated impressions, with
    clicks and purchases carrying their rec_id (the experiment tables are empty otherwise)."""
    out = []
    shown = [e for e in events if isinstance(e, dict) and e.get("type") == "product_impression" and "item_id" in e]
    for n, e in enumerate(shown[:400]):
        rid = sx.rec_id("e1", ("control", "b")[n % 2])
        base = {k: e[k] for k in ("ts", "platform", "stream_id", "user_id", "item_id")}
        out.append({**base, "event_id": f"rec-{n}", "type": "rec_impression", "rec_id": rid, "position": n % 5})
        if rng.random() < 0.4:
            out.append({**base, "event_id": f"rc-{n}", "type": "product_click", "rec_id": rid})
        if rng.random() < 0.1:
            out.append({**base, "event_id": f"rp-{n}", "type": "purchase", "rec_id": rid, "price": 19.9})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-clean")
    sim = simulate(seed=3, n_streams=3, n_users=400, n_items=120, faults="default", host_events=True)
    events = list(sim.events)
    lines = [orjson.dumps(dict(r, received_at=REC)) for r in sim.catalog]
    for r in events + _tagged(events, random.Random(1)):
        lines.append(orjson.dumps(dict(r, received_at=REC)) if isinstance(r, dict) else r.encode())
    store_dir = tmp / "store"
    part = store_dir / "raw" / "date=2026-11-27" / "hour=23"
    part.mkdir(parents=True)
    for k in range(0, len(lines), 5000):  # several raw objects, as the bench's store
        (part / f"b{k:07d}.ndjson.gz").write_bytes(gzip.compress(b"\n".join(lines[k : k + 5000]) + b"\n"))
    bench = _bench()
    work_y, work_p = tmp / "work-yardstick", tmp / "work-pipeline"
    (tmp / "work-yardstick-tmp").mkdir()
    bench.job("yardstick", str(store_dir), str(work_y))
    shutil.copytree(store_dir / "raw", work_p / "raw")
    summary = run_clean(open_store(str(work_p)), None, CleanConfig(threads=2, memory_limit="1GB", tmp_dir=str(tmp)))
    assert summary["status"] == "committed"
    return bench, work_p, Path(str(work_y) + "-duck"), summary


def test_the_yardstick_writes_every_kpi_table_equal_to_the_pipelines(runs):
    bench, work_p, out_y, summary = runs
    rows = bench.compare_kpis(work_p, out_y)
    assert set(rows) == set(layout.ANALYTICS_TABLES)
    # every table holds rows: the comparison is not vacuous (host actions, slots, experiments)
    assert all(rows[name] > 0 for name in rows), rows
    report = json.loads((out_y / "report.json").read_text())
    for k in ("rows_in", "rows_out", "host_rows", "duplicates", "late", "ts_corrected", "catalog_items"):
        assert report[k] == summary[k], (k, report[k], summary[k])
    assert report["dropped"] >= summary["dropped"] > 0


def test_a_table_that_differs_fails_loudly(runs, capsys):
    bench, work_p, out_y, _ = runs
    con = duckdb.connect()
    p = out_y / "a-stream_retention.parquet"
    con.execute(
        f"COPY (SELECT * REPLACE (CASE WHEN minute = 1 THEN viewers + 1 ELSE viewers END AS viewers) "
        f"FROM '{p}') TO '{out_y}/t.parquet' (FORMAT parquet)"
    )
    saved = p.read_bytes()
    (out_y / "t.parquet").replace(p)
    try:
        with pytest.raises(SystemExit, match="stream_retention"):
            bench.compare_kpis(work_p, out_y)
        assert "stream_retention:" in capsys.readouterr().out
    finally:
        p.write_bytes(saved)
