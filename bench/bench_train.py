"""The whole train function (``run_train``: clean Parquet -> promoted model) at N synthetic events, a
per-phase table: wall and process-CPU seconds and the load average around each run.

    python bench/bench_train.py --events 10000000          # the issue #12 size (aim: whole train <= 30 s)
    python bench/bench_train.py --events 1000000 --events 2000000

Phases (``TrainResult.phases``): ``read`` (clean Parquet + catalog -> frame), ``prepare`` (item index,
content neighbours, showcases: the recipe has no tuning grid, ``DEFAULT_RECIPE``), ``evaluate`` (the
gate: the candidate fitted on the holdout's training part, baselines, bootstrap), ``fit`` (the served
recipe on the full window), ``encode`` (arrays -> npz), ``write`` (version objects, LATEST, publish).
Anchor, same run: ``pyarrow.parquet.read_table`` of the same clean objects and columns (the floor of
``read``). Data: ``bench_recommend_http.synthetic`` (power-law users / items, 28 days). The machine
is shared: every figure is printed with the load average; CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_recommend_http import synthetic  # noqa: E402
from shared.adapters.storage import open_store  # noqa: E402
from shared.serving.data import EVENT_COLUMNS, write_clean_from_frames  # noqa: E402

PHASES = ("read", "prepare", "evaluate", "fit", "encode", "write")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def anchor_read(root: Path) -> tuple[float, float, int]:
    import pyarrow.parquet as pq

    t, c = time.perf_counter(), time.process_time()
    rows = 0
    for p in sorted((root / "clean").rglob("*.parquet")):
        rows += pq.read_table(p, columns=[col for col in EVENT_COLUMNS if col != "stream_ids"]).num_rows
    return time.perf_counter() - t, time.process_time() - c, rows


def one(n: int, users: int, items: int, streams: int) -> dict:
    from shared.serving.train import TrainConfig, run_train

    tmp = Path(tempfile.mkdtemp(prefix="daihuo-bench-train-"))
    store = open_store(str(tmp / "store"))
    t = time.perf_counter()
    ev, cat, _, _ = synthetic(users, items, n, streams)
    write_clean_from_frames(store, ev, cat, run_id="bench")
    del ev
    print(
        f"\n{n:,} events ({users:,} users, {items:,} items): data written in {time.perf_counter() - t:.1f}s", flush=True
    )
    a_wall, a_cpu, rows = anchor_read(tmp / "store")
    before = load()
    t, c = time.perf_counter(), time.process_time()
    res = run_train(store, None, TrainConfig())
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    after = load()
    ph = res.phases
    print(f"promoted={res.promoted}  {res.reason[:140]}")
    print("| phase | wall s | CPU s |\n|---|---:|---:|")
    for p in PHASES:
        print(f"| {p} | {ph['wall'].get(p, 0):.2f} | {ph['cpu'].get(p, 0):.2f} |")
    print(f"| **whole run_train** | **{wall:.2f}** | **{cpu:.2f}** |")
    print(f"| anchor: pyarrow read_table of the same {rows:,} clean rows | {a_wall:.2f} | {a_cpu:.2f} |")
    print(f"load average (1/5/15 min) before {before}, after {after}; cpus={os.cpu_count()}", flush=True)
    biggest = max(PHASES, key=lambda p: ph["wall"].get(p, 0))
    print(f"biggest phase: {biggest} ({ph['wall'][biggest] / wall:.0%} of the wall)")
    return {"events": n, "wall": wall, "cpu": cpu, "phases": ph}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, action="append", help="events per run (repeatable); default 10M")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--streams", type=int, default=40)
    args = ap.parse_args(argv)
    print(f"bench_train: cpus={os.cpu_count()} loadavg={load()}", flush=True)
    for n in args.events or [10_000_000]:
        one(n, args.users, args.items, args.streams)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
