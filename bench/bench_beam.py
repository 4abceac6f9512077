"""Benchmark: the clean step on both engines over the same N simulated events (default 1M, every fault
class of the simulator): the DuckDB engine (``shared.pipeline.clean.run_clean``, the anchor, in this
environment) and the Beam engine (``pipelines.beam.clean`` on the FnApiRunner, in ``.venv-beam``), each
in its own subprocess on its own copy (hard links) of one local store; then the two stores' outputs
compared row for row (``devtools.beam_check``).

    python bench/bench_beam.py --events 1000000 --cache var/bench-data

Prints wall seconds, CPU seconds (user + sys of the child) and peak RSS per engine, events/s and events
per CPU second, and the load average before and after each (the machine is shared: say so beside a
figure). The FnApiRunner runs the pipeline in one process (one core for the Python work); on Dataflow
each worker runs the same per-element code, so events per CPU second is the figure that scales.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_clean import generate  # noqa: E402  (the same cached stores as bench_clean)

NOW = 1796083200.0  # 2026-12-01T08:00:00Z: received_at (2026-11-29) is in the past, nothing implausible


def _copy(src: Path, dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "raw", dst / "raw", copy_function=os.link)


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(name: str, cmd: list[str], env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    la0 = _loadavg()
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-4000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "engine": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_gib": after.ru_maxrss / 2**20,
        "rows_in": summary["rows_in"],
        "rows_out": summary["rows_out"],
        "load_before": la0,
        "load_after": _loadavg(),
    }


_DUCK = """
import json, sys
from shared.adapters.storage import open_store
from shared.pipeline.clean import run_clean
s = run_clean(open_store(sys.argv[1]), now=float(sys.argv[2]))
print(json.dumps({k: s[k] for k in ("status", "rows_in", "rows_out")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--cache", type=Path, default=ROOT / "var" / "bench-data")
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench-beam")
    ap.add_argument("--no-compare", action="store_true", help="skip the row-for-row comparison")
    args = ap.parse_args()
    from devtools import beam_check

    py = beam_check.beam_python()
    if py is None:
        raise SystemExit("no Beam environment: run `make venv-beam` first")
    print(f"cores {os.cpu_count()}, load average {_loadavg()} (a shared machine: figures are under that load)")
    store = generate(args.events, args.cache)
    env = dict(os.environ, PYTHONPATH=str(ROOT), DAIHUO_CLEAN_THREADS=str(os.cpu_count() or 2))
    results = []
    for name in ("duckdb", "beam"):
        work = args.work / name
        _copy(store, work)
        if name == "duckdb":
            cmd = [sys.executable, "-c", _DUCK, str(work), repr(NOW)]
        else:
            cmd = [str(py), "-m", "pipelines.beam.clean", "--store", str(work), "--now", repr(NOW), "--publish=false"]
        r = measure(name, cmd, env)
        results.append(r)
        print(
            f"{name:7s} {r['rows_in']:>10,} rows in, {r['rows_out']:>10,} out: {r['wall_s']:7.1f} s wall, "
            f"{r['cpu_s']:7.1f} s CPU, peak RSS {r['rss_gib']:.2f} GiB, {r['rows_in'] / r['wall_s']:>9,.0f} events/s, "
            f"{r['rows_in'] / r['cpu_s']:>9,.0f} events per CPU s; load {r['load_before']} -> {r['load_after']}"
        )
    d, b = results
    same = None
    if not args.no_compare:
        from shared.adapters.storage import open_store

        t0 = time.monotonic()
        diffs = beam_check.compare_stores(open_store(args.work / "duckdb"), open_store(args.work / "beam"))
        same = not diffs
        print(
            f"outputs compared row for row in {time.monotonic() - t0:.1f} s: " + ("identical" if same else "DIFFERENT")
        )
        for x in diffs[:20]:
            print("  " + x)
    print(
        f"RESULT beam_clean events={d['rows_in']} duckdb_s={d['wall_s']:.1f} duckdb_cpu_s={d['cpu_s']:.1f} "
        f"beam_s={b['wall_s']:.1f} beam_cpu_s={b['cpu_s']:.1f} ratio={b['wall_s'] / d['wall_s']:.1f} "
        f"beam_events_per_cpu_s={b['rows_in'] / b['cpu_s']:.0f} identical={same} load={_loadavg()}"
    )


if __name__ == "__main__":
    main()
