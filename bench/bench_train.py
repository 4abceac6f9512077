"""The whole train function (``run_train``: clean Parquet -> promoted model) at N synthetic events, a
per-phase table: wall and process-CPU seconds and the load average around each run.

    python bench/bench_train.py --events 10000000          # the issue #12 size (aim: whole train <= 30 s)
    python bench/bench_train.py --events 1000000 --events 2000000

Phases (``TrainResult.phases``): ``read`` (clean Parquet + catalog -> frame), ``prepare`` (item index,
content neighbours, showcases: the recipe has no tuning grid, ``DEFAULT_RECIPE``), ``evaluate`` (the
gate: the candidate fitted on the holdout's training part, baselines, bootstrap), ``fit`` (the served
recipe on the full window), ``encode`` (arrays -> npz), ``write`` (version objects, LATEST, publish).
The served fit and encode run in a forked child while the gate runs (``DAIHUO_TRAIN_PARALLEL_FIT``,
docs/serving.md §1): then ``fit`` wall is the wait for it, CPU columns include the child's, and the
``served fit`` line gives the child's own times and peak RSS. ``peak RSS``: this process's high-water
mark at the end of each phase (``ru_maxrss``; the child's is on its own line).
Anchor, same run: ``pyarrow.parquet.read_table`` of the same clean objects and columns (the floor of
``read``). Data: ``bench_recommend_http.synthetic`` (power-law users / items, 28 days), written once
per size to ``var/bench-data/train-…/`` (a cache, ``--no-cache`` to rebuild) and hard-linked into a
fresh store per run (the train writes only new objects). The machine is shared: every figure is printed
with the load average; CPU seconds are the steadier figure.

Fingerprints (``model sha1``, ``gate sha1``): a sha1 of the served model's arrays (names, dtypes, shapes,
bytes; the npz container has timestamps) and its ``meta.json`` model record (the heads' weights), and of
the gate's numbers (every block's metrics and intervals,
timings left out): two code versions that print the same fingerprints trained the same model and took
the same decision on the same figures. ``heads``: rows, positives and Newton iterations per head of the
served fit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_recommend_http import synthetic  # noqa: E402
from shared import layout  # noqa: E402
from shared.adapters.storage import open_store  # noqa: E402
from shared.serving.data import EVENT_COLUMNS, write_clean_from_frames  # noqa: E402
from shared.serving.registry import decode_arrays  # noqa: E402

CACHE = ROOT / "var" / "bench-data"

PHASES = ("read", "prepare", "evaluate", "fit", "encode", "write")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def anchor_read(root: Path) -> tuple[float, float, int]:
    import pyarrow.parquet as pq

    t, c = time.perf_counter(), time.process_time()
    rows = 0
    for p in sorted((root / "clean").rglob("*.parquet")):
        rows += pq.read_table(p, columns=[col for col in EVENT_COLUMNS if col != "stream_ids"]).num_rows
    return time.perf_counter() - t, time.process_time() - c, rows


def _timeless(x):
    """The gate's evaluation without its timings (``seconds``, ``fit_s``, ``rank_s``)."""
    if isinstance(x, dict):
        return {k: _timeless(v) for k, v in x.items() if k not in ("seconds", "fit_s", "rank_s", "fit_seconds")}
    if isinstance(x, list):
        return [_timeless(v) for v in x]
    return x


def fingerprints(store, version: str) -> tuple[str, str]:
    """(sha1 of the model's arrays, sha1 of the gate's figures) of a trained version."""
    model, extras = decode_arrays(store.get(layout.model_arrays_key(version)))
    h = hashlib.sha1()
    for k, v in sorted({**{f"m.{a}": b for a, b in model.items()}, **{f"s.{a}": b for a, b in extras.items()}}.items()):
        h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode())
        h.update(np.ascontiguousarray(v).tobytes())
    meta = json.loads(store.get(layout.model_meta_key(version)))
    h.update(json.dumps(_timeless(meta["model"]), sort_keys=True).encode())  # the heads live in meta.json
    gate = json.dumps(_timeless(meta["evaluation"]), sort_keys=True).encode()
    return h.hexdigest()[:16], hashlib.sha1(gate).hexdigest()[:16]


def clean_data(n: int, users: int, items: int, streams: int, cache: bool) -> Path:
    """The synthetic clean store of one size (written once per size under ``var/bench-data``)."""
    # -d2: the day files carry only their own ids (write_clean_from_frames, 2026-12-07); the earlier cache
    # (every file with the whole user universe as its dictionary) read 16 s at 10M
    d = CACHE / f"train-u{users}-i{items}-s{streams}-e{n}-d2"
    if cache and (d / "DONE").exists():
        print(f"\n{n:,} events ({users:,} users, {items:,} items): cached data {d}", flush=True)
        return d / "store"
    shutil.rmtree(d, ignore_errors=True)
    t = time.perf_counter()
    ev, cat, _, _ = synthetic(users, items, n, streams)
    write_clean_from_frames(open_store(str(d / "store")), ev, cat, run_id="bench")
    del ev
    (d / "DONE").write_text("")
    print(
        f"\n{n:,} events ({users:,} users, {items:,} items): data written in {time.perf_counter() - t:.1f}s", flush=True
    )
    return d / "store"


def one(n: int, users: int, items: int, streams: int, cache: bool = True) -> dict:
    from shared.serving.train import TrainConfig, run_train

    src = clean_data(n, users, items, streams, cache)
    tmp = Path(tempfile.mkdtemp(prefix="daihuo-bench-train-"))
    shutil.copytree(src, tmp / "store", copy_function=os.link)  # hard links: the train writes new objects only
    store = open_store(str(tmp / "store"))
    a_wall, a_cpu, rows = anchor_read(tmp / "store")
    before = load()
    t, c, k = time.perf_counter(), time.process_time(), _children_cpu()
    res = run_train(store, None, TrainConfig())
    # CPU: this process's and the served fit's child's (joined, so in RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter() - t, time.process_time() - c + _children_cpu() - k
    after = load()
    ph = res.phases
    print(f"promoted={res.promoted}  {res.reason[:140]}")
    rss = ph.get("peak_rss_mib", {})
    print("| phase | wall s | CPU s | peak RSS GiB |\n|---|---:|---:|---:|")
    for p in PHASES:
        r = f"{rss[p] / 1024:.2f}" if p in rss else ""
        print(f"| {p} | {ph['wall'].get(p, 0):.2f} | {ph['cpu'].get(p, 0):.2f} | {r} |")
    print(f"| **whole run_train** | **{wall:.2f}** | **{cpu:.2f}** | **{max(rss.values(), default=0) / 1024:.2f}** |")
    print(f"| anchor: pyarrow read_table of the same {rows:,} clean rows | {a_wall:.2f} | {a_cpu:.2f} | |")
    sf = ph.get("served_fit") or {}
    if sf:
        own = ", ".join(f"{k} {w:.2f} s wall / {c:.2f} CPU-s" for k, (w, c) in sf.get("times", {}).items())
        extra = f", its peak RSS {sf['child_peak_rss_mib'] / 1024:.2f} GiB" if "child_peak_rss_mib" in sf else ""
        print(f"served fit: {sf.get('mode')} {sf.get('reason') or ''} ({own}{extra})")
    print(f"load average (1/5/15 min) before {before}, after {after}; cpus={os.cpu_count()}", flush=True)
    biggest = max(PHASES, key=lambda p: ph["wall"].get(p, 0))
    print(f"biggest phase: {biggest} ({ph['wall'][biggest] / wall:.0%} of the wall)")
    meta = json.loads(store.get(layout.model_meta_key(res.version)))
    heads = (meta["model"].get("ranker") or {}).get("heads") or {}
    for h, v in heads.items():
        print(f"  head {h}: " + ", ".join(f"{k} {v[k]}" for k in sorted(v) if not isinstance(v[k], dict)))
    gate_table(meta.get("evaluation") or {})
    m_sha, g_sha = fingerprints(store, res.version)
    print(f"model sha1 {m_sha}  gate sha1 {g_sha}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"events": n, "wall": wall, "cpu": cpu, "phases": ph, "model_sha1": m_sha, "gate_sha1": g_sha}


def gate_table(evaluation: dict) -> None:
    """The gate's time per block (its split, fits and rankings) and per ranker: fit / rank seconds."""
    blocks = {n: b for n, b in (evaluation.get("blocks") or {}).items() if "rankers" in b}
    if not blocks:
        return
    names = list(dict.fromkeys(r for b in blocks.values() for r in b["rankers"]))
    print("gate, seconds per block: whole block, then fit / rank per ranker (the split is the rest)")
    print("| block | block s | " + " | ".join(names) + " |\n|---|---:|" + "---:|" * len(names))
    for n, b in blocks.items():
        cells = [
            f"{b['rankers'][r]['fit_s']:.1f} / {b['rankers'][r]['rank_s']:.1f}" if r in b["rankers"] else ""
            for r in names
        ]
        print(f"| {n} | {b.get('seconds', 0):.1f} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, action="append", help="events per run (repeatable); default 10M")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--no-cache", action="store_true", help="write the synthetic data again (var/bench-data)")
    args = ap.parse_args(argv)
    print(f"bench_train: cpus={os.cpu_count()} loadavg={load()}", flush=True)
    for n in args.events or [10_000_000]:
        one(n, args.users, args.items, args.streams, cache=not args.no_cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
