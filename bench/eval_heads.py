"""Where the served model's ranker heads could come from, measured on VALIDATION splits first, then
shown on the test split (the experiment behind train's choice; docs/recommendations.md):

* ``refit``: the served fit learns its heads again on the last ``label_frac`` of ALL the training
  events (a second label-window state, label queries and four logistic fits);
* ``gate``: the served fit takes the heads of the gate's candidate, the same recipe fitted on the
  gate's training part (everything before the holdout: the last ``holdout_frac`` of purchases), and
  fits only the state on all the events. The heads are then the ones the gate measured on the holdout.

    python bench/eval_heads.py                                 # repeat world, one evening, Ta Feng
    python bench/eval_heads.py --worlds repeat --max-queries 1000

The splits are ``bench/eval_history_cap.py``'s (each world's test split's training part split again by
the same protocol). On each training part the "gate" variant cuts the part as the train job's gate does
(``protocol.make_split(global-time / in-stream, purchase, test_frac=holdout_frac)``), fits the recipe
before that cut, and hands the model to ``fit_recipe(..., heads_of=)``. The rule: ``gate`` (it saves the
served fit's label-window state, label queries and head fits: ~20 % of train at 10M events) would be
taken only if it is within ``--tolerance`` of ``refit`` on validation NDCG@10 in every block. It is not
(1-2 % lower on the repeat world, far lower on one evening): train refits its heads.
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

VARIANTS = ("refit", "gate")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fitter(variant: str, holdout_frac: float):
    recipe = env_recipe()

    def fit(tr, it, ref):
        if variant == "refit":
            return fit_recipe(tr, it, ref, recipe)
        has_stream = "stream_id" in tr and tr["stream_id"].notna().any()
        inner = P.make_split(
            tr, split="global-time", in_stream=bool(has_stream), test_frac=holdout_frac, items=it, max_queries=1
        )
        cand = fit_recipe(inner.train, it, inner.reference_time, recipe)
        return fit_recipe(tr, it, ref, recipe, heads_of=cand)

    return fit


def ndcg(split, items, variant: str, holdout_frac: float) -> float:
    r = P.RecommendRanker(fitter(variant, holdout_frac), name=variant)
    rep = P.evaluate(split.train, split.queries, items, [r], 10, reference_time=split.reference_time)
    return float(rep["rankers"][variant]["ndcg@10"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="repeat,evening,tafeng")
    ap.add_argument("--max-queries", type=int, default=1500)
    ap.add_argument("--holdout-frac", type=float, default=0.2, help="the gate's holdout (DAIHUO_TRAIN_HOLDOUT_FRAC)")
    ap.add_argument("--tolerance", type=float, default=0.005, help="relative NDCG loss accepted for the cheaper fit")
    ap.add_argument("--tafeng", default=str(TAFENG))
    a = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    rows = split_rows(a.worlds, a.tafeng, a.max_queries)
    print(f"validation NDCG@10 by where the heads come from (load average {load0:.2f}, 2 cores):")
    print(f"  {'world':28s} {'block':12s} " + " ".join(f"{v:>8s}" for v in VARIANTS) + "   ratio  queries")
    ok = True
    for name, block, _test, val, items in rows:
        t = time.perf_counter()
        sc = [ndcg(val, items, v, a.holdout_frac) for v in VARIANTS]
        ratio = sc[1] / sc[0] if sc[0] else float("nan")
        ok &= bool(sc[1] >= sc[0] * (1 - a.tolerance))
        print(
            f"  {name:28s} {block:12s} " + " ".join(f"{v:8.4f}" for v in sc) + f"  {ratio:6.3f}  {len(val.queries)}"
            f"  ({time.perf_counter() - t:.0f}s)",
            flush=True,
        )
    print(f"gate heads within {a.tolerance:.1%} of refit in every validation block: {'yes' if ok else 'NO'}")
    print("test NDCG@10 (after the choice):")
    for name, block, test, _val, items in rows:
        sc = [ndcg(test, items, v, a.holdout_frac) for v in VARIANTS]
        print(
            f"  {name:28s} {block:12s} " + " ".join(f"{v:8.4f}" for v in sc) + f"  {sc[1] / sc[0]:6.3f}"
            f"  ({len(test.queries)} queries)",
            flush=True,
        )
    print(f"load average before / after: {load0:.2f} / {os.getloadavg()[0]:.2f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
