"""The served recipe against every baseline on the issue's protocols, in one run (figures for
docs/recommendations.md §5).

    python bench/eval_served.py                          # repeat world (seeds 0-2) + one-evening world + Ta Feng
    python bench/eval_served.py --worlds repeat --seeds 3
    python bench/eval_served.py --tafeng PATH            # default ../shared/data/tafeng/ta_feng_all_months_merged.csv.gz

Blocks: leave-last and global-time × all and new (next purchase, top-10, catalogue-wide) and the in-room
protocol (showcase only, all and new). Every model and baseline answers the same queries
(``shared.reco.protocol``); ratios are the served model's NDCG@10 over the best baseline's with the
paired bootstrap 95 % interval.  The recipe is fitted on each split's training part only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.simulator import SimConfig, simulate
from shared.reco import protocol as P
from shared.reco.recipe import env_recipe, fit_recipe

TAFENG = Path(__file__).resolve().parents[2] / "shared" / "data" / "tafeng" / "ta_feng_all_months_merged.csv.gz"
BLOCKS = [
    ("leave-last", False, "all"),
    ("leave-last", False, "new"),
    ("global-time", False, "all"),
    ("global-time", False, "new"),
    ("in-stream", True, "all"),
    ("in-stream", True, "new"),
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sim_frames(cfg: SimConfig):
    sim = simulate(cfg)
    ev = sim.truth.expected_clean()
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True)
    return (
        ev[["user_id", "item_id", "ts", "type", "stream_id", "price"]],
        sim.truth.catalog_frame()[["item_id", "title", "description", "category", "price"]],
    )


def run(name: str, ev: pd.DataFrame, items, max_queries: int, out: list):
    recipe = env_recipe()
    has_stream = "stream_id" in ev and ev["stream_id"].notna().any()
    for split, ins, variant in BLOCKS:
        if ins and not has_stream:
            continue
        t0 = time.perf_counter()
        sp_ = P.make_split(
            ev,
            split="global-time" if ins else split,
            variant=variant,
            in_stream=ins,
            items=items,
            max_queries=max_queries,
        )
        if len(sp_.queries) < 20:
            log(f"{name} {split}/{variant}: {len(sp_.queries)} queries, skipped")
            continue
        rankers = P.baseline_rankers("purchase", in_stream=ins) + [
            P.RecommendRanker(lambda tr, it, ref: fit_recipe(tr, it, ref, recipe), name="served")
        ]
        rep = P.evaluate(sp_.train, sp_.queries, items, rankers, 10, reference_time=sp_.reference_time)
        print(P.format_report(rep, f"{name} {split}/{variant}"), flush=True)
        vs = rep["vs_best_baseline"]["served"]
        out.append(
            {
                "world": name,
                "block": f"{split}/{variant}",
                "queries": rep["n_queries"],
                "served": rep["rankers"]["served"]["ndcg@10"],
                "best_baseline": rep["best_baseline"],
                "best": rep["rankers"][rep["best_baseline"]]["ndcg@10"],
                "ratio": vs["ratio"],
                "ratio_lo": vs["ratio_lo"],
                "ratio_hi": vs["ratio_hi"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="repeat,evening,tafeng")
    ap.add_argument("--seeds", type=int, default=3, help="repeat-world seeds 0..N-1")
    ap.add_argument("--tafeng", default=str(TAFENG))
    ap.add_argument("--max-queries", type=int, default=3000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    out: list = []
    worlds = a.worlds.split(",")
    if "repeat" in worlds:
        for seed in range(a.seeds):
            ev, items = sim_frames(SimConfig.repeat_preset(seed=seed))
            run(f"repeat-world seed {seed}", ev, items, a.max_queries, out)
    if "evening" in worlds:
        ev, items = sim_frames(SimConfig(seed=11, n_streams=12, n_users=3000, n_items=500, mean_viewers_per_stream=400))
        run("one-evening world seed 11", ev, items, a.max_queries, out)
    if "tafeng" in worlds:
        if Path(a.tafeng).exists():
            ev, items = P.load_interactions(a.tafeng, fmt="tafeng")
            run("Ta Feng", ev, items, a.max_queries, out)
        else:
            log(f"Ta Feng not found at {a.tafeng}: skipped")
    print("\nsummary (served NDCG@10 / best baseline, 95 % CI):")
    for r in out:
        print(
            f"  {r['world']:28s} {r['block']:20s} {r['served']:.4f} vs {r['best_baseline']:20s} {r['best']:.4f}  "
            f"{r['ratio']:.3f} [{r['ratio_lo']:.3f}, {r['ratio_hi']:.3f}]  ({r['queries']} queries)"
        )
    print(f"load average before / after: {load0:.2f} / {os.getloadavg()[0]:.2f} (2 cores)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
