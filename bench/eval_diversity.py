"""The diversity control's trade-off (docs/recommendations.md, "Diversity"): ranking metrics and list
diversity of the served recipe with and without ``max_per_category`` / ``near_duplicate``.

    python bench/eval_diversity.py                       # repeat world seed 0 + the one-evening world
    python bench/eval_diversity.py --worlds repeat --seeds 2 --caps 0,1,2,3,4,5
    python bench/eval_diversity.py --worlds tafeng       # ../shared/data/tafeng (PRODUCT_SUBCLASS = category)

Per world and block (catalogue: global-time / all, next purchase, top-10; room: in-stream / all, the
showcase): N is TUNED ON VALIDATION ONLY — the split's training part split again the same way, the recipe
fitted on its earlier part, each cap ranked on its queries; the chosen N is the smallest cap whose
validation NDCG@10 is at least ``(1 - tolerance)`` of no cap's. Then the recipe is fitted on the whole
training part and the TEST queries are ranked with every cap (the chosen one marked): NDCG@10, recall@10,
hit rate@10 (``shared.reco.protocol.query_metrics``, the paired bootstrap interval of the NDCG difference
against no cap), intra-list diversity (share of item pairs of a list in different categories), categories
per list, and catalogue coverage (distinct items over all lists / catalogue). Load average and CPU
seconds are printed beside the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.simulator import SimConfig, simulate
from shared.reco import protocol as P
from shared.reco.recipe import env_recipe, fit_recipe

TAFENG = Path(__file__).resolve().parents[2] / "shared" / "data" / "tafeng" / "ta_feng_all_months_merged.csv.gz"

BLOCKS = [("global-time", False, "all"), ("in-stream", True, "all")]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sim_frames(cfg: SimConfig):
    sim = simulate(cfg)
    ev = sim.truth.expected_clean()
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True)
    return (
        ev[["user_id", "item_id", "ts", "type", "stream_id", "price"]],
        sim.truth.catalog_frame()[["item_id", "title", "description", "category", "price"]],
    )


def rank(model, queries, k: int, cap: int, near: float | None) -> list[list[str]]:
    return [
        [
            it["item_id"]
            for it in model.recommend(
                q.user_id,
                k,
                stream_id=q.stream_id,
                allowed_items=q.allowed,
                room=q.room,
                now=q.ts,
                repeats=q.repeats,
                max_per_category=cap or None,
                near_duplicate=near,
            )["items"]
        ][:k]
        for q in queries
    ]


def diversity(lists: list[list[str]], cat: dict[str, str], n_items: int) -> dict[str, float]:
    ild, ncat = [], []
    for r in lists:
        c = [cat.get(i, "") for i in r]
        pairs = list(combinations(c, 2))
        if pairs:
            ild.append(sum(a != b for a, b in pairs) / len(pairs))
        if c:
            ncat.append(len(set(c)))
    shown = {i for r in lists for i in r}
    return {
        "ild": float(np.mean(ild)) if ild else 0.0,
        "cats_per_list": float(np.mean(ncat)) if ncat else 0.0,
        "coverage": len(shown) / max(n_items, 1),
    }


def measure(model, queries, k, caps, near, cat, n_items) -> dict[int, dict]:
    out = {}
    base = None
    for cap in caps:
        lists = rank(model, queries, k, cap, near)
        m = P.query_metrics(lists, queries, k)
        row = {key: float(v.mean()) if v.size else 0.0 for key, v in m.items()}
        row.update(diversity(lists, cat, n_items))
        if base is None:
            base = m
        else:
            bs = P.paired_bootstrap(m[f"ndcg@{k}"], base[f"ndcg@{k}"])
            row.update(d_ndcg=bs["diff"], d_lo=bs["diff_lo"], d_hi=bs["diff_hi"])
        out[cap] = row
    return out


def run(name, ev, items, a, out):
    recipe = env_recipe()
    cat = dict(zip(items["item_id"].astype(str), items["category"].astype(str)))
    caps = [int(c) for c in a.caps.split(",")]
    assert caps[0] == 0, "the first cap must be 0 (no cap: the reference)"
    near = a.near_duplicate or None
    has_stream = "stream_id" in ev and ev["stream_id"].notna().any()
    for split, ins, variant in BLOCKS:
        if ins and not has_stream:
            continue
        t0, c0 = time.perf_counter(), cpu_s()
        kw = dict(split="global-time" if ins else split, variant=variant, in_stream=ins, items=items)
        test = P.make_split(ev, max_queries=a.max_queries, **kw)
        val = P.make_split(test.train, max_queries=a.max_queries, **kw)
        if len(val.queries) < 20 or len(test.queries) < 20:
            log(f"{name} {split}: {len(val.queries)} validation / {len(test.queries)} test queries, skipped")
            continue
        n_items = items["item_id"].nunique()
        mv = fit_recipe(val.train, items, val.reference_time, recipe)
        vres = measure(mv, val.queries, a.k, caps, None, cat, n_items)
        ref = vres[0][f"ndcg@{a.k}"]
        ok = [c for c in caps[1:] if vres[c][f"ndcg@{a.k}"] >= (1.0 - a.tolerance) * ref]
        chosen = min(ok) if ok else 0
        mt = fit_recipe(test.train, items, test.reference_time, recipe)
        tres = measure(mt, test.queries, a.k, caps, None, cat, n_items)
        nres = measure(mt, test.queries, a.k, [0, chosen] if chosen else [0], near, cat, n_items) if near else {}
        secs, cpu = time.perf_counter() - t0, cpu_s() - c0
        print(f"\n{name} {split}/{variant}: {len(val.queries)} validation, {len(test.queries)} test queries")
        print(f"  validation NDCG@{a.k}: " + ", ".join(f"cap {c}: {vres[c][f'ndcg@{a.k}']:.4f}" for c in caps))
        print(f"  chosen on validation: cap {chosen or 'none'} (tolerance {a.tolerance:.0%} of no cap's NDCG)")
        print(
            f"  {'test':8s} {'ndcg@10':>8s} {'Δ [95% CI]':>24s} {'recall':>7s} {'hit':>6s} {'ILD':>6s} {'cats':>5s} {'cover':>6s}"
        )
        for c in caps:
            r = tres[c]
            d = f"{r['d_ndcg']:+.4f} [{r['d_lo']:+.4f}, {r['d_hi']:+.4f}]" if "d_ndcg" in r else "(reference)"
            mark = " <- chosen" if c == chosen and c else ""
            print(
                f"  cap {c or '-':<4} {r[f'ndcg@{a.k}']:8.4f} {d:>24s} {r[f'recall@{a.k}']:7.4f} "
                f"{r[f'hitrate@{a.k}']:6.4f} {r['ild']:6.3f} {r['cats_per_list']:5.2f} {r['coverage']:6.3f}{mark}"
            )
        for c, r in nres.items():
            print(
                f"  + near_duplicate {near} cap {c or '-'}: ndcg {r[f'ndcg@{a.k}']:.4f} recall "
                f"{r[f'recall@{a.k}']:.4f} ILD {r['ild']:.3f}"
            )
        print(f"  {secs:.1f} s wall, {cpu:.1f} s CPU, load average {os.getloadavg()[0]:.2f} (2 cores)")
        out.append(
            {
                "world": name,
                "block": f"{split}/{variant}",
                "validation": vres,
                "test": tres,
                "near_duplicate": nres,
                "chosen": chosen,
                "queries": [len(val.queries), len(test.queries)],
            }
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="repeat,evening")
    ap.add_argument("--seeds", type=int, default=1, help="repeat-world seeds 0..N-1")
    ap.add_argument("--caps", default="0,1,2,3,4,5", help="max_per_category values (0 first: no cap)")
    ap.add_argument("--near-duplicate", type=float, default=0.9, help="also measure this threshold (0: not)")
    ap.add_argument("--tolerance", type=float, default=0.01, help="validation NDCG share a cap may lose")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-queries", type=int, default=1500)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)")
    out: list = []
    worlds = a.worlds.split(",")
    if "repeat" in worlds:
        for seed in range(a.seeds):
            ev, items = sim_frames(SimConfig.repeat_preset(seed=seed))
            run(f"repeat-world seed {seed}", ev, items, a, out)
    if "evening" in worlds:
        ev, items = sim_frames(SimConfig(seed=11, n_streams=12, n_users=3000, n_items=500, mean_viewers_per_stream=400))
        run("one-evening world seed 11", ev, items, a, out)
    if "tafeng" in worlds:
        if TAFENG.exists():
            ev, items = P.load_interactions(str(TAFENG), fmt="tafeng")
            run("Ta Feng", ev, items, a, out)
        else:
            log(f"Ta Feng not found at {TAFENG}: skipped")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
