"""``make bench``: every benchmark in one run, at bounded sizes, then a summary table.

    python bench/run_all.py [--only clean,coldstart] [--dry-run]

Each benchmark runs as its own command (the owners' benches print their anchors beside their figures);
this script prints its output as it comes, the load average before and after it, its wall time and exit
code, and at the end one row per benchmark: the lines it marked ``RESULT`` (or, if it has none, its
last line), so the figures can be read beside their anchors. Sizes are chosen to keep the whole run
under ~15 minutes on a quiet 2-core box; the data sets are generated once and cached (var/bench-data).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# (name, command, what it compares) -- bounded sizes (the owners' make targets take the same scripts)
BENCHES = [
    ("ingest", [PY, "bench/bench_ingest.py"], "events/s and latency of one instance"),
    (
        "recommend-serve",
        [PY, "bench/bench_recommend_serve.py", "--duration", "10"],
        "heaviest verified viewers at 50k items: in process and req/s vs a bare function (model cached)",
    ),
    ("ranker", [PY, "bench/bench_ranker.py"], "served recipe fit vs the v1 fit"),
    (
        "clean",
        [PY, "bench/bench_clean.py", "--events", "10000000", "--scaling", "1000000,2000000,5000000"],
        "clean + analytics vs the in-memory DuckDB yardstick, 1M..10M",
    ),
    ("coldstart", [PY, "bench/bench_coldstart.py", "--rounds", "3"], "bundles' cold starts vs a bare function"),
    ("live", [PY, "bench/bench_live.py"], "live layer events/s and freshness"),
]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated names: " + ",".join(b[0] for b in BENCHES))
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = ap.parse_args(argv)
    only = {x for x in a.only.split(",") if x}
    rows = []
    t_all = time.monotonic()
    print(f"make bench: {os.cpu_count()} cores, load average {load()}", flush=True)
    for name, cmd, what in BENCHES:
        if only and name not in only:
            continue
        print(f"\n=== {name}: {what}\n    {' '.join(cmd[1:])}  (load average before: {load()})", flush=True)
        if a.dry_run:
            continue
        t = time.monotonic()
        lines: list[str] = []
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert p.stdout is not None
        for line in p.stdout:
            if '"severity"' in line:  # the functions' JSON logs: not figures
                continue
            sys.stdout.write(line)
            lines.append(line.rstrip())
        rc = p.wait()
        secs = time.monotonic() - t
        results = [ln for ln in lines if ln.startswith("RESULT")] or lines[-1:]
        rows.append((name, rc, secs, load(), results))
        print(f"=== {name}: exit {rc}, {secs:.0f} s, load average after: {load()}", flush=True)
    if a.dry_run:
        return 0
    print(f"\n## Summary ({(time.monotonic() - t_all) / 60:.1f} min, load average now {load()})\n")
    print("| bench | exit | wall s | load after | figures (beside their anchors) |")
    print("|---|---|---|---|---|")
    for name, rc, secs, ld, results in rows:
        print(f"| {name} | {rc} | {secs:.0f} | {ld} | {' <br> '.join(r.replace('|', '/') for r in results)} |")
    return max((r[1] for r in rows), default=0)


if __name__ == "__main__":
    sys.exit(main())
