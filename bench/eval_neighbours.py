"""Choosing how many neighbours per history item a request gathers (the served recipe's CF top-N,
``base.cf_params.neighbours`` / ``fallback_neighbours`` — EASE's pruned rows up to 10k items, the cosine
fallback's above —, and the text part's, ``base.content_params.neighbours``) on VALIDATION
splits only, then showing the choice on the test split beside today's 100 / 50.

    python bench/eval_neighbours.py                                  # repeat world, one evening, Ta Feng
    python bench/eval_neighbours.py --configs 100/50,50/20,50/20@30 --worlds tafeng --max-queries 1000

A request's kernel work is the capped history x (cf + content neighbours): 50 x (100 + 50) = 7,500
entries at the default history cap, the part of a heavy viewer's request that is bound by memory (see
docs/serving.md). The splits are ``bench/eval_history_cap.py``'s (each world's test split's training
part split again by the same protocol); the rule: the cheapest config (fewest entries) within
``--tolerance`` of the best validation NDCG@10 in every block; only then the test figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.eval_history_cap import split_rows
from bench.eval_served import TAFENG
from shared.reco import protocol as P
from shared.reco.recipe import env_recipe, fit_recipe


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_config(c: str) -> tuple[int, int, int | None]:
    """``"cf/content"`` or ``"cf/content@cap"`` (cap: the history cap, default the setting)."""
    n, _, cap = c.partition("@")
    cf, content = (int(x) for x in n.split("/"))
    return cf, content, int(cap) if cap else None


def label(cfg: tuple[int, int, int | None]) -> str:
    return f"{cfg[0]}/{cfg[1]}" + (f"@{cfg[2]}" if cfg[2] else "")


def entries(cfg: tuple[int, int, int | None]) -> int:
    """Neighbour entries a heavy viewer's request gathers (the cost the rule minimises)."""
    from shared.settings import settings

    return (cfg[2] or settings().recommend_max_history) * (cfg[0] + cfg[1])


def recipe_of(cfg: tuple[int, int, int | None]) -> dict:
    r = env_recipe()
    if cfg[2]:
        r["max_history"] = cfg[2]
    base = dict(r["base"])
    # the CF part's top-N: EASE's pruned rows up to max_dense_items, the cosine fallback's above (Ta Feng,
    # the 50k-item bench world): both set
    base["cf_params"] = {**base.get("cf_params", {}), "neighbours": cfg[0], "fallback_neighbours": cfg[0]}
    base["content_params"] = {**(base.get("content_params") or {}), "neighbours": cfg[1]}
    return {**r, "base": base}


def ndcg(train, queries, items, ref, cfg: tuple[int, int, int | None]) -> float:
    recipe = recipe_of(cfg)
    name = "n" + label(cfg)
    r = P.RecommendRanker(lambda tr, it, rf: fit_recipe(tr, it, rf, recipe), name=name)
    rep = P.evaluate(train, queries, items, [r], 10, reference_time=ref)
    return float(rep["rankers"][name]["ndcg@10"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="repeat,evening,tafeng")
    ap.add_argument(
        "--configs",
        default="100/50,100/20,60/30,60/20,40/20",
        help="cf/content neighbours [@history cap], first = today",
    )
    ap.add_argument("--max-queries", type=int, default=1500)
    ap.add_argument("--tolerance", type=float, default=0.005, help="relative NDCG loss accepted for a cheaper config")
    ap.add_argument("--tafeng", default=str(TAFENG))
    ap.add_argument("--config", default=None, help="the config shown on the test split (default: the rule's)")
    a = ap.parse_args(argv)
    cfgs = [parse_config(c) for c in a.configs.split(",")]
    load0 = os.getloadavg()[0]
    rows = split_rows(a.worlds, a.tafeng, a.max_queries)
    labels = [label(c) for c in cfgs]
    print(f"validation NDCG@10 by cf/content neighbours (load average {load0:.2f}, 2 cores):")
    print(f"  {'world':28s} {'block':12s} " + " ".join(f"{x:>8s}" for x in labels) + "  queries")
    val_scores = {}
    for name, block, _test, val, items in rows:
        t = time.perf_counter()
        sc = [ndcg(val.train, val.queries, items, val.reference_time, c) for c in cfgs]
        val_scores[(name, block)] = sc
        print(
            f"  {name:28s} {block:12s} " + " ".join(f"{v:8.4f}" for v in sc) + f"  {len(val.queries)}"
            f"  ({time.perf_counter() - t:.0f}s)",
            flush=True,
        )
    ok = [k for k in range(len(cfgs)) if all(sc[k] >= max(sc) * (1 - a.tolerance) for sc in val_scores.values())]
    rule = min(ok, key=lambda k: (entries(cfgs[k]), k)) if ok else 0
    print(
        f"cheapest config (fewest neighbour entries per heavy request) within {a.tolerance:.1%} of the best"
        f" validation NDCG in every block: {labels[rule]} ({entries(cfgs[rule]):,} entries vs {entries(cfgs[0]):,})"
    )
    chosen = parse_config(a.config) if a.config else cfgs[rule]
    print(f"shown on the test split: {label(chosen)}")
    print("test NDCG@10 (after the choice):")
    for name, block, test, _val, items in rows:
        base = ndcg(test.train, test.queries, items, test.reference_time, cfgs[0])
        got = ndcg(test.train, test.queries, items, test.reference_time, chosen) if chosen != cfgs[0] else base
        print(
            f"  {name:28s} {block:12s} {labels[0]} {base:.4f}  {label(chosen)} {got:.4f}"
            f"  ({len(test.queries)} queries)",
            flush=True,
        )
    print(f"load average before / after: {load0:.2f} / {os.getloadavg()[0]:.2f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
