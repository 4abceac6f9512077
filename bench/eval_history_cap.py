"""Choosing ``DAIHUO_RECOMMEND_MAX_HISTORY`` (the viewer's strongest history items a request scores) on
VALIDATION splits only, then showing the chosen cap on the test split beside the uncapped-in-practice
200 of before.

    python bench/eval_history_cap.py                                 # repeat world, one evening, Ta Feng
    python bench/eval_history_cap.py --caps 200,100,50,30,20 --worlds tafeng --max-queries 1000

Per world and block (leave-last / global-time / in-stream, "all"): the test split is made as
``bench/eval_served.py`` makes it; its TRAINING part is split again by the same protocol into
validation training + validation queries. The served recipe (``fit_recipe`` with ``max_history`` =
each cap, used by the fit's label queries and by serving alike) is fitted on the validation training
part and scored on the validation queries (NDCG@10); the cap is chosen there (the smallest cap
within ``--tolerance`` of the best validation NDCG in every block), and only then are the test
figures of that cap and of 200 printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.eval_served import TAFENG, sim_frames
from devtools.simulator import SimConfig
from shared.reco import protocol as P
from shared.reco.recipe import env_recipe, fit_recipe

BLOCKS = [("leave-last", False), ("global-time", False), ("in-stream", True)]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ndcg(train, queries, items, ref, cap: int) -> float:
    recipe = {**env_recipe(), "max_history": cap}
    r = P.RecommendRanker(lambda tr, it, rf: fit_recipe(tr, it, rf, recipe), name=f"cap{cap}")
    rep = P.evaluate(train, queries, items, [r], 10, reference_time=ref)
    return float(rep["rankers"][f"cap{cap}"]["ndcg@10"])


def split(ev, items, block, ins, max_queries):
    return P.make_split(ev, split="global-time" if ins else block, in_stream=ins, items=items, max_queries=max_queries)


def split_rows(worlds_arg: str, tafeng: str, max_queries: int) -> list[tuple]:
    """``(world, block, test split, validation split, items)`` per world named in ``worlds_arg`` (repeat,
    evening, tafeng) and block: the test split as ``bench/eval_served.py`` makes it, its training part
    split again by the same protocol; blocks with fewer than 20 queries are skipped (said on stderr)."""
    worlds = []
    if "repeat" in worlds_arg:
        worlds.append(("repeat-world seed 0", *sim_frames(SimConfig.repeat_preset(seed=0))))
    if "evening" in worlds_arg:
        cfg = SimConfig(seed=11, n_streams=12, n_users=3000, n_items=500, mean_viewers_per_stream=400)
        worlds.append(("one-evening world seed 11", *sim_frames(cfg)))
    if "tafeng" in worlds_arg and Path(tafeng).exists():
        worlds.append(("Ta Feng", *P.load_interactions(tafeng, fmt="tafeng")))
    rows = []
    for name, ev, items in worlds:
        has_stream = "stream_id" in ev and ev["stream_id"].notna().any()
        for block, ins in BLOCKS:
            if ins and not has_stream:
                continue
            test = split(ev, items, block, ins, max_queries)
            val = split(test.train, items, block, ins, max_queries)
            if len(val.queries) < 20 or len(test.queries) < 20:
                log(f"{name} {block}: too few queries, skipped")
                continue
            rows.append((name, block, test, val, items))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="repeat,evening,tafeng")
    ap.add_argument("--caps", default="200,100,50,30,20")
    ap.add_argument("--max-queries", type=int, default=1500)
    ap.add_argument("--tolerance", type=float, default=0.005, help="relative NDCG loss accepted for a smaller cap")
    ap.add_argument("--tafeng", default=str(TAFENG))
    ap.add_argument("--cap", type=int, default=None, help="the cap shown on the test split (default: the rule's)")
    a = ap.parse_args(argv)
    caps = [int(c) for c in a.caps.split(",")]
    load0 = os.getloadavg()[0]
    rows = split_rows(a.worlds, a.tafeng, a.max_queries)  # (world, block, test split, validation split, items)
    print(f"validation NDCG@10 by history cap (load average {load0:.2f}, 2 cores):")
    print(f"  {'world':28s} {'block':12s} " + " ".join(f"{c:>8d}" for c in caps) + "  queries")
    val_scores = {}
    for name, block, _test, val, items in rows:
        t = time.perf_counter()
        sc = [ndcg(val.train, val.queries, items, val.reference_time, c) for c in caps]
        val_scores[(name, block)] = sc
        print(
            f"  {name:28s} {block:12s} " + " ".join(f"{v:8.4f}" for v in sc) + f"  {len(val.queries)}"
            f"  ({time.perf_counter() - t:.0f}s)",
            flush=True,
        )
    ok = [c for k, c in enumerate(caps) if all(sc[k] >= max(sc) * (1 - a.tolerance) for sc in val_scores.values())]
    rule = min(ok) if ok else max(caps)
    print(f"smallest cap within {a.tolerance:.1%} of the best validation NDCG in every block: {rule}")
    chosen = a.cap if a.cap is not None else rule
    print(f"shown on the test split: {chosen}")
    print("test NDCG@10 (after the choice):")
    for name, block, test, _val, items in rows:
        base = ndcg(test.train, test.queries, items, test.reference_time, 200)
        got = ndcg(test.train, test.queries, items, test.reference_time, chosen) if chosen != 200 else base
        print(f"  {name:28s} {block:12s} cap 200 {base:.4f}  cap {chosen} {got:.4f}  ({len(test.queries)} queries)")
    print(f"load average before / after: {load0:.2f} / {os.getloadavg()[0]:.2f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
